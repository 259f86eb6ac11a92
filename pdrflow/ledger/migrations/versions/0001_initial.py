"""The first ledger: grids, models, jobs, attempts, archived files.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grids",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("metallicity", sa.Float, nullable=False),
        sa.Column("density", sa.Float, nullable=False),
        sa.Column("mass", sa.Float, nullable=False),
        sa.Column("fuv", sa.Float, nullable=False),
        sa.Column("varied", sa.JSON(none_as_null=True)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("staged_dir", sa.Text),
        sa.Column("staged_host", sa.String(255)),
        sa.Column("provenance", sa.JSON(none_as_null=True)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("grid_id", "name", name="uq_jobs_grid_name"),
        sa.UniqueConstraint("grid_id", "model_id", name="uq_jobs_grid_model"),
    )
    op.create_index("ix_jobs_grid_state", "jobs", ["grid_id", "state"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(12), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("host", sa.String(255)),
        sa.Column("worker", sa.String(255)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_attempts_job_kind", "attempts", ["job_id", "kind"])
    op.create_table(
        "archived_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("path", sa.String(512), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("archived_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_archived_files_job_id", "archived_files", ["job_id"])


def downgrade() -> None:
    for table in ("archived_files", "attempts", "jobs", "models", "grids"):
        op.drop_table(table)
