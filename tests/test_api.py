"""The notebook API: futures per model, status as a DataFrame, resubmission, a clean stop."""

from __future__ import annotations

import os
import time
from concurrent.futures import as_completed
from pathlib import Path

import psutil
import pytest
from helpers import base_config, ledger_rows, verify, write_config, write_null_home
from test_terminal import FAILING_PDR

import pdrflow

SLOW_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
sleep 30
"""


def test_submit_futures_status_and_resubmit(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    marker = tmp_path / "fail-density-1e4"  # the failure is switched off below without changing the executable
    marker.touch()
    (home / "pdrexe").write_text(FAILING_PDR.replace('case "$(pwd)"', f'[ -f {marker} ] && case "$(pwd)"'))
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    grid = pdrflow.Grid.open(config)

    run = grid.submit()
    assert sorted(run.futures) == ["100_30_-10_10_00", "100_30_-10_20_00", "100_40_-10_10_00", "100_40_-10_20_00"]
    archived, failed = [], []
    for future in as_completed(run.futures.values(), timeout=180):
        if future.exception() is None:
            archived.append(future.result().name)
        else:
            error = future.exception()
            assert isinstance(error, pdrflow.JobFailed)
            assert error.state == "failed_model" and "exited with code 7" in error.reason
            failed.append(error.name)
    outcome = run.wait(timeout=60)
    assert outcome is not None and outcome.archived == 2
    assert sorted(archived) == ["100_30_-10_10_00", "100_30_-10_20_00"]
    assert sorted(failed) == ["100_40_-10_10_00", "100_40_-10_20_00"]
    assert not run.running and run.client is None

    frame = grid.status()
    assert len(frame) == 4
    assert frame.loc["100_30_-10_10_00", "state"] == "archived"
    assert frame.loc["100_40_-10_20_00", "state"] == "failed_model"
    assert frame.loc["100_40_-10_20_00", "density"] == pytest.approx(1.0e4)
    assert frame.loc["100_40_-10_20_00", "fuv"] == pytest.approx(100.0)
    assert frame["model_runs"].tolist() == [1, 1, 1, 1]
    assert frame.loc["100_30_-10_10_00", "archivals"] == 1

    # A second submit runs nothing: archived stays archived, failed_model waits for resubmit.
    again = grid.submit()
    again.wait(timeout=120)
    assert again.futures["100_30_-10_10_00"].result().state == "archived"
    assert isinstance(again.futures["100_40_-10_10_00"].exception(), pdrflow.JobFailed)
    assert again.outcome is not None and again.outcome.model_runs == 0

    # The cause is gone; resubmit: only the two failed models run again.
    marker.unlink()
    fixed = grid.resubmit()
    assert [f.result(timeout=180).state for f in fixed.futures.values()] == ["archived"] * 4
    fixed.wait(timeout=60)
    assert fixed.outcome is not None and fixed.outcome.model_runs == 2
    assert grid.status()["model_runs"].tolist() == [1, 1, 2, 2]
    assert verify(config)["returncode"] == 0


def test_stop_leaves_nothing_running(tmp_path: Path) -> None:
    home = write_null_home(tmp_path / "home")
    (home / "pdrexe").write_text(SLOW_PDR)
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    run = pdrflow.Grid.open(config).submit()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "running" not in {
            row[0] for row in ledger_rows(tmp_path / "ledger.sqlite", "SELECT state FROM jobs")}:
        time.sleep(0.2)
    workers = list(run.client.run(os.getpid).values())
    assert workers
    run.stop(timeout=60)
    assert not run.running
    states = {row[0] for row in ledger_rows(tmp_path / "ledger.sqlite", "SELECT state FROM jobs")}
    assert states == {"pending"}
    assert ledger_rows(tmp_path / "ledger.sqlite", "SELECT count(*) FROM attempts WHERE outcome = 'running'") == [(0,)]
    for future in run.futures.values():
        assert isinstance(future.exception(timeout=1), pdrflow.JobFailed)
    time.sleep(2)
    assert [pid for pid in workers if psutil.pid_exists(pid)] == []
    assert [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-2:] == ["sleep", "30"]] == []


KILLING_PDR = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Revision: null-1"; exit 0; fi
case "$(pwd)" in *_40_-10_10_*) echo run >> COUNTER; kill -9 $PPID; sleep 5; exit 9;; esac
for f in pdrout.hdf pdrstruct_s.hdf5 pdrchem_c.hdf5 chemchk.out CTRL_IND; do echo "$f" > "pdroutput/$f"; done
echo mcdrt > Out/mrt.dat
"""


def test_a_run_lost_to_dead_workers_has_the_ledgers_state(tmp_path: Path) -> None:
    """One model kills its worker every time: the driver gives up on it and the ledger keeps it pending.
    The notebook's future must say the same state as `pdrflow status`, not invent a failure."""
    home = write_null_home(tmp_path / "home")
    counter = tmp_path / "killer-runs"
    (home / "pdrexe").write_text(KILLING_PDR.replace("COUNTER", str(counter)))
    config = write_config(tmp_path / "grid.yaml", base_config(tmp_path, home=home))
    grid = pdrflow.Grid.open(config)
    run = grid.submit()
    error = run.futures["100_40_-10_10_00"].exception(timeout=240)
    run.wait(timeout=120)
    assert isinstance(error, pdrflow.JobFailed) and "run lost" in error.reason
    ledger_state = ledger_rows(tmp_path / "ledger.sqlite", "SELECT state FROM jobs WHERE name = '100_40_-10_10_00'")
    assert ledger_state == [("pending",)]
    assert error.state == "pending"
    assert grid.status().loc["100_40_-10_10_00", "state"] == error.state
    # The driver alone retries lost runs (LOST_RUN_RETRIES = 2): three runs, each one recorded in the ledger.
    # Dask left to its default (allowed-failures 3) reruns the task on fresh workers before the driver hears of it.
    assert counter.read_text().count("run") == 3
    attempts = ledger_rows(tmp_path / "ledger.sqlite", "SELECT count(*) FROM attempts a JOIN jobs j ON a.job_id = j.id "
                           "WHERE j.name = '100_40_-10_10_00' AND a.kind = 'model'")
    assert attempts == [(3,)]
