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
PROBE_NAME = "pdrflow-probe"  # Storage.probe writes a temporary of <grid>/pdrflow-probe


class StorageError(Exception):
    """A storage operation failed; ``transient`` failures are worth retrying soon.

    ``persistent``: the archive refuses for a reason no retry can cure until someone acts
    (permission denied, read-only file system, no space, quota): the archival fails at once."""

    def __init__(self, message: str, *, transient: bool = False, persistent: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.persistent = persistent and not transient

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the flags when the exception crosses a process boundary (Dask pickles it).
        return (_rebuild_storage_error, (str(self), self.transient, self.persistent))


def _rebuild_storage_error(message: str, transient: bool, persistent: bool = False) -> StorageError:
    return StorageError(message, transient=transient, persistent=persistent)


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

    def put_many(self, items: Sequence[tuple[Path, str, int, str]]) -> list[StoredFile]:
        """``put`` for each (local, path, size, sha256), in order. Backends that can keep several
        files in flight (SFTP) or batch their syncs (local) override it."""
        return [self.put(local, path, size=size, sha256=sha256) for local, path, size, sha256 in items]

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

    def probe(self, directory: str) -> None:
        """Prove that an archival could write below ``directory``: a small file is stored there by
        ``put`` (temporary name, atomic rename, size and sha256 checked, as for any upload), found
        at its final path, and removed again. Raises :class:`StorageError` naming the refusal.

        The probe is named like a cut-off upload's temporary of ``<directory>/pdrflow-probe``, so
        ``remove_temporaries`` removes it and a crash mid-probe leaves nothing pdrflow cannot
        recognise. A backend without ``remove_temporaries`` cannot clean up: refused."""
        import tempfile
        import uuid

        data = b"pdrflow archive probe: written and removed before any model runs\n"
        name = f".{PROBE_NAME}.pdrflow-{uuid.uuid4().hex}.part"
        target = posixpath.join(check_relative_path(directory), name)
        with tempfile.TemporaryDirectory(prefix="pdrflow-probe-") as local_dir:
            local = Path(local_dir) / name.lstrip(".")
            local.write_bytes(data)
            stored = self.put(local, target, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        if (stored.size, stored.sha256) != (len(data), hashlib.sha256(data).hexdigest()) or \
                self.existing([target]).get(target) != len(data):
            raise StorageError(f"{self.description}: the probe {target} is not at its final path after the upload")
        # Its own temporary-named file, and the temporaries ``put`` makes of such a name
        # (``..pdrflow-probe.pdrflow-<id>.part.pdrflow-<id>.part``): what a probe killed mid-put leaves.
        self.remove_temporaries([posixpath.join(directory, PROBE_NAME), posixpath.join(directory, f".{PROBE_NAME}")])
        if self.stat(target) is not None:
            raise StorageError(f"{self.description}: cannot remove the probe {target} (left in place; remove it)")

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections; the object may not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
