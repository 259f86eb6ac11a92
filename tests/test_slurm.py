"""pdrflow on a real single-node SLURM started by the tests (no mocks of sbatch)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    assert_consistent,
    base_config,
    cli,
    finish_run,
    ledger_rows,
    slow_null_home,
    start_run,
    status,
    verify,
    wait_for,
    write_config,
)
from services.slurm import Slurm, start_slurm
from services.sshd import Sshd
from services.tcp_proxy import TcpProxy
from test_fault_matrix import sftp_storage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    cluster = start_slurm()
    yield cluster
    cluster.stop()


def _slurm_config(tmp_path: Path, home: Path, **cluster: object) -> dict:
    config = base_config(tmp_path, home=home, cluster={
        "kind": "slurm", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00",
        "interface": "lo", "max_jobs": 2, "local_directory": str(tmp_path / "worker-space"),
        "log_directory": str(tmp_path / "worker-logs"), "dashboard_address": "127.0.0.1:0",
    })
    config["cluster"].pop("n_workers", None)
    config["cluster"].update(cluster)
    return config


def _slow_home(tmp_path: Path, null_home: Path, seconds: float) -> Path:
    home = tmp_path / "slow-home"
    subprocess.run(["cp", "-a", str(null_home), str(home)], check=True, timeout=30)
    pdr = home / "pdrexe"
    pdr.write_text(pdr.read_text().replace('echo "null pdrexe: not KOSMA-tau"', f"sleep {seconds}"))
    return home


def _wait(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> None:
    wait_for(predicate, timeout, what, interval=0.3)  # predicates here often run squeue: poll gently


def _stopped_taking_models(log_directory: Path) -> dict[str, datetime]:
    """Each worker's moment (UTC, as the ledger's times) of taking no more models, from the line its SLURM
    job's log has from pdrflow then."""
    pattern = re.compile(r" - pdrflow\.tasks\.retirement - INFO - worker (\S+) stopped taking models at (\S+ \S+) UTC;")
    stopped = {}
    for log in log_directory.glob("*.err"):
        for match in filter(None, map(pattern.search, log.read_text().splitlines())):
            stopped[match[1]] = datetime.fromisoformat(match[2])
    return stopped


def _active(slurm: Slurm) -> list[tuple[str, str, str]]:
    return [job for job in slurm.jobs() if job[2] in ("PENDING", "RUNNING", "CONFIGURING")]


def test_grid_on_slurm_workers_is_archived_and_leaves_no_jobs(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, null_home))
    done = cli("run", str(config), env={"SLURM_CONF": str(slurm.conf)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dask dashboard: http://" in done.stdout
    assert "from your laptop: ssh -N -L " in done.stdout  # the tunnel line on a cluster
    assert status(config)["counts"] == {"archived": 4}
    assert verify(config)["returncode"] == 0
    db = tmp_path / "ledger.sqlite"
    recorded = ledger_rows(db, "select external_id, ended_at is not null from worker_jobs")
    assert recorded and all(ended for _, ended in recorded)
    ran_in = {row[0] for row in ledger_rows(db, "select slurm_job_id from attempts where kind='model'")}
    assert ran_in <= {job_id for job_id, _ in recorded} and None not in ran_in  # models ran inside worker jobs
    _wait(lambda: not _active(slurm), 30, "worker jobs to leave the queue")


def test_impossible_requests_are_refused_before_any_sbatch(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    env = {"SLURM_CONF": str(slurm.conf)}
    too_big = write_config(tmp_path / "big.yaml", _slurm_config(tmp_path / "a", null_home, memory="64GB"))
    done = cli("run", str(too_big), env=env)
    assert done.returncode == 2
    assert "cluster.memory: 64GB per worker job is more than the largest node of partition debug has (8192 MB)" \
        in done.stderr
    nowhere = write_config(tmp_path / "nowhere.yaml", _slurm_config(tmp_path / "b", null_home, queue="gpu"))
    done = cli("run", str(nowhere), env=env)
    assert done.returncode == 2 and "cluster.queue: no SLURM partition 'gpu' (partitions: debug)" in done.stderr
    assert _active(slurm) == []


def test_worker_job_cancelled_mid_model_reruns_it_elsewhere_once(
    tmp_path: Path, null_home: Path, slurm: Slurm
) -> None:
    home = _slow_home(tmp_path, null_home, 6)
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, home))
    db = tmp_path / "ledger.sqlite"
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "SLURM_CONF": str(slurm.conf)})
    _wait(lambda: ledger_rows(db, "select count(*) from attempts where kind='model' and outcome='running' "
                                  "and slurm_job_id is not null")[0][0] >= 1, 120, "a model running in a worker job")
    victim = ledger_rows(db, "select slurm_job_id from attempts where kind='model' and outcome='running' "
                             "and slurm_job_id is not null limit 1")[0][0]
    assert slurm.run("scancel", victim).returncode == 0
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    report = status(config)
    assert report["counts"] == {"archived": 4}
    assert report["attempts"]["model"] > 4  # the cancelled model ran again
    assert ledger_rows(db, "select count(*) from attempts where kind='archive' and outcome='ok'") == [(4,)]
    assert ledger_rows(db, "select count(distinct path), count(*) from archived_files") == [(4 * 37, 4 * 37)]
    assert verify(config)["returncode"] == 0


