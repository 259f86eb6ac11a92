"""What the cluster-box tests share (tests/test_multinode.py, tests/test_multinode_faults.py): a run's config
for the box, the ledger's attempts, a worker's node address."""

from __future__ import annotations

import re
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
