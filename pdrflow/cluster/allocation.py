"""The whole grid inside one SLURM allocation: dask-jobqueue's SLURMRunner.

Every srun task runs ``pdrflow run CONFIG``; SLURMRunner makes rank 0 the scheduler, rank 1 the
driver (the only one that goes on), and the other ranks workers. Non-driver ranks must join the
runner before anything else, so that only the driver touches the ledger: ``serve_unless_driver``,
called first by ``pdrflow run``; the driver's rank enters its own runner in ``start``.

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
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dask.config
from pydantic import Field

from ..config.sections import ClusterKind, ClusterSection
from ..errors import ConfigError
from .jobqueue import import_dask_jobqueue
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

if TYPE_CHECKING:  # distributed is imported when a cluster starts: config loading imports this module
    from distributed.security import Security

    from ..config import Config
    from ..ledger.lease import GridLease
    from .base import ClusterHandle
    from .placement import Placement


class AllocationClusterConfig(ClusterSection):
    """Scheduler, driver and workers as the srun tasks of one allocation (dask-jobqueue's SLURMRunner)."""

    kind: Literal["allocation"] = Field(description="selects this section's keys")
    interface: str | None = Field(description="network interface between the allocation's nodes")
    scheduler_directory: str | None = Field(description="null: $SLURM_SUBMIT_DIR")

log = logging.getLogger("pdrflow")


DRIVER_RANK = 1  # SLURMRunner's rule: task 0 is the scheduler, task 1 the client (the driver), the rest workers


def _rank() -> int:
    if "SLURM_JOB_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        raise ConfigError("cluster.kind: allocation runs inside `srun` in an sbatch allocation "
                          "(see slurm/pdrflow-allocation.sbatch)")
    return int(os.environ["SLURM_PROCID"])


def _directory(config: AllocationClusterConfig) -> Path:
    return Path(config.scheduler_directory or os.environ.get("SLURM_SUBMIT_DIR", "."))


def _credentials(config: AllocationClusterConfig) -> Path:
    # A requeued job keeps its id: the restart count keeps its ranks off the previous attempt's credentials.
    job_id = os.environ["SLURM_JOB_ID"]
    return _directory(config) / f"pdrflow-tls-{job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def _runner(config: AllocationClusterConfig, security: Security | None) -> Any:
    from dask_jobqueue.slurm import SLURMRunner

    secure: dict[str, Any] = {"security": security, "protocol": PROTOCOL} if security is not None else {}
    options = {"interface": config.interface} if config.interface else {}
    return SLURMRunner(
        scheduler_file=str(_directory(config) / "pdrflow-scheduler-{job_id}.json"),
        scheduler_options={**options, **secure, "dashboard_address": config.dashboard_address or "127.0.0.1:0"},
        worker_options={**options, **secure, "nthreads": 1},
    )


def serve_unless_driver(config: Config) -> bool:
    """Called first thing in every task of the allocation: the scheduler and worker ranks serve here until
    the scheduler stops and then exit the process; only the driver's rank returns (False), before it
    has touched the ledger, so that only the driver does."""
    if config.cluster.kind != "allocation":
        return False
    allocation = cast(AllocationClusterConfig, config.cluster)
    rank = _rank()
    if rank == DRIVER_RANK:
        # In the main thread, before the notebook API's driver thread needs it; the driver keeps its Ctrl-C.
        import_dask_jobqueue()
        return False
    # The scheduler and worker ranks take the SIGINT handler dask-jobqueue sets on import: SLURMRunner
    # stops them by signalling itself.
    import dask_jobqueue.slurm  # noqa: F401

    from .base import scheduler_settings

    credentials, security = _credentials(allocation), None
    if allocation.security == "tls":
        if rank == 0:  # the scheduler rank makes the run's credentials
            security = run_security("tls")
            if security is not None:
                write_credentials(credentials, security)
        else:
            security = read_credentials(credentials)
    if rank == 0 and security is not None:
        # scancel and the time limit end tasks with SIGTERM: exit through the finally below, which
        # removes the credentials (SLURMRunner itself turns SIGINT into an exit the same way).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with dask.config.set(scheduler_settings()):  # rank 0's scheduler reads it when it starts
            _runner(allocation, security).__enter__()  # serves, then SLURMRunner exits the process
    finally:
        if rank == 0:
            remove_directory(credentials)  # every rank holds its copy in memory by now
    return True


@contextmanager
def allocation_cluster(config: AllocationClusterConfig) -> Iterator[ClusterHandle]:
    """On the driver's rank: join the allocation's scheduler, use its workers, stop them all at the end."""
    from distributed import Client

    from .base import ClusterHandle

    if _rank() != DRIVER_RANK:
        raise ConfigError("cluster.kind: allocation: only task 1 of the allocation drives the grid "
                          "(every task runs `pdrflow run`, see slurm/pdrflow-allocation.sbatch)")
    if config.security == "none":
        warn_insecure()  # here, on the driver rank only: one line in the job's output
    warn_if_dashboard_exposed(config.dashboard_address)
    security = read_credentials(_credentials(config)) if config.security == "tls" else None
    runner = _runner(config, security)
    runner.__enter__()  # the client's role: wait for the scheduler file, return
    try:
        if security is not None:
            from distributed.core import rpc

            # SLURMRunner opens the driver's line to the scheduler (used to stop it at the end) without
            # connection arguments, which TLS needs.
            runner.scheduler_comm = rpc(runner.scheduler_address,
                                        connection_args=security.get_connection_args("client"))
        client = Client(runner.scheduler_address, security=security)
        try:
            workers = max(1, int(os.environ.get("SLURM_NTASKS", "3")) - 2)
            client.wait_for_workers(workers, timeout=120)
            link = local_dashboard_link(client.dashboard_link, config.dashboard_address)
            if link != client.dashboard_link:
                _note_scheduler_host()
            yield ClusterHandle(client=client, worker_slots=workers, shared_scratch=False, dashboard_link=link)
        finally:
            client.close()
    finally:
        runner.__exit__(None, None, None)  # stops the scheduler and with it the worker ranks


def _note_scheduler_host() -> None:
    """A loopback dashboard is reached on the node rank 0 (the scheduler) runs on; the tunnel line names the
    driver's node, the same one unless the allocation spans several nodes and the tasks are spread."""
    if int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1) > 1:
        log.warning("the dashboard listens on the loopback of the node of task 0 (the scheduler): if that is not "
                    "%s, tunnel to that node instead", socket.gethostname())


def start(config: Config, lease: GridLease | None) -> AbstractContextManager[ClusterHandle]:
    """The factory of ``cluster.kind: allocation`` (its ``KIND``; the driver's rank: the other ranks
    never get here, ``serve_unless_driver``)."""
    return allocation_cluster(cast(AllocationClusterConfig, config.cluster))


def placement(config: AllocationClusterConfig, environ: Mapping[str, str]) -> Placement:
    from .placement import allocation_placement

    return allocation_placement(environ)  # the nodes of the allocation this process runs in


KIND = ClusterKind(config=AllocationClusterConfig, start=start, serve=serve_unless_driver,
                   placement=placement)  # found by config.kinds
