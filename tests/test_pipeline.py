"""End to end through the real CLI: real Dask LocalCluster, real SQLite ledger, real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import base_config, cli, files_under, ledger_rows, status, verify, write_config

MODELS = 4
FILES_PER_MODEL = 9 + 7 * 4  # 8 pdrgrid files + MCDRT tarball, 6 onion files + TEXTOUT per species


def test_grid_is_archived_with_contract_names_and_verified(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home))
    done = cli("run", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    archive = tmp_path / "archive" / "testgrid"
    assert (archive / "pdrgrid" / "pdrstruct100_30_-10_10_00.hdf5").is_file()
    assert (archive / "pdrgrid" / "MCDRT100_40_-10_20_00.tar.gz").is_file()
    assert (archive / "oniongrid" / "ONION100_30_-10_10_00.jerg_C+.smli").read_text() == "C+\n"
    assert (archive / "oniongrid" / "TEXTOUT100_30_-10_10_00_CO").read_text().startswith("null onionexe CO")
    # onion modified the structure file after the PDR run, once per species, before archival
    structure = (archive / "pdrgrid" / "pdrstruct100_30_-10_10_00.hdf5").read_text()
    assert structure.count("onion ") == 4
    assert len(files_under(tmp_path / "archive")) == MODELS * FILES_PER_MODEL
    assert not [p for p in files_under(tmp_path / "archive") if ".pdrflow-" in p.name]  # no temporaries left

    db = tmp_path / "ledger.sqlite"
    assert ledger_rows(db, "select state, count(*) from jobs group by state") == [("archived", MODELS)]
    recorded = ledger_rows(db, "select path, size, sha256 from archived_files")
    assert len(recorded) == MODELS * FILES_PER_MODEL
    for path, size, digest in recorded:
        data = (tmp_path / "archive" / path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
    assert not any((tmp_path / "scratch").iterdir())  # scratch removed once archived

    shown = cli("show", str(config), "100_30_-10_10_00", "--json")
    assert shown.returncode == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert details["state"] == "archived" and len(details["files"]) == FILES_PER_MODEL
    provenance = details["provenance"]
    assert provenance["pdr_executable"]["revision"] == "null-1"
    assert provenance["pdr_executable"]["compiled"] == "Nov 28 2026 at 12:00:00"
    assert provenance["pdr_executable"]["sha256"] == hashlib.sha256((null_home / "pdrexe").read_bytes()).hexdigest()
    assert provenance["exit_codes"] == {"pdr": 0, "onion": {"CO": 0, "C+": 0, "C": 0, "O": 0}}
    assert provenance["model"]["parameters"]["xnsur"] == 1000.0
    assert [a["kind"] for a in details["attempts"]] == ["model", "archive"]

    report = verify(config)
    assert report == {"grid": "testgrid", "checked": MODELS * FILES_PER_MODEL, "ok": MODELS * FILES_PER_MODEL,
                      "missing": [], "mismatched": [], "returncode": 0}

    # A rerun of the same config does no model work and exits 0.
    again = cli("run", str(config))
    assert again.returncode == 0, again.stdout + again.stderr
    assert status(config)["attempts"] == {"model": MODELS, "archive": MODELS}

    # verify notices a changed and a missing file.
    (archive / "pdrgrid" / "CTRL_IND100_30_-10_10_00").write_text("tampered\n")
    (archive / "pdrgrid" / "chemchk100_40_-10_10_00.out").unlink()
    report = verify(config)
    assert report["returncode"] == 1
    assert report["missing"] == ["testgrid/pdrgrid/chemchk100_40_-10_10_00.out"]
    assert report["mismatched"] == ["testgrid/pdrgrid/CTRL_IND100_30_-10_10_00"]


def test_pdr_failure_is_failed_model_without_onion_and_keeps_textout(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home))
    done = cli("run", str(config), env={"NULL_PDR_FAIL": "1"})
    assert done.returncode == 1
    assert "failed_model" in done.stdout and "exited with code 7" in done.stdout
    report = status(config)
    assert report["counts"] == {"failed_model": MODELS}
    assert report["attempts"] == {"model": MODELS, "archive": 0}
    assert all("PDR (pdrexe) exited with code 7" in job["reason"] for job in report["failed"])
    kept = sorted((tmp_path / "scratch").iterdir())
    assert len(kept) == MODELS
    for scratch in kept:
        assert "failing on request" in (scratch / "pdroutput" / "TEXTOUT").read_text()
        assert (scratch / "PDRNEW.INP").is_file() and (scratch / "pdr_config.json").is_file()
        assert not any((scratch / "onionoutput").iterdir())  # onion never ran
        assert not (scratch / "CTRL_IND").exists()
    assert files_under(tmp_path / "archive") == []

    # After fixing the cause, resubmit runs the models again and archives them.
    fixed = cli("resubmit", str(config))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert status(config)["counts"] == {"archived": MODELS}


def _archive_broken_by_the_first_model(tmp_path: Path, null_home: Path, blocker: Path) -> Path:
    """A home whose first model run puts a regular file where ``blocker`` (a directory) is: the fault appears after
    the preflight found the archive writable, as an outage does, and every upload then fails
    ("Not a directory") until the test removes the file."""
    home = tmp_path / "breaking-home"
    shutil.copytree(null_home, home, symlinks=True)
    pdr = home / "pdrexe"
    breaker = (f"if mkdir {tmp_path / 'broken-once'} 2>/dev/null; then rm -rf {blocker}; "
               f"echo 'a regular file where a directory should be' > {blocker}; fi")
    pdr.write_text(pdr.read_text().replace('echo "null pdrexe: not KOSMA-tau"', breaker))
    return home


def test_archive_failure_is_failed_storage_and_resubmit_archives_without_rerun(tmp_path: Path, null_home: Path) -> None:
    blocker = tmp_path / "archive" / "testgrid"  # the grid's directory in the archive
    home = _archive_broken_by_the_first_model(tmp_path, null_home, blocker)
    config = write_config(
        tmp_path / "run.yaml",
        base_config(tmp_path, home=home, storage={"root": str(blocker.parent)}, run={"archive_attempts": 2}),
    )
    done = cli("run", str(config))
    assert done.returncode == 1
    report = status(config)
    assert report["counts"] == {"failed_storage": MODELS}
    assert report["attempts"] == {"model": MODELS, "archive": 2 * MODELS}
    assert all("Not a directory" in job["reason"] for job in report["failed"]), report["failed"]
    assert blocker.read_text().startswith("a regular file")  # nothing written through it

    blocker.unlink()  # the archive is fixed
    fixed = cli("resubmit", str(config))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    report = status(config)
    assert report["counts"] == {"archived": MODELS}
    assert report["attempts"]["model"] == MODELS  # no model was recomputed
    assert verify(config)["ok"] == MODELS * FILES_PER_MODEL


def test_storage_outage_that_heals_during_the_run_ends_archived(tmp_path: Path, null_home: Path) -> None:
    blocker = tmp_path / "archive" / "testgrid"  # the grid's directory in the archive
    home = _archive_broken_by_the_first_model(tmp_path, null_home, blocker)
    config = write_config(
        tmp_path / "run.yaml",
        base_config(tmp_path, home=home, storage={"root": str(blocker.parent)},
                    run={"archive_attempts": 30, "archive_backoff_initial": 0.3, "archive_backoff_max": 0.6}),
    )
    process = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)

    def heal_when_failures_show() -> None:
        db = tmp_path / "ledger.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                failed = ledger_rows(db, "select count(*) from attempts where kind='archive' and outcome='failed'")
                if failed[0][0] >= MODELS:
                    break
            except sqlite3.Error:  # the schema may not exist yet
                pass
            time.sleep(0.1)
        blocker.unlink()

    healer = threading.Thread(target=heal_when_failures_show)
    healer.start()
    output, _ = process.communicate(timeout=180)
    healer.join()
    assert process.returncode == 0, output
    report = status(config)
    assert report["counts"] == {"archived": MODELS}
    assert report["attempts"]["model"] == MODELS
    assert report["attempts"]["archive"] > MODELS  # the outage was really seen
    assert verify(config)["returncode"] == 0


def test_staged_outputs_gone_means_the_model_is_computed_again(tmp_path: Path, null_home: Path) -> None:
    blocker = tmp_path / "archive" / "testgrid"  # the grid's directory in the archive
    home = _archive_broken_by_the_first_model(tmp_path, null_home, blocker)
    config = write_config(
        tmp_path / "run.yaml",
        base_config(tmp_path, home=home, storage={"root": str(blocker.parent)}, run={"archive_attempts": 1}),
    )
    assert cli("run", str(config)).returncode == 1
    for scratch in (tmp_path / "scratch").iterdir():
        shutil.rmtree(scratch)
    blocker.unlink()
    done = cli("resubmit", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    report = status(config)
    assert report["counts"] == {"archived": MODELS}
    assert report["attempts"]["model"] == 2 * MODELS
    assert verify(config)["returncode"] == 0


def test_ctrl_c_leaves_nothing_running(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=_slow_home(tmp_path, null_home, 30)))
    process = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    db = tmp_path / "ledger.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ledger_rows(db, "select count(*) from jobs where state='running'")[0][0] >= 2:
                break
        except sqlite3.Error:  # the schema may not exist yet
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("no job started running")
    os.killpg(process.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 130, output
    assert ledger_rows(db, "select count(*) from jobs where state='running'") == [(0,)]
    assert ledger_rows(db, "select count(*) from attempts where outcome='running'") == [(0,)]
    assert ledger_rows(db, "select state, count(*) from jobs group by state") == [("pending", MODELS)]


def _slow_home(tmp_path: Path, null_home: Path, seconds: int) -> Path:
    slow_home = tmp_path / "slow-home"
    shutil.copytree(null_home, slow_home, symlinks=True)
    pdr = slow_home / "pdrexe"
    pdr.write_text(pdr.read_text().replace('echo "null pdrexe: not KOSMA-tau"', f"sleep {seconds}"))
    return slow_home


def _wait_for(db: Path, query: str, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ledger_rows(db, query)[0][0] >= at_least:
                return
        except sqlite3.Error:  # the schema may not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {query}")


def test_a_second_driver_on_the_same_grid_is_refused(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=_slow_home(tmp_path, null_home, 5)))
    first = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    _wait_for(tmp_path / "ledger.sqlite", "select count(*) from jobs where state='running'", 1)
    second = cli("run", str(config))
    assert second.returncode == 2
    assert "is being run by another driver" in second.stderr
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert status(config)["attempts"]["model"] == MODELS  # the refused driver ran nothing


def test_driver_killed_hard_then_resumed_recomputes_nothing_archived(tmp_path: Path, null_home: Path) -> None:
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=_slow_home(tmp_path, null_home, 2),
                                                             cluster={"n_workers": 1}))
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    db = tmp_path / "ledger.sqlite"
    _wait_for(db, "select count(*) from jobs where state='archived'", 1)
    os.killpg(driver.pid, signal.SIGKILL)  # driver, scheduler and workers die at once
    driver.wait()
    archived_before = {name for (name,) in ledger_rows(db, "select name from jobs where state='archived'")}
    assert 1 <= len(archived_before) < MODELS
    resumed = cli("resume", str(config))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "took over the grid from a stopped driver" in resumed.stdout
    assert ledger_rows(db, "select state, count(*) from jobs group by state") == [("archived", MODELS)]
    for name in archived_before:  # no archived model ran again
        assert ledger_rows(db, "select count(*) from attempts a join jobs j on a.job_id = j.id "
                               "where j.name = ? and a.kind = 'model'", name) == [(1,)]
    assert ledger_rows(db, "select count(*) from attempts where outcome='running'") == [(0,)]
    assert verify(config)["returncode"] == 0


def test_workers_run_without_the_profiler_on_interpreters_that_deadlock(tmp_path: Path) -> None:
    """gh-106883: on CPython < 3.11.9 the worker profiler can hang a worker for good."""
    import dask.config
    from distributed import Client, LocalCluster

    from pdrflow.cli import worker_safety_config

    settings = worker_safety_config()
    if sys.version_info < (3, 11, 9):
        assert settings == {"distributed.worker.profile.enabled": False}
    with dask.config.set(settings), LocalCluster(n_workers=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        enabled = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert set(enabled.values()) == {settings.get("distributed.worker.profile.enabled", True)}


def test_a_run_task_dask_runs_again_after_losing_its_result_hands_back_the_staged_model(
    tmp_path: Path, null_home: Path
) -> None:
    """Dask runs a finished task again when the worker holding its result died before the driver
    fetched it. The model is computed and staged by then: the second run hands back its manifest
    (pinned to the worker that runs it) without computing it again; staged outputs gone → computed again."""
    import shutil

    from pdrflow.config import load_config
    from pdrflow.ledger.open import open_ledger
    from pdrflow.plan import plan_run
    from pdrflow.tasks.run import run_model
    from pdrflow.tasks.types import ModelJob

    config = load_config(write_config(tmp_path / "run.yaml", base_config(tmp_path, home=null_home)))
    plan = plan_run(config)
    ledger = open_ledger(config.database)
    try:
        ledger.register_grid(config.grid.name, plan.specs.values())
        job = ledger.jobs(config.grid.name)[0]
        model = ModelJob(job.id, plan.specs[job.model_hash])
        first = run_model(model, plan.settings)
        again = run_model(model, plan.settings)
        assert again.files == first.files and again.scratch_dir == first.scratch_dir
        assert ledger.job(job.id).state == "computed"
        db = tmp_path / "ledger.sqlite"
        assert ledger_rows(db, "select count(*) from attempts where kind='model'") == [(1,)]
        shutil.rmtree(first.scratch_dir)  # the staged outputs went with the worker's node
        third = run_model(model, plan.settings)
        assert third.scratch_dir != first.scratch_dir and ledger.job(job.id).state == "computed"
        assert ledger_rows(db, "select count(*) from attempts where kind='model' and outcome='ok'") == [(2,)]
    finally:
        ledger.close()
