"""A grid's status from the ledger: jobs by state, attempts, and failures grouped by cause.

Kept light on purpose: for a SQLite ledger it reads through the standard library's ``sqlite3``
(read-only), so ``pdrflow status`` does not pay SQLAlchemy's import (~0.35 s of its ~1 s budget at
100k jobs). Server databases run the same SQL through SQLAlchemy.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LedgerError
from .states import FAILED_STATES, JobState

if TYPE_CHECKING:
    from .config import DatabaseConfig

EXAMPLES_PER_CAUSE = 5

_COUNTS_SQL = """
SELECT j.state, COUNT(*) FROM jobs j JOIN grids g ON j.grid_id = g.id
WHERE g.name = :grid GROUP BY j.state"""
_ATTEMPTS_SQL = """
SELECT a.kind, COUNT(*) FROM attempts a JOIN jobs j ON a.job_id = j.id JOIN grids g ON j.grid_id = g.id
WHERE g.name = :grid GROUP BY a.kind"""
_FAILED_IN = ", ".join(f"'{state.value}'" for state in sorted(FAILED_STATES))
_FAILED_SQL = f"""
SELECT j.name, j.state, j.reason, j.metallicity, j.density, j.mass, j.fuv, j.varied
FROM jobs j JOIN grids g ON j.grid_id = g.id
WHERE g.name = :grid AND j.state IN ({_FAILED_IN}) ORDER BY j.id"""
# NULL when a run wrote every expected output (the ledger never stores an empty list): IS NOT NULL everywhere.
_MISSING_SQL = """
SELECT j.missing_outputs FROM jobs j JOIN grids g ON j.grid_id = g.id
WHERE g.name = :grid AND j.missing_outputs IS NOT NULL"""


@dataclass(frozen=True)
class FailedJob:
    name: str
    state: str
    reason: str
    parameters: dict[str, Any]  # the axes in physical units, and any varied KOSMA-tau parameters


@dataclass
class FailureGroup:
    """Failed jobs whose reasons differ only in job-specific details (paths, timings, names)."""

    state: str
    cause: str
    count: int = 0
    examples: list[FailedJob] = field(default_factory=list)


@dataclass
class GridStatus:
    grid: str
    counts: dict[str, int]
    attempts: dict[str, int]
    failed: list[FailedJob]
    # optional outputs the runs did not write: output (scratch-relative) -> jobs lacking it
    missing_outputs: dict[str, int] = field(default_factory=dict)
    jobs_missing_outputs: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def all_archived(self) -> bool:
        return self.counts.get(JobState.ARCHIVED, 0) == self.total

    def failure_groups(self) -> list[FailureGroup]:
        groups: dict[tuple[str, str], FailureGroup] = {}
        for job in self.failed:
            cause = failure_cause(job.reason, job.name)
            group = groups.setdefault((job.state, cause), FailureGroup(job.state, cause))
            group.count += 1
            if len(group.examples) < EXAMPLES_PER_CAUSE:
                group.examples.append(job)
        return sorted(groups.values(), key=lambda g: -g.count)

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "total": self.total,
            "counts": self.counts,
            "attempts": self.attempts,
            "failed": [asdict(job) for job in self.failed],
            "missing_outputs": {"jobs": self.jobs_missing_outputs, "by_output": self.missing_outputs},
            "failure_groups": [
                {"state": g.state, "cause": g.cause, "count": g.count, "examples": [j.name for j in g.examples]}
                for g in self.failure_groups()
            ],
        }


_PATH = re.compile(r"'?(?:/[^\s:;,']+)+'?")
_NUMBER = re.compile(r"\b\d+\.\d+(?:e[-+]?\d+)?\b|\b\d{4,}\b|\b[0-9a-f]{8,}\b")


def failure_cause(reason: str, job_name: str = "") -> str:
    """A reason with its job-specific parts (job name, paths, timings, ids) blanked, for grouping.
    Short integers (exit codes, errno) stay: a different code is a different cause."""
    text = reason.replace(job_name, "<job>") if job_name else reason
    text = text.split("; last output:")[0]  # the executable's own last words differ per model
    return _NUMBER.sub("<n>", _PATH.sub("<path>", text)).strip()


def _failed_jobs(rows: Iterable[tuple[Any, ...]]) -> list[FailedJob]:
    jobs = []
    for name, state, reason, metallicity, density, mass, fuv, varied in rows:
        parameters: dict[str, Any] = {"metallicity": metallicity, "density": density, "mass": mass, "fuv": fuv}
        if isinstance(varied, str):  # SQLite hands JSON back as text
            varied = json.loads(varied)
        if isinstance(varied, Mapping):
            parameters.update(varied)
        jobs.append(FailedJob(name, state, reason or "", parameters))
    return jobs


_JOBS_SQL = """
SELECT j.name, j.state, j.reason, j.metallicity, j.density, j.mass, j.fuv, j.varied,
  (SELECT COUNT(*) FROM attempts a WHERE a.job_id = j.id AND a.kind = 'model') AS model_runs,
  (SELECT COUNT(*) FROM attempts a WHERE a.job_id = j.id AND a.kind = 'archive') AS archivals
