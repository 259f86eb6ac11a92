"""The run configuration: the pydantic models of one YAML file over the shipped defaults.

Defaults live in ``pdrflow.yaml`` (read through ``dask.config``); the models below have no
defaults of their own except "absent". Secrets never come from the YAML: the database and
SFTP passwords are read from the environment only. Reading and checking the file itself is
:mod:`.loading`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import dask.config
import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr, field_validator

from ..errors import ConfigError, shown  # noqa: F401 - ConfigError re-exported, callers catch it from here

if TYPE_CHECKING:  # SQLAlchemy is imported only where a URL is used: `pdrflow status` stays fast
    from sqlalchemy.engine import URL

DEFAULTS_FILE = Path(__file__).parent.parent / "pdrflow.yaml"  # shipped in the package: every default
with DEFAULTS_FILE.open() as _f:
    dask.config.update_defaults(yaml.safe_load(_f))

DB_PASSWORD_ENV = ("PDRFLOW_DB_PASSWORD", "PDR_DB_PASSWORD")
SFTP_PASSWORD_ENV = ("PDRFLOW_SFTP_PASSWORD", "PDR_STORAGE_PASSWORD")

SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=100)]
# Names a helper executable must not take: they are pdrflow's own files in a model's scratch dir.
_RESERVED_SCRATCH_NAMES = frozenset({"pdrexe", "onionexe", "PDRNEW.INP", "pdr_config.json", "ONION3.INP", "CTRL_IND",
                                     "pdrinpdata", "onioninpdata", "In", "pdroutput", "onionoutput", "Out"})


def _scalar(value: object) -> int | float | str:
    # Strict on purpose: pydantic's lax mode turns `true` into 1 and a nested list into an
    # error per union member; one clear message per value is better, and a bool is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        # ValueError, not TypeError: pydantic reports only a ValueError as a validation error.
        raise ValueError(f"expected a number or a numeric string, got {shown(value)}")  # noqa: TRY004
    return value


def _scalar_or_list(value: object) -> int | float | str | list[int | float | str]:
    if isinstance(value, list):
        return [_scalar(item) for item in value]
    return _scalar(value)


Scalar = Annotated[int | float | str, PlainValidator(_scalar)]
ScalarOrList = Annotated[int | float | str | list[int | float | str], PlainValidator(_scalar_or_list)]


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


class _Section(BaseModel):
    # allow_inf_nan=False: a NaN/inf timeout, backoff or runtime is always a mistake (and an
    # infinite backoff hangs the driver). Grid values are checked by pdrflow.grid instead.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    parameters: dict[str, ScalarOrList] = {}  # any KOSMA-tau parameter, fixed or varied
    abundances: dict[str, Scalar] = {}  # element fractions overriding the defaults
    # "pdrflow": a value between tenth-dex steps gets a disambiguated name (34.7712);
    # "predecessor": rounded tenth-dex names as pdr_run gave them (to continue an old grid).
    naming: Literal["pdrflow", "predecessor"]


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
    pdrnew_template: Path | None  # PDRNEW.INP template with KT_VAR<name>_ placeholders; null: pdrflow's own
    json_template: Path | None  # pdr_config.json template (JSON, // comments allowed); null: pdrflow's own
    model_grid: bool  # true: write the *MODEL GRID <name> line (the code must then run as PDR_GRID.JOB)
    required_outputs: list[str]  # scratch-relative outputs a run must write; the others are archived if present

    @field_validator("onion_species", "network_species")
    @classmethod
    def _unique_species(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        duplicates = sorted({s for s in value if value.count(s) > 1})
        if duplicates:
            raise ValueError(f"species listed twice: {', '.join(duplicates)}")
        return value

    @field_validator("network_species")
    @classmethod
    def _some_network(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("needs at least one species (or null for the typical KOSMA-tau network)")
        return value

    @field_validator("helper_executables")
    @classmethod
    def _helper_names(cls, value: list[str]) -> list[str]:
        # Helpers are linked into scratch under their own name: a path would pull in files from
        # outside the installation, a reserved name would clobber pdrflow's own scratch files.
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", name) or name in _RESERVED_SCRATCH_NAMES:
                raise ValueError(f"{shown(name)} must be a plain file name in kosma_tau.home, not a path "
                                 f"or one of pdrflow's scratch names")
        return value


class DatabaseConfig(_Section, _PasswordFromEnv):
    _PASSWORD_ENV = DB_PASSWORD_ENV
    url: str
    # Ledger sessions open at once from all workers together (the driver's few aside); null: no limit.
    max_connections: int | None = Field(default=None, ge=1)  # also null when built in Python without it
    password: SecretStr | None = None  # from the environment only

    def sqlalchemy_url(self) -> URL:
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        if self.password is not None and not url.drivername.startswith("sqlite"):
            url = url.set(password=self.password.get_secret_value())
        return url


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


class LocalStorageConfig(_Section):
    kind: Literal["local"]  # selects this section's keys
    root: Path  # the archive directory; grids go below it
    # Set explicitly, whatever the umask. null (also a section built in Python without them): the umask decides.
    file_mode: FileMode | None = None  # octal, e.g. "0640": every archived file
    dir_mode: DirMode | None = None  # octal, e.g. "0750": every directory pdrflow creates in the archive
    # Archivals writing at once from all workers together; null (also built in Python without it): no limit.
    max_connections: int | None = Field(default=None, ge=1)


class SftpStorageConfig(_Section, _PasswordFromEnv):
    _PASSWORD_ENV = SFTP_PASSWORD_ENV

    kind: Literal["sftp"]  # selects this section's keys
    # A host name, address or ~/.ssh/config Host alias; no leading "-" (never an ssh option).
    host: str = Field(pattern=r"^[A-Za-z0-9_.:\[\]%][A-Za-z0-9_.:\[\]%-]*$", max_length=255)
    port: int | None = Field(ge=1, le=65535)
    username: str | None = Field(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$", max_length=64)
    root: str = Field(pattern=r"^/", max_length=4096)  # absolute directory on the server
    # Set explicitly on the server (chmod), whatever its umask. null (also when built in Python without them):
    # the server's umask decides.
    file_mode: FileMode | None = None  # octal, e.g. "0640": every archived file
    dir_mode: DirMode | None = None  # octal, e.g. "0750": every directory pdrflow creates in the archive
    key_filename: Path | None
    known_hosts: Path | None
    ssh_config: Path | None
    connect_timeout: float = Field(gt=0)
    operation_timeout: float = Field(gt=0)
    files_in_flight: int = Field(ge=1, le=64)
    # SSH connections open at once from all workers together, one per archival (sshd drops unauthenticated
    # ones beyond its MaxStartups, 10 by default); null (also built in Python without it): no limit.
    max_connections: int | None = Field(default=None, ge=1)
    password: SecretStr | None = None  # from the environment only


StorageConfig = Annotated[LocalStorageConfig | SftpStorageConfig, Field(discriminator="kind")]


def archive_modes(storage: LocalStorageConfig | SftpStorageConfig) -> tuple[int | None, int | None]:
    """(file mode, directory mode) of a storage section as numbers, None where null."""
    return (None if storage.file_mode is None else int(storage.file_mode, 8),
            None if storage.dir_mode is None else int(storage.dir_mode, 8))


class LocalClusterConfig(_Section):
    kind: Literal["local"]  # selects this section's keys
    n_workers: int | None = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    dashboard_address: str | None  # host:port of the Dask dashboard (with the pdrflow page); null: none
    security: Literal["tls", "none"]  # tls: per-run certificates, only this run's processes may connect


class SlurmClusterConfig(_Section):
    """dask-jobqueue SLURMCluster; a key left null falls back to the user's dask `jobqueue.slurm` config."""

    kind: Literal["slurm"]  # selects this section's keys
    queue: str | None  # the partition
    account: str | None  # sbatch --account
    cores: int | None = Field(ge=1)  # per worker job
    memory: str | None  # per worker job, e.g. "4GB"
    processes: int | None = Field(ge=1)
    walltime: str | None  # e.g. "02:00:00"
    job_extra_directives: list[str] | None  # more #SBATCH lines, e.g. ["--qos=long"]
    job_script_prologue: list[str] | None  # module loads, conda activate, ...
    interface: str | None  # network interface the workers reach the scheduler on, e.g. ib0
    local_directory: str | None  # worker spill directory on the node
    log_directory: str | None  # where the worker jobs' SLURM logs go
    min_jobs: int = Field(ge=0)
    max_jobs: int = Field(ge=1)
    submit_interval: float = Field(ge=0)  # seconds at least between two sbatch calls (slurmctld takes bursts badly)
    # 0: each archival runs on the compute node that holds the model's outputs; N: on N worker processes
    # on the driver's host (login or transfer node), for compute nodes that cannot reach the archive.
    archive_workers: int = Field(default=0, ge=0, le=64)  # also 0 when built in Python without it
    dashboard_address: str | None  # host:port of the Dask dashboard (with the pdrflow page); null: none
    security: Literal["tls", "none"]  # tls: per-run certificates, only this run's processes may connect