def test_driver_killed_then_restarted_cancels_its_orphaned_worker_jobs(
    tmp_path: Path, null_home: Path, slurm: Slurm
) -> None:
    home = _slow_home(tmp_path, null_home, 4)
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, home))
    db = tmp_path / "ledger.sqlite"
    env = {**os.environ, "SLURM_CONF": str(slurm.conf)}
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    _wait(lambda: ledger_rows(db, "select count(*) from worker_jobs")[0][0] >= 1, 120, "a recorded worker job")
    orphans = {row[0] for row in ledger_rows(db, "select external_id from worker_jobs")}
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert orphans & {job_id for job_id, _, _ in _active(slurm)}  # still queued after the driver died
    foreign = slurm.run("sbatch", "--parsable", "--wrap", "sleep 120", "-o", "/dev/null").stdout.strip()
    done = cli("run", str(config), env={"SLURM_CONF": str(slurm.conf)})
    assert done.returncode == 0, done.stdout + done.stderr
    still = {job_id for job_id, _, _ in _active(slurm)}
    assert not orphans & still  # ours were cancelled ...
    assert foreign in still  # ... and no one else's
    slurm.run("scancel", foreign)
    assert status(config)["counts"] == {"archived": 4}


def test_driver_sbatch_script_runs_the_grid(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, null_home))
    pdrflow = str(Path(sys.executable).parent / "pdrflow")
    submitted = slurm.run("sbatch", "--parsable", "--mem=1G", f"--export=ALL,PDRFLOW={pdrflow}",
                          f"--output={tmp_path / 'driver-%j.out'}", str(REPO / "slurm" / "pdrflow-driver.sbatch"),
                          str(config))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    _wait(lambda: job_id not in {j for j, _, _ in slurm.jobs()}, 240, "the driver job to finish")
    log = (tmp_path / f"driver-{job_id}.out").read_text()
    assert status(config)["counts"] == {"archived": 4}, log
    assert verify(config)["returncode"] == 0


def test_worker_job_cancelled_while_pending_is_replaced(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    blocker = slurm.run("sbatch", "--parsable", "--mem=8192", "--wrap", "sleep 300", "-o", "/dev/null").stdout.strip()
    _wait(lambda: (blocker, "wrap", "RUNNING") in slurm.jobs(), 30, "the blocker job to run")
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, null_home, max_jobs=1))
    db = tmp_path / "ledger.sqlite"
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "SLURM_CONF": str(slurm.conf)})
    try:
        _wait(lambda: ledger_rows(db, "select count(*) from worker_jobs")[0][0] >= 1, 120, "a recorded worker job")
        (first,) = ledger_rows(db, "select external_id from worker_jobs")[0]
        assert (first, "PENDING") in {(j, state) for j, _, state in slurm.jobs()}  # no room: it waits
        slurm.run("scancel", first)  # cancelled while pending: dask-jobqueue alone never notices
        _wait(lambda: ledger_rows(db, "select count(*) from worker_jobs where external_id != ?", first)[0][0] >= 1,
              120, "a replacement worker job")
    finally:
        slurm.run("scancel", blocker)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert status(config)["counts"] == {"archived": 4}
    assert ledger_rows(db, "select ended_at is not null from worker_jobs where external_id = ?", first) == [(1,)]


