"""Where the Dask workers come from: one small module per kind of cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import dask.config

from ..config import AllocationClusterConfig, Config, LocalClusterConfig, SlurmClusterConfig
from ..ledger.lease import GridLease
from .base import SCHEDULER_SETTINGS, ClusterHandle


@contextmanager
def start_cluster(config: Config, lease: GridLease | None = None, runner: Any = None) -> Iterator[ClusterHandle]:
    with dask.config.set(SCHEDULER_SETTINGS), _cluster_of_kind(config, lease, runner) as cluster:
        yield cluster


def _cluster_of_kind(config: Config, lease: GridLease | None, runner: Any) -> AbstractContextManager[ClusterHandle]:
    if isinstance(config.cluster, LocalClusterConfig):
        from .local import local_cluster

        return local_cluster(config.cluster)
    if isinstance(config.cluster, SlurmClusterConfig):
        from .security import withheld_from_workers
        from .slurm import slurm_cluster

        # worker credentials go near the config
        return slurm_cluster(config.cluster, lease, config.path.parent, withheld_from_workers(config))
    if isinstance(config.cluster, AllocationClusterConfig):
        from .allocation import allocation_cluster

        return allocation_cluster(runner)
    raise NotImplementedError(f"cluster kind {config.cluster.kind!r}")  # pragma: no cover - config forbids it


__all__ = ["ClusterHandle", "start_cluster"]
