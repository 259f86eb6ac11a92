"""Worker processes on the driver's host that only archive (``cluster.slurm.archive_workers``).

Many clusters give compute nodes no route to the outside: the archive server and the group's
database are reached from the login or a transfer node only. Then the models run on the compute
nodes (workers with the ``MODEL_RESOURCE``), their outputs move to ``scratch.staging`` on the
shared filesystem, and the archivals run here, on Dask workers with the ``ARCHIVE_RESOURCE``
started next to the scheduler in the driver's process tree (nannies: a crash of one does not
take the driver with it). A failed upload still only retries the archival.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from .base import ARCHIVE_RESOURCE

log = logging.getLogger("pdrflow")


async def _start(address: str, count: int, security: Any, host: str | None) -> list[Any]:
    from distributed import Nanny

    nannies = [
        Nanny(address, nthreads=1, resources={ARCHIVE_RESOURCE: 1}, name=f"pdrflow-archive-{index}",
              security=security, host=host, preload=["pdrflow.cluster.local"],  # Ctrl-C is the driver's
              silence_logs=logging.CRITICAL)
        for index in range(count)
    ]
    await asyncio.gather(*(nanny.start() for nanny in nannies))
    return nannies


async def _stop(nannies: list[Any]) -> None:
    await asyncio.gather(*(nanny.close(timeout=20) for nanny in nannies), return_exceptions=True)


@contextmanager
def archive_workers(cluster: Any, count: int, security: Any) -> Iterator[None]:
    """``count`` archiving workers joined to ``cluster``'s scheduler (a SpecCluster: its loop runs them)."""
    if count == 0:
        yield
        return
    address = cluster.scheduler_address
    nannies = cluster.sync(_start, address, count, security, urlparse(address).hostname)
    log.info("archivals run on %d worker(s) on this host: %s", count,
             ", ".join(str(nanny.worker_address) for nanny in nannies))
    try:
        yield
    finally:
        cluster.sync(_stop, nannies)
