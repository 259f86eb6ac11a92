"""The run configuration: one YAML file over the shipped defaults, validated by pydantic.

Defaults live in ``pdrflow.yaml`` (read through ``dask.config``); the models below have no
defaults of their own except "absent". Secrets never come from the YAML: the database and
SFTP passwords are read from the environment only.
"""

from __future__ import annotations

import difflib
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import dask.config
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import URL, make_url

from .errors import ConfigError

_DEFAULTS_FILE = Path(__file__).with_name("pdrflow.yaml")
with _DEFAULTS_FILE.open() as _f:
    dask.config.update_defaults(yaml.safe_load(_f))

DB_PASSWORD_ENV = ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD")
SFTP_PASSWORD_ENV = ("PDRFLOW_SFTP_PASSWORD", "PDR_STORAGE_PASSWORD")

SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=100)]
Scalar = int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridConfig(_Section):
    """The grid axes. Each axis is given in exactly one notation (see pdrflow.grid)."""

    name: SafeName
    metallicity: list[Scalar] | None = None  # Z / Z_sun
    metallicity_percent: list[Scalar] | None = None  # predecessor: "100" = 1.00 Z_sun
    density: list[Scalar] | None = None  # surface H density, cm^-3
    density_tenthdex: list[Scalar] | None = None  # predecessor: "30" = 10^3.0 cm^-3
    mass: list[Scalar] | None = None  # clump mass, M_sun
    mass_tenthdex: list[Scalar] | None = None  # predecessor: "-10" = 10^-1.0 M_sun
    fuv: list[Scalar] | None = None  # FUV field, Draine units
    fuv_tenthdex: list[Scalar] | None = None  # predecessor: "10" = 10^1.0
    parameters: dict[str, Scalar | list[Scalar]] = {}  # any KOSMA-tau parameter, fixed or varied
    abundances: dict[str, Scalar] = {}  # element fractions overriding the defaults


class KosmaTauConfig(_Section):
    standin: bool
    home: Path | None
    pdr_executable: str
    onion_executable: str
    helper_executables: list[str]
    chem_rates: str | None
    onion_species: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+\-]*$", max_length=40)]]
    network_species: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+\-*]*$", max_length=40)]] | None
    pdr_timeout: float = Field(gt=0)
    onion_timeout: float = Field(gt=0)

    @field_validator("onion_species")
    @classmethod
    def _unique_species(cls, value: list[str]) -> list[str]:
        duplicates = sorted({s for s in value if value.count(s) > 1})
        if duplicates:
            raise ValueError(f"species listed twice: {', '.join(duplicates)}")
        return value


class DatabaseConfig(_Section):
    url: str
    password: SecretStr | None = None  # from the environment only

    def sqlalchemy_url(self) -> URL:
        url = make_url(self.url)
        if self.password is not None and not url.drivername.startswith("sqlite"):
            url = url.set(password=self.password.get_secret_value())
        return url


class LocalStorageConfig(_Section):
    kind: Literal["local"]
    root: Path


class SftpStorageConfig(_Section):
    kind: Literal["sftp"]
    host: str  # a host name, address or ~/.ssh/config Host alias
    port: int | None = Field(ge=1, le=65535)
    username: str | None
    root: str  # absolute directory on the server
    key_filename: Path | None
    known_hosts: Path | None
    ssh_config: Path | None
    connect_timeout: float = Field(gt=0)
    operation_timeout: float = Field(gt=0)
    files_in_flight: int = Field(ge=1, le=64)
    password: SecretStr | None = None  # from the environment only


StorageConfig = Annotated[LocalStorageConfig | SftpStorageConfig, Field(discriminator="kind")]


class LocalClusterConfig(_Section):
    kind: Literal["local"]
    n_workers: int | None = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    dashboard_address: str | None


