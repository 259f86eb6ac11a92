"""The fault matrix (issue 7): every fault injected for real, end to end, then one consistency check.

Each scenario injects its fault into a real ``pdrflow run`` (real Dask workers, real ledger, real
archive), lets ONE documented command finish the grid (the faulted ``run`` itself, or
``pdrflow resubmit CFG`` after the cause is fixed) and ends with ``helpers.assert_consistent``:
every job archived, nothing left ``running``, each model archived exactly once and never computed
again after it, no temporary or partial file anywhere in the archive, every ledger row matching
the bytes on disk, and ``pdrflow verify CFG`` exiting 0.

Audit (fault → the end-to-end tests that cover it):

| fault                                   | covered by                                                                                   |
|-----------------------------------------|----------------------------------------------------------------------------------------------|
| sshd killed mid-transfer                | test_sftp_e2e.py::test_sshd_killed_and_restarted_during_a_run (tolerates leftover .part);     |
|                                         | here: test_fault_matrix.py::test_sshd_killed_mid_transfer (strict: no temporaries)           |
| link cut after N bytes                  | test_sftp_e2e.py::test_a_link_cut_mid_transfer_is_failed_storage_and_resubmit_archives_...   |
|                                         | (no temporaries check); here: test_fault_matrix.py::test_link_cut_after_n_bytes              |
| slow link                               | only at storage level (test_sftp_storage.py::test_several_files_in_flight_beat_...);         |
|                                         | here: test_fault_matrix.py::test_slow_link                                                   |
| permission denied on the archive        | test_sftp_e2e.py::test_permission_denied_is_failed_storage_with_the_reason (never finished); |
|                                         | here: test_fault_matrix.py::test_permission_denied_mid_run (SFTP, non-root user) and         |
|                                         | test_fault_matrix.py::test_read_only_archive_mid_run (local, read-only bind mount: EROFS)    |
| disk full on the archive                | test_sftp_e2e.py::test_full_disk_is_failed_storage_with_the_reason (full from the start,     |
|                                         | never finished); here: test_fault_matrix.py::test_disk_full_mid_run (local tiny tmpfs)       |
| DB server stopped during commits        | test_ledger_databases.py::test_database_restarted_during_a_run_archives_every_job_exactly_once |
|                                         | (PostgreSQL, clean stop); here: test_fault_matrix.py::test_mariadb_killed_during_commits     |
| SQLite lock storm                       | none; here: test_fault_matrix.py::test_sqlite_lock_storm                                     |
| worker process killed mid-model         | only on SLURM (scancel, below); here: test_fault_matrix.py::test_worker_killed_mid_model     |
| worker killed before a computed job is  | none; here: test_fault_matrix.py::test_worker_killed_while_a_computed_job_archives (the     |
| archived                                | archival starts as its model ends: the kill lands while it copies 40 MB)                    |
| SLURM worker job scancel'd              | test_slurm.py::test_worker_job_cancelled_mid_model_reruns_it_elsewhere_once (it should end   |
|                                         | with assert_consistent; re-run with it once, it passed; not repeated here, for runtime)      |
| pending SLURM job cancelled             | test_slurm.py::test_worker_job_cancelled_while_pending_is_replaced (same note)               |
| walltime reached                        | test_slurm.py::test_walltime_shorter_than_the_grid_retires_workers_without_cutting_models    |
|                                         | (workers retire by --lifetime before the limit); here the limit is really reached (TIMEOUT): |
|                                         | test_slurm.py::test_walltime_reached_mid_model_reruns_the_model                              |
| driver kill -9 then restart             | test_pipeline.py::test_driver_killed_hard_then_resumed_recomputes_nothing_archived (the kill |
|                                         | lands anywhere; re-run with assert_consistent it failed 3 times of 4: temporaries left),     |
|                                         | test_slurm.py::test_driver_killed_then_restarted_cancels_its_orphaned_worker_jobs;           |
|                                         | here: test_fault_matrix.py::test_driver_kill_9_mid_archival_then_resume (the kill lands      |
|                                         | while an archival writes, every time)                                                        |
| scratch directory deleted before archival| test_pipeline.py::test_staged_outputs_gone_means_the_model_is_computed_again (between runs, |
|                                         | after failed_storage); here: test_fault_matrix.py::test_scratch_deleted_before_archival      |
|                                         | (a computed job of a driver killed before its archival; resume computes it again)          |
| stand-in PDR/onion failure              | test_quickstart.py::test_standin_pdr_failure_... / test_standin_onion_failure_... (never     |
|                                         | finished), test_pipeline.py::test_pdr_failure_is_failed_model_... (null PDR, resubmit);     |
|                                         | here: test_fault_matrix.py::test_standin_onion_failure_then_resubmit                          |
| executable missing mid-run              | none; here: test_fault_matrix.py::test_executable_missing_mid_run                            |

Every scenario uses small grids and the null KOSMA-tau (shell scripts from tests/helpers.py),
slowed down with ``sleep`` where a fault needs a window. Services (sshd, MariaDB, SLURM) are
started by tests/services; with ``CI=true`` a missing service or a refused mount is a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    assert_consistent,
    base_config,
    cli,
    files_under,
    finish_run,
    ledger_rows,
    privileged,
    slow_null_home,
    start_run,
    umount,
    wait_for,
    write_config,
)
from services import processes
from services.sshd import Sshd, SystemUser
from services.tcp_proxy import TcpProxy

from pdrflow.storage.base import PROBE_NAME

pytestmark = pytest.mark.timeout(240)

MODELS = 4


# ---- small tools ----------------------------------------------------------------------------------


def _count(db: Path, query: str, *params: Any) -> int:
    return int(ledger_rows(db, query, *params)[0][0])


def _mount(*argv: str) -> None:
    privileged("mount", *argv)


def _umount(path: Path) -> None:
    umount(path)


def _report(config: Path) -> dict[str, Any]:
    """What ``pdrflow status --json`` reports (counts, failed jobs with their reason), read straight from
    the SQLite ledger next to the config: the same rows, without starting another pdrflow process."""
    db = config.parent / "ledger.sqlite"
    counts = dict(ledger_rows(db, "select state, count(*) from jobs group by state"))
    failed = [{"name": name, "state": state, "reason": reason or ""} for name, state, reason in
              ledger_rows(db, "select name, state, reason from jobs where state != 'archived' order by name")]
    return {"counts": counts, "failed": failed}


def _archivals_of_failed(db: Path) -> list[int]:
    """Archive attempts of each failed_storage job: 1 when a persistent error failed it at once (issue 15)."""
    return [count for (count,) in ledger_rows(
        db, "select count(a.id) from jobs j join attempts a on a.job_id = j.id and a.kind = 'archive' "
            "where j.state = 'failed_storage' group by j.id")]


# ---- SFTP fixtures --------------------------------------------------------------------------------


@pytest.fixture
def ssh_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment for SFTP: a home without ~/.ssh, no agent, no password."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "SSH_AUTH_SOCK": "", "PDRFLOW_SFTP_PASSWORD": "", "PDR_STORAGE_PASSWORD": ""}


def sftp_storage(server: Sshd, known_hosts: Path, root: Path, **overrides: Any) -> dict[str, Any]:
    storage: dict[str, Any] = {
        "kind": "sftp", "host": server.host, "port": server.port, "username": "root", "root": str(root),
        "key_filename": str(server.client_key), "known_hosts": str(known_hosts), "connect_timeout": 5,
        "operation_timeout": 10, "files_in_flight": 4,
    }
    storage.update(overrides)
    return storage


# ---- network and archive server faults ------------------------------------------------------------


def test_slow_link(tmp_path: Path, null_home: Path, sshd: Sshd, ssh_env: dict[str, str]) -> None:
    """40 ms round trips and 250 kB/s per connection: slow, but every model is archived once."""
    home = slow_null_home(tmp_path, null_home, 0, pad_bytes=200_000)
    archive = tmp_path / "archive"
    with TcpProxy(sshd.port, delay=0.02) as proxy:
        proxy.bandwidth = 250_000
        known = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        config = write_config(tmp_path / "run.yaml", base_config(
            tmp_path, home=home, storage=sftp_storage(sshd, known, archive, port=proxy.port)))
        started = time.monotonic()
        done = cli("run", str(config), env=ssh_env)
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        assert proxy.forwarded > MODELS * 200_000  # the outputs really crossed the slow link
        assert elapsed > MODELS * 200_000 / 250_000 / 2  # ... and it was slow (two connections in parallel)
        proxy.bandwidth = None
        proxy.delay = 0.0
        summary = assert_consistent(config, env=ssh_env, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}
    assert set(summary["archive_attempts"].values()) == {1}  # slow is not failed: no retries needed


@pytest.mark.services
def test_sshd_killed_mid_transfer(tmp_path: Path, null_home: Path, ssh_env: dict[str, str]) -> None:
    """sshd (listener and sessions) SIGKILLed while a 2 MB file is being written, restarted 2 s later."""
    home = slow_null_home(tmp_path, null_home, 0, pad_bytes=2_000_000)
    archive = tmp_path / "archive"
    with Sshd(workdir=tmp_path / "sshd") as server, TcpProxy(server.port) as proxy:
        proxy.bandwidth = 1_000_000  # so that the kill lands in the middle of a file
        known = server.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        config = write_config(tmp_path / "run.yaml", base_config(
            tmp_path, home=home, storage=sftp_storage(server, known, archive, port=proxy.port),
            run={"archive_attempts": 30, "archive_backoff_initial": 0.3, "archive_backoff_max": 1.0}))
        db = tmp_path / "ledger.sqlite"
        driver = start_run(config, env=ssh_env)
        wait_for(lambda: _count(db, "select count(*) from attempts where kind='archive' and outcome='running'"),
              120, "an archival in progress", driver)
        # Kill once an upload is under way (a temporary file exists), not after a guessed delay: on a loaded
        # machine the archival's SSH login through the slow proxy can take longer than any fixed sleep.
        # The padded 2 MB pdr<J>.hdf takes 2 s through the proxy: its temporary is there long enough to kill into.
        wait_for(lambda: [p for p in files_under(archive) if ".pdrflow-" in p.name and p.name.startswith(".pdr1")],
                 60, "the large file's upload in progress", driver, interval=0.02)
        server.kill()
        partial_at_kill = [p for p in files_under(archive) if ".pdrflow-" in p.name]
        time.sleep(2.0)
        server.start()  # same port, same host key
        code, output = finish_run(driver)
        assert code == 0, output
        assert partial_at_kill, "the kill did not land mid-transfer (no partial file at that moment)"
        summary = assert_consistent(config, env=ssh_env, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}  # an upload outage never costs a model run


def test_link_cut_after_n_bytes(tmp_path: Path, null_home: Path, sshd: Sshd, ssh_env: dict[str, str]) -> None:
    """The link dies after 120 kB (mid-file) and stays down: failed_storage; healed, resubmit finishes."""
    home = slow_null_home(tmp_path, null_home, 0, pad_bytes=400_000)
    archive = tmp_path / "archive"
    with TcpProxy(sshd.port) as proxy:
        known = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        config = write_config(tmp_path / "run.yaml", base_config(
            tmp_path, home=home, storage=sftp_storage(sshd, known, archive, port=proxy.port, operation_timeout=3),
            run={"archive_attempts": 1}))
        proxy.cut_after(120_000)
        done = cli("run", str(config), env=ssh_env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert proxy.cut_event.is_set()
        report = _report(config)
        assert report["counts"] == {"failed_storage": MODELS}
        assert _count(tmp_path / "ledger.sqlite", "select count(*) from archived_files") == 0
        proxy.heal()
        fixed = cli("resubmit", str(config), env=ssh_env)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        summary = assert_consistent(config, env=ssh_env, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}


@pytest.fixture(scope="module")
def sftp_user() -> Iterator[SystemUser]:
    account = SystemUser.create(prefix="pdrfault")
    yield account
    account.remove()


def test_permission_denied_mid_run(
    tmp_path: Path, null_home: Path, sshd: Sshd, ssh_env: dict[str, str], sftp_user: SystemUser, public_dir: Path
) -> None:
    """After the first model is archived, the SFTP user loses write access to oniongrid/ (EACCES)."""
    home = slow_null_home(tmp_path, null_home, 1.5)
    root = public_dir / "archive"
    root.mkdir()
    shutil.chown(root, sftp_user.name, sftp_user.name)
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    config = write_config(tmp_path / "run.yaml", base_config(
        tmp_path, home=home, storage=sftp_storage(sshd, known, root, username=sftp_user.name),
        cluster={"n_workers": 1}, run={"archive_attempts": 2}))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config, env=ssh_env)
    wait_for(lambda: _count(db, "select count(*) from jobs where state='archived'"), 120, "a first archived model", driver)
    onion = root / "testgrid" / "oniongrid"
    shutil.chown(onion, "root", "root")  # 0755 root: the SFTP user can no longer create files in it
    code, output = finish_run(driver)
    assert code == 1, output
    report = _report(config)
    assert report["counts"].get("failed_storage", 0) >= 1, report
    assert all("permission denied" in job["reason"].lower() for job in report["failed"]), report["failed"]
    assert set(_archivals_of_failed(db)) == {1}  # persistent: failed at once, not retried (issue 15)
    shutil.chown(onion, sftp_user.name, sftp_user.name)  # access restored
    fixed = cli("resubmit", str(config), env=ssh_env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    summary = assert_consistent(config, env=ssh_env, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}  # only archivals were retried


def _remount_read_only(directory: Path) -> None:
    """A file open for writing (an upload in progress) makes the remount EBUSY: try again shortly."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode == 0:
            return
        if "busy" not in done.stderr or time.monotonic() > deadline:
            _mount("-o", "remount,ro,bind", str(directory))  # reports the refusal as the scenario requires
            return
        time.sleep(0.02)


