"""Servers sharing one database: the server processes with their heartbeats, and the server of each job.

Revision ID: 0010_job_servers
Revises: 0009_scale_indexes
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_job_servers"
down_revision: str | Sequence[str] | None = "0009_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("server", sa.String(), server_default="", nullable=False))
    op.add_column("jobs", sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "servers",
        sa.Column("server", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("server", name="pk_servers"),
    )
    # box transactions' job rows are continued by any server (jobs.DATABASE_SERVER); other unfinished
    # jobs keep server "" and are recovered as interrupted, as before
    op.execute("UPDATE jobs SET server = '*' WHERE kind = 'box-send'")


def downgrade() -> None:
    op.drop_table("servers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("heartbeat")
        batch.drop_column("server")
