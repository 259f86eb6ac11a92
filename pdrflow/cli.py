"""The ``pdrflow`` command.

Exit codes: 0 all archived (verified), 1 some jobs failed, 2 bad input or the run could not
start (ledger schema out of date, grid held by another driver), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dask.config
from rich.console import Console
from rich.table import Table

from .config import Config, load_config
from .errors import ConfigError, LedgerError
from .status import STATES, GridStatus, grid_status

if TYPE_CHECKING:
    from .ledger import Ledger

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
PROGRESS_LINE_SECONDS = 60.0  # without a terminal (sbatch log), a progress line this often
_STYLE = {"archived": "green", "failed_model": "red", "failed_storage": "red", "running": "yellow",
          "computed": "cyan", "pending": "white"}


def worker_safety_config() -> dict[str, object]:
    """CPython < 3.11.9 can deadlock a Dask worker when its statistical profiler
    (sys._current_frames every 10 ms) races thread creation or exit (gh-106883); pdrflow's tasks
    start threads (step timers, paramiko). Seen here: workers hung for good. Switch it off there."""
    if sys.version_info < (3, 11, 9) or (3, 12) <= sys.version_info < (3, 12, 3):
        return {"distributed.worker.profile.enabled": False}
    return {}


def _ledger_exists(config: Config) -> bool:
    url = config.database.sqlalchemy_url()
    return not url.drivername.startswith("sqlite") or (url.database is not None and Path(url.database).exists())


def _open_ledger(config: Config, patience: float = 20.0) -> Ledger:
    from .ledger.open import open_ledger  # SQLAlchemy costs ~0.5 s to import: only commands that need it pay

    return open_ledger(config.database, patience=patience)


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in STATES:
        if counts.get(state):
            table.add_row(f"[{_STYLE[state]}]{state}[/]", str(counts[state]))
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    return table


def _print_failures(status: GridStatus, console: Console) -> None:
    groups = status.failure_groups()
    if not groups:
        return
    console.print(f"[bold]{len(status.failed)} failed jobs, {len(groups)} causes[/]")
    for group in groups:
        console.print(f"[red]{group.state}[/] x{group.count}: {group.cause}")
        for job in group.examples:
            parameters = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in job.parameters.items())
            console.print(f"    {job.name} ({parameters}): {job.reason}", soft_wrap=True)
        if group.count > len(group.examples):
            console.print(f"    ... and {group.count - len(group.examples)} more (`pdrflow status --json` lists all)")


def cmd_status(config: Config, args: argparse.Namespace, console: Console) -> int:
    status = grid_status(config.database, config.grid.name)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        console.print(_counts_table(f"grid {config.grid.name}", status.counts))
        console.print(f"attempts: {status.attempts['model']} model runs, {status.attempts['archive']} archivals")
        if status.jobs_missing_outputs:
            console.print(f"{status.jobs_missing_outputs} jobs lack optional outputs: "
                          + ", ".join(f"{name} x{count}" for name, count in status.missing_outputs.items()),
                          markup=False, soft_wrap=True)
        _print_failures(status, console)
    return EXIT_OK if status.all_archived else EXIT_FAILED


def cmd_verify(config: Config, args: argparse.Namespace, console: Console) -> int:
    from .storage import StorageError, open_storage

    records = []
    if _ledger_exists(config):
        ledger = _open_ledger(config)
        try:
            records = ledger.archived_files(config.grid.name)
        finally:
            ledger.close()
    missing: list[str] = []
    mismatched: list[str] = []
    try:
        with open_storage(config.storage) as storage:
            for _job, path, size, sha256 in records:
                if storage.stat(path) is None:
                    missing.append(path)
                elif storage.stat(path) != size or storage.checksum(path) != sha256:
                    mismatched.append(path)
    except StorageError as exc:
        if args.json:
            print(json.dumps({"grid": config.grid.name, "checked": 0, "error": f"storage: {exc}"}))
        else:
            console.print(f"[red]pdrflow: verify failed: storage: {exc}[/]")
        return EXIT_FAILED
    document = {"grid": config.grid.name, "checked": len(records), "ok": len(records) - len(missing) - len(mismatched),
                "missing": missing, "mismatched": mismatched}
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        console.print(f"checked {document['checked']} archived files: {document['ok']} ok, "
                      f"{len(missing)} missing, {len(mismatched)} mismatched")
        for path in missing:
            console.print(f"[red]missing[/] {path}")
        for path in mismatched:
            console.print(f"[red]mismatched[/] {path}")
    return EXIT_OK if not missing and not mismatched else EXIT_FAILED


def cmd_run(config: Config, args: argparse.Namespace, console: Console, resubmit: bool = False) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .driver import RESUBMIT_STATES, RUN_STATES, Driver, Event, Outcome, plan_run

    runner = None
    if config.cluster.kind == "allocation":
        from .cluster.allocation import join_allocation

        runner = join_allocation(config.cluster)  # type: ignore[arg-type]  # other ranks never return
    plan = plan_run(config)  # all checks before anything is written
    ledger = _open_ledger(config, patience=300.0)  # the driver waits out a database restart
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[states]}"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    task = progress.add_task(config.grid.name, total=None, states="starting", rate="")
    started = time.monotonic()
    last_line = [started]

    def on_event(event: Event) -> None:
        if event.kind == "registered":
            progress.console.print(f"registered grid {config.grid.name}: {event.detail}")
            return
        if event.kind == "dashboard":
            progress.console.print(f"Dask dashboard: {event.detail}")
            if config.cluster.kind != "local":
                progress.console.print(_tunnel_hint(event.detail))
            return
        if event.kind == "grid_page":
            if event.detail:
                progress.console.print(f"grid map, live from the ledger: {event.detail}")
            return
        style = {"archived": None, "failed_model": "red", "failed_storage": "red", "lost": "red"}.get(event.kind, "yellow")
        if style is not None:
            progress.console.print(f"[{style}]{event.kind}[/] {event.job}: {event.detail}")

    def on_progress(outcome: Outcome) -> None:
        done = outcome.archived + len(outcome.failures)
        states = [f"[green]archived {outcome.archived}[/]", f"in flight {outcome.running}"]
        if outcome.archiving:
            states.append(f"archiving {outcome.archiving}")
        if outcome.retrying:
            states.append(f"[yellow]waiting to retry {outcome.retrying}[/]")
        if outcome.failures:
            states.append(f"[red]failed {len(outcome.failures)}[/]")
        elapsed = time.monotonic() - started
        rate = f"{done / elapsed:.2f} models/s" if done and elapsed > 0 else ""
        progress.update(task, total=outcome.todo, completed=done, states=", ".join(states), rate=rate)
        if not console.is_terminal and time.monotonic() - last_line[0] >= PROGRESS_LINE_SECONDS:
            # a batch log gets no live display: one summary line now and then instead
            last_line[0] = time.monotonic()
            console.print(f"progress: {done}/{outcome.todo} done; {', '.join(states)}; {rate or '-'}")

    driver = Driver(config, plan, ledger, on_event=on_event, on_progress=on_progress, runner=runner)
    interrupted = False
    try:
        with progress:
            try:
                outcome = driver.run(RESUBMIT_STATES if resubmit else RUN_STATES)
            except KeyboardInterrupt:
                interrupted = True
                outcome = driver.outcome
        wanted = set(plan.specs)
        jobs = [job for job in ledger.jobs(config.grid.name) if job.model_hash in wanted]
    finally:
        ledger.close()
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    console.print(_counts_table(f"grid {config.grid.name}: {len(jobs)} models", counts))
    console.print(f"this run: {outcome.model_runs} model runs, {outcome.archive_attempts} archivals, "
                  f"{outcome.archived} archived, {outcome.already_archived} already archived before")
    failed = [job for job in jobs if job.state.value != "archived"]
    for job in failed:
        console.print(f"[red]{job.state.value}[/] {job.name}: {job.reason or 'not finished'}")
    if interrupted:
        console.print("[yellow]interrupted: nothing is left running; run the same command again to continue[/]")
        return EXIT_INTERRUPTED
    if failed:
        console.print(f"[red]{len(failed)} of {len(jobs)} models not archived[/] "
                      f"(see `pdrflow status`; `pdrflow resubmit` tries them again)")
        return EXIT_FAILED
    return EXIT_OK


def cmd_show(config: Config, args: argparse.Namespace, console: Console) -> int:
    details = None
    if _ledger_exists(config):
        ledger = _open_ledger(config)
        try:
            details = ledger.job_details(config.grid.name, args.job)
        finally:
            ledger.close()
    if details is None:
        print(f"pdrflow: error: no job {args.job!r} in grid {config.grid.name!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(details, indent=2))
        return EXIT_OK
    prov = details["provenance"]
    console.print(f"[bold]{details['name']}[/] (job {details['id']}, grid {details['grid']}): "
                  f"[{_STYLE.get(details['state'], 'white')}]{details['state']}[/]"
                  + (f" - {details['reason']}" if details["reason"] else ""))
    console.print(f"model hash {details['model_hash']}")
    console.print("axes: " + ", ".join(f"{k}={v:g}" for k, v in details["axes"].items()))
    for key in ("pdr_executable", "onion_executable"):
        if key in prov:
            exe = prov[key]
            console.print(f"{key}: {exe['path']} revision {exe.get('revision')} compiled {exe.get('compiled')} "
                          f"sha256 {exe['sha256'][:16]}")
    if "chem_rates" in prov:
        console.print(f"chem rates: {prov['chem_rates']['file']} sha256 {prov['chem_rates']['sha256'][:16]}")
    if prov:
        console.print(f"ran on {prov.get('host')} ({prov.get('worker')}), slurm job {prov.get('slurm_job_id')}, "
                      f"{prov.get('started')} to {prov.get('ended')}, exit codes {prov.get('exit_codes')}")
    table = Table(title="attempts")
    for column in ("kind", "outcome", "started", "ended", "host", "error"):
        table.add_column(column)
    for a in details["attempts"]:
        table.add_row(a["kind"], a["outcome"], a["started_at"], a["ended_at"] or "", a["host"] or "", a["error"] or "")
    console.print(table)
    console.print(f"{len(details['files'])} archived files, {sum(f['size'] for f in details['files'])} bytes")
    if details["missing_outputs"]:
        console.print(f"not written by the run (optional outputs): {', '.join(details['missing_outputs'])}",
                      markup=False, soft_wrap=True)
    for found in details["preexisting_files"]:
        where = f"moved aside to {found['moved_to']} at {found['moved_at']}" if found["moved_to"] else "not moved yet"
        console.print(f"found before pdrflow ({found['origin']}): {found['path']}, {where}", markup=False,
                      soft_wrap=True)
    return EXIT_OK


def cmd_db(config: Config, args: argparse.Namespace, console: Console) -> int:
    from sqlalchemy.exc import DBAPIError

    from .ledger.ledger import make_engine
    from .ledger.migrate import SCHEMA_REVISION, current_revision, upgrade
    from .ledger.open import database_error

    engine = make_engine(config.database.sqlalchemy_url())
    try:
        try:
            before = current_revision(engine)
        except DBAPIError as exc:
            raise database_error(config.database, exc) from None
        if args.action == "upgrade":
            upgrade(engine)
            console.print(f"ledger schema: {before or 'empty'} -> {current_revision(engine)}")
        else:
            console.print(f"ledger schema: {before or 'empty'} (this pdrflow: {SCHEMA_REVISION})")
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_report(config: Config, args: argparse.Namespace, console: Console) -> int:
    from .report import write_report  # matplotlib and h5py: only this command pays for them
    from .results import ResultsError
    from .storage import StorageError

    try:
        result = write_report(config, args.out)
    except (ResultsError, StorageError) as exc:
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"wrote {len(result.files)} files to {args.out}; open {result.html}", markup=False)
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace, console: Console) -> int:
    from .migrate import Untranslatable, migrate

    try:
        report = migrate(Path(args.old_config), Path(args.out), args.ledger)
    except Untranslatable as exc:
        if args.json:
            print(json.dumps({"error": "not translatable", "not_translated": [
                {"key": n.key, "reason": n.text, "matters": n.matters} for n in exc.notes]}, indent=2))
        print(f"pdrflow: error: {args.old_config}: cannot be migrated; nothing was written:", file=sys.stderr)
        for note in exc.notes:
            print(f"  {note}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return report.exit_code
    console.print(f"wrote {report.out} (grid {report.grid}, ledger {report.ledger})", markup=False)
    if report.notes:
        console.print("not carried over (nothing that changes the models):")
        for note in report.notes:
            console.print(f"  {note}", markup=False, soft_wrap=True)
    for entry in report.models:
        if entry.reason and entry.outcome != "adopted":
            console.print(f"[yellow]{entry.outcome}[/] {entry.name}: {entry.reason}", soft_wrap=True)
    console.print(f"adopted {report.count('adopted')}, already archived {report.count('already archived')}, "
                  f"left to compute {report.count('pending')}"
                  + (f", not in the new grid {report.count('not in the new grid')}"
                     if report.count("not in the new grid") else ""))
    if report.exit_code != EXIT_OK:
        console.print(f"`pdrflow run {report.out}` computes the models left (their old files are moved aside)",
                      markup=False)
    return report.exit_code


def cmd_export(config: Config, args: argparse.Namespace, console: Console) -> int:
    from .export import HolesRefused, export_grid  # xarray and astropy: only this command pays for them
    from .results import ResultsError
    from .storage import StorageError

    ratios = [r for item in args.ratios for r in item.split(",") if r] if args.ratios is not None else None
    try:
        result = export_grid(config, args.out, ratios=ratios, allow_holes=args.allow_holes)
    except HolesRefused as refused:
        for path in refused.result.files:
            console.print(f"wrote {path}", markup=False)
        print(f"pdrflow: error: {refused}", file=sys.stderr)
        return EXIT_FAILED
    except (ResultsError, StorageError, ValueError) as exc:
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    cover = result.coverage
    console.print(f"{cover.archived} of {cover.cells} cells archived and read; {len(cover.failed)} failed, "
                  f"{len(cover.missing)} missing, {len(cover.outliers)} outliers flagged (coverage.json)", markup=False)
    if result.holes:
        console.print(f"model set written with holes (NaN) in {len(result.holes)} planes", markup=False)
    if result.standin:
        console.print("the data were made by the stand-in, not KOSMA-tau", markup=False)
    modelset = f", pdrtpy model set {result.modelset.table}" if result.modelset else ""
    console.print(f"wrote {result.dataset}, {result.csv}{modelset}", markup=False)
    return EXIT_OK


def _tunnel_hint(link: str) -> str:
    """The ssh line that brings a dashboard on a cluster node to the user's laptop."""
    import getpass
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(link)
    port = parts.port or 8787
    return (f"from your laptop: ssh -N -L {port}:{parts.hostname}:{port} {getpass.getuser()}@{socket.getfqdn()} "
            f"then open http://localhost:{port}{parts.path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdrflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run every model of the grid that is not archived yet"),
        ("resume", "the same as run: continue a grid after a stopped or crashed driver"),
        ("resubmit", "drive failed jobs again: archival only where staged outputs remain, else a rerun"),
        ("status", "job counts by state and the failing jobs, from the ledger"),
        ("verify", "check every archived file exists with its recorded size and sha256"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("config", help="the run's YAML config file")
        if name in ("status", "verify"):
            sub.add_argument("--json", action="store_true", help="machine-readable output")
    show = commands.add_parser("show", help="one job's provenance, attempts and archived files")
    show.add_argument("config")
    show.add_argument("job", help="job name (e.g. 100_30_-10_10_00) or id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    report = commands.add_parser("report", help="PNG maps and one self-contained HTML page, from the ledger and "
                                 "the archive")
    report.add_argument("config")
    report.add_argument("--out", type=Path, required=True, help="directory for the PNGs, report.html and values.json")
    migrate = commands.add_parser(
        "migrate", help="take over a pdr_run grid: write a pdrflow config, adopt its intact archived models",
        description="Read a pdr_run config (and its PDR_* environment) and database; write the equivalent pdrflow "
        "config; adopt every model pdr_run finished whose archived files are all present and match its checksums; "
        "register the others as pending. Exit 0 all adopted, 1 some left to compute, 2 bad input.")
    migrate.add_argument("old_config", help="the pdr_run YAML config of the grid")
    migrate.add_argument("--out", type=Path, required=True, help="the pdrflow config to write (never overwritten)")
    migrate.add_argument("--ledger", metavar="URL", default=None,
                         help="database URL of the new ledger (default: SQLite next to --out; password from "
                         "PDRFLOW_DB_PASSWORD)")
    migrate.add_argument("--json", action="store_true", help="machine-readable summary")
    export = commands.add_parser(
        "export", help="the grid as one xarray file, a flat table and a pdrtpy model set, from the ledger and archive",
        description="Write grid.nc (xarray, h5netcdf), grid.csv/grid.parquet, coverage.json and pdrtpy/ (FITS model "
        "images per line and line ratio, per metallicity and mass). Exit 0 written, 1 the model set refused for "
        "holes (the rest written), 2 bad input.")
    export.add_argument("config")
    export.add_argument("--out", type=Path, required=True, help="directory for the export")
    export.add_argument("--ratios", nargs="+", metavar="NUM/DEN", default=None,
                        help="line ratios as pdrtpy ids, e.g. OI_63/CII_158 CII_158/CI_609 (default: results.line_ratios)")
    export.add_argument("--allow-holes", action="store_true",
                        help="write the model set even where cells have no value (NaN there)")
    db = commands.add_parser("db", help="ledger schema: `upgrade` applies migrations, `current` shows the revision")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("config")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pdrflow").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # distributed configures its loggers when first imported (by the driver, below): quiet by default.
    dask.config.set({"logging.distributed": "debug" if args.verbose else "warning"})
    dask.config.set(worker_safety_config())
    console = Console(stderr=False, highlight=False)
    try:
        if args.command == "migrate":  # reads a predecessor config, not a pdrflow one
            return cmd_migrate(args, console)
        config = load_config(args.config)
        if args.command == "status":
            return cmd_status(config, args, console)
        if args.command == "verify":
            return cmd_verify(config, args, console)
        if args.command == "show":
            return cmd_show(config, args, console)
        if args.command == "db":
            return cmd_db(config, args, console)
        if args.command == "report":
            return cmd_report(config, args, console)
        if args.command == "export":
            return cmd_export(config, args, console)
        return cmd_run(config, args, console, resubmit=args.command == "resubmit")
    except (ConfigError, LedgerError) as exc:
        # Nothing was run: bad input, or the ledger refused to start (old schema, grid held).
        print(f"pdrflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
