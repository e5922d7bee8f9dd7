"""The directory-watch service: the watched folders of a node (rows: ``index/watches.py``).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, InvalidInput
from ..index import query
from ..index import watches as rows
from ..index.watches import WatchedDirectory
from .imports import checked_name
from .watcher import SUBJECT, FolderWatcher

if TYPE_CHECKING:
    from ..context import SliceboxContext

log = logging.getLogger(__name__)


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
        name = checked_name(name, "a directory watch")
        if not isinstance(delete_on_import, bool):
            raise InvalidInput("delete_on_import must be true or false")
        folder = _check_path(path)
        storage_root = getattr(self.context.storage, "root", None)
        if storage_root is not None and _intersects(folder, Path(storage_root).resolve()):
            raise InvalidInput(f"Directory intersects the node's storage folder {storage_root}")
        with self._lock:
            with self.index.writing() as conn:
                existing = rows.watches_in(conn)
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
                watch = rows.insert_watch(conn, name, str(folder), delete_on_import)
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
            removed = rows.delete_watch(self.index, key)
            watcher = self._watchers.pop(key, None)
        if watcher is not None:
            self._stop_watchers([watcher], timeout)
        if removed is not None:
            name, path = removed
            self.index.add_log("INFO", SUBJECT, f"stopped watching {path} ({name!r})")

    def get(self, watch_id: int) -> WatchedDirectory:
        return query.found(watch_id, "directory watch", lambda key: rows.watch_by_id(self.index, key))

    def list(self, start_index: int = 0, count: int | None = None) -> builtins.list[WatchedDirectory]:
        """The watches by id; ``count`` None: all of them."""
        return rows.list_watches(self.index, start_index, count)


def create_watch_service(context: SliceboxContext) -> WatchService:
    """The factory ``SliceboxApp`` calls (the handlers find the service among the app's services)."""
    return WatchService(context)
