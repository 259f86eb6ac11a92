"""Where the Dask workers come from: one small module per kind of cluster, found by ``config.kinds``.

Kind ``K`` is the module ``pdrflow.cluster.K`` with its defaults under ``cluster.K`` in pdrflow.yaml; it
declares ``KIND = ClusterKind(config=..., start=..., serve=...)``. ``start(config, lease)`` returns a
context manager of a :class:`ClusterHandle` that owns everything the kind sets up and tears down; the
scheduler settings every kind shares are applied here. A kind whose processes are not all drivers
(``allocation``: every task of the allocation runs ``pdrflow run``) sends the others off in its
``serve``, called first through ``serve_unless_driver``.

Light at import (config loading imports every kind module, and with it this package): distributed and
the ledger are imported when a cluster starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dask.config

if TYPE_CHECKING:
    from ..config import Config
    from ..ledger.lease import GridLease
    from .base import ClusterHandle


@contextmanager
def start_cluster(config: Config, lease: GridLease | None = None) -> Iterator[ClusterHandle]:
    from ..config.kinds import CLUSTER_KINDS
    from .base import scheduler_settings

    start = CLUSTER_KINDS[config.cluster.kind].start
    with dask.config.set(scheduler_settings()), start(config, lease) as cluster:
        yield cluster


def serve_unless_driver(config: Config) -> bool:
    """True in a process that served the cluster instead of driving it (and is done); False in the driver."""
    from ..config.kinds import CLUSTER_KINDS

    serve = CLUSTER_KINDS[config.cluster.kind].serve
    return serve(config) if serve is not None else False


def workers_are_children(config: Config) -> bool:
    """Whether the run's workers are the driver's own processes on this machine (``ClusterKind``)."""
    from ..config.kinds import CLUSTER_KINDS

    return CLUSTER_KINDS[config.cluster.kind].workers_are_children


def __getattr__(name: str) -> Any:
    if name == "ClusterHandle":  # `from pdrflow.cluster import ClusterHandle` (distributed) only when asked for
        from .base import ClusterHandle

        return ClusterHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClusterHandle", "serve_unless_driver", "start_cluster", "workers_are_children"]
