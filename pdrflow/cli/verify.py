"""``pdrflow verify``: every archived file present with its recorded size and sha256.

``--repair`` sends each job with a missing or changed file back to the driver (:mod:`pdrflow.repair`:
changed bytes moved aside and recorded, never replaced), drives the grid exactly as ``pdrflow run``
does (its own code path, :func:`cmd_run`), and verifies again: exit 0 only if the archive is sound
afterwards. Without ``--repair`` verify changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..config import Config
from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ledger_exists, open_ledger_of

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..repair import Finding


def _never_run(config: Config, args: argparse.Namespace) -> int:
    message = f"nothing to look at: grid {config.grid.name} was never run"
    if args.json:
        print(json.dumps({"grid": config.grid.name, "error": message}))
    else:
        print(f"pdrflow: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _check(config: Config, ledger: Ledger) -> tuple[dict[str, Any], list[Finding]]:
    """The report document and the findings (raises StorageError)."""
    from ..repair import check_files
    from ..storage import open_storage

    records = ledger.archived_files(config.grid.name)
    with open_storage(config.storage) as storage:
        findings = check_files(storage, records)
    missing = [f.path for f in findings if f.missing]
    mismatched = [f.path for f in findings if not f.missing]
    return {"grid": config.grid.name, "checked": len(records), "ok": len(records) - len(findings),
            "missing": missing, "mismatched": mismatched}, findings


def _show(document: dict[str, Any], console: Console, json_out: bool) -> None:
    if json_out:
        print(json.dumps(document, indent=2))
        return
    console.print(f"checked {document['checked']} archived files: {document['ok']} ok, "
                  f"{len(document['missing'])} missing, {len(document['mismatched'])} mismatched")
    for path in document["missing"]:
        console.print(f"[red]missing[/] {path}")
    for path in document["mismatched"]:
        console.print(f"[red]mismatched[/] {path}")


def cmd_verify(config: Config, args: argparse.Namespace, console: Console) -> int:
    from ..storage import StorageError

    if not ledger_exists(config):
        return _never_run(config, args)
    ledger = open_ledger_of(config)
    try:
        if ledger.grid_id(config.grid.name) is None:
            return _never_run(config, args)
        try:
            document, findings = _check(config, ledger)
        except StorageError as exc:
            if args.json:
                print(json.dumps({"grid": config.grid.name, "checked": 0, "error": f"storage: {exc}"}))
            else:
                console.print(f"[red]pdrflow: verify failed: storage: {exc}[/]")
            return EXIT_FAILED
        if not getattr(args, "repair", False):
            _show(document, console, args.json)
            return EXIT_OK if not findings else EXIT_FAILED
        return _repair(config, args, console, ledger, document, findings)
    finally:
        ledger.close()


def _repair(config: Config, args: argparse.Namespace, console: Console, ledger: Ledger, before: dict[str, Any],
            findings: list[Finding]) -> int:
    from ..ledger.lease import GridLease
    from ..plan import plan_run
    from ..preflight import preflight
    from ..repair import mark_for_repair
    from ..storage import StorageError, open_storage
    from . import build_parser
    from .run import cmd_run

    # With --json the document is stdout's only content: what the repair and the run say goes to stderr.
    out = Console(stderr=True, highlight=False) if args.json else console
    if not args.json:
        _show(before, console, False)
    if not findings:
        out.print("nothing to repair")
        if args.json:
            print(json.dumps({"before": before, "repaired": [], "after": before}, indent=2))
        return EXIT_OK
    # Every check a run makes, before anything is marked: a run that cannot repair changes nothing.
    preflight(config, plan_run(config), ledger)
    try:
        # Held while marking, so that no driver runs the grid meanwhile; `run` below takes it again.
        with GridLease(ledger, config.grid.name), open_storage(config.storage) as storage:
            repaired = mark_for_repair(ledger, storage, config.grid.name, findings)
    except StorageError as exc:
        out.print(f"[red]pdrflow: repair stopped: storage: {exc}[/] (what was marked is repaired by `pdrflow run`)")
        return EXIT_FAILED
    for job in repaired:
        if job.skipped:
            out.print(f"[yellow]repair[/] {job.job}: {job.skipped}")
            continue
        for path, moved_to in job.moved:
            out.print(f"[yellow]moved aside[/] {path} -> {moved_to}")
        then = f"archiving again from {job.staged_dir}" if job.staged_dir else "computing again (staged outputs gone)"
        out.print(f"[yellow]repair[/] {job.job}: {len(job.missing)} missing, {len(job.moved)} changed; {then}")
    # The run command's own code path, with the run subcommand's defaults for every option it has.
    run_args = build_parser().parse_args([*(["-v"] if args.verbose else []), "run", args.config])
    run_code = cmd_run(config, run_args, out)
    after, remaining = _check(config, ledger)
    if args.json:
        print(json.dumps({"before": before, "repaired": [
            {"job": job.job, "missing": job.missing, "moved_aside": dict(job.moved), "staged_dir": job.staged_dir,
             "skipped": job.skipped} for job in repaired], "run_exit": run_code, "after": after}, indent=2))
    else:
        console.print("after the repair:")
        _show(after, console, False)
    return EXIT_OK if not remaining and run_code == EXIT_OK else EXIT_FAILED


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "check every archived file exists with its recorded size and sha256"
    verify = commands.add_parser(
        "verify", help=text, description=f"{text}; exit 0 sound, 1 damaged (or not sound after --repair), "
                                         "2 the grid was never run")
    verify.add_argument("config", help="the run's YAML config file")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument(
        "--repair", action="store_true",
        help="send jobs with missing or changed files back: changed bytes moved aside under "
             "<grid>/pdrflow-superseded/ and recorded, then archived again from staged outputs still in "
             "scratch or computed again (as `pdrflow run`), then verified again")
    verify.set_defaults(handler=cmd_verify)
