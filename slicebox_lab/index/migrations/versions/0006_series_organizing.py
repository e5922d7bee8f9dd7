"""Series tags and series types: labels and rule-based classes of series, with their links.

Revision ID: 0006_series_organizing
Revises: 0005_boxes
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006_series_organizing"
down_revision: str | Sequence[str] | None = "0005_boxes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _named(table: str) -> list[Any]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("name", name=f"uq_{table}_name"),
    ]


def _links(table: str, key: str, referred: str) -> None:
    columns: list[Any] = [
        sa.Column(key, sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
    ]
    if table == "series_series_types":
        columns.append(sa.Column("manual", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        table,
        *columns,
        sa.ForeignKeyConstraint([key], [f"{referred}.id"], name=f"fk_{table}_{key}_{referred}", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=f"fk_{table}_series_id_series", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(key, "series_id", name=f"pk_{table}"),
    )
    op.create_index(f"ix_{table}_series_id", table, ["series_id"])


def upgrade() -> None:
    op.create_table("series_tags", *_named("series_tags"), sqlite_autoincrement=True)
    _links("series_series_tags", "series_tag_id", "series_tags")
    op.create_table("series_types", *_named("series_types"), sqlite_autoincrement=True)
    op.create_table(
        "series_type_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_type_id", sa.Integer(), nullable=False),
        sa.Column("attributes", sa.Text(), server_default="[]", nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_type_id"],
            ["series_types.id"],
            name="fk_series_type_rules_series_type_id_series_types",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_series_type_rules"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_series_type_rules_series_type_id", "series_type_rules", ["series_type_id"])
    _links("series_series_types", "series_type_id", "series_types")


def downgrade() -> None:
    op.drop_index("ix_series_series_types_series_id", table_name="series_series_types")
    op.drop_table("series_series_types")
    op.drop_index("ix_series_type_rules_series_type_id", table_name="series_type_rules")
    op.drop_table("series_type_rules")
    op.drop_table("series_types")
    op.drop_index("ix_series_series_tags_series_id", table_name="series_series_tags")
    op.drop_table("series_series_tags")
    op.drop_table("series_tags")
