"""Connection budgets shared by every worker of a run: ledger sessions and archive connections.

Every worker process opening its own engine pool and SSH connection overruns a database's
``max_connections`` ("sorry, too many clients already") and sshd's ``MaxStartups`` (10 concurrent
unauthenticated connections, then random drops) once a few dozen worker processes run. So a
worker holds a database connection only for one transaction, and an archive connection only for
one archival, each under a lease of a ``distributed.Semaphore`` on the scheduler: one per grid and
service, ``database.max_connections`` / ``storage.max_connections`` leases for all workers
together.

Leases are refreshed by the worker holding them; a worker that dies holding one loses it after
``distributed.scheduler.locks.lease-timeout`` (30 s by default, checked every
``lease-validation-interval``), so a dead worker shrinks the budget for that long, never for good.
Outside a worker (tests calling a task directly, the driver) nothing is leased.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy.pool import ConnectionPoolEntry, NullPool


def database_budget_name(grid: str) -> str:
    return f"pdrflow-db-{grid}"


def storage_budget_name(grid: str) -> str:
    return f"pdrflow-storage-{grid}"


class Budget:
    """Leases of one named ``distributed.Semaphore`` (``max_leases`` None: no limit, nothing leased).

    Made in a worker process, where the semaphore finds its scheduler; the semaphore registers
    itself with its ``max_leases`` on the first acquire (every worker of a run passes the same)."""

    def __init__(self, name: str, max_leases: int | None) -> None:
        self.name = name
        self.max_leases = max_leases
        self._semaphore: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._semaphore is None:
                from distributed import Semaphore

                self._semaphore = Semaphore(max_leases=self.max_leases, name=self.name)
            return self._semaphore

    def acquire(self) -> None:
        """Wait, however long, for a lease: the work behind it must not fail for want of one."""
        if self.max_leases is not None:
            self._get().acquire()

    def release(self) -> None:
        if self.max_leases is not None:
            self._get().release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        """Stop refreshing leases (the worker is closing; a lease still held then times out on the scheduler)."""
        with self._lock:
            semaphore, self._semaphore = self._semaphore, None
        callback = getattr(semaphore, "refresh_callback", None)
        if callback is not None:
            callback.stop()


class _LeasedNullPool(NullPool):
    """No connection kept between transactions, and each one open only under a lease of ``budget``.

    The lease is taken before the connection is made and given back once it is closed: a failed
    connect or an invalidated connection goes back through the same two methods."""

    budget: ClassVar[Budget]
    # SQLAlchemy names a pool's logger after its class; keep its records ("Pool recreating", invalidations)
    # under sqlalchemy's name, where a user's logging settings for SQLAlchemy apply, not under pdrflow's.
    _sqla_logger_namespace: ClassVar[str] = "sqlalchemy.pool.impl.NullPool"

    def _do_get(self) -> ConnectionPoolEntry:
        self.budget.acquire()
        try:
            return super()._do_get()
        except BaseException:
            self.budget.release()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self.budget.release()


def leased_pool(budget: Budget) -> type[NullPool]:
    """A pool class for ``create_engine(poolclass=...)``; a class per budget, so that the engine's
    ``dispose()`` (which recreates the pool from its class) keeps the budget."""
    return type("LeasedNullPool", (_LeasedNullPool,), {"budget": budget})
