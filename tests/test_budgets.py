"""Connection budgets: 64 worker threads against a PostgreSQL with max_connections=20 and an sshd with its
default MaxStartups (10:30:100) stay within database.max_connections and storage.max_connections.

Peaks are counted exactly from the servers' own logs (PostgreSQL's log_connections/log_disconnections,
sshd's VERBOSE connection lines) and, as a cross-check, sampled while the run goes (pg_stat_activity,
established TCP connections to sshd's port in /proc/net/tcp).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import psycopg
import pytest
from helpers import base_config, write_config, write_null_home
from services.databases import APP_PASSWORD, DatabaseServer, app_sessions, remove_server, session_peaks, start_server
from services.sshd import Sshd, established_connections
from sqlalchemy import create_engine, text

from pdrflow.cli.common import worker_safety_config
from pdrflow.cli.logs import log_file_path, run_logging
from pdrflow.cluster.security import _SubmitSpacing
from pdrflow.config import load_config
from pdrflow.driver import Driver, Event, Outcome
from pdrflow.ledger.open import open_ledger
from pdrflow.plan import plan_run
from pdrflow.states import JobState
from pdrflow.tasks.resources import WORKER_APPLICATION_NAME

pytestmark = pytest.mark.timeout(300)

SERVER_MAX_CONNECTIONS = 20  # as in the measured SLURM case: 3 of them reserved for superusers
DB_BUDGET = 8
STORAGE_BUDGET = 4
DRIVER_SESSIONS = 5  # the driver's pool (2 + 2 overflow) and the dashboard's one
DRIVER_SSH = 1  # the preflight's probe
WORKERS, THREADS = 4, 16  # 64 worker slots: each thread is a task that would otherwise open connections
DENSITIES, FUVS = 8, 8  # 64 models: every one in flight at once
SPECIES = ("CO",)  # one onion run per model: 16 files each


@pytest.fixture(scope="module")
def postgres() -> Iterator[DatabaseServer]:
    server = start_server("postgresql", max_connections=SERVER_MAX_CONNECTIONS)
    try:
        with psycopg.connect(_superuser(server), autocommit=True) as admin:
            # Every session's start and end in the log: the exact peak, not a sample.
            admin.execute("ALTER SYSTEM SET log_connections = on")
            admin.execute("ALTER SYSTEM SET log_disconnections = on")
            admin.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        remove_server(server)


def _superuser(server: DatabaseServer) -> str:
    return f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(workdir=tmp_path / "sshd", max_startups=None)  # sshd's default MaxStartups 10:30:100
    server.start()
    yield server
    server.cleanup()


def _config(tmp_path: Path, postgres: DatabaseServer, sshd: Sshd) -> Path:
    home = write_null_home(tmp_path / "home", species=SPECIES)
    document = base_config(
        tmp_path, home=home,
        database={"url": postgres.url, "max_connections": DB_BUDGET},
        storage={"kind": "sftp", "host": sshd.host, "port": sshd.port, "username": "root",
                 "root": str(tmp_path / "archive"), "key_filename": str(sshd.client_key),
                 "known_hosts": str(sshd.write_known_hosts(tmp_path / "known_hosts")),
                 "max_connections": STORAGE_BUDGET},
        cluster={"kind": "local", "n_workers": WORKERS, "threads_per_worker": 1},  # threads: see _run
    )
    document["kosma_tau"]["onion_species"] = list(SPECIES)
    document["grid"].update(density=[10.0 ** (3 + 0.25 * i) for i in range(DENSITIES)],
                            fuv=[10.0 ** (1 + 0.25 * i) for i in range(FUVS)])
    return write_config(tmp_path / "run.yaml", document)


class Sampler(threading.Thread):
    """Peaks seen while the run goes: app-user sessions (workers', all) and the clients' established connections
    to sshd (the client side: a closed connection is gone from it at once, sshd's side notices a moment later)."""

    def __init__(self, postgres: DatabaseServer, ssh_port: int) -> None:
        super().__init__(daemon=True)
        self.postgres, self.ssh_port = postgres, ssh_port
        self.peaks = {"worker_sessions": 0, "sessions": 0, "ssh": 0}
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(_superuser(self.postgres), autocommit=True) as admin:
            while not self.done.is_set():
                workers, total = app_sessions(admin, WORKER_APPLICATION_NAME)
                self.peaks["worker_sessions"] = max(self.peaks["worker_sessions"], workers)
                self.peaks["sessions"] = max(self.peaks["sessions"], total)
                self.peaks["ssh"] = max(self.peaks["ssh"], established_connections(self.ssh_port, side="client"))
                time.sleep(0.005)


def _pg_peaks(log: str) -> dict[str, int]:
    return session_peaks(log, WORKER_APPLICATION_NAME)


def _ssh_peaks(log: str) -> dict[str, int]:
    """Concurrent connections from sshd's VERBOSE log: open from "Connection from" to its first end line, and
    unauthenticated until "Accepted publickey" (what MaxStartups counts and drops beyond 10)."""
    open_ports: set[str] = set()
    unauthenticated: set[str] = set()
    peaks = {"open": 0, "unauthenticated": 0}
    for line in log.splitlines():
        if started := re.match(r"Connection from \S+ port (\d+) on ", line):
            open_ports.add(started.group(1))
            unauthenticated.add(started.group(1))
        elif accepted := re.match(r"Accepted publickey for \S+ from \S+ port (\d+) ", line):
            unauthenticated.discard(accepted.group(1))
        elif ended := re.search(r"(?:Connection closed by|Closing connection to|Disconnected from|Connection reset by"
                                r"|Read error from remote host|Timeout before authentication for"
                                r"|drop connection #\d+ from) .*?port[ :]?(\d+)", line):
            open_ports.discard(ended.group(1))
            unauthenticated.discard(ended.group(1))
        peaks["open"] = max(peaks["open"], len(open_ports))
        peaks["unauthenticated"] = max(peaks["unauthenticated"], len(unauthenticated))
    return peaks


def _ledger(postgres: DatabaseServer) -> dict[str, Any]:
    engine = create_engine(postgres.url_with_password)
    try:
        with engine.connect() as db:
            states = dict(db.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
            runs = db.execute(text("SELECT job_id, count(*) FROM attempts WHERE kind = 'model' GROUP BY job_id")).all()
            files = db.execute(text("SELECT count(*) FROM archived_files")).scalar_one()
    finally:
        engine.dispose()
    return {"states": states, "model_runs": sorted({count for _, count in runs}), "jobs_run": len(runs),
            "files": files}


def _run(config_path: Path) -> tuple[Outcome, list[Event], Path]:
    """The driver as ``pdrflow run`` runs it (its log file and its worker safety settings included), in this
    process: the loader refuses more than 4 threads per core for a local cluster (a typo guard), and this test
    wants 64 tasks at once on a small machine on purpose, so the thread count is raised after loading."""
    config = load_config(config_path)
    config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"threads_per_worker": THREADS})})
    plan = plan_run(config)
    ledger = open_ledger(config.database, patience=300.0)
    events: list[Event] = []
    log_path = log_file_path(config)
    try:
        with dask.config.set(worker_safety_config()), run_logging(log_path, None):
            outcome = Driver(config, plan, ledger, on_event=events.append).run()
    finally:
        ledger.close()
    return outcome, events, log_path


