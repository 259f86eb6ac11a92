"""Recording what ``pdrflow verify --repair`` found: damaged archived files and the jobs they send back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import CursorResult

from ..states import JobState
from .ledger import Ledger
from .retries import _transient_db_errors
from .schema import ArchivedFile, Attempt, AttemptKind, AttemptOutcome, PreexistingFile, utcnow


@_transient_db_errors
def mark_damaged(ledger: Ledger, job_id: int, *, missing: Sequence[str], changed: Sequence[tuple[str, int, str, str]],
                 reason: str, detail: str, staged_dir: str | None, host: str) -> dict[str, int]:
    """An archived job whose files ``verify`` found missing or changed leaves ``archived``, in one transaction.

    ``changed``: (path, size found, sha256 found, sha256 recorded). The job becomes ``failed_storage``
    (``staged_dir``: staged outputs still in scratch, archived again from there; None: computed again);
    the damaged files' archived_files rows are retired; each changed file is recorded as a
    PreexistingFile (origin ``pdrflow verify``: the bytes found, the digest the ledger had) to be moved
    aside, never overwritten; a failed archive attempt says what was found. Returns path -> PreexistingFile
    id of the changed files. A path damaged again after an earlier repair reuses its row (one per job and
    path): the earlier moved_to is then in that repair's attempt.
    """
    damaged = [*missing, *(path for path, *_ in changed)]
    files = cast(Table, ArchivedFile.__table__)
    preexisting = cast(Table, PreexistingFile.__table__)
    now = utcnow()
    rows: dict[str, int] = {}
    with ledger._session() as session:
        Ledger._move(session, job_id, JobState.FAILED_STORAGE, reason, repair=True, staged_dir=staged_dir,
                   staged_host=host if staged_dir else None)
        for start in range(0, len(damaged), 500):
            session.execute(delete(files).where(files.c.job_id == job_id,
                                                files.c.path.in_(damaged[start : start + 500])))
        for path, size, found, recorded in changed:
            values = {"size": size, "sha256": found, "recorded_sha256": recorded, "origin": "pdrflow verify",
                      "found_at": now, "moved_to": None, "moved_at": None}
            row_id = session.scalar(select(PreexistingFile.id).where(PreexistingFile.job_id == job_id,
                                                                     PreexistingFile.path == path))
            if row_id is None:
                inserted = cast(CursorResult[Any], session.execute(
                    insert(preexisting).values(job_id=job_id, path=path, **values))).inserted_primary_key
                assert inserted is not None  # an INSERT always has one
                row_id = inserted[0]
            else:
                session.execute(update(preexisting).where(preexisting.c.id == row_id).values(**values))
            rows[path] = int(row_id)
        session.add(Attempt(job_id=job_id, kind=AttemptKind.ARCHIVE.value, host=host,
                            outcome=AttemptOutcome.FAILED.value, error=detail, ended_at=now))
    return rows

@_transient_db_errors
def note_attempt(ledger: Ledger, job_id: int, text: str) -> None:
    """Append ``text`` to the error of the job's latest attempt (where a repair moved the damaged files)."""
    attempts = cast(Table, Attempt.__table__)
    with ledger._session() as session:
        row = session.execute(select(Attempt.id, Attempt.error).where(Attempt.job_id == job_id)
                              .order_by(Attempt.id.desc()).limit(1)).first()
        if row is not None:
            session.execute(update(attempts).where(attempts.c.id == row.id)
                            .values(error=f"{row.error}; {text}" if row.error else text))
