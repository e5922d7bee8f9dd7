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

#: Case-insensitive wildcards on PatientName / PatientID read an index range (migration 0009): an index on
#: ``lower(x)``, on PostgreSQL with ``text_pattern_ops`` (``lower(x) LIKE 'abc%'`` in any locale), on SQLite
#: used by the ``lower(x) >= 'abc' AND lower(x) < 'abd'`` range that query.py adds to a prefix pattern.
for _name in ("PatientName", "PatientID"):
    sa.Index(
        f"ix_patients_{_name}_lower",
        sa.func.lower(patients.c[_name]).label(f"lower_{_name}"),
        postgresql_ops={f"lower_{_name}": "text_pattern_ops"},
    )

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_id", sa.Integer, sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    *_attribute_columns(STUDY_ATTRIBUTES),
    sa.UniqueConstraint("patient_id", "StudyInstanceUID"),
    sa.Index(None, "patient_id", "id"),
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
    sa.Index(None, "study_id", "id"),
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
    sa.Index(None, "series_id", "id"),
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
    #: the server process running the job ("host:pid:random"), its last sign of life, and a cancel
    #: asked for on another server (several servers share one database: see jobs/servers.py)
    sa.Column("server", sa.String(), nullable=False, server_default=""),
    sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(None, "state"),
    sqlite_autoincrement=True,
)

#: the server processes using this database, with their heartbeats (see jobs/servers.py): a start after a
#: crash repairs storage more carefully while other servers are live
servers = sa.Table(
    "servers",
    metadata,
    sa.Column("server", sa.String(), primary_key=True),
    sa.Column("host", sa.String(), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    _timestamp("started"),
    _timestamp("heartbeat"),
)


#: identity values an anonymization key holds, each as real ``X`` and anonymous ``AnonX``
KEY_IDENTITY_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)

anonymization_keys = sa.Table(
    "anonymization_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _timestamp("created"),
    #: the image that was anonymized (no foreign key: the key outlives the image, e.g. after an
    #: in-place anonymization, so data coming back can still be re-identified)
    sa.Column("image_id", sa.Integer, nullable=True),
    #: the options of the profile, space-separated
    sa.Column("profile", sa.String(), nullable=False, server_default=""),
    *(
        sa.Column(name, sa.String(), nullable=False, server_default="")
        for attribute in KEY_IDENTITY_ATTRIBUTES
        for name in (attribute, f"Anon{attribute}")
    ),
    sa.UniqueConstraint("SOPInstanceUID", "AnonSOPInstanceUID"),
    sa.Index(None, "AnonSOPInstanceUID"),
    sa.Index(None, "AnonSeriesInstanceUID"),
    sa.Index(None, "AnonStudyInstanceUID"),
    sa.Index(None, "AnonPatientID"),
    sa.Index(None, "PatientID"),
    sqlite_autoincrement=True,
)

anonymization_key_values = sa.Table(
    "anonymization_key_values",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("anonymization_keys.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tag_path", sa.String(), nullable=False),
    #: PATIENT, STUDY, SERIES or IMAGE: restored only by a key matching at that level or below
    sa.Column("level", sa.String(), nullable=False),
    sa.Column("value", sa.String(), nullable=False, server_default=""),
    sa.Column("anonymized_value", sa.String(), nullable=False, server_default=""),
    sa.UniqueConstraint("key_id", "tag_path"),
    sqlite_autoincrement=True,
)

LEVEL_TABLES: dict[str, sa.Table] = {"patient": patients, "study": studies, "series": series, "image": images}

# ---------------------------------------------------------------------------------------------- boxes
# Partner nodes and their transactions (slicebox_lab/box).  No foreign key from a transaction to its
# box: deleting a box revokes its token but keeps the history of what was sent and received.

