"""Recovery times of ``pdrflow run``, measured for real; prints one JSON document.

    .venv/bin/python benchmarks/bench_recovery.py [--kills 3] [--outage-s 5] [--quick] [--skip-sftp]

1. **Worker death**: a grid of null models whose pdrexe sleeps ``--model-s`` seconds runs on 2
   workers (``pdrflow run`` in a child process). While a model is running, the worker process
   running it (found by the address recorded in the ledger's open attempt) gets ``kill -9``.
   Measured: from the kill to the ledger's new model attempt of that job (its ``started_at``) -
   the time until that model runs again - and whether the run still ends with every model
   archived. Repeated ``--kills`` times (different models).
2. **SFTP outage**: the archive is an OpenSSH sshd behind pdrflow's fault-injecting TCP proxy
   (tests/services). Once the first model is archived the proxy cuts every connection and
   refuses new ones for ``--outage-s`` seconds (longer than the backend's own retries inside the
   archival task, so that jobs become ``failed_storage``), then heals. Measured: from the heal to the
   moment every job is archived, with pdrflow's shipped backoff (archive_backoff_initial 2 s,
   doubling, max 120 s, 6 attempts) unless ``--backoff-initial`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import psutil
from helpers import base_config, write_config, write_null_home


def rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute(query, params).fetchall()
    except sqlite3.Error:
        return []


def utc_seconds(text: str) -> float:
    """A ledger timestamp (naive UTC, as SQLAlchemy stores it on SQLite) as a Unix time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def pid_listening_on(port: int) -> int | None:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            return connection.pid
    return None


def slow_home(root: Path, seconds: float) -> Path:
    """The null KOSMA-tau home, with a pdrexe that takes ``seconds``."""
    home = write_null_home(root)
    pdrexe = home / "pdrexe"
    text = pdrexe.read_text().replace('echo "null pdrexe: not KOSMA-tau"',
                                      f'echo "null pdrexe: not KOSMA-tau"\nsleep {seconds}')
    pdrexe.write_text(text)
    return home


