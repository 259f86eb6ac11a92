"""Open one authenticated SSH transport for the SFTP backend.

- Where to connect: ``storage.host`` may be a ``~/.ssh/config`` Host alias; HostName, Port,
  User, IdentityFile, UserKnownHostsFile, HostKeyAlias and ServerAliveInterval are taken
  from there unless the pdrflow config sets them explicitly (explicit fields win).
- Host keys are checked strictly against known_hosts (never auto-added): an unknown key,
  a key of a type the file does not list, a revoked key and a changed key are all refused
  with a message that says what to do. ``StrictHostKeyChecking`` in ssh_config is ignored.
- Authentication: the configured key file (or ssh_config IdentityFile), then ssh-agent,
  then the default keys (only when no key file was named, like OpenSSH), then the password
  from the environment. The password is never put into a message or a log record.
- Failures raise :class:`StorageError`; ``transient`` is True only for network trouble.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import logging
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from ..config.sections import SFTP_PASSWORD_ENV
from .base import StorageError

if TYPE_CHECKING:
    from .sftp import SftpStorageConfig

log = logging.getLogger("pdrflow.storage.sftp")

#: Receive window and packet size we advertise (they govern checksum read-back speed).
WINDOW_SIZE = 16 << 20
MAX_PACKET_SIZE = 1 << 18
#: AES-GCM first: one AEAD pass per packet instead of AES-CTR plus a separate HMAC
#: (measured ~20 % faster uploads than paramiko's default aes128-ctr + hmac-sha2-256).
_CIPHER_PREFERENCE = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
# known_hosts names a key by its key type; the SSH host key *algorithms* for RSA differ.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after ssh_config and the pdrflow config are merged."""

    hostname: str
    port: int
    username: str
    key_files: tuple[Path, ...]
    default_keys: bool  # no key file named anywhere: try ~/.ssh/id_* like OpenSSH
    known_hosts: tuple[Path, ...]  # the first is the user's file (named in messages)
    host_key_alias: str | None
    keepalive: int
    # argv of a command whose stdin/stdout reach the server (ssh_config ProxyJump or ProxyCommand); None: direct
    proxy: tuple[str, ...] | None = None

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files list this server under (OpenSSH's rules)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def resolve_endpoint(config: SftpStorageConfig) -> Endpoint:
    options: dict[str, object] = {}
    ssh_config = config.ssh_config.expanduser() if config.ssh_config else Path.home() / ".ssh" / "config"
    if config.ssh_config is not None or ssh_config.is_file():
        try:
            options = dict(paramiko.SSHConfig.from_path(str(ssh_config)).lookup(config.host))
        except OSError as exc:
            raise StorageError(f"cannot read ssh config {ssh_config}: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - paramiko raises several types for bad files
            raise StorageError(f"cannot parse ssh config {ssh_config}: {exc}") from None
    hostname = str(options.get("hostname") or config.host)
    port = config.port or int(str(options.get("port") or 22))
    proxy = _proxy(options, ssh_config, hostname, port)
    username = config.username or str(options.get("user") or "") or getpass.getuser()
    if config.key_filename is not None:
        key_files: tuple[Path, ...] = (config.key_filename.expanduser(),)
    else:
        named = options.get("identityfile") or []
        key_files = tuple(_expand(str(name)) for name in (named if isinstance(named, list) else [named]))
    if config.known_hosts is not None:
        known_hosts: tuple[Path, ...] = (config.known_hosts.expanduser(),)
    else:
        user_files = str(options.get("userknownhostsfile") or "~/.ssh/known_hosts ~/.ssh/known_hosts2").split()
        known_hosts = (*(_expand(name) for name in user_files), Path("/etc/ssh/ssh_known_hosts"))
    alias = options.get("hostkeyalias")
    keepalive = int(str(options.get("serveraliveinterval") or 15)) or 15
    return Endpoint(
        hostname=hostname,
        port=port,
        username=username,
        key_files=key_files,
        default_keys=not key_files,
        known_hosts=known_hosts,
        host_key_alias=str(alias) if alias else None,
        keepalive=keepalive,
        proxy=proxy,
    )


def _proxy(options: dict[str, object], ssh_config: Path, hostname: str, port: int) -> tuple[str, ...] | None:
    """How ssh_config says to reach the server: through OpenSSH's own client to a jump host
    (``ProxyJump a[,b]``: ``ssh -W host:port``, the jump hosts authenticated by that client from the same
    ssh_config), or a ``ProxyCommand`` (tokens expanded by paramiko's parser; run without a shell)."""
    jump = str(options.get("proxyjump") or "none")
    command = str(options.get("proxycommand") or "none")
    if jump.lower() != "none":  # OpenSSH: the first of ProxyJump and ProxyCommand given wins; paramiko keeps both
        *through, last = jump.split(",")
        return ("ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", *(("-J", ",".join(through)) if through else ()),
                "-W", f"{hostname}:{port}", last)
    if command.lower() != "none":
        return tuple(shlex.split(command))
    return None


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _KnownHosts:
    """The host keys (and revoked keys) of every known_hosts file of an endpoint."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.keys = paramiko.HostKeys()
        self.revoked: set[bytes] = set()
        for path in files:
            if not path.is_file():
                continue
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as exc:
                raise StorageError(f"cannot read known_hosts file {path}: {exc.strerror or exc}") from None
            # Parsed line by line (paramiko's HostKeys.load aborts on marker lines such as
            # "@cert-authority"): a line it cannot use is skipped, as OpenSSH does.
            for line in lines:
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if fields[0] == "@revoked" and len(fields) >= 4:
                    with contextlib.suppress(ValueError):
                        self.revoked.add(base64.b64decode(fields[3], validate=True))
                    continue
                if fields[0].startswith("@"):
                    continue  # @cert-authority: host certificates are not supported, the line is ignored
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields[:3]))
                except (paramiko.SSHException, ValueError):
                    continue
                if entry is None or entry.key is None:
                    continue
                for name in entry.hostnames:
                    self.keys.add(name, entry.key.get_name(), entry.key)

    def for_host(self, name: str) -> dict[str, paramiko.PKey]:
        found = self.keys.lookup(name)
        return dict(found) if found else {}


def _check_host_key(endpoint: Endpoint, known: _KnownHosts, key: paramiko.PKey) -> None:
    name = endpoint.known_hosts_name
    user_file = endpoint.known_hosts[0]
    offered = f"{key.get_name()} key with fingerprint {fingerprint(key)}"
    if key.asbytes() in known.revoked:
        raise StorageError(f"host key for {name} ({offered}) is marked @revoked in known_hosts; refusing to connect")
    listed = known.for_host(name)
    expected = listed.get(key.get_name())
    if expected is not None and expected.asbytes() == key.asbytes():
        return
    port = [] if endpoint.port == 22 else ["-p", str(endpoint.port)]
    keyscan = " ".join(["ssh-keyscan", "-t", key.get_name(), *port, endpoint.hostname])
    if expected is not None:
        raise StorageError(
            f"host key for {name} has CHANGED: the server offers a {offered}, but {user_file} lists "
            f"{fingerprint(expected)}. This may be a man-in-the-middle attack, or the server was reinstalled. "
            f"If the change is expected, remove the old key (ssh-keygen -R '{name}' -f {user_file}), check the "
            f"new fingerprint with the server's admin, then run: {keyscan} >> {user_file}"
        )
    if listed:
        raise StorageError(
            f"host key for {name} is not in {user_file} for the key type the server offered "
            f"(known types: {', '.join(sorted(listed))}; server offers a {offered}); to trust it run: "
            f"{keyscan} >> {user_file} (after checking the fingerprint {fingerprint(key)})"
        )
    raise StorageError(
        f"host key for {name} is not in {user_file}; to trust it run: {keyscan} >> {user_file} "
        f"(after checking the fingerprint {fingerprint(key)} with the server's admin)"
    )


def _network_error(endpoint: Endpoint, exc: BaseException, during: str) -> StorageError:
    if isinstance(exc, socket.gaierror):
        # A name that does not exist will not appear by retrying; a resolver hiccup may pass.
        return StorageError(
            f"cannot resolve host {endpoint.hostname}: {exc.strerror}", transient=exc.errno == socket.EAI_AGAIN
        )
    if isinstance(exc, paramiko.IncompatiblePeer):
        return StorageError(f"cannot agree on SSH algorithms with {endpoint.address}: {exc}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return StorageError(f"timed out {during} {endpoint.address}", transient=True)
    if isinstance(exc, OSError) and exc.strerror:
        return StorageError(f"{exc.strerror.lower()} {during} {endpoint.address}", transient=True)
    return StorageError(
        f"connection to {endpoint.address} failed {during}: {exc or type(exc).__name__}", transient=True
    )


def _load_key(path: Path) -> paramiko.PKey | str:
    """A private key, or the reason it cannot be used."""
    try:
        return paramiko.PKey.from_path(str(path))
    except paramiko.PasswordRequiredException:
        return f"key {path} is passphrase-protected (load it into ssh-agent)"
    except FileNotFoundError:
        return f"key {path} does not exist"
    except (OSError, paramiko.SSHException, ValueError) as exc:
        return f"key {path} unusable ({exc})"


def _authenticate(transport: paramiko.Transport, endpoint: Endpoint, password: str | None) -> None:
    tried: list[str] = []
    user = endpoint.username

    def try_key(key: paramiko.PKey, label: str) -> bool:
        try:
            transport.auth_publickey(user, key)
        except paramiko.BadAuthenticationType:
            tried.append(f"{label} (server does not accept keys)")
            return False
        except paramiko.AuthenticationException:
            tried.append(f"{label} rejected")
            return False
        return transport.is_authenticated()

    key_files = list(endpoint.key_files)
    if endpoint.default_keys:
        key_files += [p for p in (Path.home() / ".ssh" / n for n in _DEFAULT_KEYS) if p.is_file()]
    for path in endpoint.key_files:
        key = _load_key(path)
        if isinstance(key, str):
            tried.append(key)
        elif try_key(key, f"key {path}"):
            return
    agent = paramiko.Agent()
    try:
        agent_keys = agent.get_keys()
        for key in agent_keys:
            if try_key(key, f"ssh-agent key {fingerprint(key)}"):
                return
    except paramiko.SSHException as exc:
        tried.append(f"ssh-agent unusable ({exc})")
    finally:
        agent.close()
    for path in key_files[len(endpoint.key_files) :]:
        key = _load_key(path)
        if not isinstance(key, str) and try_key(key, f"key {path}"):
            return
    if password is not None:
        try:
            transport.auth_password(user, password)
            if transport.is_authenticated():
                return
        except paramiko.BadAuthenticationType:
            tried.append(f"password from {SFTP_PASSWORD_ENV[0]} (server does not accept passwords)")
        except paramiko.AuthenticationException:
            tried.append(f"password from {SFTP_PASSWORD_ENV[0]} rejected")
    if not tried:
        raise StorageError(
            f"no credentials for {user}@{endpoint.address}: set storage.key_filename, load a key into "
            f"ssh-agent, or set {SFTP_PASSWORD_ENV[0]}"
        )
    raise StorageError(f"authentication failed for {user}@{endpoint.address}: tried {'; '.join(tried)}")


def open_transport(
    endpoint: Endpoint, password: str | None, connect_timeout: float, operation_timeout: float
) -> paramiko.Transport:
    """Connect, verify the host key, authenticate; the caller owns the transport."""
    sock: socket.socket | paramiko.ProxyCommand
    if endpoint.proxy is not None:
        try:
            sock = paramiko.ProxyCommand(shlex.join(endpoint.proxy))  # paramiko splits it again: no shell
        except (paramiko.SSHException, OSError) as exc:
            raise _network_error(endpoint, exc, "starting the proxy to") from None
        sock.settimeout(connect_timeout)
    else:
        try:
            sock = socket.create_connection((endpoint.hostname, endpoint.port), timeout=connect_timeout)
        except OSError as exc:
            raise _network_error(endpoint, exc, "connecting to") from None
        # Small requests (open, close, rename) must not wait for Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # paramiko's writer retries a blocked send forever; the kernel ends the connection
            # when sent data stays unacknowledged this long, so a dead server never hangs a worker.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(operation_timeout * 1000))
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    try:
        transport.banner_timeout = connect_timeout
        transport.handshake_timeout = connect_timeout
        transport.auth_timeout = connect_timeout
        options = transport.get_security_options()
        options.ciphers = tuple(c for c in _CIPHER_PREFERENCE if c in options.ciphers) + tuple(
            c for c in options.ciphers if c not in _CIPHER_PREFERENCE
        )
        known = _KnownHosts(endpoint.known_hosts)
        # Ask for a host key of a type known_hosts lists, as OpenSSH does; otherwise a server
        # with several keys might present one we cannot check.
        preferred = [
            algorithm
            for key_type in known.for_host(endpoint.known_hosts_name)
            for algorithm in _ALGORITHMS_FOR_KEY_TYPE.get(key_type, (key_type,))
            if algorithm in options.key_types
        ]
        if preferred:
            options.key_types = tuple(preferred) + tuple(k for k in options.key_types if k not in preferred)
        try:
            transport.start_client(timeout=connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _network_error(endpoint, exc, "during the SSH handshake with") from None
        _check_host_key(endpoint, known, transport.get_remote_server_key())
        try:
            _authenticate(transport, endpoint, password)
        except (OSError, EOFError) as exc:
            raise _network_error(endpoint, exc, "during authentication with") from None
        except paramiko.SSHException as exc:
            if not transport.is_active():
                raise _network_error(endpoint, exc, "during authentication with") from None
            raise StorageError(f"authentication failed for {endpoint.username}@{endpoint.address}: {exc}") from None
        transport.set_keepalive(endpoint.keepalive)
    except BaseException:
        transport.close()
        raise
    log.info(
        "connected to %s@%s (%s, host key %s)",
        endpoint.username,
        endpoint.address,
        transport.local_cipher,
        fingerprint(transport.get_remote_server_key()),
    )
    return transport
