"""Archive into a local (or network-mounted) directory, atomically and verified."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.sections import StorageKind, StorageSection, archive_modes
from ..errors import ConfigError
from .base import (
    CHUNK,
    HashingSink,
    Storage,
    StorageError,
    StoredFile,
    check_relative_path,
    is_temporary_of,
    sha256_file,
    temporary_names,
)

if TYPE_CHECKING:
    from ..config.models import Config


class LocalStorageConfig(StorageSection):
    kind: Literal["local"] = Field(description="selects this section's keys")
    root: Path = Field(description="the archive directory; grids go below it")

    _CONFIG_RELATIVE = ("root",)

    def local_directories(self) -> dict[str, Path]:
        return {"root": self.root}


# Errors a retry may cure (a network filesystem hiccup); the rest are reported at once.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.EBUSY}
# Errors that stay until someone changes the archive (permissions, mount, space, quota).
_PERSISTENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


# link(2) refused because the filesystem has no hard links (some network and FUSE filesystems).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}

_BATCH = 256  # files open at once in put_many
_FSYNC_THREADS = 16

_fsync_lock = threading.Lock()


@functools.cache
def _new_fsync_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="pdrflow-fsync")


def _fsync_pool() -> ThreadPoolExecutor:
    """Threads that fsync concurrently (one per process, started on first use)."""
    with _fsync_lock:  # functools.cache alone may call the factory twice in a race
        return _new_fsync_pool()


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or exc.__class__.__name__} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"


def _os_failure(what: str, exc: OSError) -> StorageError:
    """``what`` failed because of ``exc``; transient when a retry may cure it, persistent when only
    someone fixing the archive can (the archival then fails at once, no backoff)."""
    return StorageError(f"{what}: {_describe(exc)}", transient=exc.errno in _TRANSIENT_ERRNOS,
                        persistent=exc.errno in _PERSISTENT_ERRNOS)


class LocalStorage(Storage):
    """``file_mode`` / ``dir_mode`` (from ``storage.file_mode`` / ``dir_mode``) are set explicitly on every file
    written and every directory created here, whatever the umask; None leaves them to the umask."""

    def __init__(self, root: Path, *, file_mode: int | None = None, dir_mode: int | None = None) -> None:
        self.root = Path(root)
        self.description = f"local directory {self.root}"
        self.file_mode = file_mode
        self.dir_mode = dir_mode

    def _create(self, temporary: Path) -> int:
        """A new temporary file (never an existing one) with the configured mode, as an open descriptor."""
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o666 if self.file_mode is None else self.file_mode)
        if self.file_mode is not None:
            try:
                os.fchmod(fd, self.file_mode)  # the umask narrowed open()'s mode: the configured one exactly
            except OSError:
                os.close(fd)
                raise
        return fd

    def _make_dirs(self, directory: Path) -> None:
        """mkdir -p: the levels created here get ``dir_mode`` (plus an inherited setgid bit); existing
        directories are left as they are."""
        if self.dir_mode is None:
            directory.mkdir(parents=True, exist_ok=True)
            return
        missing: list[Path] = []
        level = directory
        while not level.is_dir():
            missing.append(level)
            level = level.parent
        for level in reversed(missing):
            try:
                os.mkdir(level, self.dir_mode)
            except FileExistsError:
                if level.is_dir():
                    continue  # another worker created it a moment ago (and sets its mode)
                # a file where a directory must be: say so, as mkdir -p would
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(level)) from None
            # mkdir's mode went through the umask; a setgid bit inherited from the parent stays (a group's
            # shared archive hands its group down that way).
            os.chmod(level, self.dir_mode | (os.stat(level).st_mode & stat.S_ISGID))

    def _target(self, path: str) -> Path:
        return self.root / check_relative_path(path)

    def put(self, local: Path, path: str, *, size: int, sha256: str) -> StoredFile:
        target = self._target(path)
        if self.checksum(path) == sha256:
            return StoredFile(path, size, sha256)  # already archived: resumed archival is cheap
        temporary = target.parent / f".{target.name}.pdrflow-{uuid.uuid4().hex}.part"
        try:
            self._make_dirs(target.parent)
            digest = hashlib.sha256()
            written = 0
            with local.open("rb") as source, os.fdopen(self._create(temporary), "wb") as sink:
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
            raise _os_failure(f"cannot write {path} under {self.root}", exc) from None
        finally:
            with contextlib.suppress(OSError):  # after a failure; after success it is gone already
                temporary.unlink()
        return StoredFile(path, size, sha256)

    def put_many(self, items: Sequence[tuple[Path, str, int, str]]) -> list[StoredFile]:
        """``put`` for a model's files with the same guarantees and far fewer journal commits.

        Every file is copied (hashed while copying) to a temporary name in its target directory and
        fsynced on its own - the fsyncs run concurrently so that the filesystem commits them
        together - then all are renamed onto their final names and each target directory is
        fsynced once. A final path never holds a partial file and nothing is returned before
        every file's bytes and name are durable. Results in input order.
        """
        stored: list[StoredFile] = []
        for start in range(0, len(items), _BATCH):  # bounded number of open files
            stored += self._put_batch(items[start : start + _BATCH])
        return stored

    def _put_batch(self, items: Sequence[tuple[Path, str, int, str]]) -> list[StoredFile]:
        stored = [StoredFile(path, size, sha256) for _, path, size, sha256 in items]
        todo: list[tuple[Path, str, int, str, Path]] = []
        for local, path, size, sha256 in items:
            target = self._target(path)
            if self.stat(path) == size and self.checksum(path) == sha256:
                continue  # already archived: resumed archival is cheap
            todo.append((local, path, size, sha256, target))
        if not todo:
            return stored
        written: list[tuple[Path, Path, int]] = []  # (temporary, target, open fd)
        current = todo[0][1]
        try:
            for directory in sorted({target.parent for *_, target in todo}):
                self._make_dirs(directory)
            for local, path, size, sha256, target in todo:
                current = path
                temporary = target.parent / f".{target.name}.pdrflow-{uuid.uuid4().hex}.part"
                fd = self._create(temporary)
                written.append((temporary, target, fd))
                digest = hashlib.sha256()
                count = 0
                with local.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                        digest.update(chunk)
                        count += len(chunk)
                if count != size or digest.hexdigest() != sha256:
                    raise StorageError(
                        f"{path}: staged file changed while archiving (expected {size} bytes sha256 {sha256[:12]}, "
                        f"read {count} bytes sha256 {digest.hexdigest()[:12]})"
                    )
            # Each file fsynced on its own, all at once: ext4/xfs group them into few journal commits.
            futures = [_fsync_pool().submit(os.fsync, fd) for _, _, fd in written]
            wait(futures)  # every fsync is over before any descriptor is closed
            for index, future in enumerate(futures):
                current = todo[index][1]
                future.result()
            for index, (temporary, target, fd) in enumerate(written):
                current = todo[index][1]
                os.close(fd)
                written[index] = (temporary, target, -1)
                os.replace(temporary, target)
            for directory in {target.parent for _, target, _ in written}:
                self._fsync_dir(directory)  # the renames are durable too
        except OSError as exc:
            raise _os_failure(f"cannot write {current} under {self.root}", exc) from None
        finally:
            for temporary, _, fd in written:  # after a failure; after success they are gone already
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                with contextlib.suppress(OSError):
                    temporary.unlink()
        return stored

    def remove_temporaries(self, paths: Sequence[str]) -> int:
        removed = 0
        for directory, prefixes in temporary_names(paths).items():
            try:
                entries = [entry.name for entry in os.scandir(self.root / directory)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _os_failure(f"cannot list {directory} under {self.root}", exc) from None
            for name in entries:
                if is_temporary_of(name, prefixes):
                    try:
                        (self.root / directory / name).unlink()
                        removed += 1
                    except FileNotFoundError:
                        pass
                    except OSError as exc:  # a StorageError like any other refusal, classified
                        raise _os_failure(f"cannot remove {directory}/{name} under {self.root}", exc) from None
        return removed

    def rename(self, old: str, new: str) -> None:
        source, target = self._target(old), self._target(new)
        try:
            self._make_dirs(target.parent)
            try:
                # link + unlink never replaces: link fails with EEXIST if `new` exists (rename would overwrite)
                os.link(source, target, follow_symlinks=False)
            except FileExistsError:
                raise StorageError(f"cannot move {old} to {new} under {self.root}: {new} exists") from None
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # A filesystem without hard links: rename after a check (a racing writer could slip in between).
                if os.path.lexists(target):
                    raise StorageError(f"cannot move {old} to {new} under {self.root}: {new} exists") from None
                os.rename(source, target)
            else:
                os.unlink(source)
            self._fsync_dir(target.parent)
            self._fsync_dir(source.parent)
        except OSError as exc:
            raise _os_failure(f"cannot move {old} to {new} under {self.root}", exc) from None

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
            raise _os_failure(f"cannot stat {path}", exc) from None

    def checksum(self, path: str) -> str | None:
        try:
            return sha256_file(self._target(path))[1]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_failure(f"cannot read {path}", exc) from None

    def fetch(self, path: str, local: Path) -> StoredFile:
        source = self._target(path)
        try:
            reader = source.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise StorageError(f"{path} does not exist under {self.root}") from None
        except OSError as exc:
            raise _os_failure(f"cannot read {path}", exc) from None
        partial = local.parent / f".{local.name}.pdrflow-{uuid.uuid4().hex}.part"
        try:
            with reader, partial.open("xb") as writer:
                sink = HashingSink(writer)
                while chunk := reader.read(CHUNK):
                    sink.write(chunk)
            os.replace(partial, local)
        except OSError as exc:
            raise _os_failure(f"cannot copy {path} from {self.root} to {local}", exc) from None
        finally:
            with contextlib.suppress(OSError):  # after a failure; after success it is gone already
                partial.unlink()
        return StoredFile(path, sink.size, sink.sha256)


def open_local(config: LocalStorageConfig) -> LocalStorage:
    """The factory of ``storage.kind: local`` (its ``KIND``)."""
    file_mode, dir_mode = archive_modes(config)
    return LocalStorage(config.root, file_mode=file_mode, dir_mode=dir_mode)


def check(config: Config) -> None:
    assert isinstance(config.storage, LocalStorageConfig)
    archive = config.storage.root.resolve()
    scratch = config.scratch.resolved_root().resolve()
    if archive == scratch or archive.is_relative_to(scratch) or scratch.is_relative_to(archive):
        raise ConfigError("storage.root: the archive and the scratch root must not contain each other")


KIND = StorageKind(config=LocalStorageConfig, open=open_local, check=check)  # found by config.kinds
