"""The index tables, derived from the ``*_ATTRIBUTES`` tuples of :mod:`slicebox_lab.model`.

Column names are the DICOM keywords themselves (SQLAlchemy quotes the mixed-case names on
PostgreSQL), so a query property, an ``order_by`` and a record field are one and the same name.
The index knows attributes only: ``storage_key`` is an opaque key handed to us by the caller.

Indexes: every column people search on by value, and every foreign key.  A foreign key that leads
a unique constraint (``studies.patient_id``, ``series.study_id``, ``images.series_id``) is already
indexed by that constraint, as is ``PatientName``, so no second index is made for them.
``sqlite_autoincrement`` keeps SQLite from reusing the ids of deleted rows (PostgreSQL sequences
never do): ids leave the node in events, box outboxes and URLs.
"""

from __future__ import annotations

import sqlalchemy as sa

from slicebox_lab.model import IMAGE_ATTRIBUTES, PATIENT_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES

#: Deterministic constraint names, so migrations and the metadata agree on every backend.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _attribute_columns(names: tuple[str, ...]) -> list[sa.Column[str]]:
    """One text column per DICOM keyword: absent attributes are stored as "", never NULL."""
    return [sa.Column(name, sa.String(), nullable=False, default="", server_default="") for name in names]


def _timestamp(name: str) -> sa.Column[object]:
    """Timezone-aware UTC instant (SQLite stores it without the offset; we always write UTC)."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_type", sa.String(), nullable=False),
    sa.Column("source_name", sa.String(), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("source_type", "source_name"),
    sqlite_autoincrement=True,
)

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    *_attribute_columns(PATIENT_ATTRIBUTES),
    sa.UniqueConstraint("PatientName", "PatientID"),
    sa.Index(None, "PatientID"),
    sqlite_autoincrement=True,
)

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_id", sa.Integer, sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    *_attribute_columns(STUDY_ATTRIBUTES),
    sa.UniqueConstraint("patient_id", "StudyInstanceUID"),
    sa.Index(None, "StudyInstanceUID"),
    sa.Index(None, "StudyDate"),
    sa.Index(None, "AccessionNumber"),
    sqlite_autoincrement=True,
)

series = sa.Table(
    "series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    *_attribute_columns(SERIES_ATTRIBUTES),
    # the source of the latest ingest into this series (Slicebox's SeriesSource)
    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id"), nullable=False),
    sa.UniqueConstraint("study_id", "SeriesInstanceUID"),
    sa.Index(None, "SeriesInstanceUID"),
    sa.Index(None, "Modality"),
    sa.Index(None, "source_id"),
    sqlite_autoincrement=True,
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("series_id", sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    *_attribute_columns(IMAGE_ATTRIBUTES),
    sa.Column("TransferSyntaxUID", sa.String(), nullable=False, default="", server_default=""),
    sa.Column("NumberOfFrames", sa.Integer, nullable=False, default=1, server_default=sa.text("1")),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("storage_key", sa.String(), nullable=False),
    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id"), nullable=False),
    _timestamp("created"),
    _timestamp("updated"),
    sa.UniqueConstraint("series_id", "SOPInstanceUID"),
    sa.UniqueConstraint("storage_key"),
    sa.Index(None, "SOPInstanceUID"),
    sa.Index(None, "source_id"),
    sqlite_autoincrement=True,
)

log = sa.Table(
    "log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _timestamp("created"),
    sa.Column("entry_type", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("message", sa.String(), nullable=False),
    sqlite_autoincrement=True,
)

#: The tables of the hierarchy, top down, by level name.
# ------------------------------------------------------------------------------------------------
# Node configuration and work that must survive a restart (DICOM networking, folder watches,
# import sessions, jobs).  Kept in the same database so one backup holds the whole node.

scps = sa.Table(
    "scps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("ae_title", sa.String(16), nullable=False),
    sa.Column("host", sa.String(), nullable=False, server_default="0.0.0.0"),
    sa.Column("port", sa.Integer, nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

scus = sa.Table(
    "scus",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("ae_title", sa.String(16), nullable=False),
    sa.Column("host", sa.String(), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

directory_watches = sa.Table(
    "directory_watches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("path", sa.String(), nullable=False),
    sa.Column("delete_on_import", sa.Boolean, nullable=False, server_default=sa.false()),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sa.UniqueConstraint("path"),
    sqlite_autoincrement=True,
)

import_sessions = sa.Table(
    "import_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("user", sa.String(), nullable=False),
    sa.Column("files_imported", sa.Integer, nullable=False, server_default="0"),
    sa.Column("files_added", sa.Integer, nullable=False, server_default="0"),
    sa.Column("files_rejected", sa.Integer, nullable=False, server_default="0"),
    _timestamp("created"),
    _timestamp("last_updated"),
    sa.UniqueConstraint("name", "user"),
    sqlite_autoincrement=True,
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("description", sa.String(), nullable=False, server_default=""),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("progress_total", sa.Integer, nullable=True),
    #: JSON: counters the job reports (sent, failed, ...), its parameters (to resume) and result
    sa.Column("counts", sa.Text, nullable=False, server_default="{}"),
    sa.Column("parameters", sa.Text, nullable=False, server_default="{}"),
    sa.Column("result", sa.Text, nullable=False, server_default="{}"),
    sa.Column("error", sa.String(), nullable=False, server_default=""),
    sa.Column("owner", sa.String(), nullable=False, server_default=""),
    _timestamp("created"),
    sa.Column("started", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
    sa.Index(None, "state"),
    sqlite_autoincrement=True,
)


LEVEL_TABLES: dict[str, sa.Table] = {"patient": patients, "study": studies, "series": series, "image": images}
