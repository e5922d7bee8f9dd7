"""One watched folder: a thread that imports the files found in it, now and as they arrive.

The thread runs ``watchfiles.watch`` over the folder (recursively) and keeps a table of
*pending* files.  A file is read only once its size and modification time have not changed for
``settle_seconds``, and its stat is checked again after reading, so a file still being copied is
never imported half-way.  Should a file that looked settled still fail to import (a writer that
paused longer than the settle interval), it is kept pending: any further change makes it a
candidate again, and only if it stays unchanged for ``retry_seconds`` more is it declared invalid
(node log WARN, subject "Directory") and left alone.  Secondary Capture objects are refused at
once (imports take image data only).  Refused files are never deleted.

Files handled (imported or refused) are remembered with their (size, mtime) so that no event
about an unchanged file imports it again; a restart scans the folder again, and re-importing a
file is idempotent (same image id).  Hidden files (names starting with ".", e.g. the partial
files of rsync or browsers) are ignored.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from ..errors import InvalidInput, SliceboxError
from ..model import Source
from .imports import refuse_secondary_capture

if TYPE_CHECKING:
    from ..context import SliceboxContext
    from ..index.watches import WatchedDirectory

log = logging.getLogger(__name__)

SUBJECT = "Directory"

#: (size, mtime in ns) of a file: it is settled while this does not change
Signature = tuple[int, int]


@dataclass
class _Pending:
    signature: Signature
    #: monotonic time the signature was last seen to change
    since: float
    #: signature at the last failed import attempt (None: not tried at this signature)
    failed_signature: Signature | None = None
    failed_at: float = 0.0
    reason: str = ""
    #: an unexpected (non-input) error was already logged for this file
    error_logged: bool = False


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


def _hidden(path: str, root: str) -> bool:
    relative = os.path.relpath(path, root)
    return any(part.startswith(".") for part in Path(relative).parts)


class FolderWatcher:
    """The thread of one watched folder; ``start``, then ``stop`` + ``join``."""

    def __init__(
        self,
        watch: WatchedDirectory,
        context: SliceboxContext,
        settle_seconds: float,
        retry_seconds: float,
        tick_seconds: float,
    ) -> None:
        self.watch = watch
        self.context = context
        self.settle_seconds = settle_seconds
        self.retry_seconds = retry_seconds
        self.tick_seconds = tick_seconds
        self.root = watch.path
        self.source = Source("directory", watch.name)
        self._stop = threading.Event()
        self._pending: dict[str, _Pending] = {}
        self._done: dict[str, Signature] = {}
        self._thread = threading.Thread(target=self._run, name=f"slicebox-watch-{watch.id}", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (returns at once; ``join`` waits)."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if the thread has ended."""
        if self._thread.ident is not None:
            self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._watch()
                failing = False
            except Exception as error:  # the folder vanished, permissions, ...: log once, retry
                if self._stop.is_set():
                    break
                if not failing:
                    log.warning("slicebox: watch %s of %s failed: %s", self.watch.name, self.root, error)
                    self._log("ERROR", f"watch {self.watch.name!r} of {self.root} failed: {error}; retrying")
                failing = True
                self._stop.wait(max(1.0, self.retry_seconds))

    def _watch(self) -> None:
        scanned = False
        changes_iterator = watchfiles.watch(
            self.root,
            watch_filter=None,
            recursive=True,
            stop_event=self._stop,
            yield_on_timeout=True,
            rust_timeout=max(1, int(self.tick_seconds * 1000)),
            debounce=max(1, int(self.tick_seconds * 1000)),
            raise_interrupt=False,
        )
        for changes in changes_iterator:
            if self._stop.is_set():
                return
            if not scanned:
                # scanning after the watch is set up: nothing arrives unseen in between
                self._scan(self.root)
                scanned = True
            for change, path in changes:
                if change == watchfiles.Change.deleted:
                    self._pending.pop(path, None)
                    self._done.pop(path, None)
                elif os.path.isdir(path):
                    self._scan(path)  # a folder moved or copied in: its files may predate its watch
                else:
                    self._note(path)
            self._process_settled()
        if not self._stop.is_set():
            raise SliceboxError(f"the watch of {self.root} ended")

    def _scan(self, folder: str) -> None:
        for directory, subfolders, files in os.walk(folder):
            if self._stop.is_set():
                return
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                self._note(os.path.join(directory, name))

    def _note(self, path: str) -> None:
        """A file that may be new or changed: pending until settled (unless handled unchanged)."""
        if _hidden(path, self.root):
            return
        signature = _signature(path)
        if signature is None:
            self._pending.pop(path, None)
            return
        if self._done.get(path) == signature:
            return
        self._done.pop(path, None)
        pending = self._pending.get(path)
        if pending is None:
            self._pending[path] = _Pending(signature, time.monotonic())
        elif pending.signature != signature:
            pending.signature = signature
            pending.since = time.monotonic()

    def _process_settled(self) -> None:
        for path, pending in list(self._pending.items()):
            if self._stop.is_set():
                return
            now = time.monotonic()
            signature = _signature(path)
            if signature is None:
                del self._pending[path]
                continue
            if signature != pending.signature:
                pending.signature, pending.since = signature, now
                continue
            if now - pending.since < self.settle_seconds:
                continue
            if pending.failed_signature == signature:
                if now - pending.failed_at >= self.retry_seconds:
                    self._refuse(path, signature, pending.reason)
                continue
            self._import(path, pending)

    def _import(self, path: str, pending: _Pending) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            self._unexpected(path, pending, f"cannot be read: {error}")
            return
        signature = _signature(path)
        if signature != pending.signature or signature is None or len(data) != signature[0]:
            if signature is not None:  # changed while we read: wait for it to settle again
                pending.signature, pending.since = signature, time.monotonic()
            return
        try:
            refuse_secondary_capture(data)
        except InvalidInput as error:
            self._refuse(path, signature, error.message)
            return
        try:
            self.context.ingest(data, self.source)
        except InvalidInput as error:
            # perhaps a writer that paused: wait for a change, refuse if none comes
            pending.failed_signature, pending.failed_at, pending.reason = signature, time.monotonic(), error.message
            return
        except Exception as error:
            self._unexpected(path, pending, getattr(error, "message", None) or repr(error))
            return
        del self._pending[path]
        self._done[path] = signature
        if self.watch.delete_on_import:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                self._log("WARN", f"watch {self.watch.name!r}: imported {path} but could not delete it: {error}")
            self._done.pop(path, None)

    def _refuse(self, path: str, signature: Signature, reason: str) -> None:
        self._pending.pop(path, None)
        self._done[path] = signature
        self._log("WARN", f"watch {self.watch.name!r}: skipped {path}: {reason}")

    def _unexpected(self, path: str, pending: _Pending, reason: str) -> None:
        """A failure that is not the file's fault (disk full, database): retry later, log once."""
        if not pending.error_logged:
            self._log("ERROR", f"watch {self.watch.name!r}: could not import {path}: {reason}; will retry")
            pending.error_logged = True
        pending.since = time.monotonic() + self.retry_seconds

    def _log(self, entry_type: str, message: str) -> None:
        try:
            self.context.index.add_log(entry_type, SUBJECT, message)
        except Exception:
            log.exception("slicebox: could not write to the node log: %s", message)