def test_64_worker_threads_stay_within_the_database_and_sshd_budgets(
        tmp_path: Path, postgres: DatabaseServer, sshd: Sshd, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    for name, value in (("PDRFLOW_DB_PASSWORD", APP_PASSWORD), ("HOME", str(tmp_path)), ("SSH_AUTH_SOCK", "")):
        monkeypatch.setenv(name, value)  # the worker processes inherit them
    config = _config(tmp_path, postgres, sshd)
    models = DENSITIES * FUVS
    pg_log = postgres.directory / "log"
    pg_log_start = pg_log.stat().st_size
    sampler = Sampler(postgres, sshd.port)
    sampler.start()
    started = time.monotonic()
    try:
        outcome, events, log_path = _run(config)
    finally:
        sampler.done.set()
        sampler.join(timeout=10)
    seconds = time.monotonic() - started
    with pg_log.open("rb") as stream:
        stream.seek(pg_log_start)
        server_log = stream.read().decode("utf-8", "replace")
    captured = capfd.readouterr()  # the worker processes' own output too (they share this process's fds)
    run_output = "\n".join([log_path.read_text(), captured.out, captured.err, *(str(e) for e in events)])
    ssh_log = sshd.log_file.read_text()
    measured = {"seconds": round(seconds, 1), "sampled": sampler.peaks, "postgres_log": _pg_peaks(server_log),
                "sshd_log": _ssh_peaks(ssh_log)}
    with capfd.disabled():
        print(measured)

    assert not outcome.failures and not outcome.interrupted, (outcome.failures, run_output[-3000:])
    assert outcome.archived == models, outcome
    ledger = _ledger(postgres)
    assert ledger["states"] == {JobState.ARCHIVED.value: models}, ledger
    assert ledger["jobs_run"] == models and ledger["model_runs"] == [1], ledger  # each model computed once
    assert ledger["files"] == models * (9 + 7 * len(SPECIES))
    for text_ in (run_output, server_log):
        assert "too many clients" not in text_ and "sorry" not in text_.lower()
    assert "MaxStartups" not in ssh_log  # sshd dropped no connection
    # Connects happen under a lease: the SSH handshakes in progress at once (exact, from sshd's log) stay within
    # the budget and the driver's probe, far from MaxStartups' 10.
    assert measured["sshd_log"]["unauthenticated"] <= STORAGE_BUDGET + DRIVER_SSH, measured
    # A connection outlives its lease by a moment: the servers notice a closed session a little later (PostgreSQL's
    # backend exits, paramiko's transport thread lets go of the socket within its 0.1 s poll), so the open ones
    # may exceed the budgets by that lag; all the sessions together stay within the budget and the driver's own.
    assert measured["postgres_log"]["sessions"] <= DB_BUDGET + DRIVER_SESSIONS, measured
    assert max(measured["sshd_log"]["open"], sampler.peaks["ssh"]) < 10, measured
    assert measured["postgres_log"]["worker_sessions"] >= 2 and sampler.peaks["ssh"] >= 2  # the budgets were used


def test_sbatch_calls_are_spaced_by_the_submit_interval() -> None:
    """Five submissions at once (adapt() asking for five worker jobs) start at least the interval apart."""
    spacing = _SubmitSpacing(0.2)
    starts: list[float] = []

    async def submit() -> None:
        await spacing.wait()
        starts.append(time.monotonic())

    async def burst() -> None:
        await asyncio.gather(*(submit() for _ in range(5)))

    asyncio.run(burst())
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(starts) == 5 and min(gaps) >= 0.2 - 0.005, gaps
