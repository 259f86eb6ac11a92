"""Who may talk to a run's Dask cluster: per-run TLS credentials, and warnings about what stays open.

Without TLS anyone who reaches the scheduler's port (another user of a login node, any job on the
cluster network) can connect a ``distributed.Client`` and run code as the pdrflow user, with its
database password and SSH keys. With ``cluster.security: tls`` (the default) every run makes a new
self-signed certificate and key (``Security.temporary()``): the scheduler, nannies, workers and the
driver's client require each other to present it, so a process without the key cannot connect.

The key lives in memory where it can (LocalCluster); where other processes must read it, it is
written to a fresh owner-only (0700) directory that is removed when the run ends: for SLURMCluster
the directory dask-jobqueue's worker jobs read (``shared_temp_directory``), for a SLURMRunner
allocation a directory next to the scheduler file that rank 0 writes and the other ranks read.
It never goes into a log, the ledger or the archive (``Security``'s repr shows no key material).

Passwords: workers and the scheduler read them from their own environment (configs are pickled
without them, see ``config._PasswordFromEnv``). sbatch hands its whole environment to a SLURM job
(``--export=ALL``, through slurmctld), so SLURMCluster's sbatch runs without the password variables
a worker does not need (:func:`withheld_from_workers`, :func:`job_class_without`): the database
password when the ledger is SQLite, the SFTP password when the archive is not SFTP.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from ..config.sections import DB_PASSWORD_ENV, password_variables
from ..errors import ConfigError

if TYPE_CHECKING:
    import asyncio  # at run time where sbatch is spaced: config loading imports this module

    from distributed.security import Security

    from ..config import Config

log = logging.getLogger("pdrflow")

SecurityMode = Literal["tls", "none"]
PROTOCOL = "tls://"
_CERT, _KEY, _READY = "cert.pem", "key.pem", "ready"  # file names in a shared credentials directory


def warn_insecure() -> None:
    log.warning("cluster.security: none: anyone who can reach this run's Dask ports (other users of this machine, "
                "on a cluster every node) can run code as %s and read its database password and SSH keys",
                _user())


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def run_security(mode: SecurityMode) -> Security | None:
    """New credentials for one run (``tls``), or None after a warning (``none``)."""
    if mode == "none":
        warn_insecure()
        return None
    from distributed.security import Security

    return Security.temporary()


def security_from_pem(cert: str, key: str) -> Security:
    """The same trust as ``Security.temporary()``: one self-signed certificate is the CA and every role's cert."""
    from distributed.security import Security

    roles = {f"tls_{role}_{part}": value for role in ("client", "scheduler", "worker")
             for part, value in (("cert", cert), ("key", key))}
    return Security(require_encryption=True, tls_ca_file=cert, **roles)


def _pem(security: Security) -> tuple[str, str]:
    # set by Security.__init__ from its keyword arguments; typeshed-less, hence getattr
    cert, key = getattr(security, "tls_scheduler_cert", None), getattr(security, "tls_scheduler_key", None)
    if not (isinstance(cert, str) and isinstance(key, str) and "\n" in cert and "\n" in key):
        raise ValueError("expected in-memory credentials (Security.temporary())")
    return cert, key


# ---- owner-only directories -------------------------------------------------------------------


def private_directory(parent: Path, prefix: str) -> Path:
    """A new directory only this user can enter (mkdtemp makes it 0700 whatever the umask)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def user_directory(parent: Path, name: str) -> tuple[Path, bool]:
    """``<parent>/<name>-<uid>``, 0700, shared by this user's runs (a killed run leaves nothing new behind);
    a fresh private directory instead when that path is someone else's or open to others. Returns
    (directory, whether it is fresh and the caller removes it)."""
    path = parent / f"{name}-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except OSError:
        return private_directory(parent, f"{name}-"), True
    try:
        _check_private(path)
    except ConfigError:
        log.warning("%s belongs to another user or is open to others: using a new private directory", path)
        return private_directory(parent, f"{name}-"), True
    return path, False


def owner_only_directory(path: str | os.PathLike[str] | None) -> None:
    """Create a directory pdrflow's processes write logs or worker files into as 0700; one that already
    exists is left as it is (the user may share it on purpose)."""
    if path is None:
        return
    target = Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(mode=0o700, exist_ok=True)


def _check_private(path: Path) -> None:
    """Credentials are trusted only from a real directory of ours that no one else can write or read."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(f"{path}: the run's TLS credentials directory must be a directory of yours with mode "
                          f"0700 (it is {stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid})")


