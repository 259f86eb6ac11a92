"""Archive to a server over SFTP: strict host keys, atomic verified uploads, one reused connection.

One :class:`SftpStorage` holds one SSH connection and a pool of SFTP channels on it
(:mod:`.sftp_pool`: opened lazily, reopened after a drop, at most ``files_in_flight`` busy
channels); it is thread-safe and meant to live as long as its worker process.

Upload of one file (``put``):

1. ``stat`` the final path; if it has the expected size, stream it back and compare the
   sha256: equal means already archived, nothing is written (cheap resumed archival).
2. Create missing directories (remembered per connection), each chmod'ed to ``storage.dir_mode``
   (directories that exist already are left as they are).
3. Write ``.<name>.pdrflow-<uuid>.part`` in the target directory with pipelined writes,
   hashing the bytes as they are sent; a chmod to ``storage.file_mode`` (FSETSTAT: no umask),
   ``fsync@openssh.com`` (when offered), ``fstat`` and close ride behind the last write (one round trip); a large file is also flushed to the
   server's disk from a spare channel while it streams; compare size and sha256.
4. ``posix-rename@openssh.com`` onto the final name. Without that extension: plain rename
   when the final name is free, else move the old file aside first - the final name may be
   briefly absent but never holds a partial file.

A partial file that a cut connection left behind is removed by the next upload through the
same instance (it is only ever a hidden ``.pdrflow-*.part`` name, never the final path).

Reading back (``fetch``, ``checksum``) speaks the same protocol (:mod:`.sftp_transfer`): pipelined
reads, sha256 while streaming, a local copy written under a temporary name and renamed.

Failures raise :class:`StorageError`. Network trouble is ``transient`` and retried here with
bounded exponential backoff, reconnecting each time (:mod:`.sftp_pool`); the rest fails at
once with the reason: an SFTP error status, with disk full and read-only file systems told
apart (:mod:`.sftp_errors`), or an authentication or host-key failure (:mod:`.sftp_connect`).

paramiko is imported only when a storage is created (the pool and the connection modules), not
with this module: config loading imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr

from ..config.sections import (
    SFTP_PASSWORD_ENV,
    StorageKind,
    StorageSection,
    _PasswordFromEnv,
    archive_modes,
)
from . import sftp_transfer as transfer
from .base import (
    Storage,
    StorageError,
    StoredFile,
    check_relative_path,
    is_temporary_of,
    temporary_names,
)
from .sftp_errors import CheckedReader, CheckedWriter, LocalFileError, local_file_errors, sftp_error
from .sftp_protocol import (
    FX_NO_SUCH_FILE,
    O_CREAT,
    O_EXCL,
    O_WRITE,
    Attrs,
    SftpSession,
    SftpStatus,
)

if TYPE_CHECKING:
    from .sftp_connect import Endpoint
    from .sftp_pool import SftpChannelPool

log = logging.getLogger("pdrflow.storage.sftp")


class SftpStorageConfig(StorageSection, _PasswordFromEnv):
    _PASSWORD_ENV = SFTP_PASSWORD_ENV

    kind: Literal["sftp"] = Field(description="selects this section's keys")
    # A host name, address or ~/.ssh/config Host alias; no leading "-" (never an ssh option).
    host: str = Field(
        pattern=r"^[A-Za-z0-9_.:\[\]%][A-Za-z0-9_.:\[\]%-]*$", max_length=255,
        description=(
            "the archive server: a host name, an address or a ~/.ssh/config Host alias"
        ),
    )
    port: int | None = Field(ge=1, le=65535, description="null: from ~/.ssh/config, else 22")
    username: str | None = Field(
        pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$", max_length=64,
        description=(
            "null: from ~/.ssh/config, else the local user"
        ),
    )
    root: str = Field(pattern=r"^/", max_length=4096, description="absolute directory on the server")
    key_filename: Path | None = Field(description="null: ~/.ssh/config IdentityFile, ssh-agent, default keys")
    known_hosts: Path | None = Field(description="null: ~/.ssh/known_hosts (unknown or changed host keys are refused)")
    ssh_config: Path | None = Field(description="null: ~/.ssh/config when it exists")
    connect_timeout: float = Field(gt=0, description="seconds to connect and log in to the archive server")
    operation_timeout: float = Field(
        gt=0,
        description=(
            "seconds one SFTP request may stay unanswered; also bounds how long one file's upload is retried"
        ),
    )
    files_in_flight: int = Field(ge=1, le=64, description="files uploaded at once over one connection")
    password: SecretStr | None = None  # from the environment only


class SftpStorage(Storage):
    def __init__(self, config: SftpStorageConfig) -> None:
        from .sftp_connect import resolve_endpoint  # paramiko: only once a storage is opened
        from .sftp_pool import SftpChannelPool

        self.config = config
        root = posixpath.normpath(config.root)
        if not root.startswith("/"):
            raise StorageError(f"storage.root must be an absolute path on the server, got {config.root!r}")
        self.root = root
        self._file_mode, self._dir_mode = archive_modes(config)  # None: the server's umask decides
        self._endpoint: Endpoint = resolve_endpoint(config)
        self._address = self._endpoint.address
        self.description = f"sftp://{self._endpoint.username}@{self._address}{root}"
        self._channels: SftpChannelPool = SftpChannelPool(config, self._endpoint)
        self.concurrent_reads = config.files_in_flight
        self._lock = threading.Lock()  # guards the fields below
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

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher of the open connection (benchmarks report it), None when none is open."""
        transport = self._channels.transport
        return transport.local_cipher if transport is not None else None

    def close(self) -> None:
        """Close the connection and the upload threads; a later call reopens them (closing early is harmless)."""
        self._channels.close()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _remote(self, path: str) -> str:
        return posixpath.join(self.root, check_relative_path(path))

    # ---- operations ------------------------------------------------------------------

    def stat(self, path: str) -> int | None:
        remote = self._remote(path)

        def once() -> int | None:
            with self._channels.session() as session:
                try:
                    attrs = session.stat(remote)
                except SftpStatus as exc:
                    raise sftp_error(exc, self._address) from None
            return None if attrs is None else attrs.size

        return self._channels.retrying(once, f"stat of {remote}")

    def existing(self, paths: Sequence[str]) -> dict[str, int]:
        """All STAT requests pipelined on one channel: one round trip for a model's ~85 paths, not 85."""
        remotes = [self._remote(path) for path in paths]

        def once() -> dict[str, int]:
            with self._channels.session() as session:
                try:
                    found = session.stat_many(remotes)
                except SftpStatus as exc:
                    raise sftp_error(exc, self._address) from None
            # A directory in place of a file is reported too (size 0 when the server gives none): it is in the way.
            return {path: attrs.size or 0 for path, attrs in zip(paths, found, strict=True) if attrs is not None}

        return self._channels.retrying(once, f"stat of {len(paths)} paths under {self.root}")

    def rename(self, old: str, new: str) -> None:
        source, target = self._remote(old), self._remote(new)

        def once() -> None:
            with self._channels.session() as session:
                try:
                    # Plain SFTP rename never replaces (OpenSSH: link + unlink); the stat refuses early and
                    # guards servers that would replace.
                    if session.stat(target) is not None:
                        raise StorageError(f"cannot move {source} to {target} on {self._address}: {target} exists")
                    self._ensure_dir(session, posixpath.dirname(target))
                    session.rename(source, target)
                except SftpStatus as exc:
                    raise sftp_error(exc, self._address, session, 0) from None

        self._channels.retrying(once, f"move of {source} to {target}")

    def checksum(self, path: str) -> str | None:
        remote = self._remote(path)

        def once() -> str | None:
            with self._channels.session() as session:
                try:
                    result = transfer.checksum(session, remote)
                except SftpStatus as exc:
                    raise sftp_error(exc, self._address) from None
            return None if result is None else result[1]

        return self._channels.retrying(once, f"checksum of {remote}")

    def put(self, local: Path, path: str, *, size: int, sha256: str) -> StoredFile:
        remote = self._remote(path)

        def once() -> StoredFile:
            with self._channels.session() as session:
                return self._put_once(session, local, remote, path, size, sha256)

        return self._channels.retrying(once, f"upload of {remote}")

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
            raise StorageError(f"uploads to {self._address} cancelled: the storage was closed", transient=True)
        return [future.result() for future in futures]

    def remove_temporaries(self, paths: Sequence[str]) -> int:
        """One directory listing per target directory; only this job's own temporaries are removed."""

        def once() -> int:
            removed = 0
            with self._channels.session() as session:
                for directory, prefixes in temporary_names(paths).items():
                    remote = self._remote(directory)
                    try:
                        entries = session.listdir(remote)
                    except SftpStatus as exc:
                        if exc.code == FX_NO_SUCH_FILE:
                            continue
                        raise sftp_error(exc, self._address, session, 0) from None
                    for name in entries:
                        if is_temporary_of(name, prefixes):
                            removed += self._remove_quietly(session, posixpath.join(remote, name))
            return removed

        return self._channels.retrying(once, "removal of partial uploads")

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

    # ---- one upload ------------------------------------------------------------------

    def _put_once(
        self, session: SftpSession, local: Path, remote: str, path: str, size: int, sha256: str
    ) -> StoredFile:
        directory, name = posixpath.split(remote)
        try:
            self._remove_orphans(session)
            existing = session.stat(remote)
            if existing is not None and existing.is_dir:
                raise StorageError(f"{remote} on {self._address} is a directory")
            if existing is not None and existing.size == size and transfer.checksum(session, remote) == (size, sha256):
                log.debug("%s already archived with the same sha256", remote)
                return StoredFile(path, size, sha256)
            self._ensure_dir(session, directory)
        except SftpStatus as exc:
            raise sftp_error(exc, self._address, session, size) from None
        try:
            source = local.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read staged file {local}: {exc.strerror or exc}") from None
        temporary = posixpath.join(directory, f".{name}.pdrflow-{uuid.uuid4().hex}.part")
        settled = False  # the temporary file is renamed or removed
        with source:
            try:
                handle = session.open(temporary, O_WRITE | O_CREAT | O_EXCL, self._file_mode)
            except SftpStatus as exc:  # the server answered no: nothing was created
                raise sftp_error(exc, self._address, session, size, remote) from None
            except BaseException:
                # Lost with the request sent: the server may have created the file before its handle could
                # come back, which leaves it behind as surely as a cut mid-write.
                with self._lock:
                    self._orphans.add(temporary)
                raise
            try:
                written, digest, attrs = self._upload(session, handle, CheckedReader(source, local), temporary, size)
                if written != size or digest != sha256:
                    raise StorageError(
                        f"{path}: staged file {local} changed while archiving (expected {size} bytes sha256 "
                        f"{sha256[:12]}, read {written} bytes sha256 {digest[:12]})"
                    )
                if attrs.size is not None and attrs.size != written:
                    raise StorageError(
                        f"{remote} on {self._address}: the server has {attrs.size} bytes after {written} were written"
                    )
                self._rename(session, temporary, remote)
                settled = True
            except SftpStatus as exc:
                # Diagnosed before removing: statvfs must still see the full disk.
                error = sftp_error(exc, self._address, session, size, remote)
                settled = self._remove_quietly(session, temporary)
                raise error from None
            except (StorageError, LocalFileError) as exc:
                settled = self._remove_quietly(session, temporary)
                raise exc if isinstance(exc, StorageError) else StorageError(str(exc)) from None
            finally:
                if not settled:
                    # Cut off (network failure): remove it through the next connection that works.
                    with self._lock:
                        self._orphans.add(temporary)
        return StoredFile(path, size, sha256)

    def _upload(
        self, session: SftpSession, handle: bytes, source: CheckedReader, temporary: str, size: int
    ) -> tuple[int, str, Attrs]:
        """Stream the file; a large one is flushed to the server's disk from a spare channel meanwhile."""
        if not session.use_fsync or size < 2 * transfer.BackgroundFlush.EVERY:
            return transfer.upload(session, handle, source, temporary, mode=self._file_mode)
        with self._channels.spare_session() as helper:
            flusher = None
            if helper is not None:
                with contextlib.suppress(SftpStatus):  # no flushing alongside, then: the final fsync does it all
                    flusher = transfer.BackgroundFlush(helper, temporary)
            result = transfer.upload(session, handle, source, temporary, flusher, mode=self._file_mode)
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
        if self._channels.knows_dir(directory) or directory == "/":
            return
        attrs = session.stat(directory)
        if attrs is None:
            self._ensure_dir(session, posixpath.dirname(directory))
            try:
                session.mkdir(directory, self._dir_mode)
            except SftpStatus:
                # Another worker may have created it in the meantime; otherwise report mkdir's error.
                attrs = session.stat(directory)
                if attrs is None or not attrs.is_dir:
                    raise
            else:
                if self._dir_mode is not None:
                    # Only the one created here (mkdir's mode went through the server's umask); a setgid bit
                    # inherited from the parent stays: a group's shared archive hands its group down that way.
                    created = session.stat(directory)
                    inherited = created.mode & stat.S_ISGID if created is not None and created.mode else 0
                    session.chmod(directory, self._dir_mode | inherited)
        elif not attrs.is_dir:
            raise StorageError(f"{directory} on {self._address} exists and is not a directory")
        self._channels.remember_dir(directory)

    # ---- reading back ----------------------------------------------------------------

    def fetch(self, path: str, local: Path) -> StoredFile:
        """Download with pipelined reads on a pooled channel, hashed while streaming; the copy is written
        to a hidden temporary next to ``local`` and renamed onto it only once complete."""
        remote = self._remote(path)

        def once() -> StoredFile:
            partial = local.parent / f".{local.name}.pdrflow-{uuid.uuid4().hex}.part"
            try:
                with self._channels.session() as session:
                    # Local OSErrors become LocalFileError here: the pool would take them for network trouble.
                    try:
                        with local_file_errors(f"cannot create {partial}"):
                            stream = partial.open("xb")
                        try:
                            size, digest = transfer.download(session, remote, CheckedWriter(stream, partial))
                        finally:
                            with local_file_errors(f"cannot write {partial}"):
                                stream.close()  # flushes: a full local disk shows here
                        with local_file_errors(f"cannot rename {partial} to {local}"):
                            os.replace(partial, local)
                    except SftpStatus as exc:
                        raise sftp_error(exc, self._address) from None
                    except LocalFileError as exc:
                        raise StorageError(str(exc)) from None
            finally:
                with contextlib.suppress(OSError):  # after a failure; after success it is gone already
                    partial.unlink()
            return StoredFile(path, size, digest)

        return self._channels.retrying(once, f"download of {remote}")


def open_sftp(config: SftpStorageConfig) -> SftpStorage:
    """The factory of ``storage.kind: sftp`` (its ``KIND``; modes read from the config)."""
    return SftpStorage(config)


KIND = StorageKind(config=SftpStorageConfig, open=open_sftp)  # found by config.kinds
