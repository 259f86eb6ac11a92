"""``pdrflow list`` and ``pdrflow run --dry-run``: the grid's models before (or while) it runs.

Both only read: the config, the installation (to hash the models) and, when it exists, the ledger
(read-only; an absent ledger is never created, an empty server database never given a schema).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..config import Config
from ..errors import ConfigError, LedgerError
from ..states import STATE_STYLES, JobState
from .common import EXIT_BAD_INPUT, EXIT_OK

if TYPE_CHECKING:
    from ..config import DatabaseConfig
    from ..grid import ModelSpec
    from ..kosma.templates import InputTemplates

NEW = "new"  # a model of the config the ledger does not hold yet (not a JobState: nothing is stored)
NAMES_SHOWN = 20  # names printed per group by the dry run; `pdrflow list --json` gives all
SUGGESTIONS = 3

_REGISTERED_SQL = """
SELECT j.name, j.state, m.model_hash, j.staged_dir FROM jobs j
JOIN models m ON j.model_id = m.id JOIN grids g ON j.grid_id = g.id WHERE g.name = :grid"""


@dataclass(frozen=True)
class Registered:
    """What the ledger holds of one job, as far as listing it needs."""

    state: JobState
    model_hash: str
    staged: bool


def closest_names(name: str, names: Iterable[str]) -> list[str]:
    """The few names most like ``name`` (a typo, a wrong tenth-dex digit), best first."""
    return difflib.get_close_matches(name, list(names), n=SUGGESTIONS, cutoff=0.5)


def suggestion(name: str, names: Iterable[str]) -> str:
    close = closest_names(name, names)
    return f" (closest: {', '.join(close)})" if close else ""


def registered_jobs(database: DatabaseConfig, grid: str) -> dict[str, Registered] | None:
    """The grid's jobs by name, read-only; None when there is no ledger (or an empty database) yet."""
    from ..status import sqlite_path

    path = sqlite_path(database.url)
    rows: list[tuple[Any, ...]]
    if path is not None:
        if not path.exists():
            return None
        try:
            connection = _read_only(path)
            try:
                rows = connection.execute(_REGISTERED_SQL, {"grid": grid}).fetchall()
            finally:
                connection.close()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) and not _has_tables(path):
                return None  # an empty file: no ledger yet
            raise LedgerError(f"cannot read the ledger {path}: {exc} (`pdrflow db current CONFIG` tells its "
                              "schema revision)") from None
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
    else:
        rows_or_none = _server_rows(database, grid)
        if rows_or_none is None:
            return None
        rows = rows_or_none
    return {name: Registered(JobState(state), model_hash, bool(staged)) for name, state, model_hash, staged in rows}


def _read_only(path: Any) -> sqlite3.Connection:
    """mode=ro: never creates, migrates or write-locks the ledger of a running driver. A WAL ledger no one
    has open (no -wal file) is also opened immutable: a read-only reader would otherwise leave the -wal
    and -shm files it had to create behind, and a dry run writes nothing."""
    in_use = path.with_name(path.name + "-wal").exists()
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{'' if in_use else '&immutable=1'}", uri=True,
                           timeout=30)


def _has_tables(path: Any) -> bool:
    connection = _read_only(path)
    try:
        return bool(connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    finally:
        connection.close()


def _server_rows(database: DatabaseConfig, grid: str) -> list[tuple[Any, ...]] | None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from ..ledger.ledger import make_engine
    from ..ledger.migrate import SCHEMA_REVISION, current_revision
    from ..ledger.open import database_error

    engine = make_engine(database.sqlalchemy_url())
    try:
        revision = current_revision(engine)  # not ensure_schema: that would create the tables
        if revision is None:
            return None
        if revision != SCHEMA_REVISION:
            raise LedgerError(f"the ledger's schema is at revision {revision} but this pdrflow needs "
                              f"{SCHEMA_REVISION}: back it up, then run `pdrflow db upgrade CONFIG`")
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(_REGISTERED_SQL), {"grid": grid})]
    except DBAPIError as exc:
        raise database_error(database, exc, doing="read") from None
    finally:
        engine.dispose()


def _grid_specs(config: Config) -> list[ModelSpec]:
    """The models of the config, hashed as the run will hash them (raises ConfigError)."""
    from ..grid import expand_grid, varied_parameters
    from ..kosma.installation import resolve_installation

    installation = resolve_installation(config.kosma_tau)
    installation.templates.check_uses(varied_parameters(config.grid))
    return list(expand_grid(config, installation.identity))


def _state_of(spec: ModelSpec, jobs: dict[str, Registered] | None) -> str:
    job = (jobs or {}).get(spec.name)
    return NEW if job is None else job.state.value


def _conflicts(specs: Sequence[ModelSpec], jobs: dict[str, Registered] | None) -> list[str]:
    """Names the ledger holds with another model hash: `pdrflow run` refuses the whole grid for them."""
    return [spec.name for spec in specs if jobs and spec.name in jobs and jobs[spec.name].model_hash != spec.model_hash]


