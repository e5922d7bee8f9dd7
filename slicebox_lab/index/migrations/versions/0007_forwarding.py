"""Forwarding rules, their queue of images waiting for a quiet source, and the batches sent.

Revision ID: 0007_forwarding
Revises: 0006_series_organizing
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_forwarding"
down_revision: str | Sequence[str] | None = "0006_series_organizing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forwarding_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(), nullable=False),
        sa.Column("source_name", sa.String(), nullable=False),
        sa.Column("destination_type", sa.String(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("destination_name", sa.String(), nullable=False),
        sa.Column("keep_images", sa.Boolean(), nullable=False),
        sa.Column("quiet_seconds", sa.Float(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_forwarding_rules"),
        sa.UniqueConstraint(
            "source_type",
            "source_name",
            "destination_type",
            "destination_id",
            name="uq_forwarding_rules_source_destination",
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "forwarding_queue",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("added", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["forwarding_rules.id"],
            name="fk_forwarding_queue_rule_id_forwarding_rules",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_forwarding_queue_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rule_id", "image_id", name="pk_forwarding_queue"),
    )
    op.create_index("ix_forwarding_queue_image_id", "forwarding_queue", ["image_id"])
    op.create_table(
        "forwarding_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("image_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("transaction_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["forwarding_rules.id"],
            name="fk_forwarding_batches_rule_id_forwarding_rules",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_forwarding_batches"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_forwarding_batches_rule_id", "forwarding_batches", ["rule_id"])
    op.create_index("ix_forwarding_batches_state", "forwarding_batches", ["state"])
    op.create_table(
        "forwarding_batch_images",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["forwarding_batches.id"],
            name="fk_forwarding_batch_images_batch_id_forwarding_batches",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "image_id", name="pk_forwarding_batch_images"),
    )
    op.create_index("ix_forwarding_batch_images_image_id", "forwarding_batch_images", ["image_id"])
    op.create_index("ix_forwarding_batch_images_state", "forwarding_batch_images", ["state"])


def downgrade() -> None:
    op.drop_index("ix_forwarding_batch_images_state", table_name="forwarding_batch_images")
    op.drop_index("ix_forwarding_batch_images_image_id", table_name="forwarding_batch_images")
    op.drop_table("forwarding_batch_images")
    op.drop_index("ix_forwarding_batches_state", table_name="forwarding_batches")
    op.drop_index("ix_forwarding_batches_rule_id", table_name="forwarding_batches")
    op.drop_table("forwarding_batches")
    op.drop_index("ix_forwarding_queue_image_id", table_name="forwarding_queue")
    op.drop_table("forwarding_queue")
    op.drop_table("forwarding_rules")
