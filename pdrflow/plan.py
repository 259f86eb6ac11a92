"""What a run will do, worked out and checked before anything is written: the installation, the models, the
settings every task gets. Light on purpose (no distributed, no SQLAlchemy): a refused config costs no
cluster imports, and ``--dry-run`` and ``verify`` share these checks with the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config
from .errors import ConfigError, shown
from .grid import ModelSpec, expand_grid, varied_parameters
from .kosma import layout
from .kosma.installation import Installation, executable_version, resolve_installation
from .states import JobState
from .tasks.types import RunSettings

# The states a run takes up; a resubmit also gives failed models another try.
RUN_STATES = (JobState.PENDING, JobState.RUNNING, JobState.COMPUTED, JobState.FAILED_STORAGE)
RESUBMIT_STATES = (*RUN_STATES, JobState.FAILED_MODEL)


@dataclass
class Plan:
    installation: Installation
    specs: dict[str, ModelSpec]  # by model hash
    settings: RunSettings


def plan_run(config: Config) -> Plan:
    """Everything that can be checked without writing anything (raises ConfigError)."""
    installation = resolve_installation(config.kosma_tau)
    installation.templates.check_uses(varied_parameters(config.grid))
    specs = {spec.model_hash: spec for spec in expand_grid(config, installation.identity)}
    settings = RunSettings(
        grid=config.grid.name,
        installation=installation,
        pdr_version=executable_version(installation.pdr_executable),
        onion_version=executable_version(installation.onion_executable),
        scratch_root=config.scratch.root,
        staging_root=config.scratch.staging,
        keep_failed=config.scratch.keep_failed,
        pdr_timeout=config.kosma_tau.pdr_timeout,
        onion_timeout=config.kosma_tau.onion_timeout,
        database=config.database,
        storage=config.storage,
        required_outputs=check_required_outputs(config.kosma_tau.required_outputs, config.kosma_tau.onion_species),
    )
    return Plan(installation, specs, settings)


def check_required_outputs(required: Sequence[str], onion_species: Sequence[str]) -> tuple[str, ...]:
    """``kosma_tau.required_outputs`` checked against the outputs pdrflow archives (raises ConfigError)."""
    known = [source for source, _ in layout.staged_files("grid", "model", onion_species, with_mcdrt=True)]
    unknown = [name for name in required if name not in known]
    if unknown:
        pdr = [source for source, _ in layout.staged_files("grid", "model", (), with_mcdrt=True)]
        onion = [f"{layout.ONION_OUTPUT_DIR}/{pattern.replace('{S}', '<S>')}"
                 for pattern in (*layout.ONION_FILE_PATTERNS, "TEXTOUT_{S}")]
        raise ConfigError(
            f"kosma_tau.required_outputs: {', '.join(shown(name) for name in unknown)} is not an output pdrflow "
            f"archives; use scratch-relative names among {', '.join(pdr)}, or {', '.join(onion)} with <S> one of "
            f"kosma_tau.onion_species"
        )
    return tuple(dict.fromkeys(required))
