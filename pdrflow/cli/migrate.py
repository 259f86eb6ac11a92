"""``pdrflow migrate``: take over a pdr_run grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from .common import EXIT_BAD_INPUT, EXIT_OK


def cmd_migrate(args: argparse.Namespace, console: Console) -> int:
    from ..migrate import Untranslatable, migrate

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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    # reads a predecessor config, not a pdrflow one
    migrate.set_defaults(handler=lambda _config, args, console: cmd_migrate(args, console), needs_config=False)
