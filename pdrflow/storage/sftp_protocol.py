"""A lean SFTP (version 3) session over one paramiko SSH channel.

Why not paramiko's ``SFTPClient``: it maps every status except "no such file" and
"permission denied" to a bare ``IOError(text)`` (no code), ignores the server's extension
list (no ``statvfs@openssh.com``, ``fsync@openssh.com``, ``limits@openssh.com``), and its
pipelined writes of 32 KiB split every request into two SSH packets, which caps uploads at
about half of OpenSSH's ``sftp`` on loopback. This module speaks the few requests pdrflow
needs (draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions), keeps each write request
inside one SSH packet, pipelines writes and reads, and reports the exact status code.

A :class:`SftpSession` is used by one thread at a time (the storage keeps a pool).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import paramiko

# Packet types
_INIT, _VERSION = 1, 2
_OPEN, _CLOSE, _READ, _WRITE, _LSTAT, _FSTAT, _SETSTAT, _FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
_OPENDIR, _READDIR = 11, 12
_REMOVE, _MKDIR, _RMDIR, _REALPATH, _STAT, _RENAME = 13, 14, 15, 16, 17, 18
_STATUS, _HANDLE, _DATA, _NAME, _ATTRS = 101, 102, 103, 104, 105
_EXTENDED, _EXTENDED_REPLY = 200, 201

# Status codes
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_BAD_MESSAGE, FX_NO_CONNECTION, FX_CONNECTION_LOST, FX_OP_UNSUPPORTED = 5, 6, 7, 8
STATUS_NAMES = {
    0: "OK",
    1: "EOF",
    2: "no such file",
    3: "permission denied",
    4: "failure",
    5: "bad message",
    6: "no connection",
    7: "connection lost",
    8: "operation unsupported",
}

# Open flags
O_READ, O_WRITE, O_CREAT, O_TRUNC, O_EXCL = 0x01, 0x02, 0x08, 0x10, 0x20

_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS, _ATTR_ACMODTIME, _ATTR_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000
S_IFMT, S_IFDIR, S_IFREG = 0o170000, 0o040000, 0o100000
ST_RDONLY = 0x1

# paramiko sends at most (remote max packet - 64) bytes of channel data per SSH packet.
_PACKET_SLACK = 64
# Fixed bytes of an SFTP WRITE besides the handle and the data: length, type, id,
# handle length, offset, data length.
_WRITE_OVERHEAD = 4 + 1 + 4 + 4 + 8 + 4


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class SftpStatus(Exception):
    """The server answered a request with an error status (``code`` is an FX_* constant)."""

    def __init__(self, code: int, server_message: str, operation: str, path: str) -> None:
        super().__init__(code, server_message, operation, path)
        self.code = code
        self.server_message = server_message
        self.operation = operation
        self.path = path

    def __str__(self) -> str:
        name = STATUS_NAMES.get(self.code, f"status {self.code}")
        return f"{self.operation} {self.path}: {name} ({self.server_message or 'no detail'})"


class SftpProtocolError(Exception):
    """The server sent something that is not SFTP v3 as we know it (or the channel ended)."""


@dataclass(frozen=True)
class Attrs:
    size: int | None
    mode: int | None

    @property
    def is_dir(self) -> bool:
        return self.mode is not None and self.mode & S_IFMT == S_IFDIR

    @property
    def is_file(self) -> bool:
        return self.mode is not None and self.mode & S_IFMT == S_IFREG


@dataclass(frozen=True)
class StatVfs:
    block_size: int  # f_frsize: the unit of the block counts
    blocks_available: int  # f_bavail: free to unprivileged users
    files_available: int  # f_favail: free inodes
    flags: int

    @property
    def bytes_available(self) -> int:
        return self.block_size * self.blocks_available

    @property
    def read_only(self) -> bool:
        return bool(self.flags & ST_RDONLY)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _path(path: str) -> bytes:
    return _string(path.encode("utf-8"))


class _Reader:
    """Parse fields from one response body."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.pos = offset

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        length = self.u32()
        value = self.data[self.pos : self.pos + length]
        if len(value) != length:
            raise SftpProtocolError("truncated string in SFTP packet")
        self.pos += length
        return value

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = self.u64() if flags & _ATTR_SIZE else None
        if flags & _ATTR_UIDGID:
            self.pos += 8
        mode = self.u32() if flags & _ATTR_PERMISSIONS else None
        if flags & _ATTR_ACMODTIME:
            self.pos += 8
        if flags & _ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return Attrs(size=size, mode=mode)


