"""Outputs the real code may leave out (IHDFOUT, IFUVMETH, IDUSTMET): only kosma_tau.required_outputs must exist.

The stand-in leaves outputs out on request (``PDRFLOW_STANDIN_SKIP``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import base_config, cli, files_under, status, write_config

from pdrflow.config import load_config
from pdrflow.errors import ModelFailed
from pdrflow.ledger import Ledger
from pdrflow.plan import plan_run
from pdrflow.tasks.run import run_model
from pdrflow.tasks.types import ModelJob

pytestmark = pytest.mark.timeout(120)

MODEL = "100_30_-10_10_00"
SKIPPED = ["pdroutput/pdrout.hdf", "pdroutput/chemchk.out"]  # in layout order
FILES_PER_MODEL = 9 + 7 * 4


def one_model(tmp_path: Path, **kosma_tau: object) -> Path:
    document = base_config(tmp_path, home=None)
    document["kosma_tau"].update(kosma_tau)
    document["grid"].update(density=[1.0e3], fuv=[10.0])
    return write_config(tmp_path / "run.yaml", document)


def test_a_missing_optional_output_is_recorded_and_the_rest_archived(tmp_path: Path) -> None:
    config = one_model(tmp_path)
    done = cli("run", str(config), env={"PDRFLOW_STANDIN_SKIP": "pdrout.hdf,chemchk.out"})
    assert done.returncode == 0, done.stdout + done.stderr

    pdrgrid = tmp_path / "archive" / "testgrid" / "pdrgrid"
    assert not (pdrgrid / f"pdr{MODEL}.hdf").exists() and not (pdrgrid / f"chemchk{MODEL}.out").exists()
    assert (pdrgrid / f"pdrchem{MODEL}.hdf5").is_file()
    assert len(files_under(tmp_path / "archive")) == FILES_PER_MODEL - 2

    shown = cli("show", str(config), MODEL, "--json")
    details = json.loads(shown.stdout)
    assert details["state"] == "archived"
    assert details["missing_outputs"] == SKIPPED
    assert len(details["files"]) == FILES_PER_MODEL - 2
    text = cli("show", str(config), MODEL)
    assert f"not written by the run (optional outputs): {', '.join(SKIPPED)}" in text.stdout

    report = status(config)
    assert report["counts"] == {"archived": 1}
    assert report["missing_outputs"] == {"jobs": 1, "by_output": {name: 1 for name in SKIPPED}}
    summary = cli("status", str(config))
    assert summary.returncode == 0
    assert "1 jobs lack optional outputs: pdroutput/chemchk.out x1, pdroutput/pdrout.hdf x1" in summary.stdout


def test_a_missing_required_output_fails_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    required = ["pdroutput/TEXTOUT", "pdroutput/pdrstruct_s.hdf5", "pdroutput/CTRL_IND", "pdroutput/chemchk.out"]
    plan = plan_run(load_config(one_model(tmp_path, required_outputs=required)))
    ledger = Ledger(plan.settings.database.sqlalchemy_url())
    try:
        ledger.register_grid(plan.settings.grid, plan.specs.values())
        (job,) = ledger.jobs(plan.settings.grid)
        monkeypatch.setenv("PDRFLOW_STANDIN_SKIP", "chemchk.out")
        with pytest.raises(ModelFailed, match=r"did not write pdroutput/chemchk\.out"):
            run_model(ModelJob(job.id, plan.specs[job.model_hash]), plan.settings)
        assert ledger.job(job.id).state == "failed_model"
    finally:
        ledger.close()


def test_an_unknown_required_output_is_refused_before_anything_runs(tmp_path: Path) -> None:
    config = one_model(tmp_path, required_outputs=["pdroutput/TEXTOUT", "pdroutput/pdrstruct.hdf5"])
    done = cli("run", str(config))
    assert done.returncode == 2
    assert "kosma_tau.required_outputs: 'pdroutput/pdrstruct.hdf5' is not an output pdrflow archives" in done.stderr
    assert "pdroutput/pdrstruct_s.hdf5" in done.stderr  # the valid names are listed
    assert not (tmp_path / "ledger.sqlite").exists()