class AllocationClusterConfig(_Section):
    """Scheduler, driver and workers as the srun tasks of one allocation (dask-jobqueue's SLURMRunner)."""

    kind: Literal["allocation"]  # selects this section's keys
    interface: str | None  # network interface between the allocation's nodes
    scheduler_directory: str | None  # where the scheduler file goes (every task must see it)
    dashboard_address: str | None  # host:port of the Dask dashboard (with the pdrflow page); null: none
    security: Literal["tls", "none"]  # tls: per-run certificates, only this run's processes may connect


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
    # A directory the compute nodes and the driver's host all see (a shared filesystem): with
    # cluster.slurm.archive_workers, each computed model's outputs move here from node-local scratch.
    staging: Path | None = None  # also null when built in Python without it

    def resolved_root(self) -> Path:
        return self.root if self.root is not None else default_scratch_root()


class RunConfig(_Section):
    # Refuse a grid bigger than this before expanding it (a typo like 10^4 x 10^4 values would
    # otherwise take the driver's memory and hours of registration). Raise it if you mean it.
    max_models: int = Field(ge=1)
    max_in_flight: int | None = Field(ge=1)
    expected_model_seconds: float | None = Field(gt=0)  # null: learned from finished models
    archive_attempts: int = Field(ge=1, le=100)
    archive_backoff_initial: float = Field(ge=0)
    archive_backoff_max: float = Field(ge=0)
    log_file: Path | None  # relative to the config file; null: pdrflow-<grid>.log next to it