boxes = sa.Table(
    "boxes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    #: POLL: the partner calls us with our token (we keep only its SHA-256); PUSH: we call the partner
    sa.Column("send_method", sa.String(), nullable=False),
    sa.Column("token_hash", sa.String(), nullable=False, server_default=""),
    #: PUSH boxes: the partner's transaction URL, whose last segment is the partner's token
    sa.Column("base_url", sa.String(), nullable=False, server_default=""),
    #: JSON of ``Profile.from_json``
    sa.Column("default_profile", sa.Text, nullable=False, server_default="{}"),
    #: images flagged PatientIdentityRemoved=YES leave as they are (results going back to the node that
    #: can re-identify them) instead of being anonymized again; off by default
    sa.Column("send_anonymous_as_is", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_contact", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.String(), nullable=False, server_default=""),
    sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sa.Index(None, "token_hash"),
    sqlite_autoincrement=True,
)

box_outgoing_transactions = sa.Table(
    "box_outgoing_transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("box_id", sa.Integer, nullable=False),
    sa.Column("box_name", sa.String(), nullable=False),
    sa.Column("profile", sa.Text, nullable=False, server_default="{}"),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("reason", sa.String(), nullable=False, server_default=""),
    sa.Column("total_image_count", sa.Integer, nullable=False),
    sa.Column("sent_image_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed_image_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("job_id", sa.Integer, nullable=True),
    _timestamp("created"),
    _timestamp("updated"),
    sa.Index(None, "box_id", "status"),
    sqlite_autoincrement=True,
)

box_outgoing_images = sa.Table(
    "box_outgoing_images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "transaction_id",
        sa.Integer,
        sa.ForeignKey("box_outgoing_transactions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("image_id", sa.Integer, nullable=False),
    sa.Column("sequence_number", sa.Integer, nullable=False),
    #: PENDING, SENT (the receiver confirmed it durable) or FAILED (``reason`` says why)
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("reason", sa.String(), nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    #: JSON list of tag values written after the profile (``[{"tagPath", "value", "vr"?}]``)
    sa.Column("tag_values", sa.Text, nullable=False, server_default="[]"),
    sa.Column("sha256", sa.String(), nullable=False, server_default=""),
    sa.UniqueConstraint("transaction_id", "sequence_number"),
    sa.Index(None, "image_id"),
    sqlite_autoincrement=True,
)

box_incoming_transactions = sa.Table(
    "box_incoming_transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("box_id", sa.Integer, nullable=False),
    sa.Column("box_name", sa.String(), nullable=False),
    #: the sender's id of its outgoing transaction
    sa.Column("outgoing_transaction_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("total_image_count", sa.Integer, nullable=False),
    sa.Column("received_image_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("added_image_count", sa.Integer, nullable=False, server_default="0"),
    _timestamp("created"),
    _timestamp("updated"),
    sa.UniqueConstraint("box_id", "outgoing_transaction_id"),
    sqlite_autoincrement=True,
)

box_incoming_images = sa.Table(
    "box_incoming_images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "transaction_id",
        sa.Integer,
        sa.ForeignKey("box_incoming_transactions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("sequence_number", sa.Integer, nullable=False),
    #: the stored image (no foreign key: the image may be deleted later, the record of receipt stays)
    sa.Column("image_id", sa.Integer, nullable=False),
    #: the image replaced one that was already stored (same identity)
    sa.Column("overwrite", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sha256", sa.String(), nullable=False, server_default=""),
    sa.UniqueConstraint("transaction_id", "sequence_number"),
    sa.Index(None, "image_id"),
    sqlite_autoincrement=True,
)

# ---------------------------------------------------------------------------------------------- tag filters
# Blacklists and whitelists of tag paths, attached to sources by type and name (slicebox_lab/routing/filtering.py).

tag_filters = sa.Table(
    "tag_filters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    #: WHITELIST or BLACKLIST
    sa.Column("filter_type", sa.String(), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

tag_filter_paths = sa.Table(
    "tag_filter_paths",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("filter_id", sa.Integer, sa.ForeignKey("tag_filters.id", ondelete="CASCADE"), nullable=False),
    #: canonical tag path text (dicom/tagpath.py)
    sa.Column("tag_path", sa.String(), nullable=False),
    sa.UniqueConstraint("filter_id", "tag_path"),
    sqlite_autoincrement=True,
)

#: a source need not have sent anything yet, so it is named by type and name, not by ``sources.id``
source_tag_filters = sa.Table(
    "source_tag_filters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_type", sa.String(), nullable=False),
    sa.Column("source_name", sa.String(), nullable=False),
    sa.Column("filter_id", sa.Integer, sa.ForeignKey("tag_filters.id", ondelete="CASCADE"), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("source_type", "source_name", "filter_id"),
    sa.Index(None, "filter_id"),
    sqlite_autoincrement=True,
)

# ---------------------------------------------------------------------------------------------- organizing series
# Series tags (free-form labels) and series types (classes assigned by rules over attribute values),
# slicebox_lab/organize.  Links cascade with the series: deleting the images of a series removes its
# links, never the tags or types themselves.

series_tags = sa.Table(
    "series_tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

#: primary key (tag, series): the listing by tag reads one index range
series_series_tags = sa.Table(
    "series_series_tags",
    metadata,
    sa.Column("series_tag_id", sa.Integer, sa.ForeignKey("series_tags.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("series_id", sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True),
    sa.Index(None, "series_id"),
)

series_types = sa.Table(
    "series_types",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

series_type_rules = sa.Table(
    "series_type_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("series_type_id", sa.Integer, sa.ForeignKey("series_types.id", ondelete="CASCADE"), nullable=False),
    #: JSON list of ``{"tag": <canonical tag path>, "values": [str]}``; all must match (organize/seriestypes.py)
    sa.Column("attributes", sa.Text, nullable=False, server_default="[]"),
    _timestamp("created"),
    sa.Index(None, "series_type_id"),
    sqlite_autoincrement=True,
)

series_series_types = sa.Table(
    "series_series_types",
    metadata,
    sa.Column("series_type_id", sa.Integer, sa.ForeignKey("series_types.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("series_id", sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True),
    #: assigned by hand (kept by re-classification) rather than by a rule
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "series_id"),
)

# ---------------------------------------------------------------------------------------------- forwarding
# Forwarding rules (slicebox_lab/routing/forwarding.py): images from a source are queued per rule, sent in
# batches once the source is quiet, and (keepImages=false) deleted here once delivery is confirmed.

forwarding_rules = sa.Table(
    "forwarding_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_type", sa.String(), nullable=False),
    sa.Column("source_name", sa.String(), nullable=False),
    #: "box" or "scu"
    sa.Column("destination_type", sa.String(), nullable=False),
    sa.Column("destination_id", sa.Integer, nullable=False),
    sa.Column("destination_name", sa.String(), nullable=False),
    sa.Column("keep_images", sa.Boolean, nullable=False),
    sa.Column("quiet_seconds", sa.Float, nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint(
        "source_type",
        "source_name",
        "destination_type",
        "destination_id",
        name="uq_forwarding_rules_source_destination",
    ),  # fmt: skip
    sqlite_autoincrement=True,
)

#: images waiting for their rule's source to be quiet; gone with the image or the rule
forwarding_queue = sa.Table(
    "forwarding_queue",
    metadata,
    sa.Column("rule_id", sa.Integer, sa.ForeignKey("forwarding_rules.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    _timestamp("added"),
    sa.Index(None, "image_id"),
)

forwarding_batches = sa.Table(
    "forwarding_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("rule_id", sa.Integer, sa.ForeignKey("forwarding_rules.id", ondelete="CASCADE"), nullable=False),
    #: QUEUED, SENDING, DELIVERED, FAILED
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("image_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.Column("transaction_id", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
    _timestamp("created"),
    _timestamp("updated"),
    sa.Index(None, "rule_id"),
    sa.Index(None, "state"),
    sqlite_autoincrement=True,
)

#: no foreign key to images: the history of a batch outlives its images (deleted after delivery)
forwarding_batch_images = sa.Table(
    "forwarding_batch_images",
    metadata,
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("forwarding_batches.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("image_id", sa.Integer, primary_key=True),
    #: PENDING, DELIVERED, DELETED, KEPT, RETRIED, FAILED, SKIPPED
    sa.Column("state", sa.String(), nullable=False),
    sa.Index(None, "image_id"),
    sa.Index(None, "state"),
)

# Node-local users (slicebox_lab/access/users.py) and the audit trail (slicebox_lab/access/audit.py).  The audit
# table is append-only: no route updates or deletes its rows.

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("role", sa.String(), nullable=False),
    #: argon2id hash (PHC string); never leaves the server
    sa.Column("password_hash", sa.String(), nullable=False),
    _timestamp("created"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _timestamp("created"),
    #: who: a user name, or "scp:<name>", "directory:<name>", "box:<name>" for non-REST sources
    sa.Column("user", sa.String(), nullable=False),
    #: what, as a category: ingest, delete, export, anonymize, send, receive, reidentify, key-export, login, ...
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("method", sa.String(), nullable=False, server_default=""),
    sa.Column("path", sa.String(), nullable=False, server_default=""),
    sa.Column("status", sa.Integer, nullable=False, server_default="0"),
    #: from where: the client's address, or the source's description
    sa.Column("remote_ip", sa.String(), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index(None, "created"),
    sa.Index(None, "user"),
    sqlite_autoincrement=True,
)

# ---------------------------------------------------------------------------------------------- apps
# Apps (slicebox_lab/apps/): a group's own code, a Python function or a notebook, run on every stable series
# (or study) of a type, or on demand; every run is recorded with its provenance, its results come back in.

apps = sa.Table(
    "apps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("version", sa.String(), nullable=False, server_default=""),
    #: "function" or "notebook"
    sa.Column("kind", sa.String(), nullable=False),
    #: "module:function" or "/path/file.py:function" of a function; the entry's name for inline code; a notebook's path
    sa.Column("target", sa.Text, nullable=False, server_default=""),
    #: inline Python source or notebook JSON, when the app was registered with its code
    sa.Column("code", sa.Text, nullable=False, server_default=""),
    #: JSON: the names of the series types that trigger the app, and a rule (conditions as series types have)
    sa.Column("series_types", sa.Text, nullable=False, server_default="[]"),
    sa.Column("rule", sa.Text, nullable=False, server_default="[]"),
    #: "series" or "study"
    sa.Column("level", sa.String(), nullable=False, server_default="series"),
    sa.Column("parameters", sa.Text, nullable=False, server_default="{}"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("rerun_on_growth", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("retries", sa.Integer, nullable=False, server_default="2"),
    sa.Column("retry_seconds", sa.Float, nullable=False, server_default="10"),
    sa.Column("timeout_seconds", sa.Float, nullable=True),
    _timestamp("created"),
    _timestamp("updated"),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

#: one attempt of an app on one series or study: its provenance, log, outputs and error
app_runs = sa.Table(
    "app_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.Integer, nullable=True),
    #: the first job of an on-demand batch (its resumes carry it on), None for a triggered run
    sa.Column("batch_id", sa.Integer, nullable=True),
    sa.Column("app_id", sa.Integer, sa.ForeignKey("apps.id", ondelete="SET NULL"), nullable=True),
    sa.Column("app_name", sa.String(), nullable=False),
    sa.Column("app_version", sa.String(), nullable=False),
    sa.Column("level", sa.String(), nullable=False),
    #: the series (or study) run on
    sa.Column("subject_id", sa.Integer, nullable=False),
    #: JSON: the input series ids and SOPInstanceUIDs, the parameters, the outputs and plain values
    sa.Column("series_ids", sa.Text, nullable=False, server_default="[]"),
    sa.Column("sop_instance_uids", sa.Text, nullable=False, server_default="[]"),
    sa.Column("image_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("parameters", sa.Text, nullable=False, server_default="{}"),
    sa.Column("trigger", sa.String(), nullable=False, server_default=""),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("state", sa.String(), nullable=False),
    _timestamp("started"),
    sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
    sa.Column("log", sa.Text, nullable=False, server_default=""),
    #: the executed notebook of a notebook app (JSON)
    sa.Column("notebook", sa.Text, nullable=False, server_default=""),
    sa.Column("outputs", sa.Text, nullable=False, server_default="[]"),
    sa.Column("result_values", sa.Text, nullable=False, server_default="{}"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Index(None, "app_id", "subject_id"),
    sa.Index(None, "job_id"),
    sa.Index(None, "batch_id"),
    sqlite_autoincrement=True,
)

#: series and studies that received an image and are not stable yet (a restart keeps them)
app_pending = sa.Table(
    "app_pending",
    metadata,
    sa.Column("level", sa.String(), primary_key=True),
    sa.Column("subject_id", sa.Integer, primary_key=True),
    _timestamp("added"),
)