class SlurmClusterConfig(_Section):
    """dask-jobqueue SLURMCluster; a key left null falls back to the user's dask `jobqueue.slurm` config."""

    kind: Literal["slurm"]
    queue: str | None  # the partition
    account: str | None
    cores: int | None = Field(ge=1)  # per worker job
    memory: str | None  # per worker job, e.g. "4GB"
    processes: int | None = Field(ge=1)
    walltime: str | None  # e.g. "02:00:00"
    job_extra_directives: list[str] | None
    job_script_prologue: list[str] | None  # module loads, conda activate, ...
    interface: str | None
    local_directory: str | None
    log_directory: str | None
    min_jobs: int = Field(ge=0)
    max_jobs: int = Field(ge=1)
    dashboard_address: str | None


class AllocationClusterConfig(_Section):
    """Scheduler, driver and workers as the srun tasks of one allocation (dask-jobqueue's SLURMRunner)."""

    kind: Literal["allocation"]
    interface: str | None
    scheduler_directory: str | None  # where the scheduler file goes (every task must see it)
    dashboard_address: str | None


ClusterConfig = Annotated[
    LocalClusterConfig | SlurmClusterConfig | AllocationClusterConfig, Field(discriminator="kind")
]


def default_scratch_root() -> Path:
    """Node-local scratch of the process asking: $SLURM_TMPDIR, else $TMPDIR, else /tmp."""
    base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR") or tempfile.gettempdir()
    return Path(base) / "pdrflow-scratch"


class ScratchConfig(_Section):
    root: Path | None
    keep_failed: bool

    def resolved_root(self) -> Path:
        return self.root if self.root is not None else default_scratch_root()


class RunConfig(_Section):
    max_in_flight: int | None = Field(ge=1)
    expected_model_seconds: float | None = Field(gt=0)  # null: learned from finished models
    archive_attempts: int = Field(ge=1, le=100)
    archive_backoff_initial: float = Field(ge=0)
    archive_backoff_max: float = Field(ge=0)


class Config(_Section):
    grid: GridConfig
    kosma_tau: KosmaTauConfig
    database: DatabaseConfig
    storage: StorageConfig
    cluster: ClusterConfig
    scratch: ScratchConfig
    run: RunConfig
    path: Path  # the YAML file this came from (not a YAML key)


_KIND_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("storage", "local"): LocalStorageConfig,
    ("storage", "sftp"): SftpStorageConfig,
    ("cluster", "local"): LocalClusterConfig,
    ("cluster", "slurm"): SlurmClusterConfig,
    ("cluster", "allocation"): AllocationClusterConfig,
}
_SECTIONS = ("grid", "kosma_tau", "database", "storage", "cluster", "scratch", "run")
_KIND_SECTIONS = ("storage", "cluster")


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in ("password", "path")]


