"""Archive into a local (or network-mounted) directory, atomically and verified."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from pathlib import Path

from .base import CHUNK, Storage, StorageError, StoredFile, check_relative_path, sha256_file

# Errors a retry may cure (a network filesystem hiccup); the rest are reported at once.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.EBUSY}


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or exc.__class__.__name__} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"local directory {self.root}"

    def _target(self, path: str) -> Path:
        return self.root / check_relative_path(path)

    def put(self, local: Path, path: str, *, size: int, sha256: str) -> StoredFile:
        target = self._target(path)
        if self.checksum(path) == sha256:
            return StoredFile(path, size, sha256)  # already archived: resumed archival is cheap
        temporary = target.parent / f".{target.name}.pdrflow-{uuid.uuid4().hex}.part"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            written = 0
            with local.open("rb") as source, temporary.open("xb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                sink.flush()
                os.fsync(sink.fileno())
            if written != size or digest.hexdigest() != sha256:
                raise StorageError(
                    f"{path}: staged file changed while archiving (expected {size} bytes sha256 {sha256[:12]}, "
                    f"read {written} bytes sha256 {digest.hexdigest()[:12]})"
                )
            os.replace(temporary, target)
            self._fsync_dir(target.parent)
        except OSError as exc:
            raise StorageError(
                f"cannot write {path} under {self.root}: {_describe(exc)}",
                transient=exc.errno in _TRANSIENT_ERRNOS,
            ) from None
        finally:
            with contextlib.suppress(OSError):  # after a failure; after success it is gone already
                temporary.unlink()
        return StoredFile(path, size, sha256)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # Make the rename itself durable, not only the file contents.
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stat(self, path: str) -> int | None:
        try:
            return self._target(path).stat().st_size
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {_describe(exc)}") from None

    def checksum(self, path: str) -> str | None:
        try:
            return sha256_file(self._target(path))[1]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {_describe(exc)}") from None
