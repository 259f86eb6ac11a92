"""Archive to a server over SFTP: strict host keys, atomic verified uploads, one reused connection.

One :class:`SftpStorage` holds one SSH connection (opened lazily, reopened transparently
after a drop) and a pool of SFTP channels on it; it is thread-safe and meant to live as
long as its worker process. At most ``files_in_flight`` channels are busy at once (keep
it at or below the server's ``MaxSessions``, 10 by default in OpenSSH).

Upload of one file (``put``):

1. ``stat`` the final path; if it has the expected size, stream it back and compare the
   sha256: equal means already archived, nothing is written (cheap resumed archival).
2. Create missing directories (remembered per connection).
3. Write ``.<name>.pdrflow-<uuid>.part`` in the target directory with pipelined writes,
   hashing the bytes as they are sent; ``fsync@openssh.com`` (when offered), ``fstat`` and
   close ride behind the last write (one round trip); a large file is also flushed to the
   server's disk from a spare channel while it streams; compare size and sha256.
4. ``posix-rename@openssh.com`` onto the final name. Without that extension: plain rename
   when the final name is free, else move the old file aside first - the final name may be
   briefly absent but never holds a partial file.

A partial file that a cut connection left behind is removed by the next upload through the
same instance (it is only ever a hidden ``.pdrflow-*.part`` name, never the final path).

Failures raise :class:`StorageError`. Network trouble (refused, reset, timeout, server
restart) is ``transient`` and retried here with bounded exponential backoff (tenacity),
reconnecting each time; the rest fails at once with the reason:

- SFTP status "permission denied" -> "permission denied <doing> <path> on <host:port>";
- OpenSSH reports ENOSPC, EDQUOT, EROFS, EIO ... all as the generic SSH_FX_FAILURE, so
  after a failed write, fsync, close or mkdir the server's file system is examined with
  ``statvfs@openssh.com`` (before the partial file is removed): no free blocks or inodes
  -> "no space left on device", read-only flag -> "read-only file system"; otherwise the
  generic failure is reported as such (persistent);
- authentication and host-key failures (from :mod:`.sftp_connect`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO, TypeVar

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from ..config import SftpStorageConfig
from .base import (
    HashingSink,
    Storage,
    StorageError,
    StoredFile,
    check_relative_path,
    is_temporary_of,
    temporary_names,
)
from .sftp_connect import Endpoint, open_transport, resolve_endpoint
from .sftp_protocol import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_PERMISSION_DENIED,
    O_CREAT,
    O_EXCL,
    O_WRITE,
    STATUS_NAMES,
    Attrs,
    BackgroundFlush,
    SftpProtocolError,
    SftpSession,
    SftpStatus,
)

log = logging.getLogger("pdrflow.storage.sftp")
T = TypeVar("T")

#: Bounded retry of transient failures inside one call (the driver resubmits after that).
RETRY_ATTEMPTS = 4
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0

# Raised by the network or the SSH layer: the connection is suspect, retrying may help.
_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException, SftpProtocolError)

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


class _LocalWriteError(Exception):
    """Writing the fetched copy on the local disk failed (not a storage or network problem)."""


class _CheckedWriter:
    """Wraps the local copy so that its write errors are not mistaken for network errors."""

    def __init__(self, sink: HashingSink, path: Path) -> None:
        self.sink = sink
        self._path = path

    def write(self, data: bytes) -> int:
        try:
            return self.sink.write(data)
        except OSError as exc:
            raise _LocalWriteError(f"cannot write {self._path}: {exc.strerror or exc}") from None


class _LocalReadError(Exception):
    """Reading the staged local file failed (not a storage or network problem)."""


class _CheckedReader:
    """Wraps the local file so that its read errors are not mistaken for network errors."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._stream = stream
        self._path = path

    def read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise _LocalReadError(f"cannot read staged file {self._path}: {exc.strerror or exc}") from None


