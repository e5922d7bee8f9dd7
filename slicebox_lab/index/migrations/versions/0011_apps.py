"""Apps: registered functions and notebooks, their runs with provenance, and the series waiting to be stable.

Revision ID: 0011_apps
Revises: 0010_job_servers
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_apps"
down_revision: str | Sequence[str] | None = "0010_job_servers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.String(), server_default="", nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("target", sa.Text(), server_default="", nullable=False),
        sa.Column("code", sa.Text(), server_default="", nullable=False),
        sa.Column("series_types", sa.Text(), server_default="[]", nullable=False),
        sa.Column("rule", sa.Text(), server_default="[]", nullable=False),
        sa.Column("level", sa.String(), server_default="series", nullable=False),
        sa.Column("parameters", sa.Text(), server_default="{}", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("rerun_on_growth", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("retries", sa.Integer(), server_default="2", nullable=False),
        sa.Column("retry_seconds", sa.Float(), server_default="10", nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_apps"),
        sa.UniqueConstraint("name", name="uq_apps_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "app_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("app_id", sa.Integer(), nullable=True),
        sa.Column("app_name", sa.String(), nullable=False),
        sa.Column("app_version", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("series_ids", sa.Text(), server_default="[]", nullable=False),
        sa.Column("sop_instance_uids", sa.Text(), server_default="[]", nullable=False),
        sa.Column("image_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("parameters", sa.Text(), server_default="{}", nullable=False),
        sa.Column("trigger", sa.String(), server_default="", nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("log", sa.Text(), server_default="", nullable=False),
        sa.Column("notebook", sa.Text(), server_default="", nullable=False),
        sa.Column("outputs", sa.Text(), server_default="[]", nullable=False),
        sa.Column("result_values", sa.Text(), server_default="{}", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name="fk_app_runs_app_id_apps", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_app_runs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_app_runs_app_id_subject_id", "app_runs", ["app_id", "subject_id"])
    op.create_index("ix_app_runs_job_id", "app_runs", ["job_id"])
    op.create_index("ix_app_runs_batch_id", "app_runs", ["batch_id"])
    op.create_table(
        "app_pending",
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("added", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("level", "subject_id", name="pk_app_pending"),
    )


def downgrade() -> None:
    op.drop_table("app_pending")
    op.drop_index("ix_app_runs_batch_id", table_name="app_runs")
    op.drop_index("ix_app_runs_job_id", table_name="app_runs")
    op.drop_index("ix_app_runs_app_id_subject_id", table_name="app_runs")
    op.drop_table("app_runs")
    op.drop_table("apps")
