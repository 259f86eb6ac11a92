"""``pdrflow migrate``: take over a grid the predecessor (pdr_run) computed.

1. Read the old config (and the PDR_* environment, as pdr_run would); refuse what cannot be
   carried over safely (rclone storage, post-processing, eval-only values): exit 2, nothing written.
2. Write the equivalent pdrflow config (checked with ``load_config``) with a new ledger.
3. For each model of the new grid, compare what pdr_run's database recorded with what the new
   config computes (the model hash), and the archive's files (found by pdrflow's layout under the
   storage root, not by the database's stale absolute paths) with pdr_run's checksums.
   Whole models are adopted as ``archived``; the others become ``pending`` with their reason, their
   files found recorded so a later ``pdrflow run`` moves them aside.

Exit 0: everything adopted; 1: some models left to compute; 2: bad input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..grid import model_spec
from ..kosma import layout
from ..kosma.parameters import PARAMETERS, ParamValue
from .predecessor import ORIGIN, Note, OldConfig, read_old_config
from .predecessor_db import OldModel, read_old_models
from .translate import build_document, close, render

if TYPE_CHECKING:
    from ..config import Config
    from ..grid import Identity, ModelSpec
    from ..kosma.installation import Installation
    from ..ledger.adopt import FoundFile
    from ..storage.base import Storage

EXIT_OK, EXIT_LEFT, EXIT_BAD_INPUT = 0, 1, 2


class Untranslatable(ConfigError):
    """The old config holds something pdrflow cannot carry over safely; ``notes`` lists all of it."""

    def __init__(self, notes: Sequence[Note]) -> None:
        super().__init__("; ".join(str(n) for n in notes))
        self.notes = list(notes)


@dataclass
class ModelReport:
    name: str
    outcome: str  # adopted, already archived, pending, untouched (<state>), not in the new grid
    reason: str | None = None
    predecessor_job: int | None = None


@dataclass
class MigrationReport:
    grid: str
    out: Path
    ledger: str
    notes: list[Note] = field(default_factory=list)
    models: list[ModelReport] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for m in self.models if m.outcome == outcome)

    @property
    def exit_code(self) -> int:
        done = {"adopted", "already archived"}
        return EXIT_OK if all(m.outcome in done for m in self.models) else EXIT_LEFT

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid, "config": str(self.out), "ledger": self.ledger,
            "adopted": self.count("adopted"), "already_archived": self.count("already archived"),
            "pending": self.count("pending"), "not_in_grid": self.count("not in the new grid"),
            "not_translated": [{"key": n.key, "reason": n.text, "matters": n.matters} for n in self.notes],
            "models": [{"name": m.name, "outcome": m.outcome, "reason": m.reason,
                        "predecessor_job": m.predecessor_job} for m in self.models],
            "exit_code": self.exit_code,
        }


# ---- the model hash ---------------------------------------------------------------------------


def _snap(recorded: ParamValue, wanted: ParamValue) -> ParamValue:
    # A database column keeps fewer digits (MySQL FLOAT): equal within that is the config's value.
    return wanted if close(recorded, wanted) else recorded


def _old_spec(model: OldModel, config_spec: ModelSpec, identity: Identity) -> ModelSpec:
    """The spec of the model pdr_run recorded, in pdrflow's terms (values from its database)."""
    wanted = config_spec.parameters
    recorded = {"metallicity": model.parameters.get("zmetal"), "density": model.parameters.get("xnsur"),
                "mass": model.mass, "fuv": model.parameters.get("sint")}
    axes = {axis: float(_snap(value, config_spec.axes[axis])) if value is not None else config_spec.axes[axis]
            for axis, value in recorded.items()}
    parameters: dict[str, ParamValue] = {}
    for p in PARAMETERS:  # the axis parameters too (xnsur, sint, zmetal, rtot): as pdr_run recorded them
        if p.name in model.parameters:
            parameters[p.name] = _snap(model.parameters[p.name], wanted[p.name])
        else:
            parameters[p.name] = wanted[p.name]  # a column pdr_run's schema of the day lacked
    elements = {key: float(_snap(model.elements[key], value)) if key in model.elements else value
                for key, value in config_spec.elements.items()}
    network = model.network_species or list(config_spec.network_species)
    onion = model.onion_species or list(config_spec.onion_species)
    varied = {key: parameters[key] for key in config_spec.varied}
    return model_spec(model.name, axes, parameters, onion, network, elements, identity, varied)