def _parameters_text(spec: ModelSpec) -> str:
    values = {**spec.axes, **spec.varied}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def cmd_list(config: Config, args: argparse.Namespace, console: Console) -> int:
    specs = _grid_specs(config)
    jobs = registered_jobs(config.database, config.grid.name)
    rows = [(spec, _state_of(spec, jobs)) for spec in specs]
    if args.state:
        rows = [(spec, state) for spec, state in rows if state in args.state]
    if args.json:
        print(json.dumps({
            "grid": config.grid.name, "ledger": jobs is not None, "total": len(specs), "listed": len(rows),
            "models": [{"name": spec.name, "state": state, "model_hash": spec.model_hash, "axes": dict(spec.axes),
                        "varied": dict(spec.varied)} for spec, state in rows],
        }, indent=2))
        return EXIT_OK
    for spec, state in rows:
        style = STATE_STYLES.get(JobState(state), "white") if state != NEW else "cyan"
        console.print(f"{spec.name}  [{style}]{state}[/]  {_parameters_text(spec)}", soft_wrap=True)
    where = "" if jobs is not None else " (not run yet: no ledger)"
    console.print(f"{len(rows)} of {len(specs)} models of grid {config.grid.name}{where}", markup=False)
    return EXIT_OK


def _names(console: Console, title: str, names: Sequence[str], style: str) -> None:
    if not names:
        return
    console.print(f"[{style}]{title}[/] ({len(names)}): " + ", ".join(names[:NAMES_SHOWN])
                  + (f", ... and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""),
                  soft_wrap=True)


def cmd_dry_run(config: Config, args: argparse.Namespace, console: Console, resubmit: bool = False) -> int:
    """What ``pdrflow run`` (or resubmit) would do, from the same checks, writing nothing."""
    from ..plan import RESUBMIT_STATES, RUN_STATES, plan_run

    plan = plan_run(config)  # every check the run makes before it writes anything
    specs = list(plan.specs.values())
    if args.show_inputs is not None:
        return _show_inputs(config, args.show_inputs, specs, plan.installation.templates)
    jobs = registered_jobs(config.database, config.grid.name)
    conflicts = _conflicts(specs, jobs)
    if conflicts:
        raise ConfigError(f"grid {config.grid.name!r} already holds {len(conflicts)} models under these names "
                          f"computed with other parameters or code (e.g. {conflicts[0]}); use a new grid name")
    states = RESUBMIT_STATES if resubmit else RUN_STATES
    compute: list[str] = []
    archive: list[str] = []
    archived: list[str] = []
    skipped: list[str] = []  # failed_model under `run`: `resubmit` retries them
    for spec in specs:
        job = (jobs or {}).get(spec.name)
        if job is None:
            compute.append(spec.name)
        elif job.state == JobState.ARCHIVED:
            archived.append(spec.name)
        elif job.state not in states:
            skipped.append(spec.name)
        elif job.state in (JobState.COMPUTED, JobState.FAILED_STORAGE) and job.staged:
            archive.append(spec.name)  # staged outputs remain: archival only, as the driver does
        else:
            compute.append(spec.name)
    command = "resubmit" if resubmit else "run"
    console.print(f"dry run of `pdrflow {command}`: nothing was started or written", markup=False)
    console.print(f"grid {config.grid.name}: {len(specs)} models; {len(compute)} to compute, {len(archive)} to "
                  f"archive from staged outputs, {len(archived)} already archived (skipped)"
                  + (f", {len(skipped)} failed_model left alone (`pdrflow resubmit` retries them)" if skipped else "")
                  + ("" if jobs is not None else "; no ledger yet"), markup=False, soft_wrap=True)
    _names(console, "compute", compute, "cyan")
    _names(console, "archive", archive, STATE_STYLES[JobState.COMPUTED])
    _names(console, "already archived", archived, STATE_STYLES[JobState.ARCHIVED])
    _names(console, "left alone", skipped, STATE_STYLES[JobState.FAILED_MODEL])
    return EXIT_OK


def _show_inputs(config: Config, name: str, specs: Sequence[ModelSpec], templates: InputTemplates) -> int:
    from ..kosma.inputs import render_inputs

    by_name = {spec.name: spec for spec in specs}
    spec = by_name.get(name)
    if spec is None:
        print(f"pdrflow: error: no model {name!r} in grid {config.grid.name!r}{suggestion(name, by_name)}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    pdrnew, pdr_config = render_inputs(spec.name, spec.parameters, spec.network_species, spec.elements, templates)
    # The bytes the run writes, straight to stdout: rich would expand tabs and wrap long lines.
    for file_name, text in (("PDRNEW.INP", pdrnew), ("pdr_config.json", pdr_config)):
        sys.stdout.write(f"# {spec.name}: {file_name}\n{text}" + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "every model of the grid: name, parameters and state in the ledger (new: not registered yet)"
    listing = commands.add_parser("list", help=text, description=text + ". Reads only; exit 0, or 2 for a bad config.")
    listing.add_argument("config", help="the run's YAML config file")
    listing.add_argument("--state", action="append", metavar="STATE", choices=[NEW, *(s.value for s in JobState)],
                         help=f"only models in this state ({NEW}, " + ", ".join(s.value for s in JobState)
                         + "); repeat for several")
    listing.add_argument("--json", action="store_true", help="machine-readable output (every model, with its hash)")
    listing.set_defaults(handler=cmd_list)


def add_dry_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` and ``--show-inputs`` on run, resume and resubmit."""
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything and print what would be computed, archived and skipped; start and "
                        "write nothing")
    parser.add_argument("--show-inputs", metavar="NAME", default=None,
                        help="with --dry-run: print the rendered PDRNEW.INP and pdr_config.json of model NAME")
