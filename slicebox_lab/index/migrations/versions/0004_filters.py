"""Tag filters: blacklists and whitelists of tag paths, attached to sources.

Revision ID: 0004_filters
Revises: 0003_anonymization_keys
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_filters"
down_revision: str | Sequence[str] | None = "0003_anonymization_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tag_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("filter_type", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tag_filters"),
        sa.UniqueConstraint("name", name="uq_tag_filters_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "tag_filter_paths",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filter_id", sa.Integer(), nullable=False),
        sa.Column("tag_path", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tag_filter_paths"),
        sa.ForeignKeyConstraint(
            ["filter_id"], ["tag_filters.id"], name="fk_tag_filter_paths_filter_id_tag_filters", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("filter_id", "tag_path", name="uq_tag_filter_paths_filter_id_tag_path"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "source_tag_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(), nullable=False),
        sa.Column("source_name", sa.String(), nullable=False),
        sa.Column("filter_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_source_tag_filters"),
        sa.ForeignKeyConstraint(
            ["filter_id"], ["tag_filters.id"], name="fk_source_tag_filters_filter_id_tag_filters", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "source_type",
            "source_name",
            "filter_id",
            name="uq_source_tag_filters_source_type_source_name_filter_id",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_source_tag_filters_filter_id", "source_tag_filters", ["filter_id"])


def downgrade() -> None:
    op.drop_index("ix_source_tag_filters_filter_id", table_name="source_tag_filters")
    op.drop_table("source_tag_filters")
    op.drop_table("tag_filter_paths")
    op.drop_table("tag_filters")
