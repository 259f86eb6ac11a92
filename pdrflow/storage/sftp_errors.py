"""Clear :class:`StorageError` messages for what fails under the SFTP backend.

- An SFTP error status becomes "<reason> <doing> <path> on <host:port>":
  "permission denied ...", "no such file or directory ...".
- OpenSSH reports ENOSPC, EDQUOT, EROFS, EIO ... all as the generic SSH_FX_FAILURE, so after
  a failed write, fsync, close or mkdir the server's file system is examined with
  ``statvfs@openssh.com`` (the caller does so before it removes its partial file): no free
  blocks or inodes -> "no space left on device", read-only flag -> "read-only file system";
  otherwise the generic failure is reported as such (persistent).
- :data:`LINK_ERRORS` are the exceptions a channel in use raises when the connection is in trouble
  (the pool adds paramiko's ``SSHException`` of opening channels: ``sftp_pool.NETWORK_ERRORS``).
- Errors of the local disk while uploading or fetching are raised as :class:`LocalFileError`
  so that they are never mistaken for network errors (and retried in vain).
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .base import StorageError
from .sftp_protocol import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_PERMISSION_DENIED,
    STATUS_NAMES,
    SftpProtocolError,
    SftpSession,
    SftpStatus,
)

# Raised by a channel in use when the network or the server fails: the connection is suspect.
# (No paramiko here: this module is imported with the storage module, which config loading reads.)
LINK_ERRORS = (OSError, EOFError, SftpProtocolError)

_DOING = {
    "open": "creating",
    "write": "writing",
    "fsync": "writing",
    "fstat": "writing",
    "close": "writing",
    "mkdir": "creating directory",
    "rename": "renaming onto",
    "remove": "removing",
    "stat": "looking up",
    "read": "reading",
    "statvfs": "checking free space of",
}


def status_error(
    exc: SftpStatus, address: str, session: SftpSession | None = None, needed: int = 0, shown: str | None = None
) -> StorageError:
    """A clear message for an error status from the server at ``address``.

    With a ``session`` a generic failure is diagnosed (``needed`` bytes were to be written);
    ``shown`` replaces a temporary name by the final one.
    """
    doing = _DOING.get(exc.operation, exc.operation)
    where = f"{shown or exc.path} on {address}"
    if exc.code == FX_PERMISSION_DENIED:
        return StorageError(f"permission denied {doing} {where}")
    if exc.code == FX_NO_SUCH_FILE:
        return StorageError(f"no such file or directory {doing} {where}")
    if exc.code == FX_FAILURE and session is not None:
        reason = _diagnose_failure(session, posixpath.dirname(exc.path), needed)
        if reason:
            return StorageError(f"{reason} {doing} {where}")
    name = STATUS_NAMES.get(exc.code, f"status {exc.code}")
    detail = f": {exc.server_message}" if exc.server_message and exc.server_message.lower() != name else ""
    return StorageError(f"server reported {name}{detail} {doing} {where}")


def sftp_error(
    exc: SftpStatus, address: str, session: SftpSession | None = None, needed: int = 0, shown: str | None = None
) -> StorageError:
    """``status_error``, ``persistent`` when the server refuses for good: permission denied, or (with a
    ``session``) a generic failure that statvfs explains (read-only file system, no space or inodes).
    Called before an upload's temporary is removed, so statvfs still sees the full disk."""
    error = status_error(exc, address, session, needed, shown)
    error.persistent = exc.code == FX_PERMISSION_DENIED or (
        exc.code == FX_FAILURE and session is not None
        and _diagnose_failure(session, posixpath.dirname(exc.path), needed) is not None)
    return error


def _diagnose_failure(session: SftpSession, directory: str, needed: int) -> str | None:
    """Why a generic SSH_FX_FAILURE happened, judged from the file system's state."""
    try:
        vfs = session.statvfs(directory)
    except (SftpStatus, *LINK_ERRORS):
        return None
    if vfs is None:
        return None
    if vfs.read_only:
        return "read-only file system"
    if vfs.files_available == 0:
        return "no space left on device (no free inodes)"
    if vfs.bytes_available < max(needed, 1) or vfs.bytes_available < vfs.block_size:
        return f"no space left on device ({vfs.bytes_available} bytes free, {needed} needed)"
    return None


class LocalFileError(Exception):
    """Reading or writing a file on the local disk failed (not a storage or network problem)."""


@contextlib.contextmanager
def local_file_errors(failure: str) -> Iterator[None]:
    """Raise an OSError in the block as ``LocalFileError("<failure>: <reason>")``."""
    try:
        yield
    except OSError as exc:
        raise LocalFileError(f"{failure}: {exc.strerror or exc}") from None


class CheckedReader:
    """The staged file being uploaded; an OSError reading it raises LocalFileError."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._stream = stream
        self._failure = f"cannot read staged file {path}"

    def read(self, size: int) -> bytes:
        with local_file_errors(self._failure):
            return self._stream.read(size)


class CheckedWriter:
    """The local copy being fetched (the download hashes the bytes); an OSError writing it raises LocalFileError."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._stream = stream
        self._failure = f"cannot write {path}"

    def write(self, data: bytes) -> int:
        with local_file_errors(self._failure):
            return self._stream.write(data)