def test_allocation_sbatch_script_runs_the_grid_with_slurm_runner(
    tmp_path: Path, null_home: Path, slurm: Slurm
) -> None:
    config = base_config(tmp_path, home=null_home, cluster={"kind": "allocation", "interface": "lo",
                                                              "dashboard_address": "127.0.0.1:0"})
    config["cluster"].pop("n_workers", None)
    path = write_config(tmp_path / "run.yaml", config)
    pdrflow = str(Path(sys.executable).parent / "pdrflow")
    submitted = slurm.run("sbatch", "--parsable", "-n", "4", "--mem-per-cpu=500M", f"--chdir={tmp_path}",
                          f"--export=ALL,PDRFLOW={pdrflow}", f"--output={tmp_path / 'grid-%j.out'}",
                          str(REPO / "slurm" / "pdrflow-allocation.sbatch"), str(path))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    _wait(lambda: job_id not in {j for j, _, _ in slurm.jobs()}, 240, "the allocation to finish")
    log = (tmp_path / f"grid-{job_id}.out").read_text()
    assert status(path)["counts"] == {"archived": 4}, log
    db = tmp_path / "ledger.sqlite"
    assert {row[0] for row in ledger_rows(db, "select slurm_job_id from attempts where kind='model'")} == {job_id}
    assert verify(path)["returncode"] == 0


NOTEBOOK_DRIVER = """import sys
from pdrflow import Grid

outcome = Grid.open(sys.argv[1]).submit().wait()
print("driven from the notebook API:", outcome.archived, "archived")
"""


def test_the_notebook_api_drives_a_grid_inside_one_allocation(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    """The allocation kind owns its whole context behind start_cluster: a script using the notebook API,
    run by every task of the allocation, drives the grid as `pdrflow run` does."""
    config = base_config(tmp_path, home=null_home, cluster={"kind": "allocation", "interface": "lo",
                                                              "dashboard_address": "127.0.0.1:0"})
    config["cluster"].pop("n_workers", None)
    path = write_config(tmp_path / "run.yaml", config)
    script = tmp_path / "drive.py"
    script.write_text(NOTEBOOK_DRIVER)
    batch = tmp_path / "drive.sbatch"
    batch.write_text(f"#!/bin/sh\nexec srun {sys.executable} {script} {path}\n")
    submitted = slurm.run("sbatch", "--parsable", "-n", "4", "--mem-per-cpu=500M", f"--chdir={tmp_path}",
                          f"--output={tmp_path / 'grid-%j.out'}", str(batch))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    _wait(lambda: job_id not in {j for j, _, _ in slurm.jobs()}, 240, "the allocation to finish")
    log = (tmp_path / f"grid-{job_id}.out").read_text()
    assert log.count("driven from the notebook API: 4 archived") == 1, log  # one driver, the other tasks served
    assert status(path)["counts"] == {"archived": 4}, log
    assert verify(path)["returncode"] == 0


# Besides driving the grid: what a browser gets from the first worker's HTTP server (its address from the
# scheduler), while the grid runs: its health page, and the Bokeh status page of a worker dashboard.
NOTEBOOK_DRIVER_ASKING_A_WORKER = """import sys, time, urllib.error, urllib.request
from pdrflow import Grid

run = Grid.open(sys.argv[1]).submit()
pages = {}
while not pages and run.running:
    client = run.client  # None once the run has ended
    workers = client.scheduler_info(n_workers=-1)["workers"].values() if client is not None else ()
    for worker in workers:
        for page in ("health", "status"):
            try:
                with urllib.request.urlopen(f"http://{worker['host']}:{worker['services']['dashboard']}/{page}",
                                            timeout=10) as answer:
                    pages[page] = answer.status
            except urllib.error.HTTPError as exc:
                pages[page] = exc.code
        break
    time.sleep(0.2)
outcome = run.wait()
print("worker pages:", sorted(pages.items()))
print("driven from the notebook API:", outcome.archived, "archived")
"""


def test_the_notebook_api_drives_slurm_worker_jobs(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    """The notebook API drives from a thread of its own; dask-jobqueue cannot even be imported there (its
    runner sets a signal handler on import), so the main thread imports it first.

    Worker processes serve no dashboard of their own (cluster.slurm.worker_dashboard: false): their HTTP
    server answers its health page, and nothing where a worker's Bokeh status page would be."""
    home = _slow_home(tmp_path, null_home, 3)  # the workers stay up long enough to be asked
    path = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, home))
    script = tmp_path / "drive.py"
    script.write_text(NOTEBOOK_DRIVER_ASKING_A_WORKER)
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "SLURM_CONF": str(slurm.conf)}, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "driven from the notebook API: 4 archived" in done.stdout
    assert "worker pages: [('health', 200), ('status', 404)]" in done.stdout, done.stdout
    assert status(path)["counts"] == {"archived": 4}


