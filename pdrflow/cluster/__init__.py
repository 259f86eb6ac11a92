"""Where the Dask workers come from: one small module per kind of cluster."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..config import AllocationClusterConfig, Config, LocalClusterConfig, SlurmClusterConfig
from ..ledger.lease import GridLease
from .base import ClusterHandle


def start_cluster(
    config: Config, lease: GridLease | None = None, runner: Any = None
) -> AbstractContextManager[ClusterHandle]:
    if isinstance(config.cluster, LocalClusterConfig):
        from .local import local_cluster

        return local_cluster(config.cluster)
    if isinstance(config.cluster, SlurmClusterConfig):
        from .slurm import slurm_cluster

        return slurm_cluster(config.cluster, lease, config.path.parent)  # worker credentials go near the config
    if isinstance(config.cluster, AllocationClusterConfig):
        from .allocation import allocation_cluster

        return allocation_cluster(runner)
    raise NotImplementedError(f"cluster kind {config.cluster.kind!r}")  # pragma: no cover - config forbids it


__all__ = ["ClusterHandle", "start_cluster"]