FROM jobs j JOIN grids g ON j.grid_id = g.id WHERE g.name = :grid ORDER BY j.id"""


def _run_queries(database: DatabaseConfig, grid: str, queries: tuple[str, ...]) -> list[list[tuple[Any, ...]]] | None:
    """Each query's rows, with ``:grid`` bound; None when there is no ledger yet (absent SQLite file)."""
    params = {"grid": grid}
    path = sqlite_path(database.url)
    if path is not None:
        if not path.exists():
            return None
        # mode=ro: never creates, migrates or write-locks the ledger of a running driver
        try:
            sqlite_connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                return [sqlite_connection.execute(sql, params).fetchall() for sql in queries]
            finally:
                sqlite_connection.close()
        except sqlite3.OperationalError as exc:
            if "no such" not in str(exc):  # "no such table/column": an old schema, explained below
                raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from .ledger.ledger import make_engine
    from .ledger.migrate import ensure_schema
    from .ledger.open import database_error

    url = database.sqlalchemy_url()
    engine = make_engine(url)
    try:
        ensure_schema(engine)  # refuses an out-of-date schema with a clear message
        with engine.connect() as connection:
            return [[tuple(row) for row in connection.execute(text(sql), params)] for sql in queries]
    except DBAPIError as exc:  # refused, unknown host, wrong password: one line, password hidden
        raise database_error(database, exc, doing="read") from None
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///...`` URL (after config resolved it), None for anything else."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _count_missing(rows: Iterable[tuple[Any, ...]]) -> tuple[dict[str, int], int]:
    by_output: dict[str, int] = {}
    jobs = 0
    for (value,) in rows:
        names = json.loads(value) if isinstance(value, str) else value  # SQLite hands JSON back as text
        if not names:
            continue
        jobs += 1
        for name in names:
            by_output[name] = by_output.get(name, 0) + 1
    return dict(sorted(by_output.items(), key=lambda item: (-item[1], item[0]))), jobs


def grid_status(database: DatabaseConfig, grid: str) -> GridStatus:
    """The status of ``grid``; an absent SQLite ledger is an empty grid, not an error."""
    results = _run_queries(database, grid, (_COUNTS_SQL, _ATTEMPTS_SQL, _FAILED_SQL, _MISSING_SQL))
    if results is None:
        return GridStatus(grid, {}, {"model": 0, "archive": 0}, [])
    counts, attempts, failed, missing = results
    by_output, jobs_missing = _count_missing(missing)
    return GridStatus(grid, dict(counts), {"model": 0, "archive": 0, **dict(attempts)}, _failed_jobs(failed),
                      by_output, jobs_missing)


def job_table(database: DatabaseConfig, grid: str) -> list[dict[str, Any]]:
    """One record per job (name, state, reason, axes, varied parameters, attempt counts), in job order."""
    results = _run_queries(database, grid, (_JOBS_SQL,))
    records = []
    for name, state, reason, metallicity, density, mass, fuv, varied, model_runs, archivals in (results or [[]])[0]:
        record: dict[str, Any] = {"name": name, "state": state, "reason": reason, "metallicity": metallicity,
                                  "density": density, "mass": mass, "fuv": fuv}
        if isinstance(varied, str):
            varied = json.loads(varied)
        if isinstance(varied, Mapping):
            record.update(varied)
        record.update(model_runs=model_runs, archivals=archivals)
        records.append(record)
    return records
