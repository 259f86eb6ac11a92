"""Driver lease (one live driver per grid), batch worker jobs, SLURM job id per attempt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "driver_leases",
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "worker_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("scheduler", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.UniqueConstraint("scheduler", "external_id", name="uq_worker_jobs_external"),
    )
    op.create_index("ix_worker_jobs_grid_open", "worker_jobs", ["grid_id", "ended_at"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("slurm_job_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("slurm_job_id")
    op.drop_table("worker_jobs")
    op.drop_table("driver_leases")
