"""Taking over other tools' archives: files found at a job's archive paths, adopted jobs, planned
archival files, and the optional outputs a run did not write.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preexisting_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("recorded_sha256", sa.String(64)),
        sa.Column("origin", sa.String(100), nullable=False),
        sa.Column("found_at", sa.DateTime, nullable=False),
        sa.Column("moved_to", sa.String(1024)),
        sa.Column("moved_at", sa.DateTime),
        sa.UniqueConstraint("job_id", "path", name="uq_preexisting_job_path"),
    )
    op.create_index("ix_preexisting_files_job_id", "preexisting_files", ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("missing_outputs", sa.JSON))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("planned_files", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("planned_files")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("missing_outputs")
    op.drop_index("ix_preexisting_files_job_id", "preexisting_files")
    op.drop_table("preexisting_files")
