"""pdrflow at scale on the cluster in a box (tests/services/cluster_box.py); prints one JSON document.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--only measured,wide,overhead,walltime]

Every scenario starts its own box (SLURM nodes as network namespaces on this machine, slurmctld on
the login node's bridge), a PostgreSQL ledger on the bridge with ``max_connections=20`` (3 of them
kept for superusers; this benchmark's own poller is one superuser session) and an SFTP archive on a
real OpenSSH sshd on the bridge with sshd's default ``MaxStartups`` (10:30:100). Models are the null
executables of tests/helpers.py (4 onion species, 37 archived files a model) whose ``pdrexe`` sleeps
the model's duration; pdrflow runs as the real ``pdrflow run`` command in a child process, with the
shipped connection budgets (``database.max_connections``, ``storage.max_connections``).

1. ``measured`` - the issue's measured case: 30 one-core worker jobs (3 nodes x 10 CPUs, ``processes: 1``,
   ``cores: 1``, ``min_jobs = max_jobs = 30``) running 60 models of 5 s (the issue's were 40 s).
2. ``wide`` - 64 workers: 8 nodes x one worker job each of ``processes: 8, cores: 8``, 128 models of 1.5 s;
   models/s, the driver process's CPU (the scheduler runs in it) and RSS, the nodes' memory per worker.
   ``--wide-processes 16``: 128 workers and 256 models (stopped if the machine runs low on memory).
3. ``overhead`` - per-model overhead against plain Dask futures: 16 one-core worker jobs (4 nodes x 4
   CPUs) started by dask-jobqueue's SLURMCluster with the same settings (TLS, lifetime, adapt) running
   ``client.map`` of the same null executables in fresh scratch directories (no ledger, no archive), the
   same with ``--no-dashboard`` as pdrflow starts its workers (dask-jobqueue's default gives each worker a
   Bokeh dashboard), the same with each task putting its outputs over SFTP (paramiko, what a hand-written script would do; no
   ledger, no checks), against ``pdrflow run`` on an identical box. Also the machine's CPU seconds per
   model (every process): on the box all nodes share 2 cores, so that bounds the models per second; and
   those seconds by kind of process (driver, Dask workers, sshd, PostgreSQL, SLURM; ``ProcessCpu``).
4. ``walltime`` - worker jobs shorter than the grid: walltime 00:02:30, 192 models of 5 s by default
   (``--walltime 00:08:00,184,15`` for longer jobs), 4 job slots with more work each than one job's
   lifetime; workers retire (pdrflow's ``--lifetime``) and adapt() replaces them. The
   share of allocated worker-seconds (SLURM's job completion records: accounting storage is off here, so
   ``sacct`` has nothing; slurmctld's jobcomp/filetxt log has each job's start and end, 1 s resolution)
   spent in model attempts (the ledger's attempts).

Measured for each pdrflow run: exit code, states, model attempts per job, archived files (ledger and on
disk), "too many clients" in the PostgreSQL log, the run's log, its output and the worker logs, sshd's
"drop connection"/"MaxStartups" lines; peak sessions (pg_stat_activity every 0.2 s, and exactly from
log_connections/log_disconnections) and peak established SSH connections (sshd's side, /proc/net/tcp
every 0.2 s, and from sshd's VERBOSE log).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# The tests' services as the tests import them: a site package may ship a top-level `tests` of its own.
sys.path.insert(0, str(REPO / "tests"))

from helpers import NULL_SPECIES, base_config, slow_null_home, write_config, write_null_home
from services.cluster_box import ClusterBox, start_cluster_box
from services.databases import (
    APP_PASSWORD,
    DatabaseServer,
    app_sessions,
    remove_server,
    session_peaks,
    start_server,
)
from services.sshd import Sshd, established_connections

SERVER_MAX_CONNECTIONS = 20  # the PostgreSQL
POLL = 0.2  # seconds between samples of the servers' connections and the driver's memory
# A run is stopped (SIGINT to the driver, which cancels its worker jobs) once the machine's available memory falls
# below this: the wide scenario with 16 processes a node (128 workers) comes close to this machine's 23.5 GB.
MEMORY_FLOOR_GB = 1.5
FILES_PER_MODEL = 9 + 7 * len(NULL_SPECIES)


# ---- the services of one scenario -----------------------------------------------------------------


@dataclass
class Services:
    work: Path
    box: ClusterBox
    postgres: DatabaseServer
    sshd: Sshd

    @property
    def superuser(self) -> str:
        return f"host=127.0.0.1 port={self.postgres.port} user=postgres dbname=postgres"

    def env(self) -> dict[str, str]:
        """``pdrflow run``'s environment: the box's SLURM, the ledger's password, no agent, no user config."""
        return {**os.environ, "SLURM_CONF": str(self.box.conf), "PDRFLOW_DB_PASSWORD": APP_PASSWORD,
                "SSH_AUTH_SOCK": "", "PDRFLOW_SFTP_PASSWORD": "", "HOME": str(self.work), "COLUMNS": "200"}


@contextlib.contextmanager
def services(work: Path, nodes: int, cpus: int, memory_mb: int) -> Iterator[Services]:
    import psycopg

    work.mkdir(parents=True)
    box = start_cluster_box(nodes, cpus=cpus, memory_mb=memory_mb, idle_timeout=120)
    postgres: DatabaseServer | None = None
    sshd: Sshd | None = None
    try:
        postgres = start_server("postgresql", address=box.login_address, max_connections=SERVER_MAX_CONNECTIONS)
        with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres",
                             autocommit=True) as admin:
            # every session's start and end in the log: the exact peak, besides the sampled one
            admin.execute("ALTER SYSTEM SET log_connections = on")
            admin.execute("ALTER SYSTEM SET log_disconnections = on")
            admin.execute("SELECT pg_reload_conf()")
        sshd = Sshd(workdir=work / "sshd", host=box.login_address, max_startups=None)  # sshd's default
        sshd.start()
        yield Services(work, box, postgres, sshd)
    finally:
        if sshd is not None:
            sshd.cleanup()
        if postgres is not None:
            remove_server(postgres)
        box.stop()


