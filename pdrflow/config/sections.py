"""What every config section shares, and what a storage or cluster kind module declares itself with.

Light on purpose (pydantic, PyYAML, dask.config): each kind module (``pdrflow/storage/<kind>.py``,
``pdrflow/cluster/<kind>.py``) imports its base class and field types from here, and config loading
imports every kind module, so nothing here may import the models, the kinds or a kind's heavy
dependencies. Importing it registers the shipped defaults (``pdrflow.yaml``) with ``dask.config``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

import dask.config
import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr

from ..errors import shown

if TYPE_CHECKING:
    from ..cluster.base import ClusterHandle
    from ..cluster.placement import Placement
    from ..ledger.lease import GridLease
    from ..storage.base import Storage
    from .models import Config

DEFAULTS_FILE = Path(__file__).parent.parent / "pdrflow.yaml"  # shipped in the package: every default
with DEFAULTS_FILE.open() as _f:
    # The shipped file as written (not merged with the user's dask config): its storage and cluster
    # mappings list the kinds pdrflow has (config.kinds).
    SHIPPED_DEFAULTS: dict[str, Any] = yaml.safe_load(_f)
dask.config.update_defaults(SHIPPED_DEFAULTS)

DB_PASSWORD_ENV = ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD")
SFTP_PASSWORD_ENV = ("PDRFLOW_SFTP_PASSWORD", "PDR_STORAGE_PASSWORD")

SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=100)]


def _secret_from_env(names: tuple[str, ...]) -> SecretStr | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return SecretStr(value)
    return None


class _PasswordFromEnv(BaseModel):
    """A section holding a password from the environment: pickling leaves the password out, and
    unpickling reads it from the environment of the receiving process again.

    Configs are pickled to the scheduler (the dashboard plugin) and to every worker (run
    settings); distributed logs RPC payloads at debug level, and the messages cross the network
    without TLS, so a pickled SecretStr would carry the plain password into logs and onto the
    wire. Workers, the scheduler and SLURM jobs inherit the driver's environment.
    """

    _PASSWORD_ENV: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["__dict__"] = {**state["__dict__"], "password": None}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        state["__dict__"] = {**state["__dict__"], "password": _secret_from_env(self._PASSWORD_ENV)}
        super().__setstate__(state)


def password_variables(model: type) -> tuple[str, ...]:
    """The environment variables a section model's password is read from, first set wins (empty: it has none)."""
    return model._PASSWORD_ENV if issubclass(model, _PasswordFromEnv) else ()


class _Section(BaseModel):
    # allow_inf_nan=False: a NaN/inf timeout, backoff or runtime is always a mistake (and an
    # infinite backoff hangs the driver). Grid values are checked by pdrflow.grid instead.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KindSection(_Section):
    """The model of one kind of a storage or cluster section. A kind narrows ``kind`` to its own name,
    ``kind: Literal["<kind>"]``, the key of its defaults in pdrflow.yaml and the name of its module."""

    kind: str  # selects this section's keys
    # Keys holding a local path given relative to the config file (resolved against its directory when read).
    _CONFIG_RELATIVE: ClassVar[tuple[str, ...]] = ()

    def local_directories(self) -> dict[str, Path]:
        """Key -> a directory on this host the kind creates or writes below; config loading refuses one
        that exists as something else (a typo, not an outage)."""
        return {}


def _archive_mode(value: object, *, owner: int, what: str) -> str:
    """An octal permission string ("0640"), normalised to four digits; refused when unsafe or unusable."""
    if not isinstance(value, str):
        # Unquoted in YAML, 0640 is read as the number 416 and 640 as decimal 640: only a string is unambiguous.
        raise ValueError(f'write the mode as a quoted octal string like "0640", got {shown(value)}')  # noqa: TRY004
    if not re.fullmatch(r"[0-7]{3,4}", value):
        raise ValueError(f'must be an octal mode like "0640", got {shown(value)}')
    bits = int(value, 8)
    if bits & 0o7000:
        raise ValueError(f"a setuid, setgid or sticky bit is refused: archived {what} never need one")
    if bits & 0o002:
        raise ValueError(f"world write is refused: every user of the machine could change the archived {what}")
    if bits & owner != owner:
        # pdrflow reads every file back to verify it and must enter and write its own directories.
        raise ValueError(f"must give the owner at least {owner:04o}: pdrflow itself reads and writes the archived "
                         f"{what}")
    return f"{bits:04o}"


