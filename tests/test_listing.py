"""`pdrflow list`, `pdrflow run --dry-run` (and `--show-inputs`), and `show`'s closest names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import base_config, cli, files_under, ledger_rows, write_config, write_null_home

FAILING_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
case "$(pwd)" in *_40_-*) echo "null pdrexe: density 1e4 is not converging"; exit 7;; esac
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do echo "$f $(cksum < PDRNEW.INP)" > "pdroutput/$f"; done
echo mcdrt > Out/mrt.dat
"""
NAMES = ["100_30_-10_10_00", "100_30_-10_20_00", "100_40_-10_10_00", "100_40_-10_20_00"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: what "nothing was written" is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files_under(root)}


def test_list_a_grid_never_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "grid.yaml", base_config(run_dir, home=None))
    done = cli("list", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["100_30_-10_10_00", "new", "metallicity=1,", "density=1000,", "mass=0.1,", "fuv=10"]
    assert [line.split()[0] for line in lines[:4]] == NAMES
    assert "4 of 4 models of grid testgrid (not run yet: no ledger)" in done.stdout
    document = json.loads(cli("list", str(config), "--json").stdout)
    assert document["ledger"] is False and document["total"] == 4
    assert [(m["name"], m["state"]) for m in document["models"]] == [(name, "new") for name in NAMES]
    assert document["models"][3]["axes"] == {"metallicity": 1.0, "density": 1.0e4, "mass": 0.1, "fuv": 100.0}
    assert len({m["model_hash"] for m in document["models"]}) == 4
    assert not run_dir.exists()  # no ledger file, no archive, no scratch


def test_list_of_a_bad_config_is_exit_2(tmp_path: Path) -> None:
    config = base_config(tmp_path, home=None)
    config["grid"]["density"] = ["1e3e3"]
    done = cli("list", str(write_config(tmp_path / "grid.yaml", config)))
    assert done.returncode == 2
    assert "grid.density" in done.stderr and done.stdout == ""


def test_dry_run_of_a_grid_never_run_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "grid.yaml", base_config(run_dir, home=None))
    before = _snapshot(tmp_path)
    done = cli("run", str(config), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run of `pdrflow run`: nothing was started or written" in done.stdout
    assert ("grid testgrid: 4 models; 4 to compute, 0 to archive from staged outputs, 0 already archived "
            "(skipped); no ledger yet") in done.stdout
    assert f"compute (4): {', '.join(NAMES)}" in done.stdout
    assert not run_dir.exists()
    assert _snapshot(tmp_path) == before


def test_dry_run_refuses_what_the_run_refuses(tmp_path: Path) -> None:
    config = base_config(tmp_path, home=None)
    config["grid"]["parameters"] = {"alpha": 7.0}
    done = cli("run", str(write_config(tmp_path / "grid.yaml", config)), "--dry-run")
    assert done.returncode == 2
    assert "alpha" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def half_failed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid that ran: the two density-1e4 models failed_model, the others archived."""
    root = tmp_path_factory.mktemp("listing")
    home = write_null_home(root / "home")
    (home / "pdrexe").write_text(FAILING_PDR)
    config = write_config(root / "grid.yaml", base_config(root, home=home))
    done = cli("run", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    return config


def test_list_shows_the_ledger_state(half_failed: Path) -> None:
    done = cli("list", str(half_failed))
    assert done.returncode == 0, done.stderr
    states = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[:4]}
    assert states == dict(zip(NAMES, ["archived", "archived", "failed_model", "failed_model"], strict=True))
    failed = json.loads(cli("list", str(half_failed), "--state", "failed_model", "--json").stdout)
    assert [m["name"] for m in failed["models"]] == NAMES[2:] and failed["total"] == 4 and failed["listed"] == 2
    both = json.loads(cli("list", str(half_failed), "--state", "archived", "--state", "new", "--json").stdout)
    assert [m["name"] for m in both["models"]] == NAMES[:2]


def test_dry_run_of_a_grid_that_ran(half_failed: Path) -> None:
    root = half_failed.parent
    before = _snapshot(root)
    db = root / "ledger.sqlite"
    attempts = ledger_rows(db, "select count(*) from attempts")
    done = cli("run", str(half_failed), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert ("4 models; 0 to compute, 0 to archive from staged outputs, 2 already archived (skipped), 2 failed_model "
            "left alone (`pdrflow resubmit` retries them)") in done.stdout
    assert f"left alone (2): {NAMES[2]}, {NAMES[3]}" in done.stdout
    again = cli("resubmit", str(half_failed), "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "dry run of `pdrflow resubmit`" in again.stdout
    assert "2 to compute, 0 to archive from staged outputs, 2 already archived" in again.stdout
    assert f"compute (2): {NAMES[2]}, {NAMES[3]}" in again.stdout
    assert _snapshot(root) == before  # the ledger byte for byte, no -wal file, no new scratch dir
    assert ledger_rows(db, "select count(*) from attempts") == attempts


def test_dry_run_names_a_grid_computed_with_other_parameters(half_failed: Path, tmp_path: Path) -> None:
    """The same names, another model hash: `pdrflow run` would refuse the grid, so the dry run does."""
    import yaml

    document = yaml.safe_load(half_failed.read_text())
    document["grid"]["parameters"] = {"alpha": 2.0}
    changed = half_failed.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(document))
    done = cli("run", str(changed), "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "already holds 4 models under these names computed with other parameters" in done.stderr
    assert cli("list", str(changed)).returncode == 0  # listing is not running


def test_show_inputs_is_what_the_run_wrote(half_failed: Path) -> None:
    root = half_failed.parent
    name = NAMES[0]
    done = cli("run", str(half_failed), "--dry-run", "--show-inputs", name)
    assert done.returncode == 0, done.stderr
    head, rest = done.stdout.split(f"# {name}: pdr_config.json\n")
    assert head.startswith(f"# {name}: PDRNEW.INP\n")
    archive = root / "archive" / "testgrid" / "pdrgrid"
    assert head.removeprefix(f"# {name}: PDRNEW.INP\n") == (archive / f"PDRNEW{name}.INP").read_text()
    assert rest == (archive / f"pdr_config{name}.json").read_text()
    json.loads(rest)


def test_show_inputs_of_an_unknown_model_suggests_names(half_failed: Path) -> None:
    done = cli("run", str(half_failed), "--show-inputs", "100_30_-10_10_01")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == ("pdrflow: error: no model '100_30_-10_10_01' in grid 'testgrid' (closest: "
                                   "100_30_-10_10_00, 100_40_-10_10_00, 100_30_-10_20_00)")


def test_show_with_a_wrong_name_suggests_the_closest(half_failed: Path) -> None:
    done = cli("show", str(half_failed), "100_3_-10_10_00")
    assert done.returncode == 2
    assert done.stderr.startswith("pdrflow: error: no job '100_3_-10_10_00' in grid 'testgrid' (closest: "
                                  "100_30_-10_10_00"), done.stderr
    assert cli("show", str(half_failed), NAMES[0]).returncode == 0
