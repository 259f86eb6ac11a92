"""Where the Dask workers come from: one small module per kind of cluster, named in ``config.KINDS``.

Each kind module has ``start(config, lease)`` returning a context manager of a :class:`ClusterHandle`
that owns everything the kind sets up and tears down; the scheduler settings every kind shares are
applied here. A kind whose processes are not all drivers (``allocation``: every task of the
allocation runs ``pdrflow run``) sends the others off in ``serve_unless_driver``, called first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dask.config

from ..config import Config, kind_factory
from ..ledger.lease import GridLease
from .base import ClusterHandle, scheduler_settings


@contextmanager
def start_cluster(config: Config, lease: GridLease | None = None) -> Iterator[ClusterHandle]:
    start = kind_factory("cluster", config.cluster.kind)  # its module (dask-jobqueue for SLURM) imported only now
    with dask.config.set(scheduler_settings()), start(config, lease) as cluster:
        yield cluster


def serve_unless_driver(config: Config) -> bool:
    """True in a process that served the cluster instead of driving it (and is done); False in the driver."""
    if config.cluster.kind == "slurm":
        from .jobqueue import import_dask_jobqueue

        import_dask_jobqueue()  # here, in the main thread (see there)
    if config.cluster.kind != "allocation":
        return False
    from .allocation import serve_unless_driver as serve

    return serve(config)


__all__ = ["ClusterHandle", "serve_unless_driver", "start_cluster"]