def _memory_total() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def grid_axes(models: int) -> dict[str, list[float]]:
    fuv = next(f for f in (10, 8, 6, 5, 4, 3, 2, 1) if models % f == 0)
    density = models // fuv
    return {"metallicity": [1.0], "density": [10 ** (2 + 4 * i / density) for i in range(density)],
            "mass": [0.1], "fuv": [10 ** (0.1 * i) for i in range(fuv)]}


def run_config(run: Path, svc: Services, home: Path, *, models: int, jobs: int, cores: int, processes: int,
               walltime: str = "00:10:00", max_in_flight: int | None = None) -> Path:
    """A run on the box: ``jobs`` worker jobs of ``processes`` one-thread workers each, SFTP archive, PostgreSQL."""
    run.mkdir(parents=True)
    (run / "archive").mkdir()
    config = base_config(run, home=home, grid="scale", cluster={
        "kind": "slurm", "cores": cores, "memory": f"{processes}GB", "processes": processes,
        "walltime": walltime, "interface": svc.box.interface, "min_jobs": jobs, "max_jobs": jobs,
        "local_directory": str(run / "worker-space"), "log_directory": str(run / "worker-logs"),
        "dashboard_address": "127.0.0.1:0",
    }, database={"url": svc.postgres.url}, scratch={"root": str(svc.box.scratch)}, storage={
        "kind": "sftp", "host": svc.sshd.host, "port": svc.sshd.port, "username": "root",
        "root": str(run / "archive"), "key_filename": str(svc.sshd.client_key),
        "known_hosts": str(svc.sshd.write_known_hosts(run / "known_hosts"))})
    config["cluster"].pop("n_workers", None)
    config["grid"].update(grid_axes(models))
    config.setdefault("run", {})["max_in_flight"] = max_in_flight
    return write_config(run / "run.yaml", config)


# ---- sampling while a run goes ------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Peaks every POLL s: app-user sessions (all, workers'), established SSH connections, the driver's process
    tree RSS on the login node (node processes are the box's slurmd's, never the driver's descendants); every
    ``node_every`` s (if set) the RSS of every process in the box's node namespaces."""

    def __init__(self, svc: Services, driver_pid: int | None, node_every: float | None = None) -> None:
        super().__init__(daemon=True)
        self.svc, self.driver_pid, self.node_every = svc, driver_pid, node_every
        self.peaks: dict[str, Any] = {"db_sessions": 0, "db_worker_sessions": 0, "ssh_connections": 0,
                                      "driver_tree_rss_mb": 0.0, "nodes_rss_mb": 0.0, "node_processes": 0,
                                      "min_available_gb": None}
        self.driver_cpu_s: float | None = None  # the driver process alone (scheduler included), last sample
        self.done = threading.Event()
        self.low_memory = threading.Event()  # the machine's available memory fell below MEMORY_FLOOR_GB

    def _driver(self) -> None:
        import psutil

        if self.driver_pid is None:
            return
        try:
            driver = psutil.Process(self.driver_pid)
            times = driver.cpu_times()
            rss = driver.memory_info().rss
            for child in driver.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
        except psutil.Error:
            return
        self.driver_cpu_s = times.user + times.system
        self.peaks["driver_tree_rss_mb"] = max(self.peaks["driver_tree_rss_mb"], round(rss / 2**20, 1))

    def _nodes(self) -> None:
        import psutil

        rss, count = 0, 0
        for name in self.svc.box.nodes:
            for pid in self.svc.box.node_pids(name):
                with contextlib.suppress(psutil.Error):
                    rss += psutil.Process(pid).memory_info().rss
                    count += 1
        if rss / 2**20 > self.peaks["nodes_rss_mb"]:
            self.peaks["nodes_rss_mb"], self.peaks["node_processes"] = round(rss / 2**20, 1), count

    def run(self) -> None:
        import psutil
        import psycopg

        from pdrflow.tasks.resources import WORKER_APPLICATION_NAME

        last_nodes = 0.0
        with psycopg.connect(self.svc.superuser, autocommit=True) as admin:
            while not self.done.is_set():
                workers, total = app_sessions(admin, WORKER_APPLICATION_NAME)
                self.peaks["db_worker_sessions"] = max(self.peaks["db_worker_sessions"], workers)
                self.peaks["db_sessions"] = max(self.peaks["db_sessions"], total)
                self.peaks["ssh_connections"] = max(self.peaks["ssh_connections"],
                                                    established_connections(self.svc.sshd.port))
                self._driver()
                available = round(psutil.virtual_memory().available / 2**30, 2)
                low = self.peaks["min_available_gb"]
                self.peaks["min_available_gb"] = available if low is None else min(low, available)
                if available < MEMORY_FLOOR_GB:
                    self.low_memory.set()
                if self.node_every and time.monotonic() - last_nodes >= self.node_every:
                    self._nodes()
                    last_nodes = time.monotonic()
                self.done.wait(POLL)


# ---- running a command and what it left ----------------------------------------------------------------


def run_measured(argv: list[str], env: dict[str, str], cwd: Path, output: Path, timeout: float,
                 sampler: Sampler) -> dict[str, Any]:
    """Run ``argv`` with ``sampler`` following it; its exit code, wall time, and from wait4 the CPU seconds and
    peak RSS of it and its reaped children (sbatch, squeue, scancel ...)."""
    started = time.monotonic()
    with output.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=cwd, start_new_session=True)
    sampler.driver_pid = process.pid
    sampler.start()
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if (time.monotonic() - started > timeout or sampler.low_memory.is_set()) and not timed_out:
                timed_out = True
                os.killpg(process.pid, signal.SIGINT)  # the session it leads: the driver cleans up its jobs
                timeout += 60
            elif timed_out and time.monotonic() - started > timeout:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.05)
    finally:
        sampler.done.set()
        sampler.join(timeout=30)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    return {"exit_code": process.returncode, "timed_out": timed_out and not sampler.low_memory.is_set(),
            "stopped_for_low_memory": sampler.low_memory.is_set(), "wall_s": round(time.monotonic() - started, 2),
            "cpu_s_with_children": round(usage.ru_utime + usage.ru_stime, 2),
            "driver_cpu_s": round(sampler.driver_cpu_s, 2) if sampler.driver_cpu_s is not None else None,
            "max_rss_mb_one_process": round(usage.ru_maxrss / 1024, 1)}


