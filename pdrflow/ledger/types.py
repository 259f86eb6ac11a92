"""What the ledger hands back: plain frozen records, no ORM objects outside a session."""

from __future__ import annotations

from dataclasses import dataclass

from ..states import JobState


@dataclass(frozen=True)
class JobRef:
    """What the driver needs to act on a job, detached from any session."""

    id: int
    name: str
    state: JobState
    model_hash: str
    staged_dir: str | None
    reason: str | None
    staged_host: str | None = None  # the host whose scratch holds staged_dir (node-local scratch: the only one)


@dataclass(frozen=True)
class ArchiveClaims:
    """What the ledger knows about the files at one job's archive paths (before an archival writes)."""

    own: dict[str, frozenset[str]]  # path -> sha256 digests pdrflow wrote or planned there for this job
    preexisting: dict[str, tuple[int, str]]  # path -> (PreexistingFile id, sha256 found), not moved aside yet


@dataclass(frozen=True)
class ModelStart:
    """What ``start_model`` decided: a new attempt, or (``attempt_id`` None) outputs already staged."""

    attempt_id: int | None
    staged_dir: str | None = None


@dataclass(frozen=True)
class ArchiveStart:
    """The archival attempt ``start_archive`` recorded, and whether one of this job was started before it
    (that one may have been cut off mid-file and left temporaries behind)."""

    attempt_id: int
    earlier: bool


@dataclass(frozen=True)
class Registration:
    total: int
    new: int
    archived: int
