"""The initial index: sources, the patient → study → series → image hierarchy, and the log.

Frozen on purpose (the attribute columns are spelled out, not derived from ``model``): a change of
the ``*_ATTRIBUTES`` tuples needs a new migration, and ``tests/index`` fails until it exists.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default="")


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(), nullable=False),
        sa.Column("source_name", sa.String(), nullable=False),
        _timestamp("created"),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
        sa.UniqueConstraint("source_type", "source_name", name="uq_sources_source_type_source_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("PatientName"),
        _text("PatientID"),
        _text("PatientBirthDate"),
        _text("PatientSex"),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.UniqueConstraint("PatientName", "PatientID", name="uq_patients_PatientName_PatientID"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_patients_PatientID", "patients", ["PatientID"])
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        _text("StudyInstanceUID"),
        _text("StudyDescription"),
        _text("StudyDate"),
        _text("StudyID"),
        _text("AccessionNumber"),
        _text("PatientAge"),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_studies_patient_id_patients", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("patient_id", "StudyInstanceUID", name="uq_studies_patient_id_StudyInstanceUID"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_studies_StudyInstanceUID", "studies", ["StudyInstanceUID"])
    op.create_index("ix_studies_StudyDate", "studies", ["StudyDate"])
    op.create_index("ix_studies_AccessionNumber", "studies", ["AccessionNumber"])
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        _text("SeriesInstanceUID"),
        _text("SeriesDescription"),
        _text("SeriesDate"),
        _text("Modality"),
        _text("ProtocolName"),
        _text("BodyPartExamined"),
        _text("Manufacturer"),
        _text("StationName"),
        _text("FrameOfReferenceUID"),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_series_study_id_studies", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_series_source_id_sources"),
        sa.UniqueConstraint("study_id", "SeriesInstanceUID", name="uq_series_study_id_SeriesInstanceUID"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_series_SeriesInstanceUID", "series", ["SeriesInstanceUID"])
    op.create_index("ix_series_Modality", "series", ["Modality"])
    op.create_index("ix_series_source_id", "series", ["source_id"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        _text("SOPInstanceUID"),
        _text("SOPClassUID"),
        _text("ImageType"),
        _text("InstanceNumber"),
        _text("TransferSyntaxUID"),
        sa.Column("NumberOfFrames", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        _timestamp("created"),
        _timestamp("updated"),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_images_series_id_series", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_images_source_id_sources"),
        sa.UniqueConstraint("series_id", "SOPInstanceUID", name="uq_images_series_id_SOPInstanceUID"),
        sa.UniqueConstraint("storage_key", name="uq_images_storage_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_images_SOPInstanceUID", "images", ["SOPInstanceUID"])
    op.create_index("ix_images_source_id", "images", ["source_id"])
    op.create_table(
        "log",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created"),
        sa.Column("entry_type", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("log")
    op.drop_table("images")
    op.drop_table("series")
    op.drop_table("studies")
    op.drop_table("patients")
    op.drop_table("sources")
