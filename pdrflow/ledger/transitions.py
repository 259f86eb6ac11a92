"""The state machine inside a transaction: the one place a job's state is written (``states.py`` says
which moves are allowed), and an attempt is closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from ..errors import LedgerError
from ..states import ALLOWED_TRANSITIONS, REPAIR_TRANSITIONS, JobState
from .schema import Attempt, AttemptOutcome, Job, utcnow


class Transitions:
    """The base of the ledger's parts: a session per operation (the Ledger's) and the state machine."""

    patience: float

    @contextmanager
    def _session(self) -> Iterator[Session]:  # the Ledger's: one transaction, committed on success
        raise NotImplementedError
        yield

    @staticmethod
    def _move(session: Session, job_id: int, new: JobState, reason: str | None = None, *, repair: bool = False,
              **values: Any) -> Job:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise LedgerError(f"job {job_id} does not exist")
        old = JobState(job.state)
        if new not in ALLOWED_TRANSITIONS[old] or ((old, new) in REPAIR_TRANSITIONS and not repair):
            raise LedgerError(f"job {job_id} ({job.name}): illegal transition {old} -> {new}")
        job.state = new.value
        job.reason = reason
        for key, value in values.items():
            setattr(job, key, value)
        return job

    @staticmethod
    def _finish_attempt(session: Session, attempt_id: int, outcome: AttemptOutcome, error: str | None,
                        **values: Any) -> None:
        # Core statement on the table: no ORM bulk-update bookkeeping (a few ms per call).
        attempts = cast(Table, Attempt.__table__)
        session.execute(
            update(attempts).where(attempts.c.id == attempt_id)
            .values(outcome=outcome.value, error=error, ended_at=utcnow(), **values)
        )
