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

    name: SafeName = Field(description="the grid's name: its entry in the ledger and its directory in the archive")
    metallicity: list[Scalar] | None = Field(default=None, description="Z / Z_sun")
    metallicity_percent: list[Scalar] | None = Field(default=None, description="predecessor: \"100\" = 1.00 Z_sun")
    density: list[Scalar] | None = Field(default=None, description="surface H density, cm^-3")
    density_tenthdex: list[Scalar] | None = Field(default=None, description="predecessor: \"30\" = 10^3.0 cm^-3")
    mass: list[Scalar] | None = Field(default=None, description="clump mass, M_sun")
    mass_tenthdex: list[Scalar] | None = Field(default=None, description="predecessor: \"-10\" = 10^-1.0 M_sun")
    fuv: list[Scalar] | None = Field(default=None, description="FUV field, Draine units")
    fuv_tenthdex: list[Scalar] | None = Field(default=None, description="predecessor: \"10\" = 10^1.0")
    parameters: dict[str, ScalarOrList] = Field(
        default_factory=dict, description="any KOSMA-tau parameter, fixed or varied",
    )
    abundances: dict[str, Scalar] = Field(default_factory=dict, description="element fractions overriding the defaults")
    # "pdrflow": a value between tenth-dex steps gets a disambiguated name (34.7712);
    # "predecessor": rounded tenth-dex names as pdr_run gave them (to continue an old grid).
    naming: Literal["pdrflow", "predecessor"] = Field(
        description=(
            "names of the grid points: pdrflow (a value between tenth-dex steps gets a disambiguated name), or "
            "predecessor: pdr_run's rounded tenth-dex names, to continue an old grid"
        ),
    )


class KosmaTauConfig(_Section):
    standin: bool = Field(description="true: use pdrflow's stand-in executables (NOT KOSMA-tau) and input data")
    home: Path | None = Field(description="KOSMA-tau installation (executables, pdrinpdata/, onioninpdata/, In/)")
    pdr_executable: str = Field(description="the PDR code, a file in home")
    onion_executable: str = Field(description="the line radiative transfer code, run once per species")
    helper_executables: list[str] = Field(description="placed in scratch when present; the PDR code calls them")
    chem_rates: str | None = Field(
        description="file in <home>/pdrinpdata linked as pdrinpdata/chem_rates.dat (null: chem_rates.dat)",
    )
    onion_species: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+\-]*$", max_length=40)]] = Field(
        description="the species onion runs once for each",
    )
    network_species: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+\-*]*$", max_length=40)]] | None = Field(
        description="null: the predecessor's 105-species network",
    )
    pdr_timeout: float = Field(gt=0, description="seconds for one PDR run")
    onion_timeout: float = Field(gt=0, description="seconds for one onion run")
    pdrnew_template: Path | None = Field(
        description="your PDRNEW.INP template (KT_VAR<name>_ placeholders); null: pdrflow's own",
    )
    json_template: Path | None = Field(description="your pdr_config.json template; null: pdrflow's own")
    model_grid: bool = Field(
        description="true: write \"*MODEL GRID <name>\" (the code must then be started by PDR_GRID.JOB)",
    )
    required_outputs: list[str] = Field(
        description="scratch-relative outputs a run must write; the others are archived if present",
    )

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
    url: str = Field(description="relative SQLite paths are relative to the config file")
    # Ledger sessions open at once from all workers together (the driver's few aside); null: no limit.
    # also null when built in Python without it
    max_connections: int | None = Field(
        default=None, ge=1,
        description=(
            "ledger sessions open at once from all workers together (plus the driver's few); null: no limit"
        ),
    )
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
    root: Path | None = Field(description="null: $SLURM_TMPDIR, else $TMPDIR, else /tmp (+ /pdrflow-scratch)")
    keep_failed: bool = Field(description="keep a failed model's scratch dir for diagnosis")
    # A directory the compute nodes and the driver's host all see (a shared filesystem): with
    # cluster.slurm.archive_workers, each computed model's outputs move here from node-local scratch.
    # also null when built in Python without it
    staging: Path | None = Field(
        default=None,
        description=(
            "shared directory (every node and the driver's host): outputs move here for archive_workers"
        ),
    )

    def resolved_root(self) -> Path:
        return self.root if self.root is not None else default_scratch_root()