def test_ctrl_c_on_slurm_settles_the_jobs_and_exits_130(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    """SIGINT to the driver (Ctrl-C, or what a wrapper sends): dask-jobqueue's import must not have swapped
    the driver's KeyboardInterrupt for a quiet exit 0 that skips settling and the summary."""
    home = _slow_home(tmp_path, null_home, 60)
    config = write_config(tmp_path / "run.yaml", _slurm_config(tmp_path, home))
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config, env={"SLURM_CONF": str(slurm.conf)})
    _wait(lambda: db.exists() and ledger_rows(db, "select count(*) from attempts where kind='model' "
                                                  "and outcome='running'")[0][0] >= 1, 120, "a model running")
    jobs = {row[0] for row in ledger_rows(db, "select external_id from worker_jobs")}
    os.killpg(driver.pid, signal.SIGINT)
    code, output = finish_run(driver, 120)
    assert code == 130, output
    assert "interrupted: 4 models requeued" in output
    assert status(config)["counts"] == {"pending": 4}
    assert ledger_rows(db, "select count(*) from attempts where outcome='running'") == [(0,)]
    _wait(lambda: not jobs & {job_id for job_id, _, _ in _active(slurm)}, 60, "the worker jobs to end")


def test_walltime_shorter_than_the_grid_retires_workers_without_cutting_models(
    tmp_path: Path, null_home: Path, slurm: Slurm
) -> None:
    home = _slow_home(tmp_path, null_home, 7)
    config = _slurm_config(tmp_path, home, walltime="00:01:00")  # workers retire after ~27-33 s
    config["run"]["expected_model_seconds"] = 12
    config["grid"]["fuv"] = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]
    path = write_config(tmp_path / "run.yaml", config)
    # Run it in the background: while SLURM workers compute, the grid's page is served by the
    # SLURMCluster's scheduler (in the driver) and reads the ledger live.
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, "SLURM_CONF": str(slurm.conf), "COLUMNS": "200"})
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(driver.stdout or []), daemon=True)
    reader.start()
    try:
        _wait(lambda: any("grid map, live from the ledger: " in line for line in output), 120, "the grid page line")
        page_url = next(line for line in output if "grid map, live" in line).split(": ", 1)[1].strip()
        with urllib.request.urlopen(page_url, timeout=20) as response:
            assert config["grid"]["name"] in response.read().decode()
        data: dict = {}

        def computing() -> bool:
            with urllib.request.urlopen(f"{page_url}/data.json", timeout=20) as response:
                data.update(json.load(response))
            return data.get("counts", {}).get("running", 0) > 0

        _wait(computing, 120, "the page to show running models")
        assert data["total"] == 12
        driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        reader.join(timeout=10)
    assert driver.returncode == 0, "".join(output)
    assert status(path)["counts"] == {"archived": 12}  # and no failed_model
    db = tmp_path / "ledger.sqlite"
    assert ledger_rows(db, "select count(*) from worker_jobs")[0][0] > 2  # retired workers were replaced
    # No model was started on a worker retiring within 12 s: none was cut short.
    assert ledger_rows(db, "select count(*) from attempts where kind='model' and outcome != 'ok'") == [(0,)]
    assert verify(path)["returncode"] == 0