def _format_validation_error(error: ValidationError, root: type[BaseModel]) -> str:
    messages = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"] if not isinstance(part, int)]
        kind_model = None
        if len(loc) > 2 and loc[0] in _KIND_SECTIONS:
            # Discriminated unions add the tag ("local") to the location: drop it, keep its model.
            kind_model = _KIND_MODELS.get((loc[0], loc[1]))
            loc = [loc[0], *loc[2:]]
        where = ".".join(loc) or "config"
        if item["type"] == "extra_forbidden":
            model = kind_model if kind_model is not None and len(loc) == 2 else _model_at(root, loc[:-1])
            hint = _did_you_mean(loc[-1], _known_keys(model)) if model else ""
            messages.append(f"{where}: unknown key{hint}")
        elif item["type"] == "missing":
            messages.append(f"{where}: required key is missing")
        else:
            value = item.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float) and len(repr(value)) < 60 else ""
            messages.append(f"{where}: {item['msg']}{shown}")
    return "; ".join(messages)


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _merge_defaults(user: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = dask.config.get("pdrflow")
    merged: dict[str, Any] = {}
    for section in _SECTIONS:
        given = user.get(section, {})
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {type(given).__name__}")
        if section in _KIND_SECTIONS:
            kind = given.get("kind", defaults[section]["kind"])
            kind_defaults = defaults[section].get(kind) if isinstance(kind, str) else None
            if kind_defaults is None:
                choices = sorted(k for k in defaults[section] if k != "kind")
                raise ConfigError(f"{section}.kind: unknown kind {kind!r} (choose one of {', '.join(choices)})")
            merged[section] = {**kind_defaults, **given, "kind": kind}
        else:
            merged[section] = dask.config.merge(defaults.get(section, {}), given)
    return merged


def _secret_from_env(names: tuple[str, ...]) -> SecretStr | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return SecretStr(value)
    return None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in the YAML are relative to the YAML file, not to the current directory."""

    def resolve(section: str, key: str) -> None:
        value = data[section].get(key)
        if isinstance(value, str) and value:
            data[section][key] = str((base / Path(value).expanduser()))

    resolve("kosma_tau", "home")
    resolve("scratch", "root")
    if data["storage"].get("kind") == "local":
        resolve("storage", "root")
    url = data["database"].get("url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            data["database"]["url"] = f"sqlite:///{base / relative}"


def parse_config(user: Any, path: Path) -> Config:
    """Validate an already-loaded YAML document (no file-system checks)."""
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    unknown = [key for key in user if key not in _SECTIONS]
    if unknown:
        key = str(unknown[0])
        raise ConfigError(f"{key}: unknown section{_did_you_mean(key, list(_SECTIONS))}")
    data = _merge_defaults(user)
    for section in ("database", "storage"):
        if "password" in data[section]:
            env = DB_PASSWORD_ENV[0] if section == "database" else SFTP_PASSWORD_ENV[0]
            raise ConfigError(f"{section}.password: passwords are never read from the config file; set {env}")
    if "url" in data["database"] and isinstance(data["database"]["url"], str):
        try:
            if make_url(data["database"]["url"]).password is not None:
                raise ConfigError(
                    f"database.url: must not contain a password; set {DB_PASSWORD_ENV[0]} instead"
                )
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - sqlalchemy raises several types for bad URLs
            raise ConfigError("database.url: not a valid database URL") from None
    _resolve_paths(data, path.parent)
    data["database"]["password"] = _secret_from_env(DB_PASSWORD_ENV)
    if data["storage"].get("kind") == "sftp":
        data["storage"]["password"] = _secret_from_env(SFTP_PASSWORD_ENV)
    try:
        config = Config(**data, path=path)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, Config)) from None
    _check_consistency(config)
    return config


def _check_consistency(config: Config) -> None:
    run = config.run
    if isinstance(config.cluster, SlurmClusterConfig) and config.cluster.min_jobs > config.cluster.max_jobs:
        raise ConfigError("cluster.min_jobs: must not be larger than cluster.max_jobs")
    if run.archive_backoff_max < run.archive_backoff_initial:
        raise ConfigError("run.archive_backoff_max: must not be smaller than run.archive_backoff_initial")
    if not math.isfinite(config.kosma_tau.pdr_timeout) or not math.isfinite(config.kosma_tau.onion_timeout):
        raise ConfigError("kosma_tau: timeouts must be finite")
    if config.kosma_tau.standin and config.kosma_tau.home is not None:
        raise ConfigError("kosma_tau.home: give either home or standin: true, not both")
    if not config.kosma_tau.standin and config.kosma_tau.home is None:
        raise ConfigError("kosma_tau.home: required (the KOSMA-tau installation), or set standin: true")
    if isinstance(config.storage, LocalStorageConfig):
        archive = config.storage.root.resolve()
        scratch = config.scratch.resolved_root().resolve()
        if archive == scratch or archive.is_relative_to(scratch) or scratch.is_relative_to(archive):
            raise ConfigError("storage.root: the archive and the scratch root must not contain each other")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError with a one-line reason."""
    config_path = Path(path).expanduser().absolute()
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{config_path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{config_path}: not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{config_path}: invalid YAML{where}: {problem}") from None
    return parse_config(document, config_path)
