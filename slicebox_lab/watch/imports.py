"""Import sessions (Slicebox's ``/api/import/sessions``): named batches of uploads with counters.

A user creates a session by name, then posts files to it one by one.  Every file goes through the
one ingest path (:meth:`SliceboxContext.ingest`) with the source ``Source("import", <session name>)``;
the session counts the files accepted (``files_imported``), the images that were new
(``files_added``) and the files refused (``files_rejected``).

Imports (sessions and watched folders) accept *image data* only: Secondary Capture objects, which
``POST /images`` stores, are refused here as Slicebox did (:func:`refuse_secondary_capture`).

The rows are ``index/imports.py``.  Blocking (SQL, parsing): callers on the event loop go through
``asyncio_bridge.run_blocking``.
"""

from __future__ import annotations

import builtins
import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydicom

from ..errors import InvalidDicom, InvalidInput
from ..index import imports as rows
from ..index import query
from ..index.imports import ImportSession
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


def checked_name(value: Any, what: str = "an import session") -> str:
    """The name a user gives ``what``: an import session or a folder watch (``service.py``), the two ways
    files come in without a network protocol, named by one rule."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} needs a non-empty string 'name'")
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput(f"{what} name must be at most {MAX_NAME_LENGTH} characters, without NUL")
    return name


class ImportSessions:
    """The import sessions of a node, over its index; stateless, thread-safe, blocking."""

    def __init__(self, context: SliceboxContext) -> None:
        self.context = context
        self.index = context.index

    def create(self, name: Any, user: str, former_names: tuple[str, ...] = ()) -> tuple[ImportSession, bool]:
        """(session, created): the caller's session of that name, made if new.

        The same name owned by another user is refused (Slicebox: 400). ``former_names``: names the
        caller's sessions were stored under before (the server's owner was once ``anonymous``).
        """
        name = checked_name(name)
        now = datetime.now(UTC)
        with self.index.writing() as conn:
            named = rows.sessions_named(conn, name)
            for existing in named:
                if existing.user == user or existing.user in former_names:
                    return existing, False
            if named:
                raise InvalidInput(f"an import session named {name!r} already exists and belongs to another user")
            session = rows.insert_session(conn, name, user, now)
        self.index.add_log("INFO", "Import", f"import session {name!r} created by {user}")
        return session, True

    def list(self, start_index: int = 0, count: int = 20) -> list[ImportSession]:
        return rows.list_sessions(self.index, start_index, count)

    def get(self, session_id: int) -> ImportSession:
        return query.found(session_id, "import session", lambda key: rows.session_by_id(self.index, key))

    def delete(self, session_id: int) -> None:
        """Delete a session (its images stay); unknown ids are ignored."""
        key = query.row_id(session_id, "import session id")
        if key is None:
            return
        name = rows.delete_session(self.index, key)
        if name is not None:
            self.index.add_log("INFO", "Import", f"import session {name!r} deleted")

    def images(self, session_id: int) -> builtins.list[Image]:
        """The images whose latest source is this session (those that still exist)."""
        session = self.get(session_id)
        return rows.session_images(self.index, session.name)

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
        rows.count_files(self.index, session_id, imported, added, rejected)
