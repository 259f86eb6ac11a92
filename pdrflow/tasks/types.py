"""What crosses from the driver to the workers and back (all picklable, no secrets in repr)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import DatabaseConfig, StorageConfig
from ..grid import ModelSpec
from ..kosma.installation import ExecutableVersion, Installation


@dataclass(frozen=True)
class RunSettings:
    """Everything a task needs besides its job; the same for every job of one run."""

    grid: str
    installation: Installation
    pdr_version: ExecutableVersion
    onion_version: ExecutableVersion
    scratch_root: Path | None  # None: each worker's node-local default
    keep_failed: bool
    pdr_timeout: float
    onion_timeout: float
    database: DatabaseConfig  # the password is a SecretStr: masked in any repr
    storage: StorageConfig
    # Scratch-relative outputs a run must write (kosma_tau.required_outputs, checked by
    # plan.check_required_outputs); other expected outputs are archived when present.
    required_outputs: tuple[str, ...]
    # scratch.staging: a computed model's outputs move from node-local scratch to this shared directory,
    # where any worker that sees it (the driver host's archive workers) archives them; None: they stay.
    staging_root: Path | None = None


@dataclass(frozen=True)
class ModelJob:
    job_id: int
    spec: ModelSpec
    needs_seconds: float | None = None  # expected runtime: not started on a worker retiring sooner


@dataclass(frozen=True)
class StagedFile:
    source: str  # relative to the scratch directory
    target: str  # archive-relative path
    size: int
    sha256: str


MANIFEST_FILE = "pdrflow-manifest.json"  # in the scratch dir: lets a later driver archive it


@dataclass(frozen=True)
class Manifest:
    """The staged outputs of one computed model, as the run task leaves them."""

    job_id: int
    name: str
    scratch_dir: str
    host: str
    worker: str | None
    files: tuple[StagedFile, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # optional expected outputs (scratch-relative) the run did not write
    # Seconds the worker still took models for when this run ended (None: no lifetime). Not in the
    # manifest file: it tells the driver whether the next model may go straight to this worker.
    takes_models_for: float | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        # Shallow, and without indent: asdict's deep copy and json's pure-Python indenting encoder took
        # ~8 ms a model (the provenance is a few hundred values); the file is for pdrflow, not for reading.
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "takes_models_for"}
        document["files"] = [vars(staged) for staged in self.files]
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["files"] = tuple(StagedFile(**item) for item in data["files"])
        data["missing"] = tuple(data.get("missing", ()))  # absent in manifests of older pdrflow versions
        return cls(**data)


@dataclass(frozen=True)
class ArchiveResult:
    job_id: int
    name: str
    files: int
    bytes: int
    skipped_existing: int = 0
    seconds: float = 0.0  # from the task's start on its worker to the commit (not its wait in the queue)
