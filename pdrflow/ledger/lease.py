"""One live driver per grid: a lease row with a heartbeat, taken over only when its holder is gone.

A holder on this host whose process no longer exists is gone at once (a ``kill -9``'d driver
restarted on the same login node resumes immediately); a holder elsewhere is gone when its
heartbeat is older than the TTL.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any, Self, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import LedgerError
from .ledger import Ledger
from .schema import DriverLease, Grid, WorkerJob, utcnow

DEFAULT_TTL = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GridLease:
    """Hold the grid for this process while running; heartbeat in a thread; release on exit."""

    def __init__(self, ledger: Ledger, grid_name: str, ttl: float = DEFAULT_TTL) -> None:
        self.ledger = ledger
        self.grid_name = grid_name
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lost = threading.Event()  # set when another driver took the grid over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: str | None = None  # description of the stale holder we replaced

    def _grid_id(self) -> int:
        with self.ledger._session() as session:
            grid_id = session.scalar(select(Grid.id).where(Grid.name == self.grid_name))
            if grid_id is None:
                grid = Grid(name=self.grid_name)
                session.add(grid)
                session.flush()
                grid_id = grid.id
            return grid_id

    def acquire(self) -> None:
        grid_id = self._grid_id()
        now = utcnow()
        try:
            with self.ledger._session() as session:
                lease = session.get(DriverLease, grid_id, with_for_update=True)
                if lease is not None:
                    age = (now - lease.heartbeat_at).total_seconds()
                    dead_here = lease.host == self.host and not _alive(lease.pid)
                    if not dead_here and age < self.ttl:
                        raise LedgerError(
                            f"grid {self.grid_name!r} is being run by another driver (pid {lease.pid} on "
                            f"{lease.host}, last heartbeat {age:.0f} s ago); two drivers never share a grid. "
                            f"If it is dead, its lease expires {max(0.0, self.ttl - age):.0f} s from now"
                        )
                    self.took_over = f"pid {lease.pid} on {lease.host}"
                    session.delete(lease)
                    session.flush()
                session.add(DriverLease(grid_id=grid_id, owner=self.owner, host=self.host, pid=self.pid,
                                        started_at=now, heartbeat_at=now))
        except IntegrityError:
            raise LedgerError(f"grid {self.grid_name!r}: another driver took the lease at the same moment") from None
        self._grid = grid_id
        self._thread = threading.Thread(target=self._beat, name="pdrflow-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                with self.ledger._session() as session:
                    result = cast(CursorResult[Any], session.execute(
                        update(DriverLease)
                        .where(DriverLease.grid_id == self._grid, DriverLease.owner == self.owner)
                        .values(heartbeat_at=utcnow())
                    ))
                    if result.rowcount == 0:
                        self.lost.set()
                        return
            except OperationalError:
                continue  # database briefly away: the next beat tries again

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with self.ledger._session() as session:
                session.execute(
                    delete(DriverLease).where(DriverLease.grid_id == self._grid, DriverLease.owner == self.owner)
                )
        except OperationalError:
            pass  # the lease then simply expires

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- batch worker jobs owned by this driver -------------------------------------------

    def record_worker_job(self, scheduler: str, external_id: str) -> None:
        with self.ledger._session() as session:
            session.add(WorkerJob(grid_id=self._grid, owner=self.owner, scheduler=scheduler,
                                  external_id=external_id))

    def end_worker_job(self, scheduler: str, external_id: str) -> None:
        with self.ledger._session() as session:
            session.execute(
                update(WorkerJob)
                .where(WorkerJob.scheduler == scheduler, WorkerJob.external_id == external_id)
                .values(ended_at=utcnow())
            )

    def open_worker_jobs(self, scheduler: str, *, others_only: bool = False) -> list[str]:
        """Worker jobs of this grid not known to have ended (``others_only``: left by earlier drivers)."""
        with self.ledger._session() as session:
            query = select(WorkerJob.external_id).where(
                WorkerJob.grid_id == self._grid, WorkerJob.scheduler == scheduler, WorkerJob.ended_at.is_(None)
            )
            if others_only:
                query = query.where(WorkerJob.owner != self.owner)
            return list(session.scalars(query))
