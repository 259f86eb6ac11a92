"""Opening the ledger from the config, with the one-line error a user sees when the database cannot be reached."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from ..errors import LedgerError
from .ledger import Ledger

if TYPE_CHECKING:
    from ..config import DatabaseConfig


def database_error(database: DatabaseConfig, exc: Exception, doing: str = "open") -> LedgerError:
    """One line naming the database (password hidden) and the driver's first line of reason."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    where = database.sqlalchemy_url().render_as_string(hide_password=True)
    return LedgerError(f"database: cannot {doing} the ledger at {where}: {reason[0] if reason else type(exc).__name__}")


def open_ledger(database: DatabaseConfig, *, patience: float = 20.0) -> Ledger:
    """The driver's ledger, schema made or checked. A new SQLite file gets its directory first."""
    url = database.sqlalchemy_url()
    if url.drivername.startswith("sqlite") and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return Ledger(url, patience=patience)
    except DBAPIError as exc:  # refused, unknown host, wrong password, unreadable file: nothing ran
        raise database_error(database, exc) from None
