"""Where the Dask workers come from: one small module per kind of cluster."""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..config import Config, LocalClusterConfig
from .base import ClusterHandle


def start_cluster(config: Config) -> AbstractContextManager[ClusterHandle]:
    if isinstance(config.cluster, LocalClusterConfig):
        from .local import local_cluster

        return local_cluster(config.cluster)
    raise NotImplementedError(f"cluster kind {config.cluster.kind!r}")  # pragma: no cover - config forbids it


__all__ = ["ClusterHandle", "start_cluster"]
