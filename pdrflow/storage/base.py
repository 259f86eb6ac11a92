"""The storage interface every archive backend implements (local directory, SFTP, ...).

A backend stores files under its root by *archive-relative* POSIX paths
(``<grid>/pdrgrid/pdrstruct<J>.hdf5``). Its contract:

- ``put`` is atomic: the bytes go to a temporary name in the target directory and are
  renamed onto the final name only after size and sha256 match what the caller expects.
  A final path never holds a partial file.
- Every failure raises :class:`StorageError` (never returns False). ``transient`` says
  whether retrying soon may help (connection reset) or not (permission denied, disk full).
"""

from __future__ import annotations

import hashlib
import posixpath
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

CHUNK = 1 << 20


class StorageError(Exception):
    """A storage operation failed; ``transient`` failures are worth retrying soon."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the flag when the exception crosses a process boundary (Dask pickles it).
        return (_rebuild_storage_error, (str(self), self.transient))


def _rebuild_storage_error(message: str, transient: bool) -> StorageError:
    return StorageError(message, transient=transient)


@dataclass(frozen=True)
class StoredFile:
    path: str  # archive-relative POSIX path
    size: int
    sha256: str


def check_relative_path(path: str) -> str:
    """Refuse archive paths that could escape the root ("..", absolute, empty parts)."""
    normalized = posixpath.normpath(path)
    if (
        not path
        or path.startswith("/")
        or normalized != path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise StorageError(f"refusing unsafe archive path {path!r}")
    return path


def sha256_stream(stream: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_file(path: Path) -> tuple[int, str]:
    with path.open("rb") as stream:
        return sha256_stream(stream)


class Storage(ABC):
    """One archive backend. Instances are cheap to create and may hold a connection."""

    #: Human-readable location for messages (never contains a secret).
    description: str

    @abstractmethod
    def put(self, local: Path, path: str, *, size: int, sha256: str) -> StoredFile:
        """Atomically store ``local`` at ``path``; verify it has ``size`` and ``sha256``.

        If the final path already holds exactly these bytes nothing is written.
        """

    @abstractmethod
    def stat(self, path: str) -> int | None:
        """Size of the stored file, or None when it does not exist."""

    @abstractmethod
    def checksum(self, path: str) -> str | None:
        """sha256 of the stored file, or None when it does not exist."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections; the object may not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
