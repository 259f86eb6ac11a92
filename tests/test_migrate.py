"""`pdrflow migrate` on a grid the predecessor (pdr_run) computed: the devgrid fixture.

The fixture's database and old.yaml record paths under /home/astro/devgrid; old.yaml is rewritten
to where the archive is unpacked, the database's paths stay stale on purpose (migrate must find
the files by pdrflow's archive layout, not by them).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import cli, files_under

from pdrflow.cli import main
from pdrflow.config import load_config

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "predecessor" / "devgrid.tar.gz"  # a missing one fails
GRID = "oldgrid"
INTACT = {"100_30_-10_10_00", "100_40_-10_10_00"}
DAMAGED = {
    "100_40_-10_20_00": "missing oldgrid/oniongrid/TEXTOUT100_40_-10_20_00_O",
    "100_30_-10_20_00": "oldgrid/pdrgrid/pdrstruct100_30_-10_20_00.hdf5: sha256 differs",
}
FILES_PER_MODEL = 9 + 7 * 4  # the contract's layout with MCDRT, four onion species

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def devgrid(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    root = tmp_path / "devgrid"
    old = root / "old.yaml"
    old.write_text(old.read_text().replace("/home/astro/devgrid", str(root)))
    return root


def _migrate(devgrid: Path, out: Path, *extra: str, old: Path | None = None) -> int:
    return main(["migrate", str(old or devgrid / "old.yaml"), "--out", str(out), *extra])


def _rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query, params).fetchall()


def _old_yaml(devgrid: Path, edit: Any) -> Path:
    document = yaml.safe_load((devgrid / "old.yaml").read_text())
    edit(document)
    path = devgrid / "edited.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_migrate_adopts_the_intact_models_and_lists_the_damaged(devgrid: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out) == 1  # two models left to compute
    printed = capsys.readouterr().out
    for name, reason in DAMAGED.items():
        assert re.search(rf"pending {name}: .*{re.escape(reason)}", printed.replace("\n", " ")), printed

    config = load_config(out)
    assert config.grid.name == GRID and config.grid.naming == "predecessor"
    assert config.grid.density_tenthdex == ["30", "40"] and config.grid.metallicity_percent == ["100"]
    assert config.kosma_tau.home == devgrid / "kosma-tau"
    assert config.kosma_tau.onion_species == ["CO", "C+", "C", "O"]
    assert config.kosma_tau.chem_rates == "chem_rates_test.dat"
    assert config.kosma_tau.pdrnew_template == devgrid / "kosma-tau" / "templates" / "PDRNEW.INP.template"
    assert config.storage.root == devgrid / "archive"  # type: ignore[union-attr]
    ledger = out.parent / "pdrflow-ledger.sqlite"
    assert config.database.url == f"sqlite:///{ledger}"

    states = dict(_rows(ledger, "SELECT name, state FROM jobs"))
    assert states == {**dict.fromkeys(INTACT, "archived"), **dict.fromkeys(DAMAGED, "pending")}
    reasons = dict(_rows(ledger, "SELECT name, reason FROM jobs WHERE state = 'pending'"))
    for name, reason in DAMAGED.items():
        assert reason in reasons[name]

    # Every archived file re-hashed from the bytes on disk, under the configured root.
    archived = _rows(ledger, "SELECT j.name, f.path, f.size, f.sha256 FROM archived_files f JOIN jobs j ON j.id = "
                     "f.job_id")
    assert Counter(name for name, *_ in archived) == dict.fromkeys(INTACT, FILES_PER_MODEL)
    for _name, path, size, digest in archived:
        on_disk = devgrid / "archive" / path
        assert (on_disk.stat().st_size, _sha(on_disk)) == (size, digest)

    attempts = _rows(ledger, "SELECT j.name, a.kind, a.outcome FROM attempts a JOIN jobs j ON j.id = a.job_id")
    assert sorted(attempts) == sorted((name, "adopt", "ok") for name in INTACT)

    (raw,) = _rows(ledger, "SELECT provenance FROM jobs WHERE name = '100_30_-10_10_00'")[0]
    provenance = json.loads(raw)
    assert provenance["adopted_from"] == "pdr_run"
    old = provenance["predecessor"]
    assert old["job_id"] == 1 and old["time_of_start"].startswith("2026-12-01")
    assert old["executable"]["revision"] == "null-1"
    assert old["executable"]["sha256"] == _sha(devgrid / "kosma-tau" / "pdrexe")
    assert old["executable"]["compilation_date"].startswith("2026-11-28")
    assert old["chem_database"] == {"file": "chem_rates_test.dat", "origin": "UDfA12",
                                    "path": "/home/astro/devgrid/kosma-tau/pdrinpdata/chem_rates_test.dat"}
    assert old["user"]["username"] == "Default User"
    assert provenance["model"]["name"] == "100_30_-10_10_00"

    # The damaged models' files that exist are recorded, so the rerun's archival moves them aside.
    found = _rows(ledger, "SELECT j.name, p.path, p.size, p.sha256, p.recorded_sha256, p.origin FROM preexisting_files "
                  "p JOIN jobs j ON j.id = p.job_id")
    assert Counter(name for name, *_ in found) == {"100_40_-10_20_00": FILES_PER_MODEL - 1,
                                                   "100_30_-10_20_00": FILES_PER_MODEL}
    for _name, path, size, digest, _recorded, origin in found:
        assert origin == "pdr_run" and (devgrid / "archive" / path).stat().st_size == size
        assert _sha(devgrid / "archive" / path) == digest
    struct = next(row for row in found if row[1].endswith("pdrstruct100_30_-10_20_00.hdf5"))
    assert struct[4] is not None and struct[4] != struct[3]  # what pdr_run recorded, and what is there now


def test_model_hashes_are_the_ones_pdrflow_run_computes(devgrid: Path, tmp_path: Path) -> None:
    from pdrflow.grid import expand_grid
    from pdrflow.kosma.installation import resolve_installation

    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out) == 1
    config = load_config(out)
    expected = {s.name: s.model_hash for s in expand_grid(config, resolve_installation(config.kosma_tau).identity)}
    ledger = out.parent / "pdrflow-ledger.sqlite"
    recorded = dict(_rows(ledger, "SELECT j.name, m.model_hash FROM jobs j JOIN models m ON m.id = j.model_id"))
    assert recorded == expected


def test_migrate_twice_adopts_nothing_twice(devgrid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "ledger.sqlite"
    assert _migrate(devgrid, tmp_path / "a.yaml", "--ledger", f"sqlite:///{ledger}") == 1
    before = {table: _rows(ledger, f"SELECT * FROM {table} ORDER BY id") for table in
              ("jobs", "models", "archived_files", "attempts", "preexisting_files")}
    capsys.readouterr()
    assert _migrate(devgrid, tmp_path / "b.yaml", "--ledger", f"sqlite:///{ledger}", "--json") == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["adopted"], summary["already_archived"], summary["pending"]) == (0, 2, 2)
    after = {table: _rows(ledger, f"SELECT * FROM {table} ORDER BY id") for table in before}
    assert after == before


def test_existing_out_is_never_overwritten(devgrid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new.yaml"
    out.write_text("mine\n")
    assert _migrate(devgrid, out) == 2
    assert out.read_text() == "mine\n"
    assert "never overwrites" in capsys.readouterr().err
    assert not (tmp_path / "pdrflow-ledger.sqlite").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("pdr"), "pdr: required section is missing"),
    (lambda d: d.pop("model_params"), "model_params: required section is missing"),
    (lambda d: d["model_params"]["dens"].append("3*10"), "model_params.dens[2]: '3*10' is not a plain number"),
    (lambda d: d["model_params"].update(chi=["__import__('os')"]), "is not a plain number"),
    (lambda d: d.update(non_default_params={"cosray": "2e-16*2"}), "non_default_params.cosray"),
    (lambda d: d.update(non_default_params={"no_such": 1}), "no_such: unknown KOSMA-tau parameter"),
    (lambda d: d.update(non_default_params={"tgasc": [50, 60]}), "varied parameters cannot be carried over"),
    (lambda d: d["model_params"].update(dens="30"), "expected a non-empty list"),
    (lambda d: d.update(storage={"type": "rclone", "base_dir": "/x", "rclone_remote": "kosmatau"}),
     "storage.type: rclone storage has no pdrflow backend"),
    (lambda d: d.update(simline={"enabled": True}), "simline.enabled"),
    (lambda d: d.update(unknown={"a": 1}), "unknown: unknown section"),
    (lambda d: d.update(model_parameters=d["model_params"]), "model_parameters: given together with model_params"),
    (lambda d: d["database"].update(type="oracle"), "database.type"),
])
def test_bad_old_configs_are_refused_with_one_line(devgrid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   edit: Any, message: str) -> None:
    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out, old=_old_yaml(devgrid, edit)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".new.yaml*"))
    assert not (tmp_path / "pdrflow-ledger.sqlite").exists()


def test_duplicate_keys_and_python_tags_are_refused(devgrid: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = (devgrid / "old.yaml").read_text()
    twice = devgrid / "twice.yaml"
    twice.write_text(text.replace("  chem_origin: UDfA12\n", "  chem_origin: UDfA12\n  model_name: othergrid\n"))
    assert _migrate(devgrid, tmp_path / "a.yaml", old=twice) == 2
    assert "'model_name' is given twice" in capsys.readouterr().err
    tagged = devgrid / "tagged.yaml"
    tagged.write_text(text.replace('dens: ["30", "40"]', 'dens: !!python/object/apply:os.getcwd []'))
    assert _migrate(devgrid, tmp_path / "b.yaml", old=tagged) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_database_environment_overrides_like_pdr_run(devgrid: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # PDR_DB_* always win in pdr_run; the password is used, never written.
    moved = tmp_path / "elsewhere.db"
    (devgrid / "pdr_run.db").rename(moved)
    monkeypatch.setenv("PDR_DB_FILE", str(moved))
    monkeypatch.setenv("PDR_DB_PASSWORD", "s3cret-never-written")
    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out) == 1
    assert "s3cret" not in out.read_text() and "s3cret" not in capsys.readouterr().out
    monkeypatch.setenv("PDR_DB_FILE", str(tmp_path / "missing.db"))
    assert _migrate(devgrid, tmp_path / "other.yaml") == 2
    assert "missing.db does not exist" in capsys.readouterr().err


def test_run_computes_exactly_the_damaged_models_and_keeps_every_old_byte(devgrid: Path, tmp_path: Path) -> None:
    archive = devgrid / "archive"
    old_digests = Counter(_sha(path) for path in files_under(archive))
    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out) == 1
    done = cli("run", str(out), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ledger = tmp_path / "pdrflow-ledger.sqlite"
    assert dict(_rows(ledger, "SELECT name, state FROM jobs")) == dict.fromkeys([*INTACT, *DAMAGED], "archived")
    runs = _rows(ledger, "SELECT j.name, a.outcome FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.kind = "
                 "'model'")
    assert sorted(runs) == sorted((name, "ok") for name in DAMAGED)
    checked = cli("verify", str(out), "--json")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["checked"] == 4 * FILES_PER_MODEL
    now = Counter(_sha(path) for path in files_under(archive))
    assert not old_digests - now  # every old file's bytes are still under the archive root


def _tokens(line: str) -> list[str | float]:
    """A line's words, numbers as floats (Fortran's 1.0d0 too): cards like ``HELIUM 8.51e-02`` compare by value."""
    tokens: list[str | float] = []
    for token in (t for t in re.split(r"[\s,]+", line.strip()) if t):
        try:
            tokens.append(float(token.replace("d", "e").replace("D", "e")))
        except ValueError:
            tokens.append(token)
    return tokens


def test_rendering_an_adopted_model_matches_its_archived_pdrnew_inp(devgrid: Path, tmp_path: Path) -> None:
    from pdrflow.kosma.inputs import render_pdrnew_inp
    from pdrflow.kosma.templates import load_template

    out = tmp_path / "new.yaml"
    assert _migrate(devgrid, out) == 1
    config = load_config(out)
    ledger = tmp_path / "pdrflow-ledger.sqlite"
    for name in sorted(INTACT):
        (raw,) = _rows(ledger, "SELECT provenance FROM jobs WHERE name = ?", name)[0]
        model = json.loads(raw)["model"]
        rendered = render_pdrnew_inp(model["parameters"], model["network_species"], model["elements"],
                                     template=load_template("pdrnew", config.kosma_tau.pdrnew_template))
        archived = (devgrid / "archive" / GRID / "pdrgrid" / f"PDRNEW{name}.INP").read_text()
        new_lines, old_lines = rendered.splitlines(), archived.splitlines()
        assert len(new_lines) == len(old_lines)
        for number, (new, old) in enumerate(zip(new_lines, old_lines, strict=True), start=1):
            got, expected = _tokens(new), _tokens(old)
            assert len(got) == len(expected), f"line {number}: {new!r} vs {old!r}"
            for a, b in zip(got, expected, strict=True):
                if isinstance(b, float):
                    assert isinstance(a, float) and a == pytest.approx(b, rel=2e-3), f"line {number}: {new!r} vs {old!r}"
                else:
                    assert a == b, f"line {number}: {new!r} vs {old!r}"


def test_running_a_predecessor_config_points_at_migrate(devgrid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(devgrid / "old.yaml")]) == 2
    err = capsys.readouterr().err
    assert "this is a pdr_run (predecessor) config" in err and "pdrflow migrate" in err
