"""``pdrflow verify``: every archived file present with its recorded size and sha256."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from ..config import Config
from .common import EXIT_FAILED, EXIT_OK, ledger_exists, open_ledger_of


def cmd_verify(config: Config, args: argparse.Namespace, console: Console) -> int:
    from ..storage import StorageError, open_storage

    records = []
    if ledger_exists(config):
        ledger = open_ledger_of(config)
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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "check every archived file exists with its recorded size and sha256"
    verify = commands.add_parser("verify", help=text, description=text)
    verify.add_argument("config", help="the run's YAML config file")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(handler=cmd_verify)
