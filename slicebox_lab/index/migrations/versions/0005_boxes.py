"""Boxes: partner nodes, and the outgoing and incoming transactions with their images.

Revision ID: 0005_boxes
Revises: 0004_filters
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_boxes"
down_revision: str | Sequence[str] | None = "0004_filters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def _text(name: str, default: str = "") -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default=default)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "boxes",
        _id(),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("send_method", sa.String(), nullable=False),
        _text("token_hash"),
        _text("base_url"),
        sa.Column("default_profile", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("send_anonymous_as_is", sa.Boolean(), nullable=False, server_default=sa.false()),
        _timestamp("last_contact", nullable=True),
        _text("last_error"),
        _timestamp("last_error_at", nullable=True),
        _timestamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_boxes"),
        sa.UniqueConstraint("name", name="uq_boxes_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_boxes_token_hash", "boxes", ["token_hash"])
    op.create_table(
        "box_outgoing_transactions",
        _id(),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("box_name", sa.String(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("status", sa.String(), nullable=False),
        _text("reason"),
        sa.Column("total_image_count", sa.Integer(), nullable=False),
        _count("sent_image_count"),
        _count("failed_image_count"),
        sa.Column("job_id", sa.Integer(), nullable=True),
        _timestamp("created"),
        _timestamp("updated"),
        sa.PrimaryKeyConstraint("id", name="pk_box_outgoing_transactions"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_box_outgoing_transactions_box_id_status", "box_outgoing_transactions", ["box_id", "status"])
    op.create_table(
        "box_outgoing_images",
        _id(),
        sa.Column("transaction_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        _text("reason"),
        _count("attempts"),
        sa.Column("tag_values", sa.Text(), nullable=False, server_default="[]"),
        _text("sha256"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["box_outgoing_transactions.id"],
            name="fk_box_outgoing_images_transaction_id_box_outgoing_transactions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_box_outgoing_images"),
        sa.UniqueConstraint(
            "transaction_id", "sequence_number", name="uq_box_outgoing_images_transaction_id_sequence_number"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_box_outgoing_images_image_id", "box_outgoing_images", ["image_id"])
    op.create_table(
        "box_incoming_transactions",
        _id(),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("box_name", sa.String(), nullable=False),
        sa.Column("outgoing_transaction_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("total_image_count", sa.Integer(), nullable=False),
        _count("received_image_count"),
        _count("added_image_count"),
        _timestamp("created"),
        _timestamp("updated"),
        sa.PrimaryKeyConstraint("id", name="pk_box_incoming_transactions"),
        sa.UniqueConstraint(
            "box_id", "outgoing_transaction_id", name="uq_box_incoming_transactions_box_id_outgoing_transaction_id"
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "box_incoming_images",
        _id(),
        sa.Column("transaction_id", sa.Integer(), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("overwrite", sa.Boolean(), nullable=False, server_default=sa.false()),
        _text("sha256"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["box_incoming_transactions.id"],
            name="fk_box_incoming_images_transaction_id_box_incoming_transactions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_box_incoming_images"),
        sa.UniqueConstraint(
            "transaction_id", "sequence_number", name="uq_box_incoming_images_transaction_id_sequence_number"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_box_incoming_images_image_id", "box_incoming_images", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_box_incoming_images_image_id", table_name="box_incoming_images")
    op.drop_table("box_incoming_images")
    op.drop_table("box_incoming_transactions")
    op.drop_index("ix_box_outgoing_images_image_id", table_name="box_outgoing_images")
    op.drop_table("box_outgoing_images")
    op.drop_index("ix_box_outgoing_transactions_box_id_status", table_name="box_outgoing_transactions")
    op.drop_table("box_outgoing_transactions")
    op.drop_index("ix_boxes_token_hash", table_name="boxes")
    op.drop_table("boxes")
