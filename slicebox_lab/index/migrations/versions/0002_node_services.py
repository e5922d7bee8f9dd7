"""Node configuration and jobs: SCPs, remote nodes (SCUs), folder watches, import sessions, jobs.

Revision ID: 0002_node_services
Revises: 0001_initial
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_node_services"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "scps",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(), nullable=False, server_default="0.0.0.0"),
        sa.Column("port", sa.Integer(), nullable=False),
        _timestamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_scps"),
        sa.UniqueConstraint("name", name="uq_scps_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "scus",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        _timestamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_scus"),
        sa.UniqueConstraint("name", name="uq_scus_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "directory_watches",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("delete_on_import", sa.Boolean(), nullable=False, server_default=sa.false()),
        _timestamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_directory_watches"),
        sa.UniqueConstraint("name", name="uq_directory_watches_name"),
        sa.UniqueConstraint("path", name="uq_directory_watches_path"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "import_sessions",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("files_imported", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("files_added", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("files_rejected", sa.Integer(), nullable=False, server_default="0"),
        _timestamp("created"),
        _timestamp("last_updated"),
        sa.PrimaryKeyConstraint("id", name="pk_import_sessions"),
        sa.UniqueConstraint("name", "user", name="uq_import_sessions_name_user"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "jobs",
        _id(),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False, server_default=""),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("progress_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer(), nullable=True),
        sa.Column("counts", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("parameters", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("result", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("error", sa.String(), nullable=False, server_default=""),
        sa.Column("owner", sa.String(), nullable=False, server_default=""),
        _timestamp("created"),
        _timestamp("started", nullable=True),
        _timestamp("finished", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state", table_name="jobs")
    for table in ("jobs", "import_sessions", "directory_watches", "scus", "scps"):
        op.drop_table(table)