def _file_mode(value: object) -> str:
    return _archive_mode(value, owner=0o600, what="files")


def _dir_mode(value: object) -> str:
    return _archive_mode(value, owner=0o700, what="directories")


FileMode = Annotated[str, PlainValidator(_file_mode)]
DirMode = Annotated[str, PlainValidator(_dir_mode)]


class StorageSection(KindSection):
    """What every storage kind's section has (its model subclasses this one)."""

    # Set explicitly, whatever the umask (the server's, over SFTP). null (also a section built in Python
    # without them): the umask decides.
    file_mode: FileMode | None = Field(
        default=None,
        description=(
            "archived files: owner and group read, others nothing, whatever the umask (null: umask)"
        ),
    )
    dir_mode: DirMode | None = Field(
        default=None,
        description=(
            "directories pdrflow creates in the archive; existing ones are left alone (null: umask)"
        ),
    )
    # Archivals writing at once from all workers together (for SFTP: SSH connections; sshd drops unauthenticated
    # ones beyond its MaxStartups, 10 by default); null (also built in Python without it): no limit.
    max_connections: int | None = Field(
        default=None, ge=1,
        description=(
            "archive connections open at once from all workers together, one per archival (over SFTP, sshd drops "
            "unauthenticated ones beyond MaxStartups, 10 by default); null: no limit"
        ),
    )


class ClusterSection(KindSection):
    """What every cluster kind's section has (its model subclasses this one)."""

    dashboard_address: str | None = Field(
        description="host:port of the Dask dashboard with the pdrflow page (loopback: on a cluster the run prints the "
                    "ssh tunnel to it); null: none",
    )
    security: Literal["tls", "none"] = Field(
        description="tls: per-run certificates, no one else can connect; none: plain TCP (warns)",
    )


class _WithModes(Protocol):
    @property
    def file_mode(self) -> str | None: ...

    @property
    def dir_mode(self) -> str | None: ...


def archive_modes(storage: _WithModes) -> tuple[int | None, int | None]:
    """(file mode, directory mode) of a storage section as numbers, None where null."""
    return (None if storage.file_mode is None else int(storage.file_mode, 8),
            None if storage.dir_mode is None else int(storage.dir_mode, 8))


@dataclass(frozen=True)
class StorageKind:
    """What ``pdrflow/storage/<kind>.py`` declares as its module-level ``KIND``."""

    SECTION: ClassVar[type[KindSection]] = StorageSection  # what every kind's model subclasses
    config: type[StorageSection]  # the section's model for this kind
    open: Callable[[Any], Storage]  # the section -> an open Storage (its heavy imports happen only in here)
    # The whole config -> None, or ConfigError: what this kind needs of the other sections (checked at loading)
    check: Callable[[Config], None] | None = None


@dataclass(frozen=True)
class ClusterKind:
    """What ``pdrflow/cluster/<kind>.py`` declares as its module-level ``KIND``."""

    SECTION: ClassVar[type[KindSection]] = ClusterSection  # what every kind's model subclasses
    config: type[ClusterSection]  # the section's model for this kind
    # (config, lease) -> a context manager of the running cluster (distributed, dask-jobqueue imported only in here)
    start: Callable[[Config, GridLease | None], AbstractContextManager[ClusterHandle]]
    # Called first by `pdrflow run`: True in a process that served the cluster instead of driving it
    # (allocation's non-driver ranks); None: every process is the driver.
    serve: Callable[[Config], bool] | None = None
    # (the cluster section, the environment) -> where its workers run: all on this host or maybe elsewhere,
    # which decides whether an SQLite ledger is safe. None: not known, so possibly elsewhere.
    placement: Callable[[Any, Mapping[str, str]], Placement] | None = None
    # The whole config -> None, or ConfigError: what this kind needs of the other sections (checked at loading)
    check: Callable[[Config], None] | None = None
    # True: every worker is a child process of the driver on this machine and stops with it. Then scratch an
    # interrupted run leaves is swept at once, an SQLite ledger on a network filesystem is only this host's,
    # and the dashboard needs no ssh tunnel.
    workers_are_children: bool = False