def remove_directory(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def write_credentials(directory: Path, security: Security) -> None:
    """Rank 0 of an allocation: the credentials into a new 0700 directory; ``ready`` last, so that a
    reader never sees half-written files."""
    cert, key = _pem(security)
    directory.mkdir(mode=0o700)  # fails if it exists: never reuse (or trust) a directory found there
    _check_private(directory)
    for name, text in ((_CERT, cert), (_KEY, key), (_READY, "")):
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)


def read_credentials(directory: Path, timeout: float = 300.0) -> Security:
    """The other ranks: wait for rank 0's credentials (it may start later), then load them into memory."""
    deadline = time.monotonic() + timeout
    while not (directory / _READY).exists():
        if time.monotonic() > deadline:
            raise ConfigError(f"{directory}: the scheduler rank wrote no TLS credentials within {timeout:.0f} s "
                              "(every task of the allocation must see cluster.scheduler_directory)")
        time.sleep(0.1)
    _check_private(directory)
    return security_from_pem((directory / _CERT).read_text(), (directory / _KEY).read_text())


# ---- which passwords a worker job gets ---------------------------------------------------------


def withheld_from_workers(config: Config) -> tuple[str, ...]:
    """The password variables this run's workers never use: the database's for an SQLite ledger (a file, no
    password), and every storage or cluster kind's but those of the kinds this run uses (SFTP's when the
    archive is not on SFTP)."""
    from ..config.kinds import KIND_MODELS, KIND_SECTIONS

    every = dict.fromkeys([*DB_PASSWORD_ENV, *(name for model in KIND_MODELS.values()
                                               for name in password_variables(model))])
    used = {name for section in KIND_SECTIONS for name in password_variables(type(getattr(config, section)))}
    if not config.database.sqlalchemy_url().drivername.startswith("sqlite"):
        used.update(DB_PASSWORD_ENV)
    return tuple(name for name in every if name not in used)


class _SubmitSpacing:
    """At least ``interval`` seconds between the starts of two sbatch calls of one cluster (adapt() asks for many
    jobs at once; a burst of submissions is what slurmctld handles worst). Async-safe: one lock, made on the
    cluster's event loop at its first use."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock: asyncio.Lock | None = None
        self._last = -float("inf")

    async def wait(self) -> None:
        import asyncio

        if self.interval <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = time.monotonic()


def job_class_without(withheld: tuple[str, ...], submit_interval: float = 0.0) -> type:
    """dask-jobqueue's SLURMJob, its ``sbatch`` run without the ``withheld`` variables in its environment: what a
    job does not need never reaches slurmctld, the job's stored environment or the worker processes.
    ``submit_interval`` (cluster.slurm.submit_interval): seconds at least between two sbatch calls."""
    from dask_jobqueue.slurm import SLURMJob

    spacing = _SubmitSpacing(submit_interval)

    async def _submit_job(self: SLURMJob, script_filename: str) -> str:
        await spacing.wait()
        environment = {name: value for name, value in os.environ.items() if name not in withheld}
        return str(await self._call([*shlex.split(self.submit_command), script_filename], env=environment))

    return type("PdrflowSLURMJob", (SLURMJob,), {"_submit_job": _submit_job, "__module__": __name__})


# ---- the dashboard ----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface)


def dashboard_is_local(address: str | None) -> bool:
    from distributed.utils import clean_dashboard_address

    if address is None:
        return True
    try:
        entries = clean_dashboard_address(address)
    except ValueError:  # not Dask's host:port form: Dask will refuse it; no claim that it is local
        return False
    return all(_is_loopback(str(entry["address"] or "")) for entry in entries)


def warn_if_dashboard_exposed(address: str | None) -> None:
    if not dashboard_is_local(address):
        log.warning("cluster.dashboard_address %r listens beyond this machine's loopback: anyone who reaches it can "
                    "read the grid and the worker logs (keep it 127.0.0.1:PORT and use the ssh tunnel)", address)


def local_dashboard_link(link: str | None, address: str | None) -> str | None:
    """Dask builds the link from the scheduler's network address (e.g. on ib0); a dashboard that listens
    on loopback only is reached at 127.0.0.1 (through the ssh tunnel the run prints)."""
    if not link or address is None or not dashboard_is_local(address):
        return link
    parts = urlsplit(link)
    netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
    return urlunsplit(parts._replace(netloc=netloc))
