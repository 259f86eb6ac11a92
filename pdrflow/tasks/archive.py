"""The archival task: upload one job's staged outputs, verify them, commit them to the ledger.

It runs separately from the model task so that a storage or database failure never costs a
model run: the job becomes ``failed_storage`` and the driver resubmits only this task.

Before any byte is uploaded, every final path is checked (:func:`plan_targets`): pdrflow never
overwrites a file the ledger did not write for this job. Files another tool left there that
``pdrflow migrate`` recorded are moved aside under ``<grid>/pdrflow-superseded/``; anything else
fails the archival at once, permanently (no retries), naming the paths.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import StorageFailed
from ..ledger.ledger import ArchiveClaims, Ledger
from ..storage import Storage, StorageError, StoredFile
from ..storage.base import sha256_file
from .resources import archival_given_up, task_ledger, task_storage, worker_name
from .types import MANIFEST_FILE, ArchiveResult, Manifest, RunSettings, StagedFile

log = logging.getLogger("pdrflow")


def staged_outputs_present(manifest: Manifest) -> bool:
    """True when every staged file is still in scratch with its recorded size."""
    scratch = Path(manifest.scratch_dir)
    try:
        return all((scratch / f.source).stat().st_size == f.size for f in manifest.files)
    except OSError:
        return False


def _check_staged(manifest: Manifest, *, contents: bool = True) -> None:
    """Staged outputs gone or changed since the run: ``staged_missing`` (the model runs again).

    ``contents=False`` checks presence and sizes only: before an upload, whose backend hashes
    every byte it sends and refuses a mismatch; after a failed upload the full check tells a
    changed staged file (rerun) from a storage failure (retry the archival)."""
    scratch = Path(manifest.scratch_dir)
    for staged in manifest.files:
        path = scratch / staged.source
        try:
            size, digest = sha256_file(path) if contents else (path.stat().st_size, staged.sha256)
        except OSError:
            raise StorageFailed(manifest.job_id, f"staged output {path} is gone", staged_missing=True) from None
        if (size, digest) != (staged.size, staged.sha256):
            raise StorageFailed(manifest.job_id, f"staged output {path} changed since the run", staged_missing=True)


SUPERSEDED_DIR = "pdrflow-superseded"  # below the grid: files other tools left at a job's paths, moved aside
FOREIGN_SHOWN = 5  # foreign paths named in the reason (then a count)


@dataclass
class TargetPlan:
    """What to do at each final path of one job, decided before anything is written."""

    upload: list[StagedFile] = field(default_factory=list)
    unchanged: list[StagedFile] = field(default_factory=list)  # the same bytes are there already
    move_aside: list[tuple[int, str]] = field(default_factory=list)  # (PreexistingFile id, path)
    foreign: list[str] = field(default_factory=list)  # neither pdrflow's nor recorded by `pdrflow migrate`


def _checksums(storage: Storage, paths: list[str]) -> dict[str, str | None]:
    """sha256 of stored files, several at once where the backend overlaps reads (SFTP)."""
    if len(paths) <= 1 or storage.concurrent_reads <= 1:
        return {path: storage.checksum(path) for path in paths}
    with ThreadPoolExecutor(min(storage.concurrent_reads, len(paths)), thread_name_prefix="pdrflow-check") as pool:
        return dict(zip(paths, pool.map(storage.checksum, paths), strict=True))


def plan_targets(storage: Storage, manifest: Manifest, claims: Callable[[], ArchiveClaims]) -> TargetPlan:
    """Sort the job's final paths by what is there now. ``claims`` is asked only when something is.

    Nothing there, or the staged bytes: fine. Bytes this job's archived files or earlier archival
    plans record: pdrflow's own, replaced. A file ``pdrflow migrate`` recorded for this job: moved
    aside. Anything else is foreign. Only files whose bytes decide it are read back."""
    plan = TargetPlan()
    found = storage.existing([f.target for f in manifest.files])
    if not found:
        plan.upload = list(manifest.files)
        return plan
    known = claims()
    present = [f for f in manifest.files if f.target in found]
    to_read = [f.target for f in present if found[f.target] == f.size or f.target in known.own]
    digests = _checksums(storage, to_read)
    for staged in manifest.files:
        path = staged.target
        if path not in found:
            plan.upload.append(staged)
            continue
        digest = digests.get(path)
        if digest == staged.sha256:
            plan.unchanged.append(staged)
        elif digest is not None and digest in known.own.get(path, ()):
            plan.upload.append(staged)
        elif path in known.preexisting:
            plan.move_aside.append((known.preexisting[path][0], path))
            plan.upload.append(staged)
        else:
            plan.foreign.append(path)
    return plan


def foreign_reason(paths: list[str]) -> str:
    shown = ", ".join(paths[:FOREIGN_SHOWN]) + (f" and {len(paths) - FOREIGN_SHOWN} more" if len(paths) > FOREIGN_SHOWN
                                                 else "")
    return (f"{len(paths)} file(s) at this model's archive paths were not written by pdrflow and are left as they "
            f"are: {shown}; run `pdrflow migrate` to take the old grid over, or choose another grid.name")


def superseded_path(target: str, job_name: str, stamp: str) -> str:
    """``<grid>/pdrflow-superseded/<job>/<UTC stamp>/<path below the grid>`` for a file moved out of the way."""
    grid, _, below = target.partition("/")
    return posixpath.join(grid, SUPERSEDED_DIR, job_name, stamp, below)


def move_aside(storage: Storage, ledger: Ledger, job_id: int, job_name: str,
               moves: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Move recorded pre-existing files (or, for ``pdrflow verify --repair``, damaged archived ones) out
    of the way, never deleted, and record where each went; returns (PreexistingFile id, moved to)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    done: list[tuple[int, str]] = []
    try:
        for row_id, path in moves:
            moved_to = superseded_path(path, job_name, stamp)
            storage.rename(path, moved_to)
            done.append((row_id, moved_to))
            log.info("job %s: moved %s aside to %s", job_id, path, moved_to)
    finally:
        ledger.record_moved_aside(done)  # also those moved before a failure
    return done


def upload(storage: Storage, manifest: Manifest, files: list[StagedFile] | None = None) -> list[StoredFile]:
    """Upload ``files`` (default: all of the manifest), then check every file of the manifest is in place."""
    scratch = Path(manifest.scratch_dir)
    todo = list(manifest.files) if files is None else files
    written = storage.put_many([(scratch / f.source, f.target, f.size, f.sha256) for f in todo])
    by_path = {f.path: f for f in written}
    uploaded = {f.target for f in todo}
    # Files not uploaded were found with the staged bytes by plan_targets.
    stored = [by_path.get(f.target) if f.target in uploaded else StoredFile(f.target, f.size, f.sha256)
              for f in manifest.files]
    _verify(storage, manifest.files, stored)
    return [f for f in stored if f is not None]


def _verify(storage: Storage, expected: tuple[StagedFile, ...], stored: list[StoredFile | None]) -> None:
    by_path = {f.path: f for f in stored if f is not None}
    for staged in expected:
        record = by_path.get(staged.target)
        if record is None or (record.size, record.sha256) != (staged.size, staged.sha256):
            raise StorageError(f"{staged.target}: the backend did not confirm the expected bytes")
    sizes = storage.existing([f.target for f in expected])  # one pipelined round trip over SFTP
    for staged in expected:
        if sizes.get(staged.target) != staged.size:
            raise StorageError(f"{staged.target}: not at its final path with {staged.size} bytes after upload")


def load_manifest(job_id: int, scratch_dir: str) -> Manifest:
    """The manifest a run task left in its scratch dir (to archive after a driver restart)."""
    try:
        return Manifest.from_json((Path(scratch_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        raise StorageFailed(job_id, f"staged outputs in {scratch_dir} are gone", staged_missing=True) from None


def _free_the_model_slot() -> None:
    """Leave the worker's thread pool: an archival waits on a lease, the network and the database, and it is
    pinned to the worker that holds the outputs, so without this the next model there waits for it."""
    from distributed import get_worker, secede

    try:
        get_worker()
    except ValueError:
        return  # called outside a worker (tests calling the task directly)
    secede()


def archive_job(manifest: Manifest | tuple[int, str], settings: RunSettings) -> ArchiveResult:
    """The Dask task. Raises StorageFailed (job ``failed_storage``) on any failure.

    ``manifest`` is the run task's result, or (job id, scratch dir) of a job staged earlier.
    """
    started = time.monotonic()
    host = socket.gethostname()
    _free_the_model_slot()
    if isinstance(manifest, tuple):
        manifest = load_manifest(*manifest)
    try:
        return _archive(manifest, settings, started, host)
    except StorageFailed as exc:
        if exc.permanent:  # the driver will not try again: the worker need not keep these for a retry
            archival_given_up(manifest.scratch_dir)
        raise


def _archive(manifest: Manifest, settings: RunSettings, started: float, host: str) -> ArchiveResult:
    planned = {f.target: f.sha256 for f in manifest.files}
    with task_ledger(settings) as ledger:
        try:
            # The plan is recorded before any byte moves: a cut-off upload's leftovers are recognisably ours.
            start = ledger.start_archive(manifest.job_id, host, worker_name(), planned_files=planned)
        except Exception as exc:  # noqa: BLE001 - reported through the future, recorded by the driver
            raise StorageFailed(manifest.job_id, f"ledger unavailable before archiving: {type(exc).__name__}") from None
        attempt_id = start.attempt_id
        skipped = 0
        try:
            _check_staged(manifest, contents=False)
            with task_storage(settings) as storage:
                try:
                    targets = plan_targets(storage, manifest, lambda: ledger.archive_claims(manifest.job_id,
                                                                                            attempt_id))
                    if targets.foreign:
                        raise StorageFailed(manifest.job_id, foreign_reason(targets.foreign), permanent=True)
                    if start.earlier:  # an earlier try may have been cut off mid-file: leave no temporary behind
                        storage.remove_temporaries([f.target for f in manifest.files])
                    move_aside(storage, ledger, manifest.job_id, manifest.name, targets.move_aside)
                    stored = upload(storage, manifest, targets.upload)
                    skipped = len(targets.unchanged)
                except StorageError:
                    _check_staged(manifest)  # a staged file changed since the run: StorageFailed, rerun
                    raise
        except StorageFailed as exc:
            ledger.fail_archive(manifest.job_id, attempt_id, exc.reason)
            raise
        except StorageError as exc:
            reason = f"storage: {exc}"
            ledger.fail_archive(manifest.job_id, attempt_id, reason)
            # persistent (permission, read-only, no space): the driver fails the job at once, no backoff
            raise StorageFailed(manifest.job_id, reason, permanent=exc.persistent) from None
        try:
            ledger.commit_archive(manifest.job_id, attempt_id, stored)
        except Exception as exc:  # noqa: BLE001 - any commit failure leaves the job failed_storage
            reason = f"ledger commit failed: {type(exc).__name__}"
            try:
                ledger.fail_archive(manifest.job_id, attempt_id, reason)
            except Exception:  # the driver records it once the database is back
                log.debug("could not record the failed archival of job %s", manifest.job_id, exc_info=True)
            raise StorageFailed(manifest.job_id, reason) from None
    # Only now, with the files archived and recorded, may the staged copy go.
    shutil.rmtree(manifest.scratch_dir, ignore_errors=True)
    return ArchiveResult(manifest.job_id, manifest.name, len(stored), manifest.total_bytes, skipped_existing=skipped,
                         seconds=time.monotonic() - started)
