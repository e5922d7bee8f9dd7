"""The directory-watch service: the watched folders of a node (table ``directory_watches``).

Each watch is a folder whose DICOM files (already there, and arriving later, in subfolders too)
are imported through the one ingest path with the source ``Source("directory", <watch name>)``;
see :mod:`slicebox_lab.watch.watcher` for how files are read only once written completely.

Rules (Slicebox §2.11, checklist 93–95):

* the path must be an existing directory (absolute; ``~`` expanded; symlinks resolved);
* a path equal to, inside, or containing another watch's path → ``InvalidInput`` (400), as is one
  overlapping the node's own storage folder;
* the same name and path again → the existing watch; the same name with another path →
  ``Conflict`` (409);
* removing a watch stops its thread; the images it imported stay.

Blocking (SQL, joining threads): callers on the event loop go through ``run_blocking``.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import Conflict, InvalidInput, NotFound
from ..index import _records, query
from ..index.schema import directory_watches
from .watcher import SUBJECT, FolderWatcher

if TYPE_CHECKING:
    from ..context import SliceboxContext

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 256


@dataclass(frozen=True)
class WatchedDirectory:
    id: int
    name: str
    path: str
    delete_on_import: bool
    created: str


_COLUMNS = tuple(directory_watches.c[name] for name in WatchedDirectory.__dataclass_fields__)


def _record(row: Sequence[Any]) -> WatchedDirectory:
    values = list(row)
    values[3] = bool(values[3])
    values[4] = _records.iso(values[4])
    return WatchedDirectory(*values)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a directory watch needs a non-empty string 'name'")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput(f"a directory watch name must be at most {MAX_NAME_LENGTH} characters, without NUL")
    return name


def _check_path(path: Any) -> Path:
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise InvalidInput("a directory watch needs a non-empty string 'path'")
    given = Path(path.strip()).expanduser()
    if not given.is_absolute():
        raise InvalidInput(f"Could not create directory watch: the path must be absolute, not {path!r}")
    try:
        resolved = given.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidInput(f"Could not create directory watch: No such directory: {given}") from None
    if not resolved.is_dir():
        raise InvalidInput(f"Could not create directory watch: Not a directory: {given}")
    return resolved


def _intersects(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


class WatchService:
    """Starts, adds and removes the folder watches of a node; one thread per watch."""

    name = "directory watches"

    def __init__(
        self,
        context: SliceboxContext,
        settle_seconds: float = 1.0,
        retry_seconds: float = 3.0,
        tick_seconds: float = 0.25,
    ) -> None:
        self.context = context
        self.index = context.index
        self.settle_seconds = settle_seconds
        self.retry_seconds = retry_seconds
        self.tick_seconds = tick_seconds
        self._lock = threading.Lock()
        self._watchers: dict[int, FolderWatcher] = {}
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            for watch in self.list():
                self._start_watcher(watch)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._running = False
            watchers = list(self._watchers.values())
            self._watchers.clear()
        self._stop_watchers(watchers, timeout)

    def _start_watcher(self, watch: WatchedDirectory) -> None:
        watcher = FolderWatcher(watch, self.context, self.settle_seconds, self.retry_seconds, self.tick_seconds)
        self._watchers[watch.id] = watcher
        watcher.start()

    @staticmethod
    def _stop_watchers(watchers: builtins.list[FolderWatcher], timeout: float) -> None:
        for watcher in watchers:
            watcher.stop()
        deadline = time.monotonic() + timeout
        for watcher in watchers:
            if not watcher.join(deadline - time.monotonic()):
                log.error("slicebox: the watch of %s did not stop within %.1f s", watcher.root, timeout)

    @property
    def threads_alive(self) -> int:
        """How many watch threads are running (for tests and health checks)."""
        with self._lock:
            return sum(1 for w in self._watchers.values() if w.alive)

    # ------------------------------------------------------------------ watches

    def add(self, name: Any, path: Any, delete_on_import: bool = False) -> WatchedDirectory:
        """Watch ``path`` under ``name``; the same name and path again returns the existing watch."""
        name = _check_name(name)
        if not isinstance(delete_on_import, bool):
            raise InvalidInput("delete_on_import must be true or false")
        folder = _check_path(path)
        storage_root = getattr(self.context.storage, "root", None)
        if storage_root is not None and _intersects(folder, Path(storage_root).resolve()):
            raise InvalidInput(f"Directory intersects the node's storage folder {storage_root}")
        with self._lock:
            with self.index.writing() as conn:
                existing = [_record(row) for row in conn.execute(sa.select(*_COLUMNS))]
                for watch in existing:
                    if watch.name == name:
                        if Path(watch.path) == folder:
                            return watch
                        raise Conflict(f"a directory watch named {name!r} already exists (watching {watch.path})")
                for watch in existing:
                    if _intersects(folder, Path(watch.path)):
                        raise InvalidInput(
                            f"Directory intersects existing directory {watch.path} (watch {watch.name!r})"
                        )
                watch_id = conn.execute(
                    directory_watches.insert()
                    .values(
                        name=name,
                        path=str(folder),
                        delete_on_import=delete_on_import,
                        created=datetime.now(UTC),
                    )
                    .returning(directory_watches.c.id)
                ).scalar_one()
                row = conn.execute(sa.select(*_COLUMNS).where(directory_watches.c.id == watch_id)).one()
            watch = _record(row)
            if self._running:
                self._start_watcher(watch)
        deleting = ", deleting imported files" if delete_on_import else ""
        self.index.add_log("INFO", SUBJECT, f"watching {watch.path} as {watch.name!r}{deleting}")
        return watch

    def remove(self, watch_id: int, timeout: float = 10.0) -> None:
        """Stop and forget a watch (its images stay); unknown ids are ignored."""
        key = query.row_id(watch_id, "directory watch id")
        if key is None:
            return
        with self._lock:
            with self.index.writing() as conn:
                row = conn.execute(
                    directory_watches.delete()
                    .where(directory_watches.c.id == key)
                    .returning(directory_watches.c.name, directory_watches.c.path)
                ).first()
            watcher = self._watchers.pop(key, None)
        if watcher is not None:
            self._stop_watchers([watcher], timeout)
        if row is not None:
            self.index.add_log("INFO", SUBJECT, f"stopped watching {row.path} ({row.name!r})")

    def get(self, watch_id: int) -> WatchedDirectory:
        key = query.row_id(watch_id, "directory watch id")
        if key is not None:
            with self.index.reading() as conn:
                row = conn.execute(sa.select(*_COLUMNS).where(directory_watches.c.id == key)).first()
            if row is not None:
                return _record(row)
        raise NotFound(f"directory watch {watch_id} not found")

    def list(self, start_index: int = 0, count: int | None = None) -> builtins.list[WatchedDirectory]:
        """The watches by id; ``count`` None: all of them."""
        statement = sa.select(*_COLUMNS).order_by(directory_watches.c.id)
        if count is not None or start_index:
            start, limit = query._page(start_index, 20 if count is None else count)
            statement = statement.offset(start).limit(limit)
        with self.index.reading() as conn:
            return [_record(row) for row in conn.execute(statement)]


def create_watch_service(context: SliceboxContext) -> WatchService:
    """The factory ``SliceboxApp`` calls (the handlers find the service among the app's services)."""
    return WatchService(context)
