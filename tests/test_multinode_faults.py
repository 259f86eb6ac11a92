"""Cluster-scale faults on the cluster in a box (tests/services/cluster_box.py, issue 16): a node cut off the
network and back, the driver SIGKILLed while archivals run on three nodes, a worker job pending forever on a
drained node. Each ends with the fault matrix's consistency check (``helpers.assert_consistent``): every job
archived exactly once, the files the ledger's sha256, ``pdrflow verify`` exit 0, no attempt or worker job open.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import NULL_SPECIES, assert_consistent, cli, slow_null_home, wait_for
from multinode_support import attempt_places, gated_null_home, grid_config, worker_address
from services.cluster_box import ClusterBox
from services.databases import APP_PASSWORD, DatabaseServer

from pdrflow.ledger.schema import AttemptKind, AttemptOutcome
from pdrflow.states import JobState

pytestmark = pytest.mark.timeout(300)

CUT_SECONDS = 30.0
FILES_PER_MODEL = 9 + 7 * len(NULL_SPECIES)  # the null home's outputs (as helpers.assert_consistent)


@pytest.fixture
def env(box: ClusterBox, ledger_server: DatabaseServer) -> Iterator[dict[str, str]]:
    """An empty ledger and the run's environment; afterwards every node idle again and no job of ours queued
    (the next test starts from a whole box)."""
    ledger_server.reset()
    yield {"SLURM_CONF": str(box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD}
    box.run("scancel", "--user", "root")
    for name in box.nodes:
        box.run("scontrol", "update", f"NodeName={name}", "State=RESUME")
    box.wait_idle(timeout=90)


def _rows(server: DatabaseServer, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the ledger; none while the driver has not created the tables yet."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    engine = create_engine(server.url_with_password)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(text(query))]
    except ProgrammingError:
        return []
    finally:
        engine.dispose()


def _queued(box: ClusterBox) -> dict[str, str]:
    """Job id -> state of every job squeue shows."""
    listed = box.run("squeue", "-h", "-o", "%i %T").stdout
    return dict(line.split() for line in listed.splitlines() if len(line.split()) == 2)


def _start_driver(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env, "COLUMNS": "200"}, start_new_session=True)


def _finish(driver: subprocess.Popen[str], timeout: float) -> str:
    try:
        output, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        output, _ = driver.communicate()
        raise AssertionError(f"the driver did not finish within {timeout} s:\n{output}") from None
    return output


def _running_on(server: DatabaseServer, kind: AttemptKind) -> list[str]:
    """Node addresses of the attempts of ``kind`` running now, in the order they started."""
    return [worker_address(worker) for _, k, outcome, _, worker in _places(server)
            if k == kind and outcome == AttemptOutcome.RUNNING and worker]


def _places(server: DatabaseServer) -> list[tuple[int, str, str, str, str]]:
    from sqlalchemy.exc import ProgrammingError

    try:
        return attempt_places(server)
    except ProgrammingError:  # the driver has not created the ledger's tables yet
        return []


def _archived_once(server: DatabaseServer, models: int, files_per_model: int) -> None:
    """Each job: one successful archival, its files recorded once each."""
    rows = _rows(server, "select j.name, count(f.id), count(distinct f.path) from jobs j "
                         "left join archived_files f on f.job_id = j.id group by j.name")
    assert len(rows) == models and all(count == distinct == files_per_model for _, count, distinct in rows), rows
    oks = _rows(server, f"select job_id, count(*) from attempts where kind = '{AttemptKind.ARCHIVE}' "
                        f"and outcome = '{AttemptOutcome.OK}' group by job_id")
    assert len(oks) == models and {count for _, count in oks} == {1}, oks



def test_node_cut_off_for_30_s_and_back_archives_each_model_once(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer, env: dict[str, str]
) -> None:
    """The network cable of a node computing a model is out for 30 s. The other nodes go on archiving; the
    node's connections reach distributed's TCP timeout (30 s), its worker closes itself when the cable is back
    and SLURM ends its job (node failure); the models it held are computed again on the other nodes. The grid
    completes in the same run (exit 0), and nothing is archived twice: not by the worker that comes back."""
    home = slow_null_home(tmp_path, null_home, 3)
    config = grid_config(tmp_path, home, box, ledger_server, fuv=[10.0, 100.0, 1000.0])
    driver = _start_driver(config, env)
    victim = ""
    try:
        computing = wait_for(lambda: (lambda nodes: nodes if len(set(nodes)) >= 2 else None)(
            _running_on(ledger_server, AttemptKind.MODEL)), 150, "models running on two nodes", driver, interval=0.2)
        victim = next(name for name, address in box.nodes.items() if address == computing[-1])
        box.cut_node(victim)
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < CUT_SECONDS and driver.poll() is None:
            time.sleep(0.5)
        states_while_cut = box.node_states()
    finally:
        if victim:
            box.restore_node(victim)
    output = _finish(driver, 240)
    assert driver.returncode == 0, output
    summary = assert_consistent(config, env=env, models=6)
    _archived_once(ledger_server, 6, FILES_PER_MODEL)
    places = attempt_places(ledger_server)
    victim_address = box.nodes[victim]
    assert [p for p in places if p[4] and worker_address(p[4]) == victim_address], places  # it did compute
    assert summary["counts"] == {"archived": 6}
    # A cut as long as distributed's TCP timeout (comm.timeouts.tcp, 30 s) may cost the node's worker: each
    # model it held is then computed again elsewhere in this run, and the user is told so.
    names = dict(_rows(ledger_server, "select id, name from jobs"))
    lost = {names[job] for job, kind, outcome, _, worker in places
            if kind == AttemptKind.MODEL and outcome == AttemptOutcome.INTERRUPTED
            and (not worker or worker_address(worker) == victim_address)}
    assert all(f"rerun {name}: run lost" in output for name in lost), (lost, states_while_cut, output)


def test_driver_killed_while_archivals_run_then_run_again_cancels_its_worker_jobs(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer, env: dict[str, str]
) -> None:
    """SIGKILL of the driver (and the scheduler in it) while archivals are writing on two or more nodes; its
    worker jobs are left in SLURM. ``pdrflow run`` again: it cancels them, finishes the grid, archives nothing
    twice.

    A running worker whose scheduler connection breaks closes itself within seconds, so its job ends without
    help; a *pending* worker job does not: it starts later and holds a node until its death timeout (60 s)
    looking for a scheduler that is gone. One more worker job than nodes leaves one pending for the second
    driver to cancel."""
    # 60 MB of random bytes per model: each archival copies and hashes it, a window to kill into. The models
    # wait at a gate until one computes on every node, so that their archivals overlap (models that start
    # apart finish apart, and the archivals of an idle machine were too short to meet).
    home, gate = gated_null_home(tmp_path, null_home, pad_bytes=60_000_000)
    config = grid_config(tmp_path, home, box, ledger_server, jobs=len(box.nodes) + 1, fuv=[10.0, 100.0, 1000.0])
    driver = _start_driver(config, env)
    try:
        wait_for(lambda: len(set(_running_on(ledger_server, AttemptKind.MODEL))) == len(box.nodes), 150,
                 "a model computing on every node", driver, interval=0.2)
        gate.touch()
        archiving = wait_for(lambda: (lambda nodes: nodes if len(set(nodes)) >= 2 else None)(
            _running_on(ledger_server, AttemptKind.ARCHIVE)), 150, "archivals running on two nodes", driver, interval=0.02)
        os.kill(driver.pid, signal.SIGKILL)  # the driver process only: its worker jobs live on in SLURM
        driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    first = {job_id for (job_id,) in _rows(ledger_server, "select external_id from worker_jobs")}
    assert len(first) == len(box.nodes) + 1 and first & set(_queued(box)), (first, _queued(box))  # left behind
    staged = {job for (job,) in _rows(ledger_server, f"select id from jobs where staged_dir is not null and state in "
                                                     f"('{JobState.COMPUTED}', '{JobState.FAILED_STORAGE}')")}
    again = cli("run", str(config), env=env, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    # Outputs staged on a node's own scratch before the kill are archived from that node, not computed again.
    runs = Counter(job for job, kind, outcome, _, _ in attempt_places(ledger_server)
                   if kind == AttemptKind.MODEL and outcome == AttemptOutcome.OK)
    assert staged and all(runs[job] == 1 for job in staged), (staged, runs, again.stderr)
    left = first & set(_queued(box))
    assert not left, f"the first driver's worker jobs {sorted(left)} are still queued after the second run"
    # the user is told which jobs were cancelled, and the ledger says they ended
    cancelled = re.search(r"cancelled worker jobs left by a stopped driver: (\d+(?:, \d+)*)", again.stderr)
    assert cancelled and set(cancelled.group(1).split(", ")) == first, (archiving, again.stderr)
    ended = _rows(ledger_server, "select external_id, ended_at is not null from worker_jobs")
    assert {job_id for job_id, done in ended if job_id in first and done} == first, ended
    assert_consistent(config, env=env, models=6)
    _archived_once(ledger_server, 6, FILES_PER_MODEL)


def test_worker_job_pending_on_a_drained_node_is_cancelled_at_the_end(
    tmp_path: Path, null_home: Path, box: ClusterBox, ledger_server: DatabaseServer, env: dict[str, str]
) -> None:
    """One node drained, as many worker jobs as nodes: one job waits forever; the grid completes on the other
    two nodes and the run leaves no job of its own in the queue."""
    drained = "node3"
    shown = box.run("scontrol", "update", f"NodeName={drained}", "State=DRAIN", "Reason=test")
    assert shown.returncode == 0, shown.stderr
    try:
        home = slow_null_home(tmp_path, null_home, 1)
        config = grid_config(tmp_path, home, box, ledger_server, jobs=len(box.nodes))
        driver = _start_driver(config, env)

        def pending() -> list[str]:
            recorded = {job_id for (job_id,) in _rows(ledger_server, "select external_id from worker_jobs")}
            return [job_id for job_id, state in _queued(box).items() if job_id in recorded and state == "PENDING"]

        waiting = wait_for(pending, 120, "a worker job pending", driver, interval=0.2)
        output = _finish(driver, 180)
        assert driver.returncode == 0, output
        assert_consistent(config, env=env, models=4)
        jobs = {job_id for (job_id,) in _rows(ledger_server, "select external_id from worker_jobs")}
        assert len(jobs) == len(box.nodes) and set(waiting) <= jobs, (jobs, waiting)
        assert not jobs & set(_queued(box)), _queued(box)  # ... and none is left in the queue
        workers = {worker_address(worker) for *_, worker in attempt_places(ledger_server) if worker}
        assert workers and box.nodes[drained] not in workers  # nothing ran on the drained node
    finally:
        box.run("scontrol", "update", f"NodeName={drained}", "State=RESUME")