class StructureMapping(_Section):
    """Datasets of the archived ``pdrstruct<J>.hdf5`` the reader takes each quantity from."""

    depth_cm: str  # distance from the clump surface [cm]
    av: str  # visual extinction from the surface [mag]
    tgas: str  # gas temperature [K]
    tdust: str  # dust temperature [K] (optional in the file)
    nh: str  # total H nuclei density [cm^-3] (optional in the file)
    abundances: str  # group with one dataset per species, relative to H nuclei


class ChemistryMapping(_Section):
    """Datasets of the archived ``pdrchem<J>.hdf5`` (an optional output) holding the column densities."""

    species: str  # species names (fixed-length ASCII), in the order of the column densities
    column_density: str  # per species, surface to centre [cm^-2]


class LinebtMapping(_Section):
    """Column names (the last ``#`` header line) of the archived ``linebt_<S>.out`` line tables."""

    transition: str  # the transition's name
    wavelength_um: str  # [µm]; lines are matched by wavelength, not by name
    intensity: str  # integrated intensity, clump average [erg s^-1 cm^-2 sr^-1]
    peak_tb: str  # line-centre brightness temperature, clump average [K]


class ResultsConfig(_Section):
    """How archived outputs are read back (report, export, notebook), and what export and report derive."""

    structure: StructureMapping
    chemistry: ChemistryMapping
    linebt: LinebtMapping
    line_ratios: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+_]+/[A-Za-z0-9+_]+$", max_length=80)]]
    report_ratios: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+_]+/[A-Za-z0-9+_]+$", max_length=80)]]
    outlier_dex: float = Field(gt=0)


class Config(_Section):
    grid: GridConfig
    kosma_tau: KosmaTauConfig
    database: DatabaseConfig
    storage: StorageConfig
    cluster: ClusterConfig
    scratch: ScratchConfig
    run: RunConfig
    results: ResultsConfig
    path: Path  # the YAML file this came from (not a YAML key)


def _secret_from_env(names: tuple[str, ...]) -> SecretStr | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return SecretStr(value)
    return None


# The sections of a config file, in the order they are usually written.
SECTION_NAMES: tuple[str, ...] = tuple(name for name in Config.model_fields if name != "path")
