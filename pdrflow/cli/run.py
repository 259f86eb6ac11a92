"""``pdrflow run``, ``resume`` and ``resubmit``: drive the grid with a live progress line."""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from ..cluster import workers_are_children
from ..config import Config
from ..states import EventKind, JobState
from . import clean, listing, logs
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, counts_table, open_ledger_of

PROGRESS_LINE_SECONDS = 60.0  # without a terminal (sbatch log), a progress line this often


def cmd_run(config: Config, args: argparse.Namespace, console: Console, resubmit: bool = False) -> int:
    if args.dry_run or args.show_inputs is not None:  # checks only, writes nothing: cli/listing.py
        return listing.cmd_dry_run(config, args, console, resubmit=resubmit)
    from ..cluster import serve_unless_driver
    from ..plan import RESUBMIT_STATES, RUN_STATES, plan_run

    if serve_unless_driver(config):  # an allocation's scheduler or worker task: it served, it is done
        return EXIT_OK
    plan = plan_run(config)  # all checks before anything is written, and before the cluster's imports
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..dashboard.eta import estimate
    from ..driver import Driver, Event, Outcome
    ledger = open_ledger_of(config, patience=300.0)  # the driver waits out a database restart
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[states]}"),
        # the ETA from observed model costs and worker slots (dashboard/eta.py), not rich's completions per second
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
        console=console, transient=False,
    )
    task = progress.add_task(config.grid.name, total=None, states="starting", rate="", eta="-:--:--")
    started = time.monotonic()
    last_line = [started]

    def on_event(event: Event) -> None:
        if event.kind == EventKind.REGISTERED:
            progress.console.print(f"registered grid {config.grid.name}: {event.detail}")
            return
        if event.kind == EventKind.DASHBOARD:
            progress.console.print(f"Dask dashboard: {event.detail}")
            if not workers_are_children(config):  # a cluster node: the user's browser is elsewhere
                progress.console.print(tunnel_hint(event.detail))
            return
        if event.kind == EventKind.GRID_PAGE:
            if event.detail:
                progress.console.print(f"grid map, live from the ledger: {event.detail}")
            return
        style = {EventKind.ARCHIVED: None, EventKind.FAILED_MODEL: "red", EventKind.FAILED_STORAGE: "red",
                 EventKind.LOST: "red"}.get(event.kind, "yellow")
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
        remaining = max(0, outcome.todo - done)
        eta = estimate(remaining, outcome.model_cost, outcome.worker_slots)
        rate = eta.rate_text()
        progress.update(task, total=outcome.todo, completed=done, states=", ".join(states), rate=rate,
                        eta=eta.eta_text())
        if not console.is_terminal and time.monotonic() - last_line[0] >= PROGRESS_LINE_SECONDS:
            # a batch log gets no live display: one summary line now and then instead
            last_line[0] = time.monotonic()
            console.print(f"progress: {done}/{outcome.todo} done; {', '.join(states)}; {rate or '-'}; "
                          f"ETA {eta.eta_text()}")

    driver = Driver(config, plan, ledger, on_event=on_event, on_progress=on_progress)
    interrupted = False
    swept = clean.Sweep()
    log_path = logs.log_file_path(config)
    console.print(f"log: {log_path}", markup=False, highlight=False)
    try:
        with logs.run_logging(log_path, progress.console if console.is_terminal else None), progress:
            try:
                outcome = driver.run(RESUBMIT_STATES if resubmit else RUN_STATES)
            except KeyboardInterrupt:
                interrupted = True
                outcome = driver.outcome
        if interrupted and workers_are_children(config):
            # Workers and lease are gone, every job settled: what interrupted models left in scratch
            # (on this machine) is nobody's now. Elsewhere the worker removed its own, `pdrflow clean` the rest.
            swept = clean.sweep(config, ledger)
        wanted = set(plan.specs)
        jobs = [job for job in ledger.jobs(config.grid.name) if job.model_hash in wanted]
    finally:
        ledger.close()
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    console.print(counts_table(f"grid {config.grid.name}: {len(jobs)} models", counts))
    console.print(f"this run: {outcome.model_runs} model runs, {outcome.archive_attempts} archivals, "
                  f"{outcome.archived} archived, {outcome.already_archived} already archived before")
    failed = [job for job in jobs if job.state != JobState.ARCHIVED]
    # After Ctrl-C most jobs are simply requeued: one line each only with -v (10,000 on a real grid)
    for job in failed if not interrupted or args.verbose else ():
        console.print(f"[red]{job.state.value}[/] {job.name}: {job.reason or 'not finished'}")
    if interrupted:
        requeued = sum(job.state == JobState.PENDING for job in jobs)
        staged = sum(job.state in (JobState.COMPUTED, JobState.FAILED_STORAGE) for job in jobs)
        failures = sum(job.state == JobState.FAILED_MODEL for job in jobs)
        console.print(f"[yellow]interrupted: {requeued} models requeued, {outcome.archived} archived"
                      + (f", {staged} computed (archived next run)" if staged else "")
                      + (f", {failures} failed" if failures else "") + ", nothing left running[/]"
                      + (f"; scratch: {swept.summary()}" if swept.removed else "")
                      + "; run the same command again to continue")
        return EXIT_INTERRUPTED
    if failed:
        console.print(f"[red]{len(failed)} of {len(jobs)} models not archived[/] "
                      f"(see `pdrflow status`; `pdrflow resubmit` tries them again)")
        return EXIT_FAILED
    return EXIT_OK


def tunnel_hint(link: str) -> str:
    """The ssh line that brings a dashboard on a cluster node to the user's laptop."""
    import getpass
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(link)
    port = parts.port or 8787
    return (f"from your laptop: ssh -N -L {port}:{parts.hostname}:{port} {getpass.getuser()}@{socket.getfqdn()} "
            f"then open http://localhost:{port}{parts.path}")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (
        ("run", "run every model of the grid that is not archived yet"),
        ("resume", "the same as run: continue a grid after a stopped or crashed driver"),
        ("resubmit", "drive failed jobs again: archival only where staged outputs remain, else a rerun"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("config", help="the run's YAML config file")
        listing.add_dry_run_arguments(sub)
        sub.set_defaults(handler=lambda config, args, console, again=name == "resubmit":
                         cmd_run(config, args, console, resubmit=again))