def _differences(old: ModelSpec, new: ModelSpec) -> str:
    diffs: list[str] = []
    for key, value in new.parameters.items():
        if key in old.parameters and not close(old.parameters[key], value):
            diffs.append(f"{key} {old.parameters[key]!r} (config: {value!r})")
    if sorted(old.onion_species) != sorted(new.onion_species):
        diffs.append(f"onion species {' '.join(old.onion_species)} (config: {' '.join(new.onion_species)})")
    if list(old.network_species) != list(new.network_species):
        diffs.append("another chemical network")
    for key, value in new.elements.items():
        if not close(old.elements.get(key, value), value):
            diffs.append(f"abundance {key} {old.elements[key]!r} (config: {value!r})")
    text = ", ".join(diffs[:4]) + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")
    return f"pdr_run computed it with {text or 'other inputs'}"


def _code_difference(model: OldModel, installation: Installation, chem_rates: str) -> str | None:
    exe = model.provenance.get("executable") or {}
    recorded = (exe.get("sha256") or "").lower()
    if recorded and recorded != installation.identity.pdr_sha256:
        return (f"pdr_run ran a PDR executable with sha256 {recorded[:12]}, the installation's "
                f"{installation.pdr_executable.name} is {installation.identity.pdr_sha256[:12]}")
    chem = (model.provenance.get("chem_database") or {}).get("file")
    if chem and chem != chem_rates:
        return f"pdr_run used the rate file {chem}, the new config links {chem_rates}"
    return None


# ---- the archive ------------------------------------------------------------------------------


def _found_files(storage: Storage, paths: Sequence[str], recorded: Mapping[str, Any]) -> tuple[list[FoundFile],
                                                                                               list[str], list[str]]:
    """(files found, missing paths, checksum problems) at the archive paths."""
    from ..ledger.adopt import FoundFile

    found: list[FoundFile] = []
    missing: list[str] = []
    damaged: list[str] = []
    for path in paths:
        size = storage.stat(path)
        if size is None:
            missing.append(path)
            continue
        digest = storage.checksum(path)
        if digest is None:  # gone between the two calls
            missing.append(path)
            continue
        record = recorded.get(path.rsplit("/", 1)[-1])
        found.append(FoundFile(path, size, digest, record.sha256 if record else None))
        if record is None:
            continue
        if record.sha256 != digest:
            sizes = f" (size {size}, pdr_run recorded {record.size})" if record.size not in (None, size) else ""
            damaged.append(f"{path}: sha256 differs from pdr_run's record{sizes}")
        elif record.size is not None and record.size != size:
            damaged.append(f"{path}: size {size}, pdr_run recorded {record.size}")
    return found, missing, damaged


def _provenance(model: OldModel, old: OldConfig, spec: ModelSpec, installation: Installation) -> dict[str, Any]:
    exe = model.provenance.get("executable") or {}
    chem = model.provenance.get("chem_database") or {}
    return {
        "adopted_from": ORIGIN,
        "adopted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "predecessor": model.provenance,
        "predecessor_database": old.database.describe(),
        "predecessor_config": str(old.path),
        "started": model.provenance.get("time_of_start"),
        "ended": model.provenance.get("time_of_finish"),
        "host": None,
        "pdr_executable": {"path": str(installation.pdr_executable), "sha256": exe.get("sha256") or "not recorded",
                           "revision": exe.get("revision"), "compiled": exe.get("compilation_date")},
        "onion_executable": {"path": str(installation.onion_executable), "sha256": installation.identity.onion_sha256,
                             "revision": None, "compiled": None, "note": "not recorded by pdr_run; the installation's"},
        "chem_rates": {"file": chem.get("file") or installation.chem_rates.name, "origin": chem.get("origin"),
                       "sha256": installation.identity.chem_rates_sha256},
        "model": spec.to_json(),
    }


# ---- the command ------------------------------------------------------------------------------


def _same_database(config: Config, old: OldConfig) -> bool:
    url = config.database.sqlalchemy_url()
    if old.database.kind != "sqlite" or not url.drivername.startswith("sqlite") or not url.database:
        return False
    return Path(url.database).resolve() == (old.database.path or Path()).resolve()


def _write_candidate(text: str, out: Path) -> Path:
    # Beside the target, so relative paths (the SQLite ledger) resolve as they will in the real file.
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".migrate.yaml", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    return Path(name)


def _publish(candidate: Path, out: Path) -> None:
    try:
        os.link(candidate, out)  # never replaces: an --out created meanwhile is refused, not overwritten
    except FileExistsError:
        raise ConfigError(f"--out {out}: created meanwhile by someone else; not overwritten") from None
    finally:
        candidate.unlink(missing_ok=True)


