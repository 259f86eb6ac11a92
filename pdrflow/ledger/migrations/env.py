"""Alembic environment: always run on the connection pdrflow hands over (never from an ini file)."""

from __future__ import annotations

from alembic import context

from pdrflow.ledger.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
