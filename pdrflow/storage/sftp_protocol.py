"""A lean SFTP (version 3) session over one paramiko SSH channel: packets, their codec, requests.

Why not paramiko's ``SFTPClient``: it maps every status except "no such file" and
"permission denied" to a bare ``IOError(text)`` (no code), ignores the server's extension
list (no ``statvfs@openssh.com``, ``fsync@openssh.com``, ``limits@openssh.com``), and its
pipelined writes of 32 KiB split every request into two SSH packets, which caps uploads at
about half of OpenSSH's ``sftp`` on loopback. This module speaks the few requests pdrflow
needs (draft-ietf-secsh-filexfer-02 plus OpenSSH's extensions) and reports the exact status
code; the pipelined transfers of whole files (uploads, downloads, checksums) are
:mod:`.sftp_transfer`.

A :class:`SftpSession` is used by one thread at a time (the storage keeps a pool). paramiko
itself is not imported here: the session only calls methods of the transport it is given.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

# Packet types (SSH_FXP_*)
FXP_INIT, FXP_VERSION = 1, 2
FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE, FXP_LSTAT, FXP_FSTAT, FXP_SETSTAT, FXP_FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
FXP_OPENDIR, FXP_READDIR = 11, 12
FXP_REMOVE, FXP_MKDIR, FXP_RMDIR, FXP_REALPATH, FXP_STAT, FXP_RENAME = 13, 14, 15, 16, 17, 18
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 101, 102, 103, 104, 105
FXP_EXTENDED, FXP_EXTENDED_REPLY = 200, 201

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


def string(data: bytes) -> bytes:
    """An SFTP string: uint32 length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def _path(path: str) -> bytes:
    return string(path.encode("utf-8"))


class Reader:
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


def mode_attrs(mode: int | None) -> bytes:
    """ATTRS carrying only permissions; none at all when ``mode`` is None (the server's umask decides)."""
    return _NO_ATTRS if mode is None else struct.pack(">II", _ATTR_PERMISSIONS, mode)