def migrate(old_path: Path, out: Path, ledger_url: str | None = None,
            environ: Mapping[str, str] | None = None) -> MigrationReport:
    """Run the whole migration; ConfigError (exit 2) before anything is written on bad input."""
    from ..config import load_config
    from ..grid import expand_grid
    from ..kosma.installation import resolve_installation

    environ = os.environ if environ is None else environ
    out = out.expanduser().absolute()
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out}: exists; pdrflow migrate never overwrites a file (choose another name)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")
    old = read_old_config(old_path, environ)
    refused = [note for note in old.notes if note.matters]
    if refused:
        raise Untranslatable(refused)
    models = read_old_models(old.database, old.db_password, old.grid)
    notes = list(old.notes)
    document = build_document(old, models, ledger_url, notes)
    candidate = _write_candidate(render(document, old.path), out)
    try:
        try:
            config = load_config(candidate)
        except ConfigError as exc:
            raise ConfigError(f"the translated config is not valid: {exc}") from None
        if _same_database(config, old):
            raise ConfigError("--ledger: that is pdr_run's own database; pdrflow's ledger must be a new one")
        installation = resolve_installation(config.kosma_tau)
        specs = {spec.name: spec for spec in expand_grid(config, installation.identity)}
        report = MigrationReport(grid=old.grid, out=out, ledger=config.database.sqlalchemy_url().render_as_string(
            hide_password=True), notes=notes)
        adoptions, leftovers = _examine(config, old, models, specs, installation, report)
        _register(config, adoptions, leftovers, report)
        _publish(candidate, out)
    finally:
        candidate.unlink(missing_ok=True)
    return report


def _examine(config: Config, old: OldConfig, models: Sequence[OldModel], specs: Mapping[str, ModelSpec],
             installation: Installation, report: MigrationReport) -> tuple[list[Any], list[Any]]:
    from ..ledger.adopt import Adoption, Leftover
    from ..storage import StorageError, open_storage

    by_name = {model.name: model for model in models}
    chem_rates = installation.chem_rates.name
    adoptions: list[Adoption] = []
    leftovers: list[Leftover] = []
    try:
        with open_storage(config.storage) as storage:
            for name, spec in specs.items():
                model = by_name.get(name)
                paths = [target for _, target in layout.staged_files(old.grid, name, spec.onion_species,
                                                                        model.with_mcdrt if model else True)]
                recorded = model.recorded if model else {}
                found, missing, damaged = _found_files(storage, paths, recorded)
                reasons: list[str] = []
                provenance = None
                if model is None:
                    reasons.append("not in pdr_run's database")
                else:
                    provenance = {"predecessor": model.provenance, "adopted_from": None}
                    old_spec = _old_spec(model, spec, installation.identity)
                    if model.status != "finished":
                        reasons.append(f"pdr_run status {model.status!r}")
                    if old_spec.model_hash != spec.model_hash:
                        reasons.append(_differences(old_spec, spec))
                    code = _code_difference(model, installation, chem_rates)
                    if code:
                        reasons.append(code)
                if model is not None:
                    reasons += [f"missing {path}" for path in missing] + damaged
                if reasons:
                    reason = "; ".join(reasons)
                    leftovers.append(Leftover(spec, reason, found, provenance))
                    report.models.append(ModelReport(name, "pending", reason, model.job_id if model else None))
                else:
                    assert model is not None
                    adoptions.append(Adoption(spec, found, _provenance(model, old, spec, installation)))
                    report.models.append(ModelReport(name, "adopted", None, model.job_id))
    except StorageError as exc:
        raise ConfigError(f"storage: cannot read the archive: {exc}") from None
    for model in models:
        if model.name not in specs:
            report.models.append(ModelReport(model.name, "not in the new grid", "pdr_run's database holds it, the "
                                             "new config's axes do not produce this name; left alone", model.job_id))
    return adoptions, leftovers


def _register(config: Config, adoptions: Sequence[Any], leftovers: Sequence[Any], report: MigrationReport) -> None:
    from ..ledger.adopt import adopt_models
    from ..ledger.lease import GridLease
    from ..ledger.open import open_ledger

    ledger = open_ledger(config.database)
    try:
        with GridLease(ledger, config.grid.name):  # no driver runs the grid while models are taken over
            result = adopt_models(ledger, config.grid.name, adoptions, leftovers, ORIGIN)
    finally:
        ledger.close()
    outcome = {name: "already archived" for name in result.already_archived}
    outcome.update({name: f"untouched ({state})" for name, state in result.untouched})
    for entry in report.models:
        if entry.name in outcome:
            entry.outcome = outcome[entry.name]


__all__ = ["EXIT_BAD_INPUT", "EXIT_LEFT", "EXIT_OK", "MigrationReport", "Untranslatable", "migrate"]
