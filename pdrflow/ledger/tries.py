"""How often the driver tried a job in this run, counted from the ledger's attempts.

The driver keeps no counters of its own: a run starts at the newest attempt id (``run_start``),
and what it tried since is in the attempts table, written by the tasks and by the driver when a
task could not write (a worker that died before its task reached the ledger).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from ..states import JobState
from .ledger import Ledger
from .retries import _transient_db_errors
from .schema import Attempt, AttemptKind, AttemptOutcome, Job, utcnow


@dataclass(frozen=True)
class Tries:
    lost_runs: int  # model runs of this run that ended interrupted (the worker died, the task broke)
    archivals: int  # archivals of this run that started


@_transient_db_errors
def run_start(ledger: Ledger) -> int:
    """The newest attempt id now: every attempt of the run starting now has a larger one."""
    with ledger.reading() as session:
        return int(session.scalar(select(func.max(Attempt.id))) or 0)


@_transient_db_errors
def tries_since(ledger: Ledger, job_id: int, start: int) -> Tries:
    query = (
        select(Attempt.kind, Attempt.outcome, func.count())
        .where(Attempt.job_id == job_id, Attempt.id > start)
        .group_by(Attempt.kind, Attempt.outcome)
    )
    lost = archivals = 0
    with ledger.reading() as session:
        for kind, outcome, count in session.execute(query):
            if kind == AttemptKind.MODEL.value and outcome == AttemptOutcome.INTERRUPTED.value:
                lost += count
            elif kind == AttemptKind.ARCHIVE.value:
                archivals += count
    return Tries(lost_runs=lost, archivals=archivals)


@_transient_db_errors
def record_lost_run(ledger: Ledger, job_id: int, reason: str) -> None:
    """A model task ended without a result (its worker died, or it broke outside the model).

    The job goes back to ``pending`` and its open model attempt ends interrupted. A task lost before
    it reached the ledger left no attempt: one is written here, so that the loss is counted too."""
    with ledger._session() as session:
        now = utcnow()
        session.execute(
            update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING.value)
            .values(state=JobState.PENDING.value, reason=reason, updated_at=now)
        )
        closed = session.execute(
            update(Attempt)
            .where(Attempt.job_id == job_id, Attempt.kind == AttemptKind.MODEL.value,
                   Attempt.outcome == AttemptOutcome.RUNNING.value)
            .values(outcome=AttemptOutcome.INTERRUPTED.value, error=reason, ended_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if not closed:
            session.add(Attempt(job_id=job_id, kind=AttemptKind.MODEL.value, outcome=AttemptOutcome.INTERRUPTED.value,
                                started_at=now, ended_at=now, error=f"{reason} (before the task reached the ledger)"))