class SftpSession:
    """One SFTP subsystem on its own channel of a shared SSH transport."""

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self.channel = transport.open_session(timeout=timeout)
        # Every blocking recv/send on this channel gives up after `timeout` (socket.timeout).
        self.channel.settimeout(timeout)
        self.channel.invoke_subsystem("sftp")
        self._buffer = bytearray()
        self._next_id = 1
        self._early: dict[int, tuple[int, bytes]] = {}
        self._forgotten: set[int] = set()  # requests whose answers are dropped unread when they come
        self.channel.sendall(struct.pack(">IBI", 5, FXP_INIT, 3))
        kind, body = self._read_packet()
        if kind != FXP_VERSION:
            raise SftpProtocolError(f"server answered SFTP init with packet type {kind}")
        reader = Reader(body)
        self.version = reader.u32()
        self.extensions: dict[str, bytes] = {}
        while reader.pos < len(body):
            name = reader.string().decode("utf-8", "replace")
            self.extensions[name] = reader.string()
        #: Bytes of channel data paramiko puts into one SSH packet.
        self.max_payload = max(4096, self.channel.out_max_packet_size - _PACKET_SLACK)
        # Every server takes 32 KiB requests; OpenSSH's limits extension allows ~256 KiB.
        self.max_read = self.max_write = 32768
        if "limits@openssh.com" in self.extensions:
            limits = Reader(self.request(FXP_EXTENDED, string(b"limits@openssh.com"), "limits", "")[1])
            limits.u64()  # max packet length
            self.max_read = max(4096, min(limits.u64() or 32768, 1 << 18))
            self.max_write = max(4096, min(limits.u64() or 32768, 1 << 18))
        self.use_posix_rename = "posix-rename@openssh.com" in self.extensions
        self.use_fsync = "fsync@openssh.com" in self.extensions
        self.has_statvfs = "statvfs@openssh.com" in self.extensions

    # ---- transport of packets ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.channel.closed or self.channel.eof_received

    def close(self) -> None:
        """Close the channel; never raises (it is called while handling other failures)."""
        # Closing a channel of a dead connection may fail in many ways; none of them matters.
        with contextlib.suppress(Exception):
            self.channel.close()

    def _fill(self, need: int) -> None:
        while len(self._buffer) < need:
            data = self.channel.recv(1 << 18)
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

    def take_id(self) -> int:
        """A fresh request id (for callers that build a request's bytes themselves)."""
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return request_id

    def send(self, kind: int, payload: bytes) -> int:
        request_id = self.take_id()
        self.channel.sendall(struct.pack(">IBI", len(payload) + 5, kind, request_id) + payload)
        return request_id

    def send_many(self, requests: Sequence[tuple[int, bytes]]) -> list[int]:
        """Several requests in one write: paramiko encrypts and sends each write as its own SSH packets, so
        a model's 37 STATs written at once cost one packet instead of 37 (and sshd one read)."""
        ids = [self.take_id() for _ in requests]
        self.channel.sendall(b"".join(struct.pack(">IBI", len(payload) + 5, kind, request_id) + payload
                                      for (kind, payload), request_id in zip(requests, ids, strict=True)))
        return ids

    def receive(self, request_id: int) -> tuple[int, bytes]:
        """The response to ``request_id`` (its body after the id); others are kept for later."""
        if request_id in self._early:
            return self._early.pop(request_id)
        while True:
            kind, body = self._read_packet()
            (got,) = struct.unpack_from(">I", body)
            if got == request_id:
                return kind, body[4:]
            if got in self._forgotten:
                self._forgotten.discard(got)
            else:
                self._early[got] = (kind, body[4:])

    def forget(self, request_ids: Sequence[int]) -> None:
        """Drop the answers to ``request_ids`` unread: they are skipped whenever they arrive, so the
        channel stays usable without waiting a round trip for answers nobody needs."""
        for request_id in request_ids:
            if self._early.pop(request_id, None) is None:
                self._forgotten.add(request_id)

    def request(self, kind: int, payload: bytes, operation: str, path: str) -> tuple[int, bytes]:
        return self.check(self.receive(self.send(kind, payload)), operation, path)

    @staticmethod
    def check(response: tuple[int, bytes], operation: str, path: str) -> tuple[int, bytes]:
        """``response`` itself, unless it is an error status: then :class:`SftpStatus` is raised."""
        kind, body = response
        if kind == FXP_STATUS:
            reader = Reader(body)
            code = reader.u32()
            if code != FX_OK:
                message = reader.string().decode("utf-8", "replace") if reader.pos < len(body) else ""
                raise SftpStatus(code, message, operation, path)
        return kind, body

    # ---- requests ----------------------------------------------------------------------

    def stat(self, path: str) -> Attrs | None:
        """Attributes of ``path`` (following symlinks), or None when it does not exist."""
        try:
            kind, body = self.request(FXP_STAT, _path(path), "stat", path)
        except SftpStatus as exc:
            if exc.code == FX_NO_SUCH_FILE:
                return None
            raise
        if kind != FXP_ATTRS:
            raise SftpProtocolError(f"stat answered with packet type {kind}")
        return Reader(body).attrs()

    STATS_IN_FLIGHT = 256  # small requests: a model's ~85 paths cost one round trip

    def stat_many(self, paths: Sequence[str]) -> list[Attrs | None]:
        """``stat`` of every path with the requests pipelined; results in input order.

        All responses are read before an error status other than "no such file" is raised, so
        the channel stays clean for its next user."""
        results: list[Attrs | None] = []
        failure: SftpStatus | None = None
        for start in range(0, len(paths), self.STATS_IN_FLIGHT):
            chunk = paths[start : start + self.STATS_IN_FLIGHT]
            ids = self.send_many([(FXP_STAT, _path(path)) for path in chunk])
            for request_id, path in zip(ids, chunk, strict=True):
                try:
                    kind, body = self.check(self.receive(request_id), "stat", path)
                except SftpStatus as exc:
                    if exc.code != FX_NO_SUCH_FILE:
                        failure = failure or exc
                    results.append(None)
                    continue
                if kind != FXP_ATTRS:
                    raise SftpProtocolError(f"stat answered with packet type {kind}")
                results.append(Reader(body).attrs())
            if failure is not None:
                raise failure
        return results

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path`` (without ``.`` and ``..``)."""
        kind, body = self.request(FXP_OPENDIR, _path(path), "opendir", path)
        if kind != FXP_HANDLE:
            raise SftpProtocolError(f"opendir answered with packet type {kind}")
        handle = Reader(body).string()
        names: list[str] = []
        try:
            while True:
                try:
                    kind, body = self.request(FXP_READDIR, string(handle), "readdir", path)
                except SftpStatus as exc:
                    if exc.code == FX_EOF:
                        return names
                    raise
                if kind != FXP_NAME:
                    raise SftpProtocolError(f"readdir answered with packet type {kind}")
                reader = Reader(body)
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
        self.request(FXP_MKDIR, _path(path) + mode_attrs(mode), "mkdir", path)

    def chmod(self, path: str, mode: int) -> None:
        """SETSTAT with permissions only: chmod(2) on the server, no umask involved."""
        self.request(FXP_SETSTAT, _path(path) + mode_attrs(mode), "chmod", path)

    def remove(self, path: str) -> None:
        self.request(FXP_REMOVE, _path(path), "remove", path)

    def rename(self, old: str, new: str) -> None:
        """Plain SFTP rename: fails when ``new`` exists (OpenSSH implements it with link+unlink)."""
        self.request(FXP_RENAME, _path(old) + _path(new), "rename", new)

    def posix_rename(self, old: str, new: str) -> None:
        """rename(2) on the server: atomically replaces ``new``."""
        self.request(FXP_EXTENDED, string(b"posix-rename@openssh.com") + _path(old) + _path(new), "rename", new)

    def statvfs(self, path: str) -> StatVfs | None:
        if not self.has_statvfs:
            return None
        kind, body = self.request(FXP_EXTENDED, string(b"statvfs@openssh.com") + _path(path), "statvfs", path)
        if kind != FXP_EXTENDED_REPLY:
            raise SftpProtocolError(f"statvfs answered with packet type {kind}")
        fields = struct.unpack_from(">11Q", body)
        return StatVfs(block_size=fields[1], blocks_available=fields[4], files_available=fields[7], flags=fields[9])

    def open(self, path: str, flags: int, mode: int | None = None, operation: str = "open") -> bytes:
        """A handle; a file created here gets ``mode`` narrowed by the server's umask (the upload sets it exactly).
        ``operation`` names the request in an error status ("read" for a download: "... reading <path>")."""
        attrs = mode_attrs(mode) if flags & O_CREAT else _NO_ATTRS
        kind, body = self.request(FXP_OPEN, _path(path) + struct.pack(">I", flags) + attrs, operation, path)
        if kind != FXP_HANDLE:
            raise SftpProtocolError(f"open answered with packet type {kind}")
        return Reader(body).string()

    def close_handle(self, handle: bytes, path: str) -> None:
        self.request(FXP_CLOSE, string(handle), "close", path)

    def fstat(self, handle: bytes, path: str) -> Attrs:
        kind, body = self.request(FXP_FSTAT, string(handle), "fstat", path)
        if kind != FXP_ATTRS:
            raise SftpProtocolError(f"fstat answered with packet type {kind}")
        return Reader(body).attrs()