class SftpStorage(Storage):
    def __init__(self, config: SftpStorageConfig) -> None:
        self.config = config
        root = posixpath.normpath(config.root)
        if not root.startswith("/"):
            raise StorageError(f"storage.root must be an absolute path on the server, got {config.root!r}")
        self.root = root
        self._endpoint: Endpoint = resolve_endpoint(config)
        self.description = f"sftp://{self._endpoint.username}@{self._endpoint.address}{root}"
        self._lock = threading.Lock()  # guards the fields below and (re)connecting
        self._transport: paramiko.Transport | None = None
        self._generation = 0  # bumped per connection: stale sessions are never reused
        self._idle: list[tuple[int, SftpSession]] = []
        self._known_dirs: set[str] = set()
        self._slots = threading.BoundedSemaphore(config.files_in_flight)
        self._orphans: set[str] = set()  # partial files left by uploads cut off mid-transfer
        self._pool: ThreadPoolExecutor | None = None  # for put_many, created on first use

    # Pickling (e.g. into a Dask task) carries the configuration only; connections reopen lazily.
    def __getstate__(self) -> dict[str, object]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, object]) -> None:
        config = state["config"]
        assert isinstance(config, SftpStorageConfig)
        self.__init__(config)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SftpStorage({self.description})"

    # ---- connection and channel pool -------------------------------------------------

    def _connect(self) -> tuple[int, paramiko.Transport]:
        """The live transport (connecting if needed); call with the lock held."""
        if self._transport is None or not self._transport.is_active():
            if self._transport is not None:
                self._drop_locked()
            password = self.config.password.get_secret_value() if self.config.password else None
            self._transport = open_transport(
                self._endpoint, password, self.config.connect_timeout, self.config.operation_timeout
            )
            self._generation += 1
        return self._generation, self._transport

    def _drop_locked(self) -> None:
        for _, session in self._idle:
            session.close()
        self._idle.clear()
        self._known_dirs.clear()
        if self._transport is not None:
            with contextlib.suppress(Exception):  # it may be dead already
                self._transport.close()
        self._transport = None

    def _discard(self, generation: int) -> None:
        """Forget a connection that failed (unless another thread already replaced it)."""
        with self._lock:
            if generation == self._generation and self._transport is not None:
                log.info("dropping the connection to %s after a failure", self._endpoint.address)
                self._drop_locked()

    @contextlib.contextmanager
    def _session(self) -> Iterator[SftpSession]:
        """An SFTP channel for this thread; network errors become transient StorageErrors."""
        if not self._slots.acquire(timeout=self.config.operation_timeout * RETRY_ATTEMPTS):
            raise StorageError(f"no free SFTP channel to {self._endpoint.address} in time", transient=True)
        with self._checked_out() as session:
            yield session

    @contextlib.contextmanager
    def _spare_session(self) -> Iterator[SftpSession | None]:
        """A second channel if one of the ``files_in_flight`` is free right now, else None (never waits)."""
        if not self._slots.acquire(blocking=False):
            yield None
            return
        with self._checked_out() as session:
            yield session

    @contextlib.contextmanager
    def _checked_out(self) -> Iterator[SftpSession]:
        """A channel from the pool (or a new one); the caller holds a slot, released here."""
        generation = -1
        session: SftpSession | None = None
        try:
            with self._lock:
                generation, transport = self._connect()
                while self._idle and session is None:
                    idle_generation, candidate = self._idle.pop()
                    if idle_generation == generation and not candidate.closed:
                        session = candidate
                    else:
                        candidate.close()
            if session is None:
                session = SftpSession(transport, self.config.operation_timeout)
            yield session
        except _NETWORK_ERRORS as exc:
            if session is not None:
                session.close()
                session = None
            if generation >= 0:
                self._discard(generation)
            raise self._network_error(exc) from None
        except (SftpStatus, StorageError):
            raise  # the server answered: the channel is in a clean state and can be reused
        except BaseException:
            # Anything else may have left unread responses on the channel.
            if session is not None:
                session.close()
                session = None
            raise
        finally:
            if session is not None:
                with self._lock:
                    if generation == self._generation and not session.closed:
                        self._idle.append((generation, session))
                    else:
                        session.close()
            self._slots.release()

    def _network_error(self, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, TimeoutError):
            what = f"no answer within {self.config.operation_timeout:g} s"
        elif isinstance(exc, ConnectionError | EOFError):
            what = "connection lost"
        else:
            what = str(exc) or type(exc).__name__
        return StorageError(f"SFTP connection to {self._endpoint.address} failed: {what}", transient=True)

    def _retrying(self, operation: Callable[[], T], what: str) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s: %s; retrying (attempt %d of %d)", what, exc, state.attempt_number + 1, RETRY_ATTEMPTS)

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, StorageError) and exc.transient),
            stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(self.config.operation_timeout),
            wait=wait_exponential_jitter(multiplier=RETRY_INITIAL, max=RETRY_MAX, jitter=RETRY_INITIAL / 2),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(operation)

    def close(self) -> None:
        """Close the connection and the upload threads; a later call reopens them (closing early is harmless)."""
        with self._lock:
            self._drop_locked()
            self._generation += 1
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- paths and errors ------------------------------------------------------------

    def _remote(self, path: str) -> str:
        return posixpath.join(self.root, check_relative_path(path))

    def _status_error(
        self, exc: SftpStatus, session: SftpSession | None, needed: int = 0, shown: str | None = None
    ) -> StorageError:
        """A clear message for an error status; ``shown`` replaces a temporary name by the final one."""
        doing = _DOING.get(exc.operation, exc.operation)
        where = f"{shown or exc.path} on {self._endpoint.address}"
        if exc.code == FX_PERMISSION_DENIED:
            return StorageError(f"permission denied {doing} {where}")
        if exc.code == FX_NO_SUCH_FILE:
            return StorageError(f"no such file or directory {doing} {where}")
        if exc.code == FX_FAILURE and session is not None:
            reason = self._diagnose_failure(session, posixpath.dirname(exc.path), needed)
            if reason:
                return StorageError(f"{reason} {doing} {where}")
        name = STATUS_NAMES.get(exc.code, f"status {exc.code}")
        detail = f": {exc.server_message}" if exc.server_message and exc.server_message.lower() != name else ""
        return StorageError(f"server reported {name}{detail} {doing} {where}")

    @staticmethod
    def _diagnose_failure(session: SftpSession, directory: str, needed: int) -> str | None:
        """Why a generic SSH_FX_FAILURE happened, judged from the file system's state."""
        try:
            vfs = session.statvfs(directory)
        except (SftpStatus, *_NETWORK_ERRORS):
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

    # ---- operations ------------------------------------------------------------------

    def stat(self, path: str) -> int | None:
        remote = self._remote(path)

        def once() -> int | None:
            with self._session() as session:
                try:
                    attrs = session.stat(remote)
                except SftpStatus as exc:
                    raise self._status_error(exc, None) from None
            return None if attrs is None else attrs.size

        return self._retrying(once, f"stat of {remote}")

    def checksum(self, path: str) -> str | None:
        remote = self._remote(path)

        def once() -> str | None:
            with self._session() as session:
                try:
                    result = session.sha256(remote)
                except SftpStatus as exc:
                    raise self._status_error(exc, None) from None
            return None if result is None else result[1]

        return self._retrying(once, f"checksum of {remote}")

    def put(self, local: Path, path: str, *, size: int, sha256: str) -> StoredFile:
        remote = self._remote(path)

        def once() -> StoredFile:
            with self._session() as session:
                return self._put_once(session, local, remote, path, size, sha256)

        return self._retrying(once, f"upload of {remote}")

    def put_many(self, items: Sequence[tuple[Path, str, int, str]]) -> list[StoredFile]:
        """Upload several files, up to ``files_in_flight`` at once; results in input order.

        The first persistent failure (or transient one that outlived its retries) cancels the
        files not yet started and is raised once the running ones finish.
        """
        for _, path, _, _ in items:
            check_relative_path(path)
        if len(items) <= 1 or self.config.files_in_flight == 1:
            return [self.put(local, path, size=size, sha256=sha) for local, path, size, sha in items]
        pool = self._executor()
        futures: list[Future[StoredFile]] = [
            pool.submit(self.put, local, path, size=size, sha256=sha) for local, path, size, sha in items
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # no effect on the running and the finished ones
        wait(futures)
        for future in futures:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        if any(future.cancelled() for future in futures):
            raise StorageError(f"uploads to {self._endpoint.address} cancelled: the storage was closed", transient=True)
        return [future.result() for future in futures]

    def remove_temporaries(self, paths: Sequence[str]) -> int:
        """One directory listing per target directory; only this job's own temporaries are removed."""

        def once() -> int:
            removed = 0
            with self._session() as session:
                for directory, prefixes in temporary_names(paths).items():
                    remote = self._remote(directory)
                    try:
                        entries = session.listdir(remote)
                    except SftpStatus as exc:
                        if exc.code == FX_NO_SUCH_FILE:
                            continue
                        raise self._status_error(exc, session, 0) from None
                    for name in entries:
                        if is_temporary_of(name, prefixes):
                            removed += self._remove_quietly(session, posixpath.join(remote, name))
            return removed

        return self._retrying(once, "removal of partial uploads")

    def _executor(self) -> ThreadPoolExecutor:
        """One long-lived pool per instance (threads are not created per call).

        Besides saving work, this matters for Python < 3.11.9 in Dask workers: thread
        creation racing Dask's profiler (sys._current_frames) can deadlock the interpreter
        (CPython gh-106883); a pool per call made that likely.
        """
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.config.files_in_flight, thread_name_prefix="pdrflow-sftp"
                )
            return self._pool

    def _put_once(
        self, session: SftpSession, local: Path, remote: str, path: str, size: int, sha256: str
    ) -> StoredFile:
        directory, name = posixpath.split(remote)
        try:
            self._remove_orphans(session)
            existing = session.stat(remote)
            if existing is not None and existing.is_dir:
                raise StorageError(f"{remote} on {self._endpoint.address} is a directory")
            if existing is not None and existing.size == size and session.sha256(remote) == (size, sha256):
                log.debug("%s already archived with the same sha256", remote)
                return StoredFile(path, size, sha256)
            self._ensure_dir(session, directory)
        except SftpStatus as exc:
            raise self._status_error(exc, session, size) from None
        try:
            source = local.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read staged file {local}: {exc.strerror or exc}") from None
        temporary = posixpath.join(directory, f".{name}.pdrflow-{uuid.uuid4().hex}.part")
        settled = False  # the temporary file is renamed or removed
        with source:
            try:
                handle = session.open(temporary, O_WRITE | O_CREAT | O_EXCL)
            except SftpStatus as exc:
                raise self._status_error(exc, session, size, remote) from None
            try:
                written, digest, attrs = self._upload(session, handle, _CheckedReader(source, local), temporary, size)
                if written != size or digest != sha256:
                    raise StorageError(
                        f"{path}: staged file {local} changed while archiving (expected {size} bytes sha256 "
                        f"{sha256[:12]}, read {written} bytes sha256 {digest[:12]})"
                    )
                if attrs.size is not None and attrs.size != written:
                    raise StorageError(
                        f"{remote} on {self._endpoint.address}: the server has {attrs.size} bytes after {written} "
                        "were written"
                    )
                self._rename(session, temporary, remote)
                settled = True
            except SftpStatus as exc:
                error = self._status_error(exc, session, size, remote)  # before removing: statvfs sees the full disk
                settled = self._remove_quietly(session, temporary)
                raise error from None
            except (StorageError, _LocalReadError) as exc:
                settled = self._remove_quietly(session, temporary)
                raise exc if isinstance(exc, StorageError) else StorageError(str(exc)) from None
            finally:
                if not settled:
                    # Cut off (network failure): remove it through the next connection that works.
                    with self._lock:
                        self._orphans.add(temporary)
        return StoredFile(path, size, sha256)

    def _upload(
        self, session: SftpSession, handle: bytes, source: _CheckedReader, temporary: str, size: int
    ) -> tuple[int, str, Attrs]:
        """Stream the file; a large one is flushed to the server's disk from a spare channel meanwhile."""
        if not session.use_fsync or size < 2 * BackgroundFlush.EVERY:
            return session.upload(handle, source, temporary)
        with self._spare_session() as helper:
            flusher = None
            if helper is not None:
                with contextlib.suppress(SftpStatus):  # no flushing alongside, then: the final fsync does it all
                    flusher = BackgroundFlush(helper, temporary)
            result = session.upload(handle, source, temporary, flusher)
            if flusher is not None:
                with contextlib.suppress(SftpStatus):  # only the helper's read handle is at stake
                    flusher.finish()
            return result

    def _remove_orphans(self, session: SftpSession) -> None:
        """Remove partial files that earlier uploads through this instance had to abandon."""
        with self._lock:
            orphans, self._orphans = self._orphans, set()
        try:
            for orphan in sorted(orphans):
                with contextlib.suppress(SftpStatus):  # already gone (or not ours to remove): forget it
                    session.remove(orphan)
                orphans.discard(orphan)
        finally:
            if orphans:  # the connection failed again: keep the rest for later
                with self._lock:
                    self._orphans |= orphans

    @staticmethod
    def _remove_quietly(session: SftpSession, temporary: str) -> bool:
        try:
            session.remove(temporary)
        except SftpStatus as exc:
            return exc.code == FX_NO_SUCH_FILE
        return True

    def _rename(self, session: SftpSession, temporary: str, remote: str) -> None:
        if session.use_posix_rename:
            session.posix_rename(temporary, remote)
            return
        # Plain SFTP rename refuses to replace an existing file: move the old one aside first.
        try:
            session.rename(temporary, remote)
            return
        except SftpStatus:
            if session.stat(remote) is None:
                raise
        directory, name = posixpath.split(remote)
        aside = posixpath.join(directory, f".{name}.pdrflow-{uuid.uuid4().hex}.old")
        session.rename(remote, aside)
        session.rename(temporary, remote)
        with contextlib.suppress(SftpStatus):
            session.remove(aside)

    def _ensure_dir(self, session: SftpSession, directory: str) -> None:
        """mkdir -p, remembering what exists (the cache is per connection)."""
        if directory in self._known_dirs or directory == "/":
            return
        attrs = session.stat(directory)
        if attrs is None:
            self._ensure_dir(session, posixpath.dirname(directory))
            try:
                session.mkdir(directory)
            except SftpStatus:
                # Another worker may have created it in the meantime; otherwise report mkdir's error.
                attrs = session.stat(directory)
                if attrs is None or not attrs.is_dir:
                    raise
        elif not attrs.is_dir:
            raise StorageError(f"{directory} on {self._endpoint.address} exists and is not a directory")
        with self._lock:
            self._known_dirs.add(directory)

    # ---- reading back ----------------------------------------------------------------

    def fetch(self, path: str, local: Path) -> StoredFile:
        """Download through a paramiko SFTPClient on the shared connection (pipelined reads)."""
        remote = self._remote(path)

        def once() -> StoredFile:
            if not self._slots.acquire(timeout=self.config.operation_timeout * RETRY_ATTEMPTS):
                raise StorageError(f"no free SFTP channel to {self._endpoint.address} in time", transient=True)
            generation = -1
            partial = local.parent / f".{local.name}.pdrflow-{uuid.uuid4().hex}.part"
            try:
                with self._lock:
                    generation, transport = self._connect()
                client = paramiko.SFTPClient.from_transport(transport)
                if client is None:
                    raise paramiko.SSHException("the server refused an SFTP channel")
                try:
                    client.get_channel().settimeout(self.config.operation_timeout)
                    try:
                        stream = partial.open("xb")
                    except OSError as exc:
                        raise _LocalWriteError(f"cannot create {partial}: {exc.strerror or exc}") from None
                    with stream:
                        writer = _CheckedWriter(HashingSink(stream), partial)
                        client.getfo(remote, writer)
                finally:
                    client.close()
                os.replace(partial, local)
                return StoredFile(path, writer.sink.size, writer.sink.sha256)
            except FileNotFoundError:  # paramiko's SSH_FX_NO_SUCH_FILE (before the network catch-all)
                where = f"{remote} on {self._endpoint.address}"
                raise StorageError(f"no such file or directory reading {where}") from None
            except PermissionError:
                raise StorageError(f"permission denied reading {remote} on {self._endpoint.address}") from None
            except _LocalWriteError as exc:
                raise StorageError(str(exc)) from None
            except _NETWORK_ERRORS as exc:
                if generation >= 0:
                    self._discard(generation)
                raise self._network_error(exc) from None
            finally:
                with contextlib.suppress(OSError):  # after a failure; after success it is gone already
                    partial.unlink()
                self._slots.release()

        return self._retrying(once, f"download of {remote}")
