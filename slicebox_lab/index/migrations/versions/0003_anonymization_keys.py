"""Anonymization keys: real and anonymous identity values of every anonymized image.

Revision ID: 0003_anonymization_keys
Revises: 0002_node_services
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_anonymization_keys"
down_revision: str | Sequence[str] | None = "0002_node_services"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IDENTITY = (
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default="")


def upgrade() -> None:
    op.create_table(
        "anonymization_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        _text("profile"),
        *(column for name in IDENTITY for column in (_text(name), _text(f"Anon{name}"))),
        sa.PrimaryKeyConstraint("id", name="pk_anonymization_keys"),
        sa.UniqueConstraint(
            "SOPInstanceUID", "AnonSOPInstanceUID", name="uq_anonymization_keys_SOPInstanceUID_AnonSOPInstanceUID"
        ),
        sqlite_autoincrement=True,
    )
    for column in ("AnonSOPInstanceUID", "AnonSeriesInstanceUID", "AnonStudyInstanceUID", "AnonPatientID", "PatientID"):
        op.create_index(f"ix_anonymization_keys_{column}", "anonymization_keys", [column])
    op.create_table(
        "anonymization_key_values",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("tag_path", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        _text("value"),
        _text("anonymized_value"),
        sa.PrimaryKeyConstraint("id", name="pk_anonymization_key_values"),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["anonymization_keys.id"],
            name="fk_anonymization_key_values_key_id_anonymization_keys",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("key_id", "tag_path", name="uq_anonymization_key_values_key_id_tag_path"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("anonymization_key_values")
    for column in ("AnonSOPInstanceUID", "AnonSeriesInstanceUID", "AnonStudyInstanceUID", "AnonPatientID", "PatientID"):
        op.drop_index(f"ix_anonymization_keys_{column}", table_name="anonymization_keys")
    op.drop_table("anonymization_keys")
