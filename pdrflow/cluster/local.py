"""The embedded default: a Dask LocalCluster of worker processes on this machine."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from ..config import LocalClusterConfig
from .base import ClusterHandle


@contextmanager
def local_cluster(config: LocalClusterConfig) -> Iterator[ClusterHandle]:
    n_workers = config.n_workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,  # KOSMA-tau runs as subprocesses; worker processes keep them apart
        dashboard_address=config.dashboard_address,
        # Workers' shutdown chatter is noise; task failures reach the driver through futures.
        silence_logs=logging.CRITICAL if not logging.getLogger("pdrflow").isEnabledFor(logging.DEBUG) else False,
    )
    client = Client(cluster)
    try:
        yield ClusterHandle(
            client=client,
            worker_slots=n_workers * config.threads_per_worker,
            shared_scratch=True,
            dashboard_link=client.dashboard_link if config.dashboard_address else None,
        )
    finally:
        client.close()
        cluster.close()