def _stamp(value: datetime | None) -> float | None:
    return value.replace(tzinfo=UTC).timestamp() if value is not None else None


def ledger_summary(postgres: DatabaseServer) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres.url_with_password)
    try:
        with engine.connect() as db:
            states: dict[str, int] = dict(db.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
            runs = [n for _, n in db.execute(text(
                "SELECT job_id, count(*) FROM attempts WHERE kind = 'model' GROUP BY job_id")).all()]
            files = db.execute(text("SELECT count(*) FROM archived_files")).scalar_one()
            attempts = [{"job": job, "kind": kind, "outcome": outcome, "start": _stamp(start), "end": _stamp(end),
                         "worker": worker, "slurm_job": slurm, "error": error}
                        for job, kind, outcome, start, end, worker, slurm, error in db.execute(text(
                            "SELECT job_id, kind, outcome, started_at, ended_at, worker, slurm_job_id, error "
                            "FROM attempts ORDER BY id"))]
            worker_jobs = db.execute(text("SELECT count(*) FROM worker_jobs")).scalar_one()
            # when each job's last run task began on its worker (provenance "started", before its first ledger
            # transaction): splits a gap between models into scheduling and the task's own start
            task_started = {job: datetime.fromisoformat(p["started"]).timestamp()
                            for job, p in db.execute(text("SELECT id, provenance FROM jobs")) if p and "started" in p}
    finally:
        engine.dispose()
    return {"states": states, "model_attempts_per_job": dict(sorted(Counter(runs).items())), "jobs_run": len(runs),
            "archived_file_rows": files, "worker_jobs_recorded": worker_jobs, "attempts": attempts,
            "task_started": task_started}


def _count(paths: list[Path], *needles: str) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            text_ = path.read_text(errors="replace")
            total += sum(1 for line in text_.splitlines() if any(n in line for n in needles))
    return total


def _pg_log_peaks(log: str) -> dict[str, int]:
    """Concurrent app-user sessions (all, and the workers') from the server's connection log."""
    from pdrflow.tasks.resources import WORKER_APPLICATION_NAME

    peaks = session_peaks(log, WORKER_APPLICATION_NAME)
    return {"db_sessions": peaks["sessions"], "db_worker_sessions": peaks["worker_sessions"]}


def _ssh_log_peak(log: str) -> int:
    """Concurrent connections from sshd's VERBOSE log: open at "Connection from", gone at its first end line."""
    open_ports: set[str] = set()
    peak = 0
    for line in log.splitlines():
        if started := re.search(r"Connection from \S+ port (\d+) on ", line):
            open_ports.add(started.group(1))
            peak = max(peak, len(open_ports))
        elif ended := re.search(r"(?:Connection closed by|Closing connection to|Disconnected from|Connection reset by"
                                r"|Read error from remote host|Timeout before authentication for"
                                r"|drop connection #\d+ from) .*?port[ :]?(\d+)", line):
            open_ports.discard(ended.group(1))
    return peak


def files_under(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def pdrflow_run(svc: Services, config: Path, timeout: float, node_every: float | None = None,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """``pdrflow run`` on the box, with everything the issue asks to count."""
    from pdrflow.config import load_config

    loaded = load_config(config)
    run = config.parent
    output = run / "pdrflow-run.out"
    sampler = Sampler(svc, None, node_every)
    process = run_measured([sys.executable, "-m", "pdrflow", "run", str(config)], {**svc.env(), **(env or {})},
                           run, output, timeout, sampler)
    ledger = ledger_summary(svc.postgres)
    run_logs = [output, *run.glob("pdrflow-*.log"), *(run / "worker-logs").glob("*")]
    pg_log = (svc.postgres.directory / "log").read_text(errors="replace")
    ssh_log = svc.sshd.log_file.read_text(errors="replace")
    result: dict[str, Any] = {
        **process,
        "budgets": {"database.max_connections": loaded.database.max_connections,
                    "storage.max_connections": getattr(loaded.storage, "max_connections", None)},
        "states": ledger["states"],
        "model_attempts_per_job": ledger["model_attempts_per_job"],
        "computed_once": set(ledger["model_attempts_per_job"]) == {1},
        "archived": ledger["states"].get("archived", 0),
        "archived_file_rows": ledger["archived_file_rows"],
        "archived_files_on_disk": files_under(run / "archive"),
        "worker_jobs_recorded": ledger["worker_jobs_recorded"],
        "refusals": {
            "postgresql_log_too_many_clients": pg_log.count("too many clients"),
            "run_log_too_many_clients": _count(run_logs, "too many clients"),
            "sshd_log_drop_connection": _count([svc.sshd.log_file], "drop connection", "MaxStartups"),
        },
        "peaks_sampled": {k: sampler.peaks[k] for k in ("db_sessions", "db_worker_sessions", "ssh_connections",
                                                        "driver_tree_rss_mb", "min_available_gb")},
        "peaks_from_server_logs": {**_pg_log_peaks(pg_log), "ssh_connections": _ssh_log_peak(ssh_log)},
    }
    if node_every:
        result["peaks_sampled"].update(nodes_rss_mb=sampler.peaks["nodes_rss_mb"],
                                       node_processes=sampler.peaks["node_processes"])
    if process["exit_code"] != 0:
        result["output_tail"] = output.read_text(errors="replace")[-3000:]
    result["_attempts"] = ledger["attempts"]  # for the scenario's own figures; dropped before printing
    result["_task_started"] = ledger["task_started"]
    return result


# ---- span figures shared by pdrflow and plain Dask ------------------------------------------------------


def overhead_figures(intervals: list[dict[str, Any]], models: int, slots: int, model_seconds: float,
                     process_wall: float) -> dict[str, Any]:
    """Per-model overhead = wall x slots / models - model seconds, for three walls:
    ``cold`` the whole command (interpreter, cluster start, shutdown), ``span`` first model start to last
    completion, ``steady`` per worker its first start to its last end, summed over workers (no ramp, no tail).
    ``intervals``: {"start", "end", "worker", "model": bool} - a model's run, or (pdrflow) its archival."""
    starts = [i["start"] for i in intervals if i["model"]]
    ends = [i["end"] for i in intervals if i["end"] is not None]
    span = max(ends) - min(starts)
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for interval in intervals:
        by_worker.setdefault(interval["worker"] or "?", []).append(interval)
    busy = sum(max(i["end"] for i in rows if i["end"] is not None) - min(i["start"] for i in rows)
               for rows in by_worker.values())
    runs = [i["end"] - i["start"] for i in intervals if i["model"] and i["end"] is not None]
    return {
        "process_wall_s": round(process_wall, 2), "span_s": round(span, 2), "workers_seen": len(by_worker),
        # a model's own run (pdrflow: its model attempt; plain Dask: its task) beyond the model's seconds
        "run_beyond_model_s_median": round(statistics.median(runs) - model_seconds, 3) if runs else None,
        "models_per_s_span": round(models / span, 3),
        "overhead_s_per_model": {
            "cold": round(process_wall * slots / models - model_seconds, 3),
            "span": round(span * slots / models - model_seconds, 3),
            "steady": round(busy / models - model_seconds, 3),
        },
    }


def pdrflow_intervals(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"start": a["start"], "end": a["end"], "worker": a["worker"], "model": a["kind"] == "model"}
            for a in attempts if a["kind"] in ("model", "archive") and a["start"] is not None]


def model_durations(attempts: list[dict[str, Any]], task_started: dict[int, float]) -> dict[str, Any]:
    """Medians of the successful model and archive attempts (the ledger's times, as the worker wrote them), where
    a worker idled between its models (``task_started``: job id -> its run task's start), and every attempt's
    outcome with the first few distinct errors of the others (why a model ran twice)."""
    done = [a["end"] - a["start"] for a in attempts if a["kind"] == "model" and a["outcome"] == "ok"]
    archivals = [a["end"] - a["start"] for a in attempts if a["kind"] == "archive" and a["outcome"] == "ok"]
    errors = list(dict.fromkeys(f"{a['kind']} {a['outcome']}: {(a['error'] or '')[:200]}" for a in attempts
                                if a["outcome"] != "ok"))
    # Where a worker idles between models: a model's end to the next model's start in the same SLURM job, split
    # at the next run task's start (before it, scheduling; after it, the task's own start up to its ledger
    # attempt), and a model's end to the start of its archival (the driver's round trip is inside all of them).
    between: list[float] = []
    to_task: list[float] = []
    task_to_attempt: list[float] = []
    by_job: dict[Any, list[dict[str, Any]]] = {}
    for a in attempts:
        if a["kind"] == "model" and a["outcome"] == "ok" and a.get("slurm_job"):
            by_job.setdefault(a["slurm_job"], []).append(a)
    for mine in by_job.values():
        mine.sort(key=lambda a: a["start"])
        for a, b in itertools.pairwise(mine):
            between.append(b["start"] - a["end"])
            if b["job"] in task_started:
                to_task.append(task_started[b["job"]] - a["end"])
                task_to_attempt.append(b["start"] - task_started[b["job"]])
    model_end = {a["job"]: a["end"] for a in attempts if a["kind"] == "model" and a["outcome"] == "ok"}
    to_archival = [a["start"] - model_end[a["job"]] for a in attempts
                   if a["kind"] == "archive" and a["outcome"] == "ok" and a["job"] in model_end]
    return {"model_attempt_s_median": round(statistics.median(done), 3) if done else None,
            "model_end_to_next_model_start_s_median": round(statistics.median(between), 3) if between else None,
            "model_end_to_next_model_start_s_total": round(sum(between), 1),
            "model_end_to_next_model_start_s_largest": sorted((round(g, 2) for g in between), reverse=True)[:12],
            "model_end_to_next_task_start_s_median": round(statistics.median(to_task), 3) if to_task else None,
            "task_start_to_model_attempt_s_median": round(statistics.median(task_to_attempt), 3)
            if task_to_attempt else None,
            "model_end_to_archival_start_s_median": round(statistics.median(to_archival), 3) if to_archival else None,
            "archive_attempt_s_median": round(statistics.median(archivals), 3) if archivals else None,
            "attempt_outcomes": dict(Counter(f"{a['kind']} {a['outcome']}" for a in attempts)),
            "other_attempts_errors": errors[:6]}


# ---- plain Dask futures on the same kind of worker jobs ---------------------------------------------------


def null_model(index: int, home: str, scratch: str, species: list[str],
               archive: dict[str, Any] | None = None) -> dict[str, Any]:
    """One null model as a plain Dask task: a fresh scratch dir, the executables linked, pdrexe, onionexe per
    species (as pdrflow runs them), the directory removed. No ledger; with ``archive``, every output file is
    put over SFTP (paramiko, one connection per model, as a hand-written script would), else no archive."""
    from distributed import get_worker

    started = time.time()
    d = Path(tempfile.mkdtemp(prefix=f"plain-{index}-", dir=scratch))
    for sub in ("pdroutput", "onionoutput", "Out"):
        (d / sub).mkdir()
    for name in ("pdrexe", "onionexe", "onioninpdata", "In", "pdrinpdata"):
        (d / name).symlink_to(Path(home) / name)
    (d / "PDRNEW.INP").write_text(f"null model {index}\n")
    with open(d / "pdroutput" / "TEXTOUT", "wb") as out:
        subprocess.run(["./pdrexe"], cwd=d, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=600)
    for s in species:
        shutil.copyfile(d / "onioninpdata" / f"ONION3.INP.{s}", d / "ONION3.INP")
        shutil.copyfile(d / "pdroutput" / "CTRL_IND", d / "CTRL_IND")
        with open(d / "onionoutput" / "TEXTOUT", "wb") as out:
            subprocess.run(["./onionexe", str(d / "pdroutput" / "pdrstruct_s.hdf5")], cwd=d, stdout=out,
                           stderr=subprocess.STDOUT, check=True, timeout=600)
    if archive is not None:
        _put_over_sftp(d, f"{archive['root']}/model-{index}", archive)
    shutil.rmtree(d)
    return {"start": started, "end": time.time(), "worker": get_worker().address, "model": True}


def _put_over_sftp(directory: Path, remote: str, archive: dict[str, Any]) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(archive["known_hosts"])
    client.connect(archive["host"], port=archive["port"], username=archive["username"],
                   key_filename=archive["key_filename"], allow_agent=False, look_for_keys=False, timeout=30)
    try:
        sftp = client.open_sftp()
        made: set[str] = set()
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
            target = f"{remote}/{path.relative_to(directory).as_posix()}"
            parts = target.split("/")
            for depth in range(2, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    with contextlib.suppress(OSError):
                        sftp.mkdir(folder)
                    made.add(folder)
            sftp.put(str(path), target)
    finally:
        client.close()


def plain_dask_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child process (SLURM_CONF in its environment): SLURMCluster as pdrflow starts it, client.map."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client, as_completed
    from distributed.security import Security

    from pdrflow.cluster.slurm import worker_retirement

    started = time.time()
    cluster = SLURMCluster(
        cores=spec["cores"], memory=spec["memory"], processes=spec["processes"], walltime=spec["walltime"],
        python=sys.executable, interface=spec["interface"], local_directory=spec["local_directory"],
        log_directory=spec["log_directory"],
        worker_extra_args=[*worker_retirement(spec["walltime"]).worker_args(),
                           *([] if spec["worker_dashboard"] else ["--no-dashboard"])],
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        security=Security.temporary(), protocol="tls://", shared_temp_directory=spec["credentials"])
    try:
        cluster.adapt(minimum_jobs=spec["jobs"], maximum_jobs=spec["jobs"])
        with Client(cluster) as client:
            futures = client.map(null_model, range(spec["models"]), home=spec["home"], scratch=spec["scratch"],
                                 species=spec["species"], archive=spec.get("archive"), pure=False)
            intervals = [future.result() for future in as_completed(futures)]
    finally:
        cluster.close()
    return {"intervals": intervals, "in_process_wall_s": round(time.time() - started, 2)}


# ---- the scenarios ------------------------------------------------------------------------------------


def scenario_measured(work: Path, nodes: int, cpus: int, jobs: int, models: int, seconds: float) -> dict[str, Any]:
    with services(work, nodes, cpus, cpus * 1024) as svc:
        home = slow_null_home(work, write_null_home(work / "null-home"), seconds)
        config = run_config(work / "run", svc, home, models=models, jobs=jobs, cores=1, processes=1)
        result = pdrflow_run(svc, config, timeout=900)
    attempts, task_started = result.pop("_attempts"), result.pop("_task_started")
    return {"setup": {"nodes": nodes, "cpus_per_node": cpus, "worker_jobs": jobs, "processes_per_job": 1,
                      "cores_per_job": 1, "min_jobs": jobs, "max_jobs": jobs, "models": models,
                      "model_seconds": seconds, "postgresql_max_connections": SERVER_MAX_CONNECTIONS,
                      "sshd_max_startups": "default (10:30:100)", "onion_species": len(NULL_SPECIES),
                      "files_per_model": FILES_PER_MODEL},
            **result, **model_durations(attempts, task_started)}


def scenario_wide(work: Path, nodes: int, processes: int, models: int, seconds: float) -> dict[str, Any]:
    with services(work, nodes, processes, processes * 1024) as svc:
        home = slow_null_home(work, write_null_home(work / "null-home"), seconds)
        config = run_config(work / "run", svc, home, models=models, jobs=nodes, cores=processes, processes=processes)
        # 8 jobs x 8 processes start ~140 Python processes at once on this 2-core machine: with dask-jobqueue's
        # 60 s death timeout the nannies gave up before their workers had imported distributed (the first
        # run: 88 jobs submitted, none archived). A worker's patience is dask's setting, not pdrflow's.
        result = pdrflow_run(svc, config, timeout=1500, node_every=2.0,
                             env={"DASK_JOBQUEUE__SLURM__DEATH_TIMEOUT": str(WIDE_DEATH_TIMEOUT_S)})
    attempts, task_started = result.pop("_attempts"), result.pop("_task_started")
    workers = nodes * processes
    figures = overhead_figures(pdrflow_intervals(attempts), models, workers, seconds, result["wall_s"])
    node_rss = result["peaks_sampled"].get("nodes_rss_mb") or 0.0
    return {"setup": {"nodes": nodes, "worker_jobs": nodes, "processes_per_job": processes,
                      "death_timeout_s": WIDE_DEATH_TIMEOUT_S,
                      "cores_per_job": processes, "workers": workers, "models": models, "model_seconds": seconds,
                      "postgresql_max_connections": SERVER_MAX_CONNECTIONS, "sshd_max_startups": "default"},
            **result, **model_durations(attempts, task_started),
            "models_per_s_wall": round(models / result["wall_s"], 3),
            "models_per_s_span": figures["models_per_s_span"], "span_s": figures["span_s"],
            "workers_seen": figures["workers_seen"],
            "node_rss_mb_per_worker": round(node_rss / workers, 1) if workers else None,
            # their nodes' memory alone for 128 workers, at this RSS a worker (nanny + worker process), against this
            # machine's (``--wide-processes 16`` runs 128)
            "estimate_node_rss_gb_for_128_workers": round(node_rss / workers * 128 / 1024, 1) if workers else None,
            "machine_memory_gb": round(_memory_total() / 2**30, 1)}


# (name, SFTP put of every output, worker dashboards): dask-jobqueue's defaults as a script would use them,
# and plain Dask started as pdrflow starts its workers (no dashboard of each worker's own).
PLAIN_CONTENDERS = (("plain_dask", False, True), ("plain_dask_no_worker_dashboard", False, False),
                    ("plain_dask_with_sftp", True, True))


def scenario_overhead(work: Path, nodes: int, cpus: int, models: int, seconds: float,
                      windows: tuple[int, ...] = ()) -> dict[str, Any]:
    """``windows``: pdrflow again with each of these ``run.max_in_flight`` (``pdrflow_window_N``), after the
    run with the default (the worker slots)."""
    jobs = nodes * cpus
    out: dict[str, Any] = {"setup": {"nodes": nodes, "cpus_per_node": cpus, "worker_jobs": jobs,
                                     "processes_per_job": 1, "cores_per_job": 1, "worker_slots": jobs,
                                     "models": models, "model_seconds": seconds,
                                     "order": "plain Dask, plain Dask without worker dashboards, plain Dask "
                                              "with an SFTP put of every output, then pdrflow, each on a fresh "
                                              "box"}}
    home = slow_null_home(work, write_null_home(work / "null-home"), seconds)
    for name, archive, dashboard in PLAIN_CONTENDERS:
        with services(work / name, nodes, cpus, cpus * 1024) as svc:
            out[name] = plain_dask_run(svc, work / name / "run", home, jobs, models, seconds, archive, dashboard)
    for window in (None, *windows):
        contender = "pdrflow" if window is None else f"pdrflow_window_{window}"
        with services(work / contender, nodes, cpus, cpus * 1024) as svc:
            config = run_config(work / contender / "run", svc, home, models=models, jobs=jobs, cores=1, processes=1,
                                max_in_flight=window)
            cpu_before = machine_cpu_s()
            per_kind = ProcessCpu()
            per_kind.start()
            result = pdrflow_run(svc, config, timeout=900)
            machine_cpu = machine_cpu_s() - cpu_before
            cpu_by_kind = per_kind.stop()
        attempts, task_started = result.pop("_attempts"), result.pop("_task_started")
        out[contender] = {**{k: result[k] for k in ("exit_code", "wall_s", "cpu_s_with_children", "driver_cpu_s",
                                                    "archived", "computed_once", "refusals")},
                          "machine_cpu_s_per_model": round(machine_cpu / models, 3),
                          "cpu_s_by_process_kind": cpu_by_kind,
                          **model_durations(attempts, task_started),
                          **overhead_figures(pdrflow_intervals(attempts), models, jobs, seconds, result["wall_s"])}
        for name, _, _ in PLAIN_CONTENDERS:
            if "overhead_s_per_model" in out[name]:
                plain, ours = out[name]["overhead_s_per_model"], out[contender]["overhead_s_per_model"]
                out[f"ratio_{contender}_to_{name}"] = {k: round(ours[k] / plain[k], 2) if plain[k] > 0 else None
                                                       for k in ours}
    return out


PROCESS_KINDS = (("driver", ("-m pdrflow run", "--child-dask")), ("benchmark", ("bench_scale.py",)),
                 ("postgres", ("postgres",)), ("sshd", ("sshd", "sftp-server")),
                 ("slurm", ("slurmd", "slurmstepd", "slurmctld", "munged", "sbatch", "squeue", "scancel", "sinfo")),
                 ("dask_worker", ("distributed.cli.dask_worker", "multiprocessing.spawn", "dask worker")),
                 ("models", ("pdrexe", "onionexe", "sleep")))


class ProcessCpu(threading.Thread):
    """CPU seconds per kind of process over a run (what ``machine_cpu_s`` spreads over): every process is read
    every ``interval`` s; its last reading counts, less its reading at the start for those already running then.
    A process that lives less than ``interval`` s (a model's shell steps) may be missed."""

    def __init__(self, driver_pid: int | None = None, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.driver_pid, self.interval = driver_pid, interval
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], tuple[str, float]] = {}
        self._started_at: set[tuple[int, float]] = set()
        self.done = threading.Event()

    def _kind(self, process: Any) -> str:
        import psutil

        if self.driver_pid is not None and process.pid == self.driver_pid:
            return "driver"
        try:
            words = " ".join(process.cmdline()) or process.name()
        except psutil.Error:
            return "other"
        for kind, needles in PROCESS_KINDS:
            if any(needle in words for needle in needles):
                return kind
        return "other"

    def _read(self, first: bool) -> None:
        import psutil

        for process in psutil.process_iter(["create_time"]):
            try:
                times = process.cpu_times()
                key = (process.pid, process.info["create_time"])
                cpu = times.user + times.system
                if key not in self._last:
                    self._last[key] = (self._kind(process), cpu)
                    if first:
                        self._first[key] = cpu
                else:
                    self._last[key] = (self._last[key][0], cpu)
            except psutil.Error:
                continue

    def run(self) -> None:
        self._read(first=True)
        while not self.done.wait(self.interval):
            self._read(first=False)
        self._read(first=False)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(timeout=30)
        totals: dict[str, float] = {}
        for key, (kind, cpu) in self._last.items():
            totals[kind] = totals.get(kind, 0.0) + cpu - self._first.get(key, 0.0)
        return {kind: round(seconds, 1) for kind, seconds in sorted(totals.items())}


def machine_cpu_s() -> float:
    """CPU seconds this machine spent (every process: workers, nodes' daemons, sshd, PostgreSQL), from /proc/stat.
    On the box every node shares this machine's 2 cores, so per model this bounds models/s."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # everything but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def plain_dask_run(svc: Services, run: Path, home: Path, jobs: int, models: int, seconds: float,
                   archive: bool, worker_dashboard: bool = True) -> dict[str, Any]:
    """``client.map`` of the null models on SLURMCluster worker jobs like pdrflow's, in a child process; with
    ``archive`` each task also puts its outputs over SFTP to the box's sshd. ``worker_dashboard``: dask-jobqueue's
    default (each worker a Bokeh dashboard); False: ``--no-dashboard``, as pdrflow's workers start."""
    run.mkdir(parents=True)
    spec: dict[str, Any] = {
        "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00", "interface": svc.box.interface,
        "local_directory": str(run / "worker-space"), "log_directory": str(run / "worker-logs"),
        "credentials": str(run), "jobs": jobs, "models": models, "home": str(home),
        "scratch": str(svc.box.scratch), "species": list(NULL_SPECIES), "worker_dashboard": worker_dashboard}
    if archive:
        (run / "archive").mkdir()
        spec["archive"] = {"host": svc.sshd.host, "port": svc.sshd.port, "username": "root",
                           "key_filename": str(svc.sshd.client_key), "root": str(run / "archive"),
                           "known_hosts": str(svc.sshd.write_known_hosts(run / "known_hosts"))}
    (run / "spec.json").write_text(json.dumps(spec))
    output = run / "plain-dask.out"
    cpu_before = machine_cpu_s()
    per_kind = ProcessCpu()
    per_kind.start()
    result = run_measured([sys.executable, __file__, "--child-dask", str(run / "spec.json")],
                          {**svc.env(), "PYTHONPATH": str(REPO)}, run, output, 900, Sampler(svc, None))
    machine_cpu = machine_cpu_s() - cpu_before
    cpu_by_kind = per_kind.stop()
    lines = output.read_text(errors="replace").strip().splitlines()
    if result["exit_code"] != 0 or not lines:
        return {**result, "output_tail": "\n".join(lines)[-3000:]}
    child = json.loads(lines[-1])
    return {**{k: result[k] for k in ("exit_code", "wall_s", "cpu_s_with_children", "driver_cpu_s")},
            "models_done": len(child["intervals"]),
            "archived_files_on_disk": files_under(run / "archive") if archive else 0,
            "machine_cpu_s_per_model": round(machine_cpu / models, 3), "cpu_s_by_process_kind": cpu_by_kind,
            **overhead_figures(child["intervals"], models, jobs, seconds, result["wall_s"])}


def _jobcomp(box: ClusterBox) -> list[dict[str, Any]]:
    """slurmctld's job completion records (jobcomp/filetxt): each job's id, state, start and end."""
    path = box.directory / "jobcomp.log"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("StartTime", "Unknown") == "Unknown" or fields.get("EndTime", "Unknown") == "Unknown":
            continue
        start = datetime.fromisoformat(fields["StartTime"]).astimezone().timestamp()
        end = datetime.fromisoformat(fields["EndTime"]).astimezone().timestamp()
        records.append({"job": fields["JobId"], "state": fields.get("JobState"), "start": start, "end": end})
    return records


def scenario_walltime(work: Path, jobs: int, models: int, seconds: float, walltime: str) -> dict[str, Any]:
    from pdrflow.cluster.slurm import worker_retirement

    with services(work, jobs, 1, 2048) as svc:
        home = slow_null_home(work, write_null_home(work / "null-home"), seconds)
        config = run_config(work / "run", svc, home, models=models, jobs=jobs, cores=1, processes=1,
                            walltime=walltime)
        result = pdrflow_run(svc, config, timeout=1200)
        time.sleep(2)  # slurmctld writes a job's completion record once the job has ended
        records = _jobcomp(svc.box)
    attempts, task_started = result.pop("_attempts"), result.pop("_task_started")
    allocated = sum(r["end"] - r["start"] for r in records)
    in_models = sum(a["end"] - a["start"] for a in attempts if a["kind"] == "model" and a["end"] is not None)
    in_ok_models = sum(a["end"] - a["start"] for a in attempts if a["kind"] == "model" and a["outcome"] == "ok")
    in_archivals = sum(a["end"] - a["start"] for a in attempts if a["kind"] == "archive" and a["end"] is not None)
    # Where each job's time went: before its first attempt (start-up, joining), after its last (retiring).
    by_job: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        if a["slurm_job"] and a["outcome"] == "ok":  # a cut attempt's end is written later, by the driver
            by_job.setdefault(str(a["slurm_job"]), []).append(a)
    head = tail = 0.0
    idle_jobs = 0
    for record in records:
        mine = by_job.get(record["job"])
        if not mine:
            idle_jobs += 1
            continue
        head += max(0.0, min(a["start"] for a in mine) - record["start"])
        tail += max(0.0, record["end"] - max(a["end"] for a in mine))
    # Models cut by a retiring worker, and models computed twice: how long before its SLURM job ended each
    # started (cut) or ended (computed, then its outputs left with the worker before the archival ran).
    ends = {r["job"]: r["end"] for r in records}
    cut = sorted(round(ends[str(a["slurm_job"])] - a["start"], 1) for a in attempts
                 if a["kind"] == "model" and a["outcome"] != "ok" and str(a["slurm_job"]) in ends)
    ok_runs = Counter(a["job"] for a in attempts if a["kind"] == "model" and a["outcome"] == "ok")
    redone = sorted(round(ends[str(a["slurm_job"])] - a["end"], 1) for a in attempts
                    if a["kind"] == "model" and a["outcome"] == "ok" and ok_runs[a["job"]] > 1
                    and str(a["slurm_job"]) in ends and a is next(b for b in attempts if b["job"] == a["job"]
                                                                 and b["kind"] == "model" and b["outcome"] == "ok"))
    lifetime = worker_retirement(walltime).worker_args()
    return {"setup": {"worker_jobs_at_once": jobs, "walltime": walltime, "worker_args": lifetime,
                      "models": models, "model_seconds": seconds,
                      "work_s_per_slot": round(models * seconds / jobs, 1),
                      "allocation_source": "slurmctld jobcomp/filetxt StartTime/EndTime (1 s resolution); "
                                           "sacct needs accounting storage, off in the box"},
            **{k: result[k] for k in ("exit_code", "wall_s", "states", "model_attempts_per_job", "computed_once",
                                      "archived", "refusals", "peaks_sampled", "peaks_from_server_logs")},
            "slurm_jobs": len(records), "slurm_job_states": dict(Counter(r["state"] for r in records)),
            "jobs_that_ran_no_attempt": idle_jobs,
            "allocated_worker_s": round(allocated, 1), "model_attempt_s": round(in_models, 1),
            "archive_attempt_s": round(in_archivals, 1),
            "model_sleep_s": round(result["archived"] * seconds, 1),
            "ok_model_attempt_s": round(in_ok_models, 1),
            "fraction_in_model_attempts": round(in_models / allocated, 3) if allocated else None,
            "fraction_in_ok_model_attempts": round(in_ok_models / allocated, 3) if allocated else None,
            # the same without each job's start-up (SLURM start to its worker's first attempt): what a long
            # walltime makes negligible and this time-scaled one does not
            "fraction_in_model_attempts_after_startup": round(in_models / (allocated - head), 3)
            if allocated > head else None,
            "fraction_in_model_and_archive_attempts": round((in_models + in_archivals) / allocated, 3)
            if allocated else None,
            "job_head_s_total": round(head, 1), "job_tail_s_total": round(tail, 1),
            "cut_model_attempts_started_s_before_job_end": cut,
            "models_computed_twice_first_run_ended_s_before_job_end": redone,
            **model_durations(attempts, task_started)}


SCENARIOS = ("measured", "wide", "overhead", "walltime")
WIDE_DEATH_TIMEOUT_S = 600
# The walltime grid's time scale: 5 s models in 2.5 min batch jobs (workers retire after 2 min), about the
# ratio of hour-long models to a day's walltime. The first run used 1 min jobs (30 s lifetimes): there a
# worker's start-up and its last, refused model alone cost a fifth of the allocation.
WALLTIME = "00:02:30"
WALLTIME_MODELS = 192
WALLTIME_MODEL_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 nodes x 2 workers, 8 models: checks that it runs")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--walltime", default=f"{WALLTIME},{WALLTIME_MODELS},{WALLTIME_MODEL_SECONDS:g}",
                        metavar="HH:MM:SS,MODELS,SECONDS",
                        help="the walltime scenario's job walltime, number of models and model seconds "
                             "(default %(default)s; a longer walltime weighs each job's start-up less)")
    parser.add_argument("--wide-processes", type=int, default=8, metavar="N",
                        help="the wide scenario's worker processes a node, 8 nodes (default 8: 64 workers; 16: 128 "
                             "workers and twice the models); stopped if available memory falls below "
                             f"{MEMORY_FLOOR_GB} GB")
    parser.add_argument("--overhead-windows", default="", metavar="N[,N...]",
                        help="the overhead scenario also runs pdrflow with each of these run.max_in_flight")
    parser.add_argument("--child-dask", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_dask:
        print(json.dumps(plain_dask_child(json.loads(Path(args.child_dask).read_text()))))
        return
    quick = args.quick
    windows = tuple(int(n) for n in args.overhead_windows.split(",") if n)
    walltime, walltime_models, walltime_seconds = args.walltime.split(",")
    work = Path(tempfile.mkdtemp(prefix="pdrflow-bench-scale-"))
    result: dict[str, Any] = {
        "quick": quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "scenarios": {},
    }
    runs = {
        "measured": lambda w: scenario_measured(w, 2, 2, 4, 8, 1.0) if quick else
        scenario_measured(w, 3, 10, 30, 60, 5.0),
        "wide": lambda w: scenario_wide(w, 2, 2, 8, 1.0) if quick else
        scenario_wide(w, 8, args.wide_processes, 16 * args.wide_processes, 1.5),
        "overhead": lambda w: scenario_overhead(w, 2, 2, 8, 1.0, windows) if quick else
        scenario_overhead(w, 4, 4, 160, 2.0, windows),
        "walltime": lambda w: scenario_walltime(w, 2, 30, 3.0, "00:01:00") if quick else
        scenario_walltime(w, 4, int(walltime_models), float(walltime_seconds), walltime),
    }
    try:
        for name in args.only.split(","):
            print(f"bench_scale: {name} ({datetime.now(UTC):%H:%M:%S})", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                entry = runs[name](work / name)
            except Exception as error:  # noqa: BLE001 - one failing scenario must not hide the others' figures
                entry = {"error": f"{type(error).__name__}: {error}"[-3000:]}
            entry["scenario_wall_s"] = round(time.monotonic() - started, 1)
            entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            result["scenarios"][name] = entry
            print(f"bench_scale: {name} done in {entry['scenario_wall_s']} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
