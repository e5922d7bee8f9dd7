"""One "running" marker per server in the data folder, each locked by its server for as long as it runs.

Why: a crash leaves work half done (a blob without its row), and the next start must repair it; a
clean stop must not make the next start pay for that repair.  A single shared marker file could not
tell "the last server crashed" from "another server is running right now" (``jupyter lab`` started
while ``jupyter slicebox`` runs on the default folder), and the first of two servers to stop removed
the marker of the one still running.

So every server writes its own file in ``slicebox.running.d/`` and holds an exclusive ``flock`` on it
until it stops.  The kernel releases the lock when the process dies, however it dies, so at start:

* a marker nobody holds is a server that did not stop cleanly: repair (:meth:`RunningMarkers.stale`);
* a marker someone holds is a server running now (:meth:`RunningMarkers.live`): leave its files alone.

Starts are serialized by a short lock on ``slicebox.lock``, so two servers starting together see each
other.  The pre-0.2 single marker ``slicebox.running`` still counts as a crashed server.  No tornado,
no jupyter_server: the context uses it, ``SliceboxApp`` decides what a second server may do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; every marker counts as live (never a wrong repair)
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEGACY_MARKER", "MARKER_DIR", "ReconcileReport", "RunningMarkers"]

#: the single marker of earlier versions; found at start, it means an unclean shutdown
LEGACY_MARKER = "slicebox.running"
MARKER_DIR = "slicebox.running.d"
START_LOCK = "slicebox.lock"


def _try_lock(handle: IO[str]) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class RunningMarkers:
    """The markers of the servers on one data folder; :meth:`claim` makes this server's own."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.folder = data_dir / MARKER_DIR
        self._own: IO[str] | None = None
        self.path: Path | None = None

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Hold the start lock: no other server looks at or claims markers meanwhile (blocks until free)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / START_LOCK, "a+", encoding="utf-8") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def scan(self) -> tuple[list[Path], list[Path]]:
        """(live, stale): markers held by a running server, and those of servers that died without stopping."""
        live: list[Path] = []
        stale: list[Path] = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            if path == self.path:
                continue
            if self._of_this_process(path):
                # an earlier context of this very process that was never closed: what a test does to
                # simulate a crash (its lock is ours, so flock cannot tell)
                stale.append(path)
                continue
            try:
                with open(path, encoding="utf-8") as handle:
                    (stale if _try_lock(handle) else live).append(path)
            except FileNotFoundError:  # its server stopped meanwhile
                continue
        legacy = self.data_dir / LEGACY_MARKER
        if legacy.exists():
            stale.append(legacy)
        return live, stale

    @staticmethod
    def _of_this_process(path: Path) -> bool:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(info.get("host") == socket.gethostname() and info.get("pid") == os.getpid())

    @staticmethod
    def describe(path: Path) -> str:
        """``host pid 1234`` of a marker, for a log line."""
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return f"{info.get('host', '?')} pid {info.get('pid', '?')}"
        except (OSError, ValueError):
            return path.name

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def claim(self, role: str) -> Path:
        """Write and lock this server's marker; it stays locked until :meth:`release` or the process ends."""
        name = f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}.json"
        path = self.folder / name
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - held open for the server's life: the lock
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "role": role,
                                 "started": time.time()}))  # fmt: skip
        handle.flush()
        self._own, self.path = handle, path
        return path

    def release(self) -> None:
        """Remove this server's own marker (never another's) and drop its lock: a clean stop."""
        if self._own is None or self.path is None:
            return
        self.path.unlink(missing_ok=True)
        self._own.close()
        self._own = None


@dataclass
class ReconcileReport:
    """What a start after an unclean shutdown repaired."""

    temporary_files_removed: int = 0
    orphan_blobs_removed: int = 0
    rows_without_blob_removed: int = 0
    #: acknowledged images whose rows a power cut lost, indexed again from their blobs
    blobs_reindexed: int = 0
