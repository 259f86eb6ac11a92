"""What ``pdrflow verify`` finds in the archive, and how ``--repair`` sends damaged jobs back to the driver.

A job with an archived file missing or changed leaves ``archived`` (the only way out of it,
:data:`pdrflow.states.REPAIR_TRANSITIONS`) for ``failed_storage``, with the reason
``verify: <n> files missing/changed``: the driver then archives it again from its staged outputs
if they are still in scratch, else computes it again. A changed file's bytes are never replaced:
they are recorded (a ``PreexistingFile`` row: the digest found and the one recorded) and moved
aside under ``<grid>/pdrflow-superseded/`` by the archival code's own :func:`move_aside`; the
damaged files' archived_files rows are retired, and a failed archive attempt says what was found
and where the bytes went.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StorageFailed
from .ledger import Ledger
from .ledger.damage import mark_damaged, note_attempt
from .states import JobState
from .storage import Storage
from .tasks.archive import load_manifest, move_aside, staged_outputs_present

SHOWN = 5  # paths named in a reason, then a count


@dataclass(frozen=True)
class Finding:
    """One archived file that is not what the ledger recorded."""

    job: str
    path: str
    found_size: int | None  # None: missing
    found_sha256: str | None
    recorded_sha256: str

    @property
    def missing(self) -> bool:
        return self.found_size is None


@dataclass
class Repaired:
    job: str
    missing: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (path, moved to)
    staged_dir: str | None = None  # archived again from here; None: computed again
    skipped: str | None = None  # not marked, and why


def check_files(storage: Storage, records: list[tuple[str, str, int, str]]) -> list[Finding]:
    """``records``: (job, path, size, sha256) from the ledger; every file stat-ed, the right-sized ones hashed."""
    findings = []
    for job, path, size, sha256 in records:
        found = storage.stat(path)
        if found is None:
            findings.append(Finding(job, path, None, None, sha256))
            continue
        digest = storage.checksum(path) if found == size else None
        if found != size or digest != sha256:
            findings.append(Finding(job, path, found, digest if digest is not None else storage.checksum(path),
                                    sha256))
    return findings


def _shown(paths: list[str]) -> str:
    return ", ".join(paths[:SHOWN]) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def staged_outputs(job_id: int, scratch_dir: str | None, recorded: dict[str, tuple[int, str]]) -> str | None:
    """The job's scratch dir when its staged outputs are still there, readable from here, and are the bytes
    the ledger recorded as archived (so archiving them again restores the archive); else None."""
    if not scratch_dir:
        return None
    try:
        manifest = load_manifest(job_id, scratch_dir)
    except StorageFailed:
        return None
    if manifest.job_id != job_id or not staged_outputs_present(manifest):
        return None
    if any(recorded.get(f.target, (f.size, f.sha256)) != (f.size, f.sha256) for f in manifest.files):
        return None
    return str(Path(scratch_dir))


def mark_for_repair(ledger: Ledger, storage: Storage, grid: str, findings: list[Finding]) -> list[Repaired]:
    """Each damaged job out of ``archived``, its changed files moved aside and recorded; the driver does the rest."""
    host = socket.gethostname()
    by_job: dict[str, list[Finding]] = {}
    for finding in findings:
        by_job.setdefault(finding.job, []).append(finding)
    done = []
    for name, found in by_job.items():
        details = ledger.job_details(grid, name)
        repaired = Repaired(name)
        done.append(repaired)
        if details is None or details["state"] != JobState.ARCHIVED:
            # already sent back (an earlier repair whose run did not finish): the driver archives it anyway
            repaired.skipped = f"not archived ({details['state'] if details else 'unknown'}): already queued"
            continue
        job_id = int(details["id"])
        recorded = {f["path"]: (int(f["size"]), str(f["sha256"])) for f in details["files"]}
        missing = [f.path for f in found if f.missing]
        changed = [(f.path, int(f.found_size or 0), str(f.found_sha256), f.recorded_sha256)
                   for f in found if not f.missing]
        staged = staged_outputs(job_id, (details["provenance"] or {}).get("scratch_dir"), recorded)
        then = f"archiving again from the staged outputs in {staged}" if staged else \
            "staged outputs gone: computing the model again"
        found_text = [f"{len(paths)} {what} ({_shown(paths)})" for what, paths in
                      (("missing", missing), ("changed since archived", [path for path, *_ in changed])) if paths]
        detail = f"verify: {', '.join(found_text)}; {then}"
        rows = mark_damaged(ledger, job_id, missing=missing, changed=changed, staged_dir=staged, host=host,
                                   reason=f"verify: {len(found)} files missing/changed", detail=detail)
        moved = move_aside(storage, ledger, job_id, name, [(rows[path], path) for path, *_ in changed])
        paths = {row_id: path for path, row_id in rows.items()}
        repaired.missing = missing
        repaired.moved = [(paths[row_id], moved_to) for row_id, moved_to in moved]
        repaired.staged_dir = staged
        if repaired.moved:
            note_attempt(ledger, job_id, "moved aside: " + ", ".join(f"{a} -> {b}" for a, b in repaired.moved))
    return done