def test_a_retiring_worker_archives_the_outputs_it_holds_before_it_leaves(
    tmp_path: Path, null_home: Path, slurm: Slurm, sshd: Sshd
) -> None:
    """One worker job at a time with a 1-minute walltime, models of 8 s, and archivals slowed to about 12 s
    by a 150 kB/s link: the last model a worker takes ends a few seconds before it stops taking models, so
    its archival is still uploading then. The worker stays until that archival is done, instead of leaving
    with it (the archival cut, sent to the next worker, or the model computed again on node-local scratch)."""
    home = slow_null_home(tmp_path, null_home, 8, pad_bytes=1_750_000)
    (tmp_path / "home").mkdir()
    ssh_env = {"HOME": str(tmp_path / "home"), "SSH_AUTH_SOCK": "", "SLURM_CONF": str(slurm.conf)}
    with TcpProxy(sshd.port) as proxy:
        proxy.bandwidth = 150_000
        known = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        document = _slurm_config(tmp_path, home, walltime="00:01:00", max_jobs=1)
        document["storage"] = sftp_storage(sshd, known, tmp_path / "archive", port=proxy.port, operation_timeout=60)
        document["run"]["expected_model_seconds"] = 8.5  # the model alone: its archival may run in the drain
        config = write_config(tmp_path / "run.yaml", document)
        done = cli("run", str(config), env=ssh_env, timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        proxy.bandwidth = None
        summary = assert_consistent(config, env=ssh_env, models=4)
    db = tmp_path / "ledger.sqlite"
    rows = ledger_rows(db, "select worker, kind, ended_at from attempts")  # a worker per SLURM job
    assert len({worker for worker, kind, _ in rows if kind == "model"}) >= 2  # a worker retired, another took over
    stopped = _stopped_taking_models(tmp_path / "worker-logs")
    # The last model a worker takes ends less than expected_model_seconds before it stops taking models;
    # that model's archival takes longer than that, so it ends in the worker's drain: the case tested here.
    drained = [worker for worker, kind, ended in rows
               if kind == "archive" and worker in stopped and datetime.fromisoformat(str(ended)) > stopped[worker]]
    assert drained, (stopped, rows)
    assert ledger_rows(db, "select outcome, error from attempts where outcome != 'ok'") == []
    assert set(summary["model_runs"].values()) == {1}
    assert set(summary["archive_attempts"].values()) == {1}, summary  # none cut by its worker's retirement


@pytest.mark.timeout(420)
def test_walltime_reached_mid_model_reruns_the_model(tmp_path: Path, null_home: Path, slurm: Slurm) -> None:
    """SLURM itself ends a worker job at its time limit (state TIMEOUT) in the middle of a model.

    The test above covers pdrflow's own retirement before the walltime (--lifetime);
    here the walltime is really reached: the job's limit is cut to 1 minute while it runs, as when
    a site shortens it or the lifetime estimate is wrong, so SLURM kills the worker mid-model."""
    home = slow_null_home(tmp_path, null_home, 2)
    # The first model to start takes 100 s, the rest (and its rerun) 2 s. slurmctld ends the job at its next
    # time-limit check after 1 minute (60-90 s after the start): inside that first model, never between two
    # models (with back-to-back 15-s models a CI run's kill met a model's last milliseconds, and none was cut).
    pdrexe = home / "pdrexe"
    first = tmp_path / "first-model-started"
    pdrexe.write_text(pdrexe.read_text().replace("sleep 2", f'if mkdir "{first}" 2>/dev/null; then sleep 100; '
                                                           'else sleep 2; fi'))
    document = _slurm_config(tmp_path, home, max_jobs=1)
    document["grid"]["fuv"] = [1.0, 10.0, 100.0]  # 6 models on one worker
    config = write_config(tmp_path / "run.yaml", document)
    db = tmp_path / "ledger.sqlite"
    driver = start_run(config, env={"SLURM_CONF": str(slurm.conf)})
    rows = wait_for(lambda: ledger_rows(db, "select slurm_job_id from attempts where kind='model' and "
                                         "outcome='running' and slurm_job_id is not null"),
                 180, "a model running in a worker job", driver)
    victim = rows[0][0]
    assert slurm.run("scontrol", "update", f"JobId={victim}", "TimeLimit=1").returncode == 0
    code, output = finish_run(driver, 380)
    assert code == 0, output
    log = (slurm.directory / "jobcomp.log").read_text()
    assert f"JobId={victim} " in log and "JobState=TIMEOUT" in log.split(f"JobId={victim} ")[1].split("\n")[0]
    summary = assert_consistent(config, models=6)
    assert sum(summary["model_runs"].values()) >= 7, summary  # the model cut by the walltime ran again
    assert set(summary["model_ok"].values()) == {1}
    assert ledger_rows(db, "select count(*) from worker_jobs")[0][0] >= 2  # the timed-out job was replaced
