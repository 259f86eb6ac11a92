"""The whole grid inside one SLURM allocation: dask-jobqueue's SLURMRunner.

Every srun task runs ``pdrflow run CONFIG``; SLURMRunner makes rank 0 the scheduler, rank 1 the
driver (the only one that goes on), and the other ranks workers. Non-driver ranks must join the
runner before anything else, so that only the driver touches the ledger: ``join_allocation``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import AllocationClusterConfig
from ..errors import ConfigError
from .base import ClusterHandle


def join_allocation(config: AllocationClusterConfig) -> Any:
    """Enter SLURMRunner. Returns on the driver rank only; the other ranks serve and then exit."""
    if "SLURM_JOB_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        raise ConfigError("cluster.kind: allocation runs inside `srun` in an sbatch allocation "
                          "(see slurm/pdrflow-allocation.sbatch)")
    from dask_jobqueue.slurm import SLURMRunner

    directory = Path(config.scheduler_directory or os.environ.get("SLURM_SUBMIT_DIR", "."))
    options = {"interface": config.interface} if config.interface else {}
    runner = SLURMRunner(
        scheduler_file=str(directory / "pdrflow-scheduler-{job_id}.json"),
        scheduler_options={**options, "dashboard_address": config.dashboard_address or ":0"},
        worker_options={**options, "nthreads": 1},
    )
    runner.__enter__()
    return runner


@contextmanager
def allocation_cluster(runner: Any) -> Iterator[ClusterHandle]:
    from distributed import Client

    client = Client(runner)
    try:
        workers = max(1, int(os.environ.get("SLURM_NTASKS", "3")) - 2)
        client.wait_for_workers(workers, timeout=120)
        yield ClusterHandle(client=client, worker_slots=workers, shared_scratch=False,
                            dashboard_link=client.dashboard_link)
    finally:
        client.close()
        runner.__exit__(None, None, None)  # stops the scheduler and with it the worker ranks
