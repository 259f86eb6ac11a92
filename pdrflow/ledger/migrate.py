"""Schema migrations with alembic; the scripts ship inside the package.

alembic is imported only to migrate: checking the revision is one plain query, so that read-only
commands (``pdrflow status``) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from ..errors import LedgerError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

SCRIPT_LOCATION = "pdrflow.ledger:migrations"
SCHEMA_REVISION = "0003"  # the newest script in migrations/versions (a test checks they agree)


def _config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    if "alembic_version" not in inspect(engine).get_table_names():
        return None
    with engine.connect() as connection:
        return connection.execute(text("select version_num from alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

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
    if current != SCHEMA_REVISION:
        raise LedgerError(
            f"the ledger's schema is at revision {current} but this pdrflow needs {SCHEMA_REVISION}: "
            "back it up, then run `pdrflow db upgrade CONFIG`"
        )
