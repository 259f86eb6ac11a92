"""Real PostgreSQL and MariaDB servers for the tests: loopback, a free port, a temp dir, stop by PID."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import processes
from .marks import require_marked

APP_USER = "pdrflow"
APP_PASSWORD = "canary-db-Pw-7f3a"  # tests assert this never appears in outputs or files
APP_DATABASE = "pdrflow"


def require(binary: str | None, what: str) -> str:
    """The binary, or a skip outside CI; in CI a missing service is a failure, never a skip."""
    if binary and Path(binary).exists():
        return binary
    message = f"{what} is not installed (scripts/test installs it)"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _as(user: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True, text=True,
                          timeout=120, **kwargs)  # type: ignore[call-overload]


@dataclass
class DatabaseServer:
    kind: str  # "postgresql" or "mariadb"
    port: int
    directory: Path
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # PostgreSQL only: a second address it also listens on, which the URLs name (a test network's, e.g. the
    # cluster box's bridge, whose /24 may log in with the password); loopback is always listened on.
    address: str = "127.0.0.1"
    max_connections: int | None = None  # PostgreSQL's max_connections (None: its default, 100)

    @property
    def url(self) -> str:
        """The URL pdrflow gets: no password in it (that comes from PDRFLOW_DB_PASSWORD)."""
        driver = "postgresql+psycopg" if self.kind == "postgresql" else "mysql+pymysql"
        return f"{driver}://{APP_USER}@{self.address}:{self.port}/{APP_DATABASE}"

    @property
    def url_with_password(self) -> str:
        driver = "postgresql+psycopg" if self.kind == "postgresql" else "mysql+pymysql"
        return f"{driver}://{APP_USER}:{APP_PASSWORD}@{self.address}:{self.port}/{APP_DATABASE}"

    # ---- PostgreSQL ---------------------------------------------------------------------------

    def _pg_bin(self, name: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        return require(found[-1] if found else None, "PostgreSQL (Debian package postgresql)")

    def _pg_init(self) -> None:
        data = self.directory / "data"
        _as("postgres", [self._pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
            + (f"host all all {self.address}/24 scram-sha-256\n" if self.address != "127.0.0.1" else "")
        )

    def _pg_start(self) -> None:
        data = self.directory / "data"
        _as("postgres", [self._pg_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(self.directory / "log"), "start",
                         "-o", f"-p {self.port} -k {self.directory} -c listen_addresses="
                         + ",".join(dict.fromkeys(("127.0.0.1", self.address)))
                         + (f" -c max_connections={self.max_connections}" if self.max_connections else "")])
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def _pg_setup_app(self) -> None:
        psql = [self._pg_bin("psql"), "-h", str(self.directory), "-p", str(self.port), "-U", "postgres", "-v",
                "ON_ERROR_STOP=1", "-c"]
        _as("postgres", [*psql, f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"])
        _as("postgres", [*psql, f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}"])

    # ---- MariaDB ------------------------------------------------------------------------------

    def _maria_init(self) -> None:
        require(shutil.which("mariadbd") or "/usr/sbin/mariadbd", "MariaDB (Debian package mariadb-server)")
        data = self.directory / "data"
        data.mkdir()
        shutil.chown(self.directory, "mysql", "mysql")
        shutil.chown(data, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)

    def _maria_start(self) -> None:
        data = self.directory / "data"
        log = (self.directory / "log").open("ab")
        self._process = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
             f"--socket={self.directory / 'sock'}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.directory / 'mariadb.pid'}", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
             "--max-connections=200"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        self.pid = self._process.pid
        _wait_port(self.port)

    def _maria_setup_app(self) -> None:
        sql = (f"CREATE DATABASE {APP_DATABASE}; CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}';"
               f" GRANT ALL ON {APP_DATABASE}.* TO '{APP_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
        subprocess.run(["mariadb", f"--socket={self.directory / 'sock'}", "-u", "root", "-e", sql], check=True,
                       capture_output=True, timeout=60)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, *, first: bool = False) -> None:
        require_marked(self.kind)
        if self.kind == "postgresql":
            if first:
                self._pg_init()
            self._pg_start()
            if first:
                self._pg_setup_app()
        else:
            if first:
                self._maria_init()
            self._maria_start()
            if first:
                self._maria_setup_app()
        _wait_port(self.port)

    def stop(self) -> None:
        """Stop the server process (fast shutdown) and wait until it is gone, so the port is free."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT if self.kind == "postgresql" else signal.SIGTERM)
        except ProcessLookupError:
            pass
        if self._process is not None:  # our child: wait() reaps it (kill -0 would see the zombie)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=30)
            self._process = None
        else:
            processes.wait_or_kill([self.pid], 30)
        self.pid = None

    def reset(self) -> None:
        """An empty application database (between tests sharing one server)."""
        if self.kind == "postgresql":
            psql = [self._pg_bin("psql"), "-h", str(self.directory), "-p", str(self.port), "-U", "postgres", "-c"]
            _as("postgres", [*psql, f"DROP DATABASE IF EXISTS {APP_DATABASE} WITH (FORCE)"])
            _as("postgres", [*psql, f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}"])
        else:
            subprocess.run(["mariadb", f"--socket={self.directory / 'sock'}", "-u", "root", "-e",
                            f"DROP DATABASE IF EXISTS {APP_DATABASE}; CREATE DATABASE {APP_DATABASE};"],
                           check=True, capture_output=True, timeout=60)


def start_server(kind: str, address: str = "127.0.0.1", max_connections: int | None = None) -> DatabaseServer:
    """``address``: PostgreSQL also listens there and its URLs name it (see ``DatabaseServer.address``).
    ``max_connections``: PostgreSQL's (None: its default)."""
    if kind != "postgresql" and address != "127.0.0.1":
        raise ValueError(f"{kind} listens on loopback only in these tests")
    directory = Path(tempfile.mkdtemp(prefix=f"pdrflow-{kind}-"))
    os.chmod(directory, 0o755)
    if kind == "postgresql":
        shutil.chown(directory, "postgres", "postgres")
    server = DatabaseServer(kind, free_port(), directory, address=address, max_connections=max_connections)
    try:
        server.start(first=True)
    except BaseException:
        server.stop()
        raise
    return server


def remove_server(server: DatabaseServer) -> None:
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


def crash_server(server: DatabaseServer) -> None:
    """SIGKILL the server and every process it forked (no shutdown, in-flight commits cut); wait until gone.

    ``server.start()`` brings it back on the same port (the database recovers from its logs).
    """
    if server.pid is None:
        return
    pids = [server.pid, *processes.descendants(server.pid)]
    processes.signal_all(pids, signal.SIGKILL)
    if server._process is not None:
        server._process.wait(timeout=30)
        server._process = None
    processes.wait_gone(pids, 30)
    if server.kind == "postgresql":
        (server.directory / "data" / "postmaster.pid").unlink(missing_ok=True)
    server.pid = None


def app_sessions(admin: Any, application: str) -> tuple[int, int]:
    """(sessions whose application_name is ``application``, all sessions) of the app user now, read from
    pg_stat_activity over ``admin``, a superuser's psycopg connection."""
    row = admin.execute("SELECT count(*) FILTER (WHERE application_name = %s), count(*) FROM pg_stat_activity "
                        "WHERE usename = %s", (application, APP_USER)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def session_peaks(log: str, application: str) -> dict[str, int]:
    """Concurrent sessions of the app user (and of those with ``application`` as their application_name)
    from a PostgreSQL log with log_connections/log_disconnections, in log order."""
    open_sessions: dict[str, bool] = {}  # backend pid -> one of ``application``'s sessions
    peaks = {"sessions": 0, "worker_sessions": 0}
    for line in log.splitlines():
        pid = re.search(r"\[(\d+)\]", line)
        if pid is None:
            continue
        if f"connection authorized: user={APP_USER} " in line:
            open_sessions[pid.group(1)] = f"application_name={application}" in line
        elif "disconnection: session time" in line:
            open_sessions.pop(pid.group(1), None)
        peaks["sessions"] = max(peaks["sessions"], len(open_sessions))
        peaks["worker_sessions"] = max(peaks["worker_sessions"], sum(open_sessions.values()))
    return peaks
