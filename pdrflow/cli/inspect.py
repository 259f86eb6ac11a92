"""``pdrflow status`` and ``pdrflow show``: what the ledger knows about a grid and a job."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from ..config import Config
from ..states import STATE_STYLES
from ..status import GridStatus, grid_status
from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, counts_table, ledger_exists, open_ledger_of
from .listing import suggestion


def print_failures(status: GridStatus, console: Console) -> None:
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
    if status.total == 0:
        # Nothing to look at is not "all good": a typo in the grid name or database url looks just like this.
        if args.json:
            print(json.dumps(status.to_json(), indent=2))
        print(f"pdrflow: error: grid {config.grid.name!r} has no jobs in the ledger: never run "
              f"(`pdrflow list {config.path}` shows its models)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        console.print(counts_table(f"grid {config.grid.name}", status.counts))
        console.print(f"attempts: {status.attempts['model']} model runs, {status.attempts['archive']} archivals")
        if status.jobs_missing_outputs:
            console.print(f"{status.jobs_missing_outputs} jobs lack optional outputs: "
                          + ", ".join(f"{name} x{count}" for name, count in status.missing_outputs.items()),
                          markup=False, soft_wrap=True)
        print_failures(status, console)
    # Pending or running jobs are not failures (a live grid): 1 only when some job failed.
    return EXIT_FAILED if status.failed else EXIT_OK


def cmd_show(config: Config, args: argparse.Namespace, console: Console) -> int:
    details = None
    names: list[str] = []
    if ledger_exists(config):
        ledger = open_ledger_of(config)
        try:
            details = ledger.job_details(config.grid.name, args.job)
            if details is None:
                names = [job.name for job in ledger.jobs(config.grid.name)]
        finally:
            ledger.close()
    if details is None:
        hint = suggestion(args.job, names) if names else (
            f"; the grid was never run (`pdrflow list {config.path}` shows its model names)")
        print(f"pdrflow: error: no job {args.job!r} in grid {config.grid.name!r}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(details, indent=2))
        return EXIT_OK
    prov = details["provenance"]
    console.print(f"[bold]{details['name']}[/] (job {details['id']}, grid {details['grid']}): "
                  f"[{STATE_STYLES.get(details['state'], 'white')}]{details['state']}[/]"
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "job counts by state and the failing jobs, from the ledger"
    status = commands.add_parser("status", help=text, description=text)
    status.add_argument("config", help="the run's YAML config file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    text = "one job's provenance, attempts and archived files (an unknown name: the closest names)"
    show = commands.add_parser("show", help=text, description=text)
    show.add_argument("config", help="the run's YAML config file")
    show.add_argument("job", help="job name (e.g. 100_30_-10_10_00) or id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=cmd_show)
