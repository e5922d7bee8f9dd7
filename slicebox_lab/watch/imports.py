"""Import sessions (Slicebox's ``/api/import/sessions``): named batches of uploads with counters.

A user creates a session by name, then posts files to it one by one.  Every file goes through the
one ingest path (:meth:`SliceboxContext.ingest`) with the source ``Source("import", <session name>)``;
the session counts the files accepted (``files_imported``), the images that were new
(``files_added``) and the files refused (``files_rejected``).

Imports (sessions and watched folders) accept *image data* only: Secondary Capture objects, which
``POST /images`` stores, are refused here as Slicebox did (:func:`refuse_secondary_capture`).

Blocking (SQL, parsing): callers on the event loop go through ``asyncio_bridge.run_blocking``.
"""

from __future__ import annotations

import builtins
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydicom
import sqlalchemy as sa

from ..errors import InvalidDicom, InvalidInput, NotFound
from ..index import _records, query
from ..index.schema import images, import_sessions, sources
from ..model import Image, IngestResult, Source

if TYPE_CHECKING:
    from ..context import SliceboxContext

#: Secondary Capture Image Storage and its multi-frame variants (1.2.840.10008.5.1.4.1.1.7.x)
SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"
MAX_NAME_LENGTH = 256


def is_secondary_capture(sop_class_uid: str) -> bool:
    """True for Secondary Capture SOP classes (not for e.g. the VL classes 1.2.840.10008.5.1.4.1.1.77.x)."""
    uid = sop_class_uid.strip().rstrip("\x00").strip()
    return uid == SECONDARY_CAPTURE_ROOT or uid.startswith(SECONDARY_CAPTURE_ROOT + ".")


def refuse_secondary_capture(data: bytes) -> None:
    """Raise ``InvalidDicom`` if ``data`` is a Secondary Capture object (imports take image data only).

    Reads the header only; bytes that cannot be read are left for the ingest to refuse with its
    own, precise reason.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return
    meta = getattr(ds, "file_meta", None)
    candidates = (str(ds.get("SOPClassUID", "") or ""), str(getattr(meta, "MediaStorageSOPClassUID", "") or ""))
    for uid in candidates:
        if uid and is_secondary_capture(uid):
            raise InvalidDicom(
                f"Secondary Capture objects (SOP class {uid.strip()}) are not accepted by imports and "
                "directory watches: upload them with POST /images"
            )


@dataclass(frozen=True)
class ImportSession:
    id: int
    name: str
    user: str
    files_imported: int
    files_added: int
    files_rejected: int
    created: str
    last_updated: str


_COLUMNS = tuple(import_sessions.c[name] for name in ImportSession.__dataclass_fields__)


def _session(row: Sequence[Any]) -> ImportSession:
    values = list(row)
    values[-2] = _records.iso(values[-2])
    values[-1] = _records.iso(values[-1])
    return ImportSession(*values)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("an import session needs a non-empty string 'name'")
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput(f"an import session name must be at most {MAX_NAME_LENGTH} characters, without NUL")
    return name


class ImportSessions:
    """The import sessions of a node, over its index; stateless, thread-safe, blocking."""

    def __init__(self, context: SliceboxContext) -> None:
        self.context = context
        self.index = context.index

    def create(self, name: Any, user: str) -> tuple[ImportSession, bool]:
        """(session, created): the caller's session of that name, made if new.

        The same name owned by another user is refused (Slicebox: 400).
        """
        name = _name(name)
        now = datetime.now(UTC)
        with self.index.writing() as conn:
            rows = conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.name == name)).all()
            for row in rows:
                if row.user == user:
                    return _session(row), False
            if rows:
                raise InvalidInput(f"an import session named {name!r} already exists and belongs to another user")
            session_id = conn.execute(
                import_sessions.insert()
                .values(name=name, user=user, created=now, last_updated=now)
                .returning(import_sessions.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.id == session_id)).one()
        session = _session(row)
        self.index.add_log("INFO", "Import", f"import session {name!r} created by {user}")
        return session, True

    def list(self, start_index: int = 0, count: int = 20) -> list[ImportSession]:
        start, limit = query._page(start_index, count)
        statement = sa.select(*_COLUMNS).order_by(import_sessions.c.id).offset(start).limit(limit)
        with self.index.reading() as conn:
            return [_session(row) for row in conn.execute(statement)]

    def get(self, session_id: int) -> ImportSession:
        key = query.row_id(session_id, "import session id")
        if key is not None:
            with self.index.reading() as conn:
                row = conn.execute(sa.select(*_COLUMNS).where(import_sessions.c.id == key)).first()
            if row is not None:
                return _session(row)
        raise NotFound(f"import session {session_id} not found")

    def delete(self, session_id: int) -> None:
        """Delete a session (its images stay); unknown ids are ignored."""
        key = query.row_id(session_id, "import session id")
        if key is None:
            return
        with self.index.writing() as conn:
            name = conn.execute(
                import_sessions.delete().where(import_sessions.c.id == key).returning(import_sessions.c.name)
            ).scalar_one_or_none()
        if name is not None:
            self.index.add_log("INFO", "Import", f"import session {name!r} deleted")

    def images(self, session_id: int) -> builtins.list[Image]:
        """The images whose latest source is this session (those that still exist)."""
        session = self.get(session_id)
        statement = (
            sa.select(*_records.IMAGE_COLUMNS)
            .join(sources, sources.c.id == images.c.source_id)
            .where(sources.c.source_type == "import", sources.c.source_name == session.name)
            .order_by(images.c.id)
        )
        with self.index.reading() as conn:
            return [_records.image(row) for row in conn.execute(statement)]

    def add_image(self, session_id: int, data: bytes) -> IngestResult:
        """Ingest one file into the session and count it; a refused file is counted, then re-raised."""
        session = self.get(session_id)
        try:
            refuse_secondary_capture(data)
            result = self.context.ingest(data, Source("import", session.name))
        except Exception as error:
            self._count(session.id, imported=0, added=0, rejected=1)
            reason = getattr(error, "message", None) or str(error) or type(error).__name__
            self.index.add_log("WARN", "Import", f"import session {session.name!r}: file rejected: {reason}")
            raise
        self._count(session.id, imported=1, added=int(result.image_added), rejected=0)
        return result

    def _count(self, session_id: int, imported: int, added: int, rejected: int) -> None:
        c = import_sessions.c
        with self.index.writing() as conn:
            conn.execute(
                import_sessions.update()
                .where(c.id == session_id)
                .values(
                    files_imported=c.files_imported + imported,
                    files_added=c.files_added + added,
                    files_rejected=c.files_rejected + rejected,
                    last_updated=datetime.now(UTC),
                )
            )
