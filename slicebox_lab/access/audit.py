"""The audit trail: who did what, when and from where, append-only.

Two generic writers, so no handler has to remember it: every REST request that changes something
(and the GETs that let data or keys leave: export, raw download, key CSV) is recorded by
``SliceboxHandler.on_finish`` with the caller's name, address, method, path and status; images
arriving from non-REST sources (SCP, folder watch, partner box) are recorded from the event bus
with the source as "who".  Entries are written by one background thread in the order they were
recorded, so the trail of a scripted session reads in order; readers call :meth:`AuditTrail.flush`
first to see everything recorded before their request.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidInput
from ..events import EventBus, ImageAdded, ImagesDeleted
from ..index import audit as rows
from ..index.audit import AuditEntry

log = logging.getLogger(__name__)

#: seconds the writer waits for more entries after the first of a batch (lost on a crash, like the queue)
LINGER_S = 0.05
#: most entries in one transaction
MAX_BATCH = 1000


#: (method, path pattern below /slicebox/api/, action); first match wins, "configure" for admin routes
_ACTIONS: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), a)
    for m, p, a in [
        ("POST", r"users/login", "login"),
        ("POST", r"users/logout", "logout"),
        ("GET", r"anonymization/keys/export/csv", "key-export"),
        ("GET", r"images/export", "export"),
        ("GET", r"transactions/[^/]+/outgoing", "send"),
        ("GET", r"images/\d+", "export"),
        ("POST", r"images/\d+/anonymized", "export"),
        ("PUT", r"images/\d+/anonymize", "anonymize"),
        ("POST", r"anonymization/anonymize", "anonymize"),
        ("PUT", r"images/\d+/modify", "modify"),
        ("POST", r"images/delete", "delete"),
        ("POST", r"(boxes|scus)/\d+/send", "send"),
        ("POST", r"scus/\d+/retrieve", "retrieve"),
        ("POST", r"images", "ingest"),
        ("POST", r"import/sessions/\d+/images", "ingest"),
        ("POST", r"dicomweb/.*studies", "ingest"),
    ]
]

#: GETs worth recording: data or keys leave the node
SENSITIVE_GETS = [pattern for method, pattern, _ in _ACTIONS if method == "GET"]


def action_of(method: str, subpath: str, admin: bool) -> str:
    """The category of a request, from its method and path below ``/slicebox/api/``."""
    for m, pattern, action in _ACTIONS:
        if m == method and pattern.fullmatch(subpath):
            return action
    if admin:
        return "configure"
    return "delete" if method == "DELETE" else method.lower()


def is_recorded(method: str, subpath: str) -> bool:
    if method not in ("GET", "HEAD", "OPTIONS"):
        return True
    return method == "GET" and any(p.fullmatch(subpath) for p in SENSITIVE_GETS)


class AuditTrail:
    """Writes and reads the ``audit`` table of the index database."""

    def __init__(self, index: Any) -> None:
        self._index = index
        # one writer thread: entries land in the order they were recorded, and whatever queued up
        # while it waited or wrote goes in the next single transaction (an upload burst costs few commits).
        # Recording appends to a deque and wakes the writer only when it is idle: a request that records
        # an entry does not hand the GIL to another thread (which cost the event loop more than the entry).
        self._entries: collections.deque[dict[str, Any]] = collections.deque()
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._work = threading.Event()
        self._urgent = threading.Event()
        self._stop = False
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="slicebox-audit", daemon=True)
        self._writer.start()
        self._unsubscribe: list[Callable[[], None]] = []

    def record(
        self,
        user: str,
        action: str,
        *,
        method: str = "",
        path: str = "",
        status: int = 0,
        remote_ip: str = "",
        detail: str = "",
    ) -> None:
        """Queue one entry (never blocks, never raises: auditing must not break the request)."""
        values = {
            "created": datetime.now(UTC),
            "user": _clean(user),
            "action": _clean(action),
            "method": _clean(method),
            "path": _clean(path),
            "status": int(status),
            "remote_ip": _clean(remote_ip),
            "detail": _clean(detail),
        }
        if self._closed:
            log.warning("slicebox audit: dropped %s %s by %s (trail closed)", action, path, user)
            return
        self._entries.append(values)
        if not self._work.is_set():
            self._work.set()

    def _run(self) -> None:
        while True:
            self._work.wait()
            # entries of a burst (one per received image) wait up to LINGER_S for the next ones, so a
            # transaction carries many: one per entry cost the receiver of a box transfer 0.5 ms per image.
            # A flush or a stop ends the wait at once.
            self._urgent.wait(LINGER_S)
            self._work.clear()
            self._urgent.clear()
            waiters = [self._waiters.popleft() for _ in range(len(self._waiters))]
            while self._entries:
                batch = [self._entries.popleft() for _ in range(min(len(self._entries), MAX_BATCH))]
                try:
                    rows.insert_entries(self._index, batch)  # not fsynced on its own (see there)
                except Exception:
                    log.exception("slicebox audit: could not record %d entries", len(batch))
            for waiter in waiters:
                waiter.set()
            if self._stop:
                return

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every entry recorded so far is written (blocking)."""
        if self._closed:
            return
        done = threading.Event()
        self._waiters.append(done)
        self._urgent.set()
        self._work.set()
        done.wait(timeout)

    def list(
        self,
        start_index: int = 0,
        count: int = 20,
        user: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool = True,
    ) -> list[AuditEntry]:
        if start_index < 0 or count < 0:
            raise InvalidInput("startindex and count must be non-negative")
        return rows.list_entries(self._index, start_index, count, user, action, since, until, newest_first)

    # ------------------------------------------------------------- non-REST sources

    def subscribe(self, events: EventBus) -> None:
        """Record images arriving from SCPs, folder watches and partner boxes (REST ones are recorded by
        handlers), and every re-identification on ingest."""
        self._unsubscribe.append(events.subscribe(ImageAdded, self._image_added))
        self._unsubscribe.append(events.subscribe(ImagesDeleted, self._images_deleted))

    def _images_deleted(self, event: ImagesDeleted) -> None:
        """Every deletion, whoever caused it (a REST request also has its own entry with the user; a
        forwarding rule or a bulk anonymization deletes without one), with the ids deleted."""
        ids = event.image_ids
        shown = ", ".join(str(i) for i in ids[:50]) + (f" and {len(ids) - 50} more" if len(ids) > 50 else "")
        self.record("node", "images-deleted", remote_ip="node", detail=f"{len(ids)} images: {shown}")

    def _image_added(self, event: ImageAdded) -> None:
        source = event.source
        rest = source.source_type in ("user", "import")
        who = source.source_name if source.source_type == "user" else f"{source.source_type}:{source.source_name}"
        detail = f"image {event.image.id}" + (" (overwrite)" if event.overwrite else "")
        if event.reidentified:
            # any source, REST too: the request's own entry says "ingest", this one says whose identity came back
            self.record(who, "reidentify", remote_ip="" if rest else source.source_type, detail=detail)
        if rest:
            return
        action = "receive" if source.source_type == "box" else "ingest"
        self.record(who, action, remote_ip=source.source_type, detail=detail)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if not self._closed:
            self._closed = True
            self._stop = True
            self._urgent.set()
            self._work.set()
            self._writer.join(timeout=30)


def _clean(value: object) -> str:
    return str(value).replace("\x00", "")[:2000]
