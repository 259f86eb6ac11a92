"""``pdrflow db``: the ledger's schema revision, and upgrading it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from ..config import Config
from .common import EXIT_BAD_INPUT, EXIT_OK, ledger_exists


def cmd_db(config: Config, args: argparse.Namespace, console: Console) -> int:
    from sqlalchemy.exc import DBAPIError

    from ..ledger.ledger import make_engine
    from ..ledger.migrate import SCHEMA_REVISION, current_revision, upgrade
    from ..ledger.open import database_error

    url = config.database.sqlalchemy_url()
    if not ledger_exists(config):
        if args.action == "current":
            # Looking must not create: an absent SQLite ledger is a grid never run (or a wrong url).
            print(f"pdrflow: error: no ledger at {url.database}: the grid was never run (`pdrflow run` or "
                  "`pdrflow db upgrade` creates it)", file=sys.stderr)
            return EXIT_BAD_INPUT
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # as `pdrflow run` does
    engine = make_engine(url)
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
            if before is None:
                return EXIT_BAD_INPUT  # an empty database: nothing to look at, as for a missing file
    finally:
        engine.dispose()
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "ledger schema: `upgrade` applies migrations, `current` shows the revision"
    db = commands.add_parser("db", help=text, description=text + " (`current` never creates a ledger).")
    db.add_argument("action", choices=["upgrade", "current"],
                    help="upgrade: apply the schema migrations (back the ledger up first); current: print the "
                    "ledger's schema revision and this pdrflow's")
    db.add_argument("config", help="the run's YAML config file (its database.url names the ledger)")
    db.set_defaults(handler=cmd_db)
