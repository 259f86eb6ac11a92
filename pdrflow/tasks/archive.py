"""The archival task: upload one job's staged outputs, verify them, commit them to the ledger.

It runs separately from the model task so that a storage or database failure never costs a
model run: the job becomes ``failed_storage`` and the driver resubmits only this task.
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

from ..errors import StorageFailed
from ..storage import Storage, StorageError, StoredFile
from ..storage.base import sha256_file
from .resources import task_ledger, task_storage, worker_name
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


def upload(storage: Storage, manifest: Manifest) -> list[StoredFile]:
    scratch = Path(manifest.scratch_dir)
    put_many = getattr(storage, "put_many", None)
    if callable(put_many):  # backends that keep several files in flight (SFTP)
        stored: list[StoredFile] = put_many([(scratch / f.source, f.target, f.size, f.sha256) for f in manifest.files])
    else:
        stored = [storage.put(scratch / f.source, f.target, size=f.size, sha256=f.sha256) for f in manifest.files]
    _verify(storage, manifest.files, stored)
    return stored


def _verify(storage: Storage, expected: tuple[StagedFile, ...], stored: list[StoredFile]) -> None:
    by_path = {f.path: f for f in stored}
    for staged in expected:
        record = by_path.get(staged.target)
        if record is None or (record.size, record.sha256) != (staged.size, staged.sha256):
            raise StorageError(f"{staged.target}: the backend did not confirm the expected bytes")
        if storage.stat(staged.target) != staged.size:
            raise StorageError(f"{staged.target}: not at its final path with {staged.size} bytes after upload")


def load_manifest(job_id: int, scratch_dir: str) -> Manifest:
    """The manifest a run task left in its scratch dir (to archive after a driver restart)."""
    try:
        return Manifest.from_json((Path(scratch_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        raise StorageFailed(job_id, f"staged outputs in {scratch_dir} are gone", staged_missing=True) from None


def archive_job(manifest: Manifest | tuple[int, str], settings: RunSettings) -> ArchiveResult:
    """The Dask task. Raises StorageFailed (job ``failed_storage``) on any failure.

    ``manifest`` is the run task's result, or (job id, scratch dir) of a job staged earlier.
    """
    host = socket.gethostname()
    if isinstance(manifest, tuple):
        manifest = load_manifest(*manifest)
    with task_ledger(settings) as ledger:
        try:
            attempt_id = ledger.start_archive(manifest.job_id, host, worker_name())
        except Exception as exc:  # noqa: BLE001 - reported through the future, recorded by the driver
            raise StorageFailed(manifest.job_id, f"ledger unavailable before archiving: {type(exc).__name__}") from None
        try:
            _check_staged(manifest, contents=False)
            earlier = ledger.archive_attempts(manifest.job_id) > 1
            with task_storage(settings) as storage:
                try:
                    if earlier:  # an earlier try may have been cut off mid-file: leave no temporary behind
                        storage.remove_temporaries([f.target for f in manifest.files])
                    stored = upload(storage, manifest)
                except StorageError:
                    _check_staged(manifest)  # a staged file changed since the run: StorageFailed, rerun
                    raise
        except StorageFailed as exc:
            ledger.fail_archive(manifest.job_id, attempt_id, exc.reason)
            raise
        except StorageError as exc:
            reason = f"storage: {exc}"
            ledger.fail_archive(manifest.job_id, attempt_id, reason)
            raise StorageFailed(manifest.job_id, reason) from None
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
    return ArchiveResult(manifest.job_id, manifest.name, len(stored), manifest.total_bytes)
