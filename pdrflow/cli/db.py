"""``pdrflow db``: the ledger's schema revision, and upgrading it."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..config import Config
from .common import EXIT_OK


def cmd_db(config: Config, args: argparse.Namespace, console: Console) -> int:
    from sqlalchemy.exc import DBAPIError

    from ..ledger.ledger import make_engine
    from ..ledger.migrate import SCHEMA_REVISION, current_revision, upgrade
    from ..ledger.open import database_error

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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="ledger schema: `upgrade` applies migrations, `current` shows the revision")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("config")
    db.set_defaults(handler=cmd_db)
