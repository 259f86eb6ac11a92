"""The whole grid inside one SLURM allocation: dask-jobqueue's SLURMRunner.

Every srun task runs ``pdrflow run CONFIG``; SLURMRunner makes rank 0 the scheduler, rank 1 the
driver (the only one that goes on), and the other ranks workers. Non-driver ranks must join the
runner before anything else, so that only the driver touches the ledger: ``join_allocation``.

With ``security: tls`` rank 0 makes the run's credentials and writes them to a 0700 directory next
to the scheduler file (``pdrflow-tls-<job id>-<restart count>``); the other ranks wait for them and
load them into memory. Scheduler, workers and the driver's client then speak TLS only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.config

from ..config import AllocationClusterConfig, Config
from ..errors import ConfigError
from .base import SCHEDULER_SETTINGS, ClusterHandle
from .security import (
    PROTOCOL,
    local_dashboard_link,
    read_credentials,
    remove_directory,
    run_security,
    warn_if_dashboard_exposed,
    warn_insecure,
    write_credentials,
)

if TYPE_CHECKING:
    from ..ledger.lease import GridLease

log = logging.getLogger("pdrflow")


def join_allocation(config: AllocationClusterConfig) -> Any:
    """Enter SLURMRunner. Returns on the driver rank only; the other ranks serve and then exit."""
    if "SLURM_JOB_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        raise ConfigError("cluster.kind: allocation runs inside `srun` in an sbatch allocation "
                          "(see slurm/pdrflow-allocation.sbatch)")
    from dask_jobqueue.slurm import SLURMRunner

    directory = Path(config.scheduler_directory or os.environ.get("SLURM_SUBMIT_DIR", "."))
    rank, job_id = int(os.environ["SLURM_PROCID"]), os.environ["SLURM_JOB_ID"]
    # A requeued job keeps its id: the restart count keeps its ranks off the previous attempt's credentials.
    credentials = directory / f"pdrflow-tls-{job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    security = None
    if config.security == "tls":
        if rank == 0:  # the scheduler rank (SLURMRunner's rule): it makes the run's credentials
            security = run_security("tls")
            if security is not None:
                write_credentials(credentials, security)
        else:
            security = read_credentials(credentials)
    secure: dict[str, Any] = {"security": security, "protocol": PROTOCOL} if security is not None else {}
    options = {"interface": config.interface} if config.interface else {}
    if rank == 0 and security is not None:
        # scancel and the time limit end tasks with SIGTERM: exit through the finally below, which
        # removes the credentials (SLURMRunner itself turns SIGINT into an exit the same way).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        # Rank 0 and the workers serve inside this call until the scheduler stops, then exit.
        with dask.config.set(SCHEDULER_SETTINGS):  # rank 0's scheduler reads it when it starts
            runner: Any = SLURMRunner(
                scheduler_file=str(directory / "pdrflow-scheduler-{job_id}.json"),
                scheduler_options={**options, **secure,
                                   "dashboard_address": config.dashboard_address or "127.0.0.1:0"},
                worker_options={**options, **secure, "nthreads": 1},
            )
            runner.__enter__()
    finally:
        if rank == 0:
            remove_directory(credentials)  # every rank holds its copy in memory by now
    if security is not None:
        from distributed.core import rpc

        # SLURMRunner opens the driver's line to the scheduler (used to stop it at the end) without
        # connection arguments, which TLS needs.
        runner.scheduler_comm = rpc(runner.scheduler_address, connection_args=security.get_connection_args("client"))
    runner.security = security  # read by allocation_cluster (and by distributed.Client, as a cluster's)
    runner.pdrflow_config = config
    return runner


@contextmanager
def allocation_cluster(runner: Any) -> Iterator[ClusterHandle]:
    from distributed import Client

    config: AllocationClusterConfig | None = getattr(runner, "pdrflow_config", None)
    if config is not None:
        if config.security == "none":
            warn_insecure()  # here, on the driver rank only: one line in the job's output
        warn_if_dashboard_exposed(config.dashboard_address)
    client = Client(runner, security=getattr(runner, "security", None))
    try:
        workers = max(1, int(os.environ.get("SLURM_NTASKS", "3")) - 2)
        client.wait_for_workers(workers, timeout=120)
        address = config.dashboard_address if config is not None else None
        link = local_dashboard_link(client.dashboard_link, address)
        if link != client.dashboard_link:
            _note_scheduler_host()
        yield ClusterHandle(client=client, worker_slots=workers, shared_scratch=False, dashboard_link=link)
    finally:
        client.close()
        runner.__exit__(None, None, None)  # stops the scheduler and with it the worker ranks


def _note_scheduler_host() -> None:
    """A loopback dashboard is reached on the node rank 0 (the scheduler) runs on; the tunnel line names the
    driver's node, the same one unless the allocation spans several nodes and the tasks are spread."""
    if int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1) > 1:
        log.warning("the dashboard listens on the loopback of the node of task 0 (the scheduler): if that is not "
                    "%s, tunnel to that node instead", socket.gethostname())


def start(config: Config, lease: GridLease | None, runner: Any) -> AbstractContextManager[ClusterHandle]:
    """The factory ``config.KINDS`` names for ``cluster.kind: allocation``: ``runner`` is the
    SLURMRunner this process entered (``join_allocation``) before the driver started."""
    return allocation_cluster(runner)