_NO_ATTRS = struct.pack(">I", 0)


def _mode_attrs(mode: int | None) -> bytes:
    """ATTRS carrying only permissions; none at all when ``mode`` is None (the server's umask decides)."""
    return _NO_ATTRS if mode is None else struct.pack(">II", _ATTR_PERMISSIONS, mode)


class SftpSession:
    """One SFTP subsystem on its own channel of a shared SSH transport."""

    #: Bytes of write requests kept in flight: twice OpenSSH's 2 MiB channel window.
    WRITE_BYTES_IN_FLIGHT = 4 << 20
    READS_IN_FLIGHT = 64

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self._channel = transport.open_session(timeout=timeout)
        # Every blocking recv/send on this channel gives up after `timeout` (socket.timeout).
        self._channel.settimeout(timeout)
        self._channel.invoke_subsystem("sftp")
        self._buffer = bytearray()
        self._next_id = 1
        self._early: dict[int, tuple[int, bytes]] = {}
        self._channel.sendall(struct.pack(">IBI", 5, _INIT, 3))
        kind, body = self._read_packet()
        if kind != _VERSION:
            raise SftpProtocolError(f"server answered SFTP init with packet type {kind}")
        reader = _Reader(body)
        self.version = reader.u32()
        self.extensions: dict[str, bytes] = {}
        while reader.pos < len(body):
            name = reader.string().decode("utf-8", "replace")
            self.extensions[name] = reader.string()
        self._max_payload = max(4096, self._channel.out_max_packet_size - _PACKET_SLACK)
        # Every server takes 32 KiB requests; OpenSSH's limits extension allows ~256 KiB.
        self.max_read = self.max_write = 32768
        if "limits@openssh.com" in self.extensions:
            limits = _Reader(self._request(_EXTENDED, _string(b"limits@openssh.com"), "limits", "")[1])
            limits.u64()  # max packet length
            self.max_read = max(4096, min(limits.u64() or 32768, 1 << 18))
            self.max_write = max(4096, min(limits.u64() or 32768, 1 << 18))
        self.use_posix_rename = "posix-rename@openssh.com" in self.extensions
        self.use_fsync = "fsync@openssh.com" in self.extensions
        self.has_statvfs = "statvfs@openssh.com" in self.extensions

    # ---- transport of packets ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._channel.closed or self._channel.eof_received

    def close(self) -> None:
        """Close the channel; never raises (it is called while handling other failures)."""
        # Closing a channel of a dead connection may fail in many ways; none of them matters.
        with contextlib.suppress(Exception):
            self._channel.close()

    def _fill(self, need: int) -> None:
        while len(self._buffer) < need:
            data = self._channel.recv(1 << 18)
            if not data:
                raise EOFError("SFTP channel closed by the server")
            self._buffer += data

    def _read_packet(self) -> tuple[int, bytes]:
        self._fill(4)
        (length,) = struct.unpack_from(">I", self._buffer)
        if not 1 <= length <= 1 << 24:
            raise SftpProtocolError(f"implausible SFTP packet length {length}")
        self._fill(4 + length)
        kind = self._buffer[4]
        body = bytes(self._buffer[5 : 4 + length])
        del self._buffer[: 4 + length]
        return kind, body

    def _send(self, kind: int, payload: bytes) -> int:
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self._channel.sendall(struct.pack(">IBI", len(payload) + 5, kind, request_id) + payload)
        return request_id

    def _receive(self, request_id: int) -> tuple[int, bytes]:
        """The response to ``request_id`` (its body after the id); others are kept for later."""
        if request_id in self._early:
            return self._early.pop(request_id)
        while True:
            kind, body = self._read_packet()
            (got,) = struct.unpack_from(">I", body)
            if got == request_id:
                return kind, body[4:]
            self._early[got] = (kind, body[4:])

    def _request(self, kind: int, payload: bytes, operation: str, path: str) -> tuple[int, bytes]:
        return self._check(self._receive(self._send(kind, payload)), operation, path)

    @staticmethod
    def _check(response: tuple[int, bytes], operation: str, path: str) -> tuple[int, bytes]:
        kind, body = response
        if kind == _STATUS:
            reader = _Reader(body)
            code = reader.u32()
            if code != FX_OK:
                message = reader.string().decode("utf-8", "replace") if reader.pos < len(body) else ""
                raise SftpStatus(code, message, operation, path)
        return kind, body

    # ---- requests ----------------------------------------------------------------------

    def stat(self, path: str) -> Attrs | None:
        """Attributes of ``path`` (following symlinks), or None when it does not exist."""
        try:
            kind, body = self._request(_STAT, _path(path), "stat", path)
        except SftpStatus as exc:
            if exc.code == FX_NO_SUCH_FILE:
                return None
            raise
        if kind != _ATTRS:
            raise SftpProtocolError(f"stat answered with packet type {kind}")
        return _Reader(body).attrs()

    STATS_IN_FLIGHT = 256  # small requests: a model's ~85 paths cost one round trip

    def stat_many(self, paths: Sequence[str]) -> list[Attrs | None]:
        """``stat`` of every path with the requests pipelined; results in input order.

        All responses are read before an error status other than "no such file" is raised, so
        the channel stays clean for its next user."""
        results: list[Attrs | None] = []
        failure: SftpStatus | None = None
        for start in range(0, len(paths), self.STATS_IN_FLIGHT):
            chunk = paths[start : start + self.STATS_IN_FLIGHT]
            ids = [self._send(_STAT, _path(path)) for path in chunk]
            for request_id, path in zip(ids, chunk, strict=True):
                try:
                    kind, body = self._check(self._receive(request_id), "stat", path)
                except SftpStatus as exc:
                    if exc.code != FX_NO_SUCH_FILE:
                        failure = failure or exc
                    results.append(None)
                    continue
                if kind != _ATTRS:
                    raise SftpProtocolError(f"stat answered with packet type {kind}")
                results.append(_Reader(body).attrs())
            if failure is not None:
                raise failure
        return results

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path`` (without ``.`` and ``..``)."""
        kind, body = self._request(_OPENDIR, _path(path), "opendir", path)
        if kind != _HANDLE:
            raise SftpProtocolError(f"opendir answered with packet type {kind}")
        handle = _Reader(body).string()
        names: list[str] = []
        try:
            while True:
                try:
                    kind, body = self._request(_READDIR, _string(handle), "readdir", path)
                except SftpStatus as exc:
                    if exc.code == FX_EOF:
                        return names
                    raise
                if kind != _NAME:
                    raise SftpProtocolError(f"readdir answered with packet type {kind}")
                reader = _Reader(body)
                for _ in range(reader.u32()):
                    name = reader.string().decode("utf-8", "surrogateescape")
                    reader.string()  # long name
                    reader.attrs()
                    if name not in (".", ".."):
                        names.append(name)
        finally:
            with contextlib.suppress(SftpStatus):
                self.close_handle(handle, path)

    def mkdir(self, path: str, mode: int | None = None) -> None:
        """mkdir(2) on the server; ``mode`` goes through the server's umask there (``chmod`` sets it exactly)."""
        self._request(_MKDIR, _path(path) + _mode_attrs(mode), "mkdir", path)

    def chmod(self, path: str, mode: int) -> None:
        """SETSTAT with permissions only: chmod(2) on the server, no umask involved."""
        self._request(_SETSTAT, _path(path) + _mode_attrs(mode), "chmod", path)

    def remove(self, path: str) -> None:
        self._request(_REMOVE, _path(path), "remove", path)

    def rename(self, old: str, new: str) -> None:
        """Plain SFTP rename: fails when ``new`` exists (OpenSSH implements it with link+unlink)."""
        self._request(_RENAME, _path(old) + _path(new), "rename", new)

    def posix_rename(self, old: str, new: str) -> None:
        """rename(2) on the server: atomically replaces ``new``."""
        self._request(_EXTENDED, _string(b"posix-rename@openssh.com") + _path(old) + _path(new), "rename", new)

    def statvfs(self, path: str) -> StatVfs | None:
        if not self.has_statvfs:
            return None
        kind, body = self._request(_EXTENDED, _string(b"statvfs@openssh.com") + _path(path), "statvfs", path)
        if kind != _EXTENDED_REPLY:
            raise SftpProtocolError(f"statvfs answered with packet type {kind}")
        fields = struct.unpack_from(">11Q", body)
        return StatVfs(block_size=fields[1], blocks_available=fields[4], files_available=fields[7], flags=fields[9])

    def open(self, path: str, flags: int, mode: int | None = None) -> bytes:
        """A handle; a file created here gets ``mode`` narrowed by the server's umask (``upload`` sets it exactly)."""
        attrs = _mode_attrs(mode) if flags & O_CREAT else _NO_ATTRS
        kind, body = self._request(_OPEN, _path(path) + struct.pack(">I", flags) + attrs, "open", path)
        if kind != _HANDLE:
            raise SftpProtocolError(f"open answered with packet type {kind}")
        return _Reader(body).string()

    def close_handle(self, handle: bytes, path: str) -> None:
        self._request(_CLOSE, _string(handle), "close", path)

    def upload(
        self, handle: bytes, source: Readable, path: str, flusher: BackgroundFlush | None = None,
        mode: int | None = None,
    ) -> tuple[int, str, Attrs]:
        """Stream ``source`` into the open ``handle``; chmod to ``mode`` (when given), fsync (if offered), fstat;
        return size, sha256, attrs (the fstat after the chmod: its mode is the file's final one).

        Writes are pipelined (up to WRITE_BYTES_IN_FLIGHT outstanding). Each request is as
        large as the server allows and fills whole SSH packets: every request costs a status
        answer that paramiko decrypts and parses in Python, so fewer, larger requests leave
        more CPU for the data (measured: 7 packets per request instead of 1 gains ~15 %).
        ``flusher`` flushes what is written so far from a second channel while the writes go on.
        The handle is closed here (its close rides in the same round trip as fsync and fstat;
        after a local read error it is closed before the error is raised).
        """
        h = _string(handle)
        overhead = _WRITE_OVERHEAD + len(handle)
        packets = max(1, (self.max_write + overhead) // self._max_payload)
        chunk = packets * self._max_payload - overhead
        in_flight = max(2, self.WRITE_BYTES_IN_FLIGHT // chunk)
        digest = hashlib.sha256()
        outstanding: deque[int] = deque()
        failure: SftpStatus | None = None
        offset = 0
        channel = self._channel

        def reap() -> None:
            nonlocal failure
            try:
                self._check(self._receive(outstanding.popleft()), "write", path)
            except SftpStatus as exc:
                failure = failure or exc

        while failure is None:
            try:
                data = source.read(chunk)
            except Exception:
                while outstanding:  # leave the channel clean: collect what is in flight
                    self._receive(outstanding.popleft())
                self._receive(self._send(_CLOSE, h))
                raise
            if not data:
                break
            digest.update(data)
            header = struct.pack(">IBI", len(data) + len(h) + 17, _WRITE, self._next_id)
            outstanding.append(self._next_id)
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            channel.sendall(header + h + struct.pack(">QI", offset, len(data)) + data)
            offset += len(data)
            if flusher is not None:
                flusher.progress(offset)
            # Collect answers that are already here, and block only when the pipe is full.
            while outstanding and (len(outstanding) >= in_flight or channel.recv_ready()):
                reap()
        # chmod, fsync, fstat and close go out right behind the writes: the server handles them in
        # order, so the whole tail costs one round trip. FSETSTAT is fchmod(2): no umask applies.
        chmod_id = self._send(_FSETSTAT, h + _mode_attrs(mode)) if mode is not None else None
        fsync_id = self._send(_EXTENDED, _string(b"fsync@openssh.com") + h) if self.use_fsync else None
        fstat_id = self._send(_FSTAT, h)
        close_id = self._send(_CLOSE, h)
        while outstanding:
            reap()
        if chmod_id is not None:
            try:
                self._check(self._receive(chmod_id), "chmod", path)
            except SftpStatus as exc:
                failure = failure or exc
        if fsync_id is not None:
            try:
                self._check(self._receive(fsync_id), "fsync", path)
            except SftpStatus as exc:
                failure = failure or exc
        try:
            kind, body = self._check(self._receive(fstat_id), "fstat", path)
        except SftpStatus as exc:
            failure = failure or exc
        try:
            self._check(self._receive(close_id), "close", path)  # close reports delayed write errors (NFS)
        except SftpStatus as exc:
            failure = failure or exc
        if failure is not None:
            raise failure
        if kind != _ATTRS:
            raise SftpProtocolError(f"fstat answered with packet type {kind}")
        return offset, digest.hexdigest(), _Reader(body).attrs()

    def sha256(self, path: str) -> tuple[int, str] | None:
        """Stream ``path`` back with pipelined reads; its size and sha256, or None if missing."""
        try:
            handle = self.open(path, O_READ)
        except SftpStatus as exc:
            if exc.code == FX_NO_SUCH_FILE:
                return None
            raise
        try:
            return self._hash_handle(handle, path)
        finally:
            self.close_handle(handle, path)

    def fstat(self, handle: bytes, path: str) -> Attrs:
        kind, body = self._request(_FSTAT, _string(handle), "fstat", path)
        if kind != _ATTRS:
            raise SftpProtocolError(f"fstat answered with packet type {kind}")
        return _Reader(body).attrs()

    def _hash_handle(self, handle: bytes, path: str) -> tuple[int, str]:
        size = self.fstat(handle, path).size or 0
        h = _string(handle)
        digest = hashlib.sha256()
        pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length) in offset order
        hashed = 0  # bytes fed to the digest so far
        next_offset = 0
        while hashed < size:
            while next_offset < size and len(pending) < self.READS_IN_FLIGHT:
                length = min(self.max_read, size - next_offset)
                pending.append((self._send(_READ, h + struct.pack(">QI", next_offset, length)), next_offset, length))
                next_offset += length
            request_id, _offset, length = pending.popleft()
            kind, body = self._receive(request_id)
            if kind == _STATUS and _Reader(body).u32() == FX_EOF:
                break  # the file is shorter than fstat said (it shrank): hash what there is
            self._check((kind, body), "read", path)
            if kind != _DATA:
                raise SftpProtocolError(f"read answered with packet type {kind}")
            data = _Reader(body).string()
            digest.update(data)
            hashed += len(data)
            if len(data) < length:
                # Servers may return less than asked for: drop the reads queued behind this
                # one and continue from where its data ended.
                for stale_id, _, _ in pending:
                    self._receive(stale_id)
                pending.clear()
                next_offset = hashed
        for stale_id, _, _ in pending:
            self._receive(stale_id)
        return hashed, digest.hexdigest()


class BackgroundFlush:
    """fsync a file while it is being written, from a second SFTP channel.

    OpenSSH runs each SFTP channel in its own server process, so an fsync sent on another
    channel makes the server's disk write back the data already received while this
    channel keeps receiving more. The final fsync then has little left to flush: measured
    on loopback with a 200 MB file, it took ~0.5 s without this and ~0.05 s with it (about
    a quarter of the whole upload). Background fsync failures are ignored here: the final
    fsync on the writing channel reports them.
    """

    EVERY = 16 << 20  # bytes written between background flushes

    def __init__(self, session: SftpSession, path: str) -> None:
        self._session = session
        self._path = path
        self._handle = _string(session.open(path, O_READ))
        self._pending: int | None = None
        self._next_at = self.EVERY

    def progress(self, offset: int) -> None:
        if offset < self._next_at:
            return
        if self._pending is not None:
            if not self._session._channel.recv_ready():
                return  # the previous flush is still running: do not queue another behind it
            self._session._receive(self._pending)
        self._pending = self._session._send(_EXTENDED, _string(b"fsync@openssh.com") + self._handle)
        self._next_at = offset + self.EVERY

    def finish(self) -> None:
        if self._pending is not None:
            self._session._receive(self._pending)
            self._pending = None
        self._session._request(_CLOSE, self._handle, "close", self._path)
