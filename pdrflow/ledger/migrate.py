"""Schema migrations with alembic; the scripts ship inside the package."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from ..errors import LedgerError

SCRIPT_LOCATION = "pdrflow.ledger:migrations"


def _config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one that is not at this pdrflow's revision."""
    current = current_revision(engine)
    if current is None:
        if "grids" in inspect(engine).get_table_names():
            raise LedgerError("the ledger has tables but no schema revision; it was not made by pdrflow")
        upgrade(engine)
        return
    head = head_revision()
    if current != head:
        raise LedgerError(
            f"the ledger's schema is at revision {current} but this pdrflow needs {head}: "
            "back it up, then run `pdrflow db upgrade CONFIG`"
        )