def worker_death(work: Path, kills: int, model_s: float) -> dict[str, Any]:
    home = slow_home(work / "home", model_s)
    models = max(6, 3 * kills + 4)
    config = base_config(work, home=home, grid="recovery")
    config["grid"]["density"] = [10 ** (2 + 0.1 * i) for i in range(models)]
    config["grid"]["fuv"] = [10.0]
    path = write_config(work / "run.yaml", config)
    db = work / "ledger.sqlite"
    started = time.time()
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed: list[dict[str, Any]] = []
    try:
        while len(killed) < kills and driver.poll() is None and time.time() - started < 300:
            # An open model attempt that has run for a moment (mid-model), on a job not killed before.
            open_attempts = rows(db, "select a.job_id, a.worker, a.started_at from attempts a "
                                     "where a.kind='model' and a.outcome='running' order by a.id")
            done_jobs = {k["job_id"] for k in killed}
            target = next(((job, worker, t) for job, worker, t in open_attempts
                           if job not in done_jobs and worker and time.time() - utc_seconds(t) > 0.3 * model_s),
                          None)
            if target is None:
                time.sleep(0.05)
                continue
            job_id, worker, attempt_started = target
            pid = pid_listening_on(int(worker.rsplit(":", 1)[1]))
            if pid is None:
                time.sleep(0.05)
                continue
            kill_time = time.time()
            os.kill(pid, signal.SIGKILL)
            record: dict[str, Any] = {"job_id": job_id, "worker_pid": pid,
                                      "killed_after_model_ran_s": round(kill_time - utc_seconds(attempt_started), 2)}
            deadline = time.time() + 120
            while time.time() < deadline:
                again = rows(db, "select started_at, worker from attempts where job_id=? and kind='model' "
                                 "order by id", job_id)
                if len(again) >= 2:
                    record["seconds_until_running_again"] = round(utc_seconds(again[-1][0]) - kill_time, 3)
                    record["seen_by_poll_s"] = round(time.time() - kill_time, 3)
                    record["rerun_on_same_address"] = again[-1][1] == worker
                    break
                time.sleep(0.01)
            killed.append(record)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGINT)
            driver.wait(timeout=120)
    counts = dict(rows(db, "select state, count(*) from jobs group by state"))
    attempts = dict(rows(db, "select outcome, count(*) from attempts where kind='model' group by outcome"))
    waits = [k["seconds_until_running_again"] for k in killed if "seconds_until_running_again" in k]
    return {
        "models": models,
        "model_seconds": model_s,
        "kills": killed,
        "seconds_until_running_again": {"min": min(waits), "max": max(waits),
                                        "median": sorted(waits)[len(waits) // 2]} if waits else None,
        "run_exit_code": driver.returncode,
        "run_wall_s": round(time.time() - started, 2),
        "final_states": counts,
        "model_attempts_by_outcome": attempts,
        "output_tail": output.strip().splitlines()[-3:] if output else [],
    }


def sftp_outage(work: Path, outage_s: float, backoff_initial: float, backoff_max: float) -> dict[str, Any]:
    from services.sshd import Sshd
    from services.tcp_proxy import TcpProxy

    models = 8
    archive = work / "archive"
    home = write_null_home(work / "home")
    env = {**os.environ, "HOME": str(work), "SSH_AUTH_SOCK": "", "PDRFLOW_SFTP_PASSWORD": "",
           "PDR_STORAGE_PASSWORD": ""}
    with Sshd(workdir=work / "sshd") as server, TcpProxy(server.port) as proxy:
        known = server.write_known_hosts(work / "known_hosts", proxy.port)
        storage = {"kind": "sftp", "host": server.host, "port": proxy.port, "username": "root", "root": str(archive),
                   "key_filename": str(server.client_key), "known_hosts": str(known), "connect_timeout": 5,
                   "operation_timeout": 5, "files_in_flight": 4}
        config = base_config(work, home=home, grid="outage", storage=storage,
                             run={"archive_attempts": 6, "archive_backoff_initial": backoff_initial,
                                  "archive_backoff_max": backoff_max})
        config["grid"]["density"] = [10 ** (2 + 0.1 * i) for i in range(models // 2)]
        path = write_config(work / "run.yaml", config)
        db = work / "ledger.sqlite"
        started = time.time()
        driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        marks: dict[str, Any] = {}
        try:
            while driver.poll() is None and time.time() - started < 120:
                if rows(db, "select count(*) from jobs where state='archived'") and \
                        rows(db, "select count(*) from jobs where state='archived'")[0][0] >= 1:
                    break
                time.sleep(0.01)
            proxy.refuse()
            marks["cut_at_archived"] = rows(db, "select count(*) from jobs where state='archived'")[0][0]
            cut = time.time()
            peak = 0
            while time.time() - cut < outage_s:
                peak = max(peak, rows(db, "select count(*) from jobs where state='failed_storage'")[0][0])
                time.sleep(0.05)
            marks["failed_storage_peak_during_outage"] = peak
            marks["archived_during_outage"] = rows(db, "select count(*) from jobs where state='archived'")[0][0]
            proxy.heal()
            healed = time.time()
            while driver.poll() is None and time.time() - healed < 300:
                if rows(db, "select count(*) from jobs where state='archived'")[0][0] >= models:
                    marks["seconds_from_heal_to_all_archived"] = round(time.time() - healed, 2)
                    break
                time.sleep(0.02)
            output, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGINT)
                driver.wait(timeout=120)
        attempts = dict(rows(db, "select kind, count(*) from attempts group by kind"))
        counts = dict(rows(db, "select state, count(*) from jobs group by state"))
    return {
        "models": models,
        "outage_s": outage_s,
        "backoff": {"initial_s": backoff_initial, "max_s": backoff_max, "attempts": 6},
        **marks,
        "run_exit_code": driver.returncode,
        "run_wall_s": round(time.time() - started, 2),
        "final_states": counts,
        "attempts_by_kind": attempts,
        "output_tail": output.strip().splitlines()[-3:] if output else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--model-s", type=float, default=3.0, help="seconds each null pdrexe sleeps")
    parser.add_argument("--outage-s", type=float, default=15.0,
                        help="long enough to outlast the SFTP backend's own retries (4 tries, <= 5 s)")
    parser.add_argument("--backoff-initial", type=float, default=2.0)
    parser.add_argument("--backoff-max", type=float, default=120.0)
    parser.add_argument("--skip-sftp", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 kill, a 10 s outage")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.outage_s = 1, 10.0
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    with tempfile.TemporaryDirectory(prefix="pdrflow-bench-recovery-") as tmp:
        work = Path(tmp)
        (work / "kill").mkdir()
        result["worker_death"] = worker_death(work / "kill", args.kills, args.model_s)
        if not args.skip_sftp:
            (work / "sftp").mkdir()
            result["sftp_outage"] = sftp_outage(work / "sftp", args.outage_s, args.backoff_initial,
                                                args.backoff_max)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
