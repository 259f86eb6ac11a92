"""The ledger's tables (SQLAlchemy 2.0 typed ORM); the job states they store are in ``pdrflow.states``."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from ..states import JobState


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: identical on SQLite, PostgreSQL, MariaDB


class AttemptKind(enum.StrEnum):
    MODEL = "model"
    ARCHIVE = "archive"
    ADOPT = "adopt"  # files another tool archived, taken over by `pdrflow migrate` (no model run)


class AttemptOutcome(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Base(DeclarativeBase):
    # Read once by SQLAlchemy when the base is declared: configuration, not a column.
    type_annotation_map: ClassVar[dict[Any, TypeEngine[Any]]] = {dict[str, Any]: JSON(none_as_null=True)}


class Grid(Base):
    __tablename__ = "grids"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Model(Base):
    """A physical model, identified by the hash of everything its outputs depend on."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_hash: Mapped[str] = mapped_column(String(64), unique=True)  # full parameters: in job provenance
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """A model in a grid: one archive location, one state."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("grid_id", "name", name="uq_jobs_grid_name"),
        UniqueConstraint("grid_id", "model_id", name="uq_jobs_grid_model"),
        Index("ix_jobs_grid_state", "grid_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(255))
    # The grid axes in physical units (columns, so grid maps and filters are plain queries).
    metallicity: Mapped[float] = mapped_column(Float)
    density: Mapped[float] = mapped_column(Float)
    mass: Mapped[float] = mapped_column(Float)
    fuv: Mapped[float] = mapped_column(Float)
    varied: Mapped[dict[str, Any] | None]  # parameters varied besides the axes
    state: Mapped[str] = mapped_column(String(20), default=JobState.PENDING.value)
    reason: Mapped[str | None] = mapped_column(Text)
    staged_dir: Mapped[str | None] = mapped_column(Text)  # scratch dir holding the outputs to archive
    staged_host: Mapped[str | None] = mapped_column(String(255))
    provenance: Mapped[dict[str, Any] | None]
    # Expected outputs the run did not write (optional ones only: a missing required one fails the model).
    missing_outputs: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship()
    grid: Mapped[Grid] = relationship()


class Attempt(Base):
    """One try at running the model or archiving its outputs."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_job_kind", "job_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    kind: Mapped[str] = mapped_column(String(10))
    outcome: Mapped[str] = mapped_column(String(12), default=AttemptOutcome.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    host: Mapped[str | None] = mapped_column(String(255))
    worker: Mapped[str | None] = mapped_column(String(255))
    slurm_job_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # An archival's files (archive path -> sha256), written before any byte is uploaded: a file at a
    # final path with one of these digests was put there by pdrflow, even if the commit never happened.
    planned_files: Mapped[dict[str, Any] | None]


class DriverLease(Base):
    """At most one live driver per grid: the holder heartbeats; a stale lease may be taken over."""

    __tablename__ = "driver_leases"

    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))  # a random id per driver process
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerJob(Base):
    """A batch-system job (e.g. a SLURM worker job) that a driver submitted and must cancel."""

    __tablename__ = "worker_jobs"
    __table_args__ = (
        UniqueConstraint("scheduler", "external_id", name="uq_worker_jobs_external"),
        Index("ix_worker_jobs_grid_open", "grid_id", "ended_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"))
    owner: Mapped[str] = mapped_column(String(64))  # the driver that submitted it
    scheduler: Mapped[str] = mapped_column(String(16))  # "slurm"
    external_id: Mapped[str] = mapped_column(String(64))  # e.g. the SLURM job id
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)


class ArchivedFile(Base):
    __tablename__ = "archived_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    path: Mapped[str] = mapped_column(String(512), unique=True)  # archive-relative
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    archived_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PreexistingFile(Base):
    """A file found at one of a job's archive paths that pdrflow did not write (e.g. by the predecessor).

    Recorded by ``pdrflow migrate`` for models it could not adopt. When the job is archived, such a
    file is moved aside under the grid (``moved_to``), never deleted or overwritten.
    """

    __tablename__ = "preexisting_files"
    __table_args__ = (UniqueConstraint("job_id", "path", name="uq_preexisting_job_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    path: Mapped[str] = mapped_column(String(512))  # archive-relative, where it was found
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the bytes found
    recorded_sha256: Mapped[str | None] = mapped_column(String(64))  # what the other tool recorded, if any
    origin: Mapped[str] = mapped_column(String(100))  # who wrote it, e.g. "pdr_run"
    found_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    moved_to: Mapped[str | None] = mapped_column(String(1024))  # archive-relative, once moved aside
    moved_at: Mapped[datetime | None] = mapped_column(DateTime)
