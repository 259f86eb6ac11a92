"""Where the Dask workers come from: one small module per kind of cluster, named in ``config.KINDS``.

Each kind module has ``start(config, lease, runner)`` returning a context manager of a
:class:`ClusterHandle`; the scheduler settings every kind shares are applied here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.config

from ..config import Config, kind_factory
from ..ledger.lease import GridLease
from .base import SCHEDULER_SETTINGS, ClusterHandle


@contextmanager
def start_cluster(config: Config, lease: GridLease | None = None, runner: Any = None) -> Iterator[ClusterHandle]:
    start = kind_factory("cluster", config.cluster.kind)  # its module (dask-jobqueue for SLURM) imported only now
    with dask.config.set(SCHEDULER_SETTINGS), start(config, lease, runner) as cluster:
        yield cluster


__all__ = ["ClusterHandle", "start_cluster"]