class RunConfig(_Section):
    # Refuse a grid bigger than this before expanding it (a typo like 10^4 x 10^4 values would
    # otherwise take the driver's memory and hours of registration). Raise it if you mean it.
    max_models: int = Field(ge=1, description="a larger grid is refused before it is expanded; raise it if you mean it")
    max_in_flight: int | None = Field(ge=1, description="models submitted at once; null: the cluster's worker slots, so "
                                      "that no model waits on a busy worker ahead of an archival")
    expected_model_seconds: float | None = Field(
        gt=0, description="a model is not started on a worker retiring sooner; null: learned",
    )
    archive_attempts: int = Field(
        ge=1, le=100, description="archival tries per job in one run before it stays failed_storage",
    )
    archive_backoff_initial: float = Field(ge=0, description="seconds; doubles per attempt, with jitter")
    archive_backoff_max: float = Field(ge=0, description="seconds: the longest wait between two archival tries")
    log_file: Path | None = Field(
        description=(
            "the run's log (libraries' and dashboard errors too); null: pdrflow-<grid>.log next to the config; "
            "relative: to the config file"
        ),
    )


class StructureMapping(_Section):
    """Datasets of the archived ``pdrstruct<J>.hdf5`` the reader takes each quantity from."""

    depth_cm: str = Field(description="distance from the clump surface [cm]")
    av: str = Field(description="visual extinction from the surface [mag]")
    tgas: str = Field(description="gas temperature [K]")
    tdust: str = Field(description="dust temperature [K] (optional in the file)")
    nh: str = Field(description="total H nuclei density [cm^-3] (optional in the file)")
    abundances: str = Field(description="group with one dataset per species, relative to H nuclei")


class ChemistryMapping(_Section):
    """Datasets of the archived ``pdrchem<J>.hdf5`` (an optional output) holding the column densities."""

    species: str = Field(description="species names (fixed-length ASCII), in the order of the column densities")
    column_density: str = Field(description="per species, surface to centre [cm^-2]")


class LinebtMapping(_Section):
    """Column names (the last ``#`` header line) of the archived ``linebt_<S>.out`` line tables."""

    transition: str = Field(description="the transition's name")
    wavelength_um: str = Field(description="[µm]; lines are matched by wavelength, not by name")
    intensity: str = Field(description="integrated intensity, clump average [erg s^-1 cm^-2 sr^-1]")
    peak_tb: str = Field(description="line-centre brightness temperature, clump average [K]")


class ResultsConfig(_Section):
    """How archived outputs are read back (report, export, notebook), and what export and report derive."""

    structure: StructureMapping = Field(
        description="pdrstruct<J>.hdf5: quantity -> dataset; a file lacking one is reported with what it holds",
    )
    chemistry: ChemistryMapping = Field(description="pdrchem<J>.hdf5 (optional output): column densities")
    linebt: LinebtMapping = Field(description="linebt_<S>.out: quantity -> column name in the last \"#\" header line")
    line_ratios: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+_]+/[A-Za-z0-9+_]+$", max_length=80)]] = Field(
        description="pdrtpy identifiers numerator/denominator: one FITS model per ratio in `pdrflow export`",
    )
    report_ratios: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+_]+/[A-Za-z0-9+_]+$", max_length=80)]] = Field(
        description="line-ratio maps in `pdrflow report`",
    )
    outlier_dex: float = Field(
        gt=0, description="a cell this far (dex) from what its n and FUV neighbours predict is flagged",
    )


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