def test_read_only_archive_mid_run(tmp_path: Path, null_home: Path) -> None:
    """After the first archived model the archive becomes a read-only bind mount (EROFS)."""
    home = slow_null_home(tmp_path, null_home, 1.5)
    archive = tmp_path / "archive"
    archive.mkdir()
    config = write_config(tmp_path / "run.yaml", base_config(
        tmp_path, home=home, cluster={"n_workers": 1}, run={"archive_attempts": 2}))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config)
    mounted = False
    try:
        wait_for(lambda: _count(db, "select count(*) from jobs where state='archived'"), 120, "a first archived model",
              driver)
        _mount("--bind", str(archive), str(archive))
        mounted = True
        _remount_read_only(archive)
        code, output = finish_run(driver)
        assert code == 1, output
        report = _report(config)
        assert report["counts"].get("failed_storage", 0) >= 1, report
        assert all("read-only file system" in job["reason"].lower() for job in report["failed"]), report["failed"]
        assert set(_archivals_of_failed(db)) == {1}  # persistent: failed at once, not retried (issue 15)
    finally:
        if mounted:
            _umount(archive)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    fixed = cli("resubmit", str(config))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    summary = assert_consistent(config, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}


def test_disk_full_mid_run(tmp_path: Path, null_home: Path) -> None:
    """A 400 kB tmpfs archive fills up part-way through the third model: ENOSPC mid-job."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk))
    try:
        config = write_config(tmp_path / "run.yaml", base_config(
            tmp_path, home=null_home, storage={"root": str(disk / "archive")}, run={"archive_attempts": 2}))
        done = cli("run", str(config))
        assert done.returncode == 1, done.stdout + done.stderr
        report = _report(config)
        assert report["counts"].get("failed_storage", 0) >= 1, report
        assert all("no space left on device" in job["reason"].lower() for job in report["failed"]), report["failed"]
        # persistent: failed at once, not retried (issue 15)
        assert set(_archivals_of_failed(tmp_path / "ledger.sqlite")) == {1}
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True, capture_output=True, timeout=30)
        fixed = cli("resubmit", str(config))
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        summary = assert_consistent(config, models=MODELS)
        assert set(summary["model_runs"].values()) == {1}
    finally:
        _umount(disk)


# ---- ledger faults --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Any]:
    from services.databases import remove_server, start_server

    server = start_server("mariadb")
    yield server
    remove_server(server)


def test_mariadb_killed_during_commits(tmp_path: Path, null_home: Path, mariadb: Any) -> None:
    """mariadbd SIGKILLed (crash, no shutdown) while archivals commit, back 3 s later: the same run finishes."""
    from services.databases import APP_PASSWORD, crash_server
    from sqlalchemy import create_engine, text

    mariadb.reset()
    env = {"PDRFLOW_DB_PASSWORD": APP_PASSWORD}
    home = slow_null_home(tmp_path, null_home, 0.7)
    document = base_config(tmp_path, home=home, database={"url": mariadb.url})
    document["grid"]["fuv"] = [1.0, 10.0, 100.0, 1000.0]
    config = write_config(tmp_path / "run.yaml", document)

    def archived() -> int:
        engine = create_engine(mariadb.url_with_password)
        try:
            with engine.connect() as connection:
                return int(connection.execute(text("select count(*) from jobs where state='archived'")).scalar_one())
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            return 0
        finally:
            engine.dispose()

    driver = start_run(config, env=env)
    wait_for(lambda: archived() >= 2, 120, "two archived models", driver)
    crash_server(mariadb)
    time.sleep(3)
    mariadb.start()
    code, output = finish_run(driver, 220)
    assert code == 0, output
    summary = assert_consistent(config, env=env, models=8)
    assert sum(summary["model_ok"].values()) == 8  # each model computed successfully exactly once


def test_sqlite_lock_storm(tmp_path: Path, null_home: Path) -> None:
    """Another process holds write transactions on the ledger again and again (up to 0.6 s each)."""
    home = slow_null_home(tmp_path, null_home, 0.5)
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home))
    db = tmp_path / "ledger.sqlite"
    stop = threading.Event()
    held: list[float] = []

    def storm() -> None:
        connection = sqlite3.connect(db, timeout=60, isolation_level=None)
        rng = random.Random(7)
        try:
            while not stop.is_set():
                connection.execute("BEGIN IMMEDIATE")  # the write lock, as a busy writer holds it
                connection.execute("update grids set name = name")
                hold = rng.uniform(0.1, 0.6)
                time.sleep(hold)
                connection.execute("COMMIT")
                held.append(hold)
                time.sleep(0.01)
        finally:
            connection.close()

    driver = start_run(config)
    wait_for(lambda: _count(db, "select count(*) from jobs"), 120, "the grid registered", driver)
    stormer = threading.Thread(target=storm)
    stormer.start()
    try:
        code, output = finish_run(driver, 220)
    finally:
        stop.set()
        stormer.join(30)
    assert code == 0, output
    assert sum(held) > 2, held  # the storm really held the lock for a good part of the run
    summary = assert_consistent(config, models=MODELS)
    assert set(summary["model_runs"].values()) == {1}


# ---- worker and scratch faults (LocalCluster) -------------------------------------------------------


def test_worker_killed_mid_model(tmp_path: Path, null_home: Path) -> None:
    """SIGKILL of the Dask worker process running a model: the model runs again elsewhere, once."""
    home = slow_null_home(tmp_path, null_home, 3)
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home))
    driver = start_run(config)
    steps = wait_for(lambda: processes.kosma_steps(tmp_path / "scratch"), 120, "a model running", driver)
    step, worker, _ = steps[0]
    os.kill(worker, signal.SIGKILL)
    # The killed worker's KOSMA-tau step dies with it (parent-death signal), long before its 3 s are up.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and processes.running(step):
        time.sleep(0.05)
    assert not processes.running(step), "the killed worker's KOSMA-tau step still runs"
    code, output = finish_run(driver)
    assert code == 0, output
    summary = assert_consistent(config, models=MODELS)
    assert sum(summary["model_runs"].values()) >= MODELS + 1, summary  # the killed run was redone
    assert set(summary["model_ok"].values()) == {1}
    assert not processes.kosma_steps(tmp_path / "scratch"), "a KOSMA-tau step of the killed worker still runs"


def test_worker_killed_while_a_computed_job_archives(tmp_path: Path, null_home: Path) -> None:
    """One worker; SIGKILL of it while the archival of a computed job copies and hashes its 40 MB of
    staged outputs (the next model runs alongside). The archival is given to the replacement worker
    and archives the staged outputs: no model is computed again."""
    home = slow_null_home(tmp_path, null_home, 1, pad_bytes=40_000_000)  # a 40 MB file: a wide window
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home, cluster={"n_workers": 1}))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config)
    archiving = wait_for(lambda: ledger_rows(db, "select job_id from attempts where kind = 'archive' and "
                                                 "outcome = 'running'"), 120, "an archival running", driver)
    workers = processes.spawned_children(driver.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    code, output = finish_run(driver)
    assert code == 0, output
    summary = assert_consistent(config, models=MODELS)
    assert set(summary["model_ok"].values()) == {1}, summary  # archived from the staged outputs, not recomputed
    job = archiving[0][0]
    outcomes = [outcome for (outcome,) in ledger_rows(db, f"select outcome from attempts where job_id = {job} and "
                                                          "kind = 'archive' order by id")]
    assert outcomes[0] != "ok" and outcomes[-1] == "ok", outcomes  # the kill cut that archival; a later one did it


def test_scratch_deleted_before_archival(tmp_path: Path, null_home: Path) -> None:
    """A computed job's scratch directory vanishes before it is archived: the driver is killed (kill -9 of
    its process group) once a job is computed, its staged outputs are deleted, and ``pdrflow resume``
    archives the rest and computes that model again, and only that one."""
    home = slow_null_home(tmp_path, null_home, 1, pad_bytes=40_000_000)  # its archival takes a while
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home, cluster={"n_workers": 1}))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config)
    wait_for(lambda: ledger_rows(db, "select id from jobs where state = 'computed'"), 120, "a computed job", driver)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    computed = ledger_rows(db, "select id, name, staged_dir from jobs where state = 'computed'")
    assert computed, "the archival finished before the kill"
    _job_id, name, staged = computed[0]
    shutil.rmtree(staged)
    resumed = cli("resume", str(config))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = assert_consistent(config, models=MODELS)
    assert summary["model_ok"][name] == 2, summary  # its outputs were gone: computed again
    assert {n: c for n, c in summary["model_ok"].items() if n != name} == {
        n: 1 for n in summary["model_ok"] if n != name}


def test_standin_onion_failure_then_resubmit(tmp_path: Path) -> None:
    """The stand-in's onion for C fails (after CO and C+ ran); resubmit without the fault finishes.

    (A failing PDR step followed by ``resubmit`` is test_pipeline.py::test_pdr_failure_is_failed_model_...)"""
    document = base_config(tmp_path, home=None)
    document["grid"]["density"] = [1.0e3]
    document["kosma_tau"]["onion_species"] = ["CO", "C+", "C"]
    config = write_config(tmp_path / "run.yaml", document)
    first = cli("run", str(config), env={"PDRFLOW_STANDIN_FAIL": "onion:C"})
    assert first.returncode == 1, first.stdout + first.stderr
    report = _report(config)
    assert report["counts"] == {"failed_model": 2}
    assert all("onion for C exited" in job["reason"] for job in report["failed"])
    assert files_under(tmp_path / "archive") == []  # nothing of a failed model reaches the archive
    fixed = cli("resubmit", str(config))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    summary = assert_consistent(config, models=2, files_per_model=9 + 7 * 3)
    assert set(summary["model_runs"].values()) == {2}
    assert set(summary["model_ok"].values()) == {1}


def test_executable_missing_mid_run(tmp_path: Path, null_home: Path) -> None:
    """pdrexe disappears from the installation after the first model: failed_model; back, resubmit finishes."""
    home = slow_null_home(tmp_path, null_home, 1)
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home, cluster={"n_workers": 1}))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config)
    wait_for(lambda: _count(db, "select count(*) from jobs where state='archived'"), 120, "a first archived model", driver)
    (home / "pdrexe").rename(home / "pdrexe.away")
    try:
        code, output = finish_run(driver)
    finally:
        (home / "pdrexe.away").rename(home / "pdrexe")
    assert code == 1, output
    report = _report(config)
    assert report["counts"].get("failed_model", 0) >= 1, report
    assert all("pdrexe" in job["reason"] for job in report["failed"]), report["failed"]
    fixed = cli("resubmit", str(config))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    summary = assert_consistent(config, models=MODELS)
    assert set(summary["model_ok"].values()) == {1}


# ---- driver and batch-system faults ---------------------------------------------------------------


def test_driver_kill_9_mid_archival_then_resume(tmp_path: Path, null_home: Path) -> None:
    """kill -9 of the driver's whole process group (driver, scheduler, workers) while an archival is
    writing its files; ``pdrflow resume`` finishes without computing anything again."""
    home = slow_null_home(tmp_path, null_home, 0.5, pad_bytes=40_000_000)  # a 40 MB file: a wide window
    config = write_config(tmp_path / "run.yaml", base_config(tmp_path, home=home, cluster={"n_workers": 1}))
    archive = tmp_path / "archive"
    driver = start_run(config)
    # An archival's temporary, not the preflight probe's (also a ".pdrflow-" name, written before any model runs)
    wait_for(lambda: [p for p in files_under(archive) if ".pdrflow-" in p.name and PROBE_NAME not in p.name], 120,
             "an archival writing", driver)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    partial_at_kill = [p for p in files_under(archive) if ".pdrflow-" in p.name and PROBE_NAME not in p.name]
    resumed = cli("resume", str(config))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert partial_at_kill, "the kill did not land mid-archival"
    summary = assert_consistent(config, models=MODELS)
    assert set(summary["model_ok"].values()) == {1}  # no model computed twice
