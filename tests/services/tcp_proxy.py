"""pdrflow's own fault-injecting TCP proxy (this kernel has no netem).

``TcpProxy(target_port).start()`` listens on 127.0.0.1 (a free port) and forwards every
connection to the target. Knobs, settable while it runs:

- ``delay``: one-way delay in seconds added to each direction (RTT += 2 x delay). Data is
  queued with a release time, so the delay does not throttle throughput.
- ``bandwidth``: bytes per second per direction per connection (None = unlimited).
- ``cut_after(n)``: once n more bytes (both directions together) have been forwarded,
  every connection is cut (RST) and, by default, new ones are refused until ``heal()``.
- ``refuse()`` / ``heal()``: cut everything and refuse new connections / accept again.

Thread-based: one acceptor, and per connection one reader and one writer per direction.
``stop()`` closes everything and joins the threads.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Self

_CHUNK = 65536
_EOF = b""


def _abort(sock: socket.socket) -> None:
    """Close with RST (linger 0) and wake threads blocked in recv on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket
    threads: list[threading.Thread] = field(default_factory=list)
    closed: bool = False

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            _abort(self.client)
            _abort(self.upstream)


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.delay = delay
        self.bandwidth: float | None = None
        self.forwarded = 0  # bytes forwarded since start, both directions
        self.accepted = 0  # connections accepted (including refused ones)
        self._cut_at: int | None = None
        self._refuse_after_cut = True
        self._refusing = False
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self.cut_event = threading.Event()  # set whenever a cut happened

    # ---- knobs -----------------------------------------------------------------------

    def cut_after(self, n_bytes: int, *, then_refuse: bool = True) -> None:
        with self._lock:
            self._cut_at = self.forwarded + n_bytes
            self._refuse_after_cut = then_refuse
            self.cut_event.clear()

    def refuse(self) -> None:
        with self._lock:
            self._refusing = True
        self.cut_all()

    def heal(self) -> None:
        with self._lock:
            self._refusing = False
            self._cut_at = None

    def cut_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.abort()
        self.cut_event.set()

    @property
    def refusing(self) -> bool:
        return self._refusing

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        listener.settimeout(0.1)  # so the acceptor notices stop()
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        self.cut_all()
        for connection in connections:
            for thread in connection.threads:
                thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- forwarding ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self._refusing:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _abort(client)  # the target is down: the client sees its connection die
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(client, upstream)
            with self._lock:
                self._connections.append(connection)
            for source, sink, label in ((client, upstream, "up"), (upstream, client, "down")):
                pipe: queue.Queue[tuple[float, bytes]] = queue.Queue()
                connection.threads += [
                    threading.Thread(target=self._read, args=(connection, source, pipe), daemon=True, name=label),
                    threading.Thread(target=self._write, args=(connection, sink, pipe), daemon=True, name=label),
                ]
            for thread in connection.threads:
                thread.start()

    def _read(self, connection: _Connection, source: socket.socket, pipe: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = _EOF
            pipe.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self, connection: _Connection, sink: socket.socket, pipe: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            release, data = pipe.get()
            wait = release - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                # Pass the half-close on, so a clean shutdown stays clean.
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if connection.closed:
                return
            cut = False
            with self._lock:
                if self._cut_at is not None and self.forwarded + len(data) >= self._cut_at:
                    data = data[: max(0, self._cut_at - self.forwarded)]
                    cut = True
                    self._cut_at = None
                    if self._refuse_after_cut:
                        self._refusing = True
                self.forwarded += len(data)
            try:
                if self.bandwidth:
                    # Pace in small slices so that the cap holds within a chunk as well.
                    for start in range(0, len(data), 8192):
                        piece = data[start : start + 8192]
                        sink.sendall(piece)
                        time.sleep(len(piece) / self.bandwidth)
                else:
                    sink.sendall(data)
            except OSError:
                connection.abort()
                return
            if cut:
                self.cut_all()
                return
