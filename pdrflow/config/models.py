"""The run configuration: the pydantic models of one YAML file over the shipped defaults.

Defaults live in ``pdrflow.yaml`` (read through ``dask.config``); the models below have no
defaults of their own except "absent". Secrets never come from the YAML: the database and
SFTP passwords are read from the environment only. Reading and checking the file itself is
:mod:`.loading`. The model of each storage and cluster kind is in that kind's own module
(``pdrflow/storage/local.py``, ...), found by :mod:`.kinds`; the shared types are :mod:`.sections`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import Field, PlainValidator, SecretStr, field_validator

from ..errors import ConfigError, shown  # noqa: F401 - ConfigError re-exported, callers catch it from here
from .kinds import CLUSTER_KINDS, STORAGE_KINDS, discriminated
from .sections import DB_PASSWORD_ENV, ClusterSection, SafeName, StorageSection, _PasswordFromEnv, _Section

if TYPE_CHECKING:  # SQLAlchemy is imported only where a URL is used: `pdrflow status` stays fast
    from sqlalchemy.engine import URL

    # What mypy sees: what every kind has (a kind's own keys are read in its module, after an isinstance).
    # At run time: the union of the kinds found (config.kinds), so no kind is named here.
    StorageConfig: TypeAlias = StorageSection
    ClusterConfig: TypeAlias = ClusterSection
else:
    StorageConfig = discriminated(STORAGE_KINDS)
    ClusterConfig = discriminated(CLUSTER_KINDS)

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
    parameters: dict[str, ScalarOrList] = Field(default_factory=dict)  # any KOSMA-tau parameter, fixed or varied
    abundances: dict[str, Scalar] = Field(default_factory=dict)  # element fractions overriding the defaults
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


# The sections of a config file, in the order they are usually written.
SECTION_NAMES: tuple[str, ...] = tuple(name for name in Config.model_fields if name != "path")
