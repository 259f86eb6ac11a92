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
from collections.abc import Sequence
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


def temporary_names(paths: Sequence[str]) -> dict[str, set[str]]:
    """directory → prefixes (``.<name>.pdrflow-``) of the temporaries an upload of ``paths`` may leave."""
    prefixes: dict[str, set[str]] = {}
    for path in paths:
        directory, name = posixpath.split(check_relative_path(path))
        prefixes.setdefault(directory, set()).add(f".{name}.pdrflow-")
    return prefixes


def is_temporary_of(entry: str, prefixes: set[str]) -> bool:
    return entry.endswith((".part", ".old")) and any(entry.startswith(prefix) for prefix in prefixes)


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


class HashingSink:
    """A binary file being written that also counts and hashes its bytes (for ``fetch``)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._stream.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class Storage(ABC):
    """One archive backend. Instances are cheap to create and may hold a connection."""

    #: Human-readable location for messages (never contains a secret).
    description: str
    #: Files worth reading at once: a remote archive overlaps its round trips, a local disk gains nothing.
    concurrent_reads: int = 1

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

    def existing(self, paths: Sequence[str]) -> dict[str, int]:
        """path -> size of those of ``paths`` that exist (checked before an archival writes anything).

        The default asks ``stat`` once per path; remote backends override it to overlap the requests."""
        found: dict[str, int] = {}
        for path in paths:
            size = self.stat(path)
            if size is not None:
                found[path] = size
        return found

    def rename(self, old: str, new: str) -> None:
        """Move the stored file ``old`` to ``new`` atomically, creating ``new``'s directories.

        Never replaces: an existing ``new`` raises :class:`StorageError` and both files stay as
        they are. Not abstract, so backends that cannot move keep working (they refuse here)."""
        raise StorageError(f"{self.description}: moving archived files is not supported")

    def fetch(self, path: str, local: Path) -> StoredFile:
        """Copy the stored file at ``path`` to ``local`` (written atomically: a partial copy never
        has the final name); return the size and sha256 of the bytes read. A missing file raises
        :class:`StorageError`. Not abstract, so backends that only write keep working."""
        raise StorageError(f"{self.description}: reading archived files back is not supported")

    def remove_temporaries(self, paths: Sequence[str]) -> int:
        """Remove the hidden temporaries (``.<name>.pdrflow-*.part``) that earlier uploads of ``paths``
        left behind when they were cut off (connection lost, server or worker killed); return how many.
        Called before an archival that is not the job's first, so it lists each directory once."""
        return 0

    def close(self) -> None:  # an optional hook, not abstract
        """Release connections; the object may not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
