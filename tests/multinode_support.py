"""What the cluster-box tests share (tests/test_multinode.py, tests/test_multinode_faults.py): a run's config
for the box, the ledger's attempts, a worker's node address."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import base_config, write_config
from services.cluster_box import ClusterBox
from services.databases import DatabaseServer


def grid_config(tmp_path: Path, home: Path, box: ClusterBox, server: DatabaseServer, *, jobs: int = 3,
                **grid: Any) -> Path:
    """A run on the box: one single-core worker job per node (``jobs`` of them), the ledger on ``server``."""
    config = base_config(tmp_path, home=home, cluster={
        "kind": "slurm", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00",
        "interface": box.interface, "min_jobs": jobs, "max_jobs": jobs,
        "local_directory": str(tmp_path / "worker-space"), "log_directory": str(tmp_path / "worker-logs"),
        "dashboard_address": "127.0.0.1:0",
    }, database={"url": server.url}, scratch={"root": str(box.scratch)})
    config["cluster"].pop("n_workers", None)
    config["grid"].update(grid)
    return write_config(tmp_path / "run.yaml", config)


def attempt_places(server: DatabaseServer) -> list[tuple[int, str, str, str, str]]:
    """(job id, kind, outcome, host, worker) of every attempt."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server.url_with_password)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(  # type: ignore[misc]
                text("select job_id, kind, outcome, host, worker from attempts order by id"))]
    finally:
        engine.dispose()


def worker_address(worker: str) -> str:
    """tls://198.18.0.11:40123 -> 198.18.0.11"""
    return re.sub(r"^\w+://|:\d+$", "", worker)


def gated_null_home(tmp_path: Path, null_home: Path, *, pad_bytes: int = 0) -> tuple[Path, Path]:
    """(home, gate): a null home whose models wait until the test creates the gate file. Holding them until one
    computes on every node keeps the first worker up from taking the whole grid (a loaded machine starts the
    others late), and makes their ends and archivals fall together."""
    from helpers import slow_null_home

    gate = tmp_path / "gate"
    home = slow_null_home(tmp_path, null_home, 0, pad_bytes=pad_bytes)
    pdrexe = home / "pdrexe"
    pdrexe.write_text(pdrexe.read_text().replace("sleep 0\n", f"while [ ! -e {gate} ]; do sleep 0.1; done\n"))
    return home, gate


def computing_workers(server: DatabaseServer) -> set[str]:
    """The workers with a model attempt running now (none before the driver has made the ledger's tables)."""
    from sqlalchemy.exc import ProgrammingError

    try:
        places = attempt_places(server)
    except ProgrammingError:
        return set()
    return {worker for _, kind, outcome, _, worker in places if kind == "model" and outcome == "running"}


@contextmanager
def driver_process(config: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``pdrflow run`` in a child process (stdout and stderr together), killed if it still runs at the end."""
    driver = subprocess.Popen([sys.executable, "-m", "pdrflow", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, **env, "COLUMNS": "200"})
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
