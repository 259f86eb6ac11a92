"""The embedded default: a Dask LocalCluster of worker processes on this machine."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..config.sections import ClusterKind, ClusterSection
from ..errors import ConfigError
from .security import PROTOCOL, remove_directory, run_security, user_directory, warn_if_dashboard_exposed

if TYPE_CHECKING:  # distributed is imported when a cluster starts: config loading imports this module
    from distributed import LocalCluster

    from ..config import Config
    from ..ledger.lease import GridLease
    from .base import ClusterHandle
    from .placement import Placement


class LocalClusterConfig(ClusterSection):
    kind: Literal["local"] = Field(description="selects this section's keys")
    n_workers: int | None = Field(ge=1, description="null: one per core")
    threads_per_worker: int = Field(ge=1, description="threads of each worker process: the models it runs at once")


def dask_setup(worker: Any) -> None:
    """Run in every worker process as it starts (LocalCluster's ``preload`` names this module).

    Ctrl-C in a terminal signals the whole foreground process group, and the worker processes are
    in it: each would die with a KeyboardInterrupt traceback (its nanny logging another) while the
    driver is still stopping them in order. The driver alone handles Ctrl-C: it cancels the work,
    kills the running models and closes the cluster, which ends the workers. (The KOSMA-tau steps
    run in sessions of their own and never see the terminal's signals anyway.)
    """
    if threading.current_thread() is threading.main_thread():  # a nanny's worker runs its loop there
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def local_cluster(config: LocalClusterConfig) -> Iterator[ClusterHandle]:
    from distributed import Client

    from .base import ClusterHandle

    n_workers = config.n_workers or os.cpu_count() or 1
    security = run_security(config.security)
    # Loopback is reachable by every user of the machine: with TLS only holders of this run's
    # in-memory key (this process and the worker processes it starts) can connect.
    secure: dict[str, Any] = {"security": security, "protocol": PROTOCOL} if security is not None else {}
    warn_if_dashboard_exposed(config.dashboard_address)
    # Worker files (spill space, locks) in a directory of this user only, not a shared /tmp/dask-scratch-space.
    space, fresh = user_directory(Path(tempfile.gettempdir()), "pdrflow-workers")
    try:
        cluster = _start(config, n_workers, space, secure)
        try:
            client = Client(cluster)  # takes the cluster's security
            try:
                yield ClusterHandle(
                    client=client,
                    worker_slots=n_workers * config.threads_per_worker,
                    shared_scratch=True,
                    dashboard_link=client.dashboard_link if config.dashboard_address else None,
                )
            finally:
                client.close()
        finally:
            cluster.close()
    finally:
        if fresh:
            remove_directory(space)


def _start(config: LocalClusterConfig, n_workers: int, space: Path, secure: dict[str, Any]) -> LocalCluster:
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,  # KOSMA-tau runs as subprocesses; worker processes keep them apart
        dashboard_address=config.dashboard_address,
        local_directory=str(space),
        # Workers' shutdown chatter is noise; task failures reach the driver through futures.
        silence_logs=logging.CRITICAL if not logging.getLogger("pdrflow").isEnabledFor(logging.DEBUG) else False,
        preload=[__name__],  # dask_setup above: the terminal's Ctrl-C is the driver's, not the workers'
        **secure,
    )


def start(config: Config, lease: GridLease | None) -> AbstractContextManager[ClusterHandle]:
    """The factory of ``cluster.kind: local`` (its ``KIND``)."""
    assert isinstance(config.cluster, LocalClusterConfig)
    return local_cluster(config.cluster)


def placement(config: LocalClusterConfig, environ: Mapping[str, str]) -> Placement:
    from .placement import Placement

    return Placement(True, "one host: cluster.kind: local runs its workers here")


def check(config: Config) -> None:
    """Local workers are processes on this machine: far beyond its cores is a typo, and a runaway
    number of worker processes takes the machine down before anything is refused."""
    assert isinstance(config.cluster, LocalClusterConfig)
    cores = os.cpu_count() or 1
    limit = max(8, 4 * cores)
    slots = (config.cluster.n_workers or cores) * config.cluster.threads_per_worker
    if slots > limit:
        raise ConfigError(f"cluster.n_workers: {slots} worker threads on a {cores}-core machine; at most {limit} "
                          "(4 per core) for a local cluster")


KIND = ClusterKind(config=LocalClusterConfig, start=start, placement=placement, check=check,
                   workers_are_children=True)  # found by config.kinds
