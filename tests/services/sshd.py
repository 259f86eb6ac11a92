"""A real OpenSSH sshd on 127.0.0.1 for the SFTP tests and benchmarks.

Each :class:`Sshd` runs in its own temporary directory, on a free port, with a throwaway
ed25519 host key and a throwaway client key. It is stopped by PID (the listener and the
per-connection processes it forked) and ``stop`` waits until they are gone, so the same
port can be reused by a restart. Nothing here installs packages: CI installs
``openssh-server`` and ``openssh-client`` before the tests run.

Also: :class:`SystemUser` creates (and removes) a throwaway non-root Unix user, for
password authentication and "permission denied" tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from . import processes
from .marks import require_marked

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
_TIMEOUT = 30.0


def established_connections(port: int, *, side: str = "server") -> int:
    """Established TCP connections of an sshd on ``port`` (/proc/net/tcp and tcp6), each socket once: on the
    server's ``side`` (its local port; what sshd holds) or the ``"client"`` side (their remote port: a closed
    connection is gone from there at once, sshd notices a moment later)."""
    column = 1 if side == "server" else 2
    sockets: set[tuple[str, str]] = set()  # a table read in pieces while it changes can repeat a line
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[column].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                sockets.add((fields[1], fields[2]))
    return len(sockets)


class SshdUnavailable(RuntimeError):
    """OpenSSH's sshd is not installed."""


def require_sshd() -> None:
    """In CI a missing sshd is an error (the CI script must install it); elsewhere a skip."""
    if SSHD.exists() and shutil.which(SSH_KEYGEN):
        return
    message = "OpenSSH server not installed (apt-get install openssh-server openssh-client)"
    if os.environ.get("CI", "").lower() == "true":
        raise SshdUnavailable(message)
    import pytest  # only the test suite reaches this branch

    pytest.skip(message)


def free_port() -> int:
    """A port that was free a moment ago (bind port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path, comment: str = "pdrflow-test") -> str:
    """Create an unencrypted ed25519 key pair; return the public key line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=_TIMEOUT,
        capture_output=True,
    )
    return path.with_suffix(path.suffix + ".pub").read_text().strip()


@dataclass
class SystemUser:
    """A throwaway non-root Unix user (created with useradd, removed with userdel)."""

    name: str
    home: Path
    uid: int
    gid: int
    password: str | None = None

    @classmethod
    def create(cls, prefix: str = "pdrsftp", password: str | None = None) -> SystemUser:
        name = f"{prefix}{secrets.token_hex(3)}"
        _edit_accounts(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name])
        if password is not None:
            # chpasswd reads "user:password" on stdin: the password never appears in argv.
            _edit_accounts(["chpasswd"], stdin=f"{name}:{password}\n")
        else:
            # With UsePAM no, sshd refuses a locked account ("!" in shadow) even for key auth.
            _edit_accounts(["usermod", "-p", "*", name])
        import pwd

        entry = pwd.getpwnam(name)
        return cls(name=name, home=Path(entry.pw_dir), uid=entry.pw_uid, gid=entry.pw_gid, password=password)

    def remove(self) -> None:
        _edit_accounts(["userdel", "--remove", self.name], check=False)


def _edit_accounts(argv: list[str], stdin: str | None = None, check: bool = True) -> None:
    """Run a shadow-utils tool. They lock /etc/passwd and give up at once when another holds the lock,
    which happens when parallel test workers add users at the same moment: retry those for a while."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=_TIMEOUT, check=False)
        if done.returncode == 0 or "lock" not in done.stderr.lower() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if check and done.returncode != 0:
        # not CalledProcessError: its message would carry chpasswd's input (a password)
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")


@dataclass
class Sshd:
    """One OpenSSH sshd serving SFTP on 127.0.0.1; ``start()`` it, ``stop()`` it."""

    workdir: Path | None = None
    password_authentication: bool = False
    # Several test clients connect at once; None: sshd's own default (10:30:100), which pdrflow must live with.
    max_startups: str | None = "100"
    host: str = "127.0.0.1"
    port: int = 0
    pid: int | None = None
    client_key: Path = field(init=False)
    client_public_key: str = field(init=False)
    host_key: Path = field(init=False)
    host_public_key: str = field(init=False)
    _own_workdir: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        require_sshd()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="pdrflow-sshd-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Non-root users must be able to read their authorized_keys file below this directory.
        self.workdir.chmod(0o755)
        self.host_key = self.workdir / "host_ed25519"
        self.host_public_key = keygen(self.host_key, "pdrflow-test-host")
        self.client_key = self.workdir / "client_ed25519"
        self.client_public_key = keygen(self.client_key, "pdrflow-test-client")
        self.authorized_keys.write_text(self.client_public_key + "\n")
        self.authorized_keys.chmod(0o644)
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory: sshd exits 255 without it

    @property
    def dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    @property
    def config_file(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log_file(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    def known_hosts_line(self, port: int | None = None) -> str:
        """The line OpenSSH (and paramiko) expect in known_hosts for this server.

        ``port``: the port clients connect to, when that is a proxy in front of sshd.
        """
        port = port or self.port
        name = self.host if port == 22 else f"[{self.host}]:{port}"
        key_type, key_data = self.host_public_key.split()[:2]
        return f"{name} {key_type} {key_data}"

    def write_known_hosts(self, path: Path, *ports: int) -> Path:
        """A known_hosts file trusting this server (on its own port and on any proxy ``ports``)."""
        path.write_text("".join(self.known_hosts_line(port) + "\n" for port in (self.port, *ports)))
        return path

    def _write_config(self) -> None:
        password = "yes" if self.password_authentication else "no"
        self.config_file.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    f"PasswordAuthentication {password}",
                    "PermitEmptyPasswords no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the keys live under /tmp
                    "UseDNS no",
                    *([f"MaxStartups {self.max_startups}"] if self.max_startups else []),
                    "MaxSessions 100",  # pdrflow opens several SFTP channels on one connection
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    def start(self) -> None:
        """Start sshd (on a new free port the first time, on the same port after a stop)."""
        require_marked("sshd")
        if self.pid is not None:
            raise RuntimeError("sshd already running")
        if not self.port:
            self.port = free_port()
        self._write_config()
        self.pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + _TIMEOUT
        while True:
            # sshd forks into the background and writes its pid file once it listens.
            result = subprocess.run(
                [str(SSHD), "-f", str(self.config_file), "-E", str(self.log_file)],
                timeout=_TIMEOUT,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                break
            # A restart right after a stop may find the port in TIME_WAIT-like limbo: retry briefly.
            if time.monotonic() > deadline:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise RuntimeError(f"sshd failed to start (exit {result.returncode}): {result.stderr}{tail}")
            time.sleep(0.1)
        while not self.pid_file.exists() or not self.pid_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not write its pid file")
            time.sleep(0.01)
        self.pid = int(self.pid_file.read_text().strip())
        self._wait_listening(deadline)

    def _wait_listening(self, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd not listening on {self.host}:{self.port}") from None
                time.sleep(0.01)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the listener and every connection it serves; return once all of them are gone."""
        if self.pid is None:
            return
        processes.stop([self.pid, *processes.descendants(self.pid)], sig, 10)
        self.pid = None

    def kill(self) -> None:
        """Crash the server: SIGKILL to the listener and all its connections."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
