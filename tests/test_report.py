"""`pdrflow report`: maps and one self-contained HTML page from a real stand-in grid's ledger and archive.

The grid (3 densities x 2 FUV fields, onion species CO, C+, C) is run once for the module with the
real CLI: first its (n=1e5, χ=1e3) model alone with the stand-in forced to fail, then the whole grid,
so the ledger holds 5 archived models and 1 failed_model. Every number the report plots is checked
against the archived files read directly with h5py.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import base_config, cli, ledger_rows, write_config
from services.databases import free_port

from pdrflow.config import SftpStorageConfig, load_config
from pdrflow.report import ReportResult, write_report
from pdrflow.report.html import format_number
from pdrflow.results import ModelNotArchived, ResultsError, open_archive
from pdrflow.storage.base import StorageError, sha256_file
from pdrflow.storage.local import LocalStorage

pytestmark = pytest.mark.timeout(240)  # conftest.py runs this module on one xdist worker: one grid

GRID = "reportgrid"
SPECIES = ["CO", "C+", "C"]  # no O: the [OI] maps must become a note
FAILED = "100_50_-10_30_00"  # n = 1e5, χ = 1e3
PROBE = "100_40_-10_30_00"  # n = 1e4, χ = 1e3: every transition lies inside this clump
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class GridRun:
    run_dir: Path
    config_path: Path
    archive: Path


def grid_config(run_dir: Path, **storage: Any) -> dict[str, Any]:
    config = base_config(run_dir, home=None, grid=GRID, kosma_tau={"standin": True, "onion_species": SPECIES},
                         **({"storage": storage} if storage else {}))
    config["grid"].update(density=[1.0e3, 1.0e4, 1.0e5], fuv=[10.0, 1.0e3])
    return config



@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> GridRun:
    run_dir = tmp_path_factory.mktemp("report-run")
    failing = grid_config(run_dir)
    failing["grid"].update(density=[1.0e5], fuv=[1.0e3])
    done = cli("run", str(write_config(run_dir / "failing.yaml", failing)), env={"PDRFLOW_STANDIN_FAIL": "pdr"})
    assert done.returncode == 1, done.stdout + done.stderr
    config_path = write_config(run_dir / "grid.yaml", grid_config(run_dir))
    done = cli("run", str(config_path))
    assert done.returncode == 1, done.stdout + done.stderr  # the failed model stays failed
    states = dict(ledger_rows(run_dir / "ledger.sqlite", "select name, state from jobs"))
    assert states[FAILED] == "failed_model" and sum(s == "archived" for s in states.values()) == 5
    return GridRun(run_dir, config_path, run_dir / "archive" / GRID)


@pytest.fixture(scope="module")
def report(grid_run: GridRun, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    return write_report(load_config(grid_run.config_path), tmp_path_factory.mktemp("report-out"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def structure(archive: Path, name: str) -> h5py.File:
    return h5py.File(archive / "pdrgrid" / f"pdrstruct{name}.hdf5", "r")


def onion_intensity(archive: Path, name: str, species: str, transition: str) -> float:
    """What onion wrote into the archived structure file (full precision, not the text table)."""
    with structure(archive, name) as f:
        names = [n.decode() for n in f[f"onion/{species}/transitions"][()]]
        return float(f[f"onion/{species}/intensity_erg_s_cm2_sr"][()][names.index(transition)])


# ---- the report from a local archive ---------------------------------------------------------


def test_pngs_are_real_images_of_every_map(report: ReportResult) -> None:
    names = [p.name for p in report.images]
    assert names[0] == "states.png"
    for expected in ("surface_tgas.png", "av_h_h2.png", "av_cplus_c.png", "av_c_co.png", "line_CII_158um.png",
                     "line_CI_609um.png", "line_CO_1-0.png", "line_CO_3-2.png"):
        assert expected in names
    assert not any(name.startswith("line_OI") for name in names)  # no O archived: no [OI] map
    for png in report.images:
        width, height = png_size(png)
        assert width >= 400 and height >= 300, (png, width, height)
        assert png.stat().st_size > 10_000, png  # a map, not an empty canvas
    assert all(path.is_file() for path in report.files)


def test_html_is_self_contained_and_embeds_every_png(report: ReportResult) -> None:
    page = report.html.read_text(encoding="utf-8")
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == len(report.images)
    for source, png in zip(sources, report.images, strict=True):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == png.read_bytes()
    assert "href=" not in page and "<script" not in page and "<link" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page


def test_surface_temperature_matches_the_archived_structure_files(report: ReportResult, grid_run: GridRun) -> None:
    page = report.html.read_text(encoding="utf-8")
    plotted = report.values["surface_tgas"]
    assert set(plotted) == {name for name, state in report.states.items() if state == "archived"}
    for name, value in plotted.items():
        with structure(grid_run.archive, name) as f:
            assert value == pytest.approx(float(f["tgas"][0]), rel=1e-12)
        assert f">{format_number(value)}<" in page  # the number is in the page's table
    document = json.loads(report.values_json.read_text())
    assert document["values"]["surface_tgas"][PROBE] == pytest.approx(plotted[PROBE], rel=1e-12)


def test_line_intensities_match_what_onion_archived(report: ReportResult, grid_run: GridRun) -> None:
    page = report.html.read_text(encoding="utf-8")
    for key, species, transition in (("line:CII_158um", "C+", "CII_158um"), ("line:CI_609um", "C", "CI_609um"),
                                     ("line:CO_1-0", "CO", "CO_1-0"), ("line:CO_3-2", "CO", "CO_3-2")):
        plotted = report.values[key]
        assert len(plotted) == 5
        for name, value in plotted.items():
            # linebt tables carry 7 significant digits; the HDF5 copy full precision
            assert value == pytest.approx(onion_intensity(grid_run.archive, name, species, transition), rel=1e-6)
            assert value > 0
        assert f">{format_number(plotted[PROBE])}<" in page


def test_transition_depths_are_where_the_archived_abundances_cross_one_half(
    report: ReportResult, grid_run: GridRun
) -> None:
    with structure(grid_run.archive, PROBE) as f:
        av = f["av"][()]
        x = {s: f[f"abundances/{s}"][()] for s in ("H", "H2", "C+", "C", "CO")}
    carbon = x["C+"] + x["C"] + x["CO"]
    for key, fraction in (("av_h_h2", 2 * x["H2"] / (x["H"] + 2 * x["H2"])), ("av_cplus_c", x["C+"] / carbon),
                          ("av_c_co", x["CO"] / carbon)):
        depth = report.values[key][PROBE]
        assert 0 < depth < av[-1], key
        assert float(np.interp(depth, av, fraction)) == pytest.approx(0.5, abs=0.02), key
    # deeper for C/CO than for C+/C than for H/H2, as in any PDR
    assert report.values["av_h_h2"][PROBE] < report.values["av_cplus_c"][PROBE] < report.values["av_c_co"][PROBE]
    # The smallest clump ends before its carbon turns into CO: no depth is plotted, the cell says why.
    small = "100_30_-10_10_00"
    with structure(grid_run.archive, small) as f:
        co, total = f["abundances/CO"][()], sum(f[f"abundances/{s}"][()] for s in ("C+", "C", "CO"))
    assert np.max(co / total) < 0.5
    assert math.isnan(report.values["av_c_co"][small])
    assert f'title="{small}" class=missing>beyond centre<' in report.html.read_text(encoding="utf-8")


def test_failed_model_is_failed_in_the_map_and_blank_in_the_science_maps(report: ReportResult) -> None:
    assert report.states[FAILED] == "failed_model"
    assert sum(state == "archived" for state in report.states.values()) == 5
    for quantity in report.quantities:
        assert FAILED not in report.values[quantity.key]  # never a number for a model that has no outputs
    document = json.loads(report.values_json.read_text())
    assert {job["name"]: job["state"] for job in document["jobs"]}[FAILED] == "failed_model"
    page = report.html.read_text(encoding="utf-8")
    assert f'title="{FAILED}" class=missing>failed_model<' in page


def test_missing_species_is_a_note_not_a_crash(report: ReportResult) -> None:
    assert any(note.startswith("[OI] 63 µm: species O not among the grid's onion species") for note in report.notes)
    assert "[OI] 63 µm: species O not among the grid" in report.html.read_text(encoding="utf-8")


def test_reader_api(grid_run: GridRun) -> None:
    with open_archive(load_config(grid_run.config_path)) as archive:
        outputs = archive.model_outputs(PROBE)
        assert set(outputs.lines) == set(SPECIES)
        assert outputs.lines["C+"].transitions == ("CII_158um",)
        with structure(grid_run.archive, PROBE) as f:
            assert np.array_equal(outputs.tdust, f["tdust"][()]) and np.array_equal(outputs.nh, f["nh"][()])
        with pytest.raises(ModelNotArchived, match="failed_model"):
            archive.model_outputs(FAILED)
        with pytest.raises(ResultsError, match="no job"):
            archive.model_outputs("100_99_-10_10_00")


# ---- a damaged archive -------------------------------------------------------------------------


def test_lost_and_altered_archive_files_blank_only_what_they_hold(grid_run: GridRun, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(grid_run.run_dir, copy, ignore=shutil.ignore_patterns("scratch"))
    config = load_config(write_config(copy / "grid.yaml", grid_config(copy)))
    archive = copy / "archive" / GRID
    lost = "100_30_-10_10_00"
    (archive / "oniongrid" / f"ONION{lost}.linebt_C.out").unlink()  # [CI] gone, the rest intact
    altered = "100_40_-10_10_00"
    with h5py.File(archive / "pdrgrid" / f"pdrstruct{altered}.hdf5", "a") as f:
        f["tgas"][0] = 1.0  # differs from what was archived: must not be plotted
    result = write_report(config, tmp_path / "out")
    assert math.isnan(result.values["line:CI_609um"][lost])
    assert result.values["line:CII_158um"][lost] > 0 and result.values["surface_tgas"][lost] > 0
    assert altered not in result.values["surface_tgas"]
    assert any(altered in note and "differs from what the ledger recorded" in note for note in result.notes)
    page = result.html.read_text(encoding="utf-8")
    assert f'title="{lost}" class=missing>no line table<' in page
    assert "line table of C unreadable" in page
    assert f'title="{altered}" class=missing>unreadable<' in page


def test_no_ledger_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "grid.yaml", grid_config(tmp_path)))
    with pytest.raises(ResultsError, match="no ledger"):
        write_report(config, tmp_path / "out")
    assert not (tmp_path / "ledger.sqlite").exists()  # reading never creates a ledger


# ---- storage fetch ---------------------------------------------------------------------------------


def test_local_fetch_copies_verified_bytes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    (tmp_path / "archive" / "g").mkdir(parents=True)
    (tmp_path / "archive" / "g" / "f.bin").write_bytes(b"x" * 300_000)
    stored = storage.fetch("g/f.bin", tmp_path / "copy.bin")
    assert (stored.size, stored.sha256) == sha256_file(tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"x" * 300_000
    with pytest.raises(StorageError, match="does not exist") as missing:
        storage.fetch("g/none.bin", tmp_path / "none.bin")
    assert not missing.value.transient and not (tmp_path / "none.bin").exists()


def test_report_reads_the_archive_over_sftp(
    grid_run: GridRun, report: ReportResult, sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine may influence the test
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    sftp = {"kind": "sftp", "host": sshd.host, "port": sshd.port, "username": "root",
            "root": str(grid_run.run_dir / "archive"), "key_filename": str(sshd.client_key),
            "known_hosts": str(known_hosts), "operation_timeout": 20}
    document = grid_config(grid_run.run_dir, **sftp)
    document["storage"] = sftp  # not merged over the local storage section
    config = load_config(write_config(tmp_path / "sftp.yaml", document))
    assert isinstance(config.storage, SftpStorageConfig)

    with open_archive(config) as archive:  # storage-level: bytes and sha256 as archived
        path = f"{GRID}/pdrgrid/pdrstruct{PROBE}.hdf5"
        stored = archive.storage.fetch(path, tmp_path / "copy.hdf5")
        assert (stored.size, stored.sha256) == sha256_file(grid_run.archive / "pdrgrid" / f"pdrstruct{PROBE}.hdf5")
        with pytest.raises(StorageError, match="no such file") as missing:
            archive.storage.fetch(f"{GRID}/pdrgrid/nothing", tmp_path / "nothing")
        assert not missing.value.transient and not (tmp_path / "nothing").exists()

    result = write_report(config, tmp_path / "out")  # models read several at once over SFTP
    with structure(grid_run.archive, PROBE) as f:
        assert result.values["surface_tgas"][PROBE] == pytest.approx(float(f["tgas"][0]), rel=1e-12)
    assert result.values["line:CII_158um"][PROBE] == pytest.approx(
        onion_intensity(grid_run.archive, PROBE, "C+", "CII_158um"), rel=1e-6)
    assert result.states[FAILED] == "failed_model"
    # every model's numbers are its own: the same as the local report's, read one model at a time
    assert json.dumps(result.values, sort_keys=True) == json.dumps(report.values, sort_keys=True)
    assert result.notes == report.notes

    # The archive unreachable (nothing listens): the report stops with the network error, it does not
    # draw every model blank.
    dead = {**sftp, "port": free_port(), "connect_timeout": 2}
    document["storage"] = dead
    unreachable = load_config(write_config(tmp_path / "dead.yaml", document))
    with pytest.raises(StorageError) as refused:
        write_report(unreachable, tmp_path / "dead-out")
    assert refused.value.transient
    assert not (tmp_path / "dead-out" / "report.html").exists()


# ---- the command -------------------------------------------------------------------------------


def test_report_command(grid_run: GridRun, tmp_path: Path) -> None:
    done = cli("report", str(grid_run.config_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "report.html").stat().st_size > 50_000
    assert png_size(tmp_path / "out" / "states.png")[0] >= 400
    values = json.loads((tmp_path / "out" / "values.json").read_text())
    with structure(grid_run.archive, PROBE) as f:
        assert values["values"]["surface_tgas"][PROBE] == pytest.approx(float(f["tgas"][0]), rel=1e-12)


# ---- line ratios, K km/s and the stand-in mark ---------------------------------------------------------


def test_ratio_maps_kkms_maps_and_the_standin_mark(report: ReportResult, grid_run: GridRun) -> None:
    from pdrflow.export.lines import erg_to_k_kms

    names = [p.name for p in report.images]
    assert {"ratio_CII_158_CI_609.png", "ratio_CO_32_CO_10.png", "kkms_CO_1-0.png", "kkms_CI_609um.png"} <= set(names)
    assert not any(name.startswith("kkms_CII") for name in names)  # [CII] stays in erg s-1 cm-2 sr-1
    ratio = report.values["ratio:CII_158/CI_609"][PROBE]
    assert ratio == pytest.approx(report.values["line:CII_158um"][PROBE] / report.values["line:CI_609um"][PROBE])
    assert report.values["kkms:CO_1-0"][PROBE] == pytest.approx(
        erg_to_k_kms(onion_intensity(grid_run.archive, PROBE, "CO", "CO_1-0"), 2600.76), rel=1e-6)
    assert FAILED not in report.values["ratio:CO_32/CO_10"]
    assert any(n.startswith("ratio OI_63/CII_158: no archived model has both lines") for n in report.notes)
    page = report.html.read_text(encoding="utf-8")
    assert page.count("stand-in, not KOSMA-tau") >= 2  # the title and the banner
    assert json.loads(report.values_json.read_text())["standin"] is True
