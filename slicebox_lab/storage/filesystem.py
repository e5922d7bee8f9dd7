"""A folder of files, each made durable by one flush.

A blob whose bytes are at hand is written at its final name and ``fdatasync``ed once; a streamed
blob (:meth:`FileSystemStorage.create`) is written to a temp name, renamed to its key when it is
complete and then ``fsync``ed once.  The folder is not fsynced: on a journaling file system
(ext4, XFS) the flush of a new file commits the journal transaction that holds its directory
entry (and, for ``fsync``, the rename that changed the file's ctime), which is what Orthanc
relies on as well.  A crash in the middle of a write can leave a partial file under its key;
nothing points at it (the index gets its row only after the flush), and the context recognises
it by the content digest its key carries (``SliceboxContext.reconcile``).
"""

from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound, SliceboxError, StorageFull

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TMP_PREFIX = ".tmp-"
_HEX = "0123456789abcdef"


class FileSystemStorage:
    """Blobs under ``root/<first two characters of key>/<key>``.

    The two-character fan-out keeps folders small at a million images.  Streamed blobs are
    named ``.tmp-*`` until complete; a crash leaves such a temp file, which
    :meth:`remove_incomplete` deletes.

    A :meth:`delete` of a key whose :meth:`write` is still running (the index row of an ingest
    may commit while its blob is being written, see ``SliceboxContext.ingest``) is remembered
    and done by that write once its file is in place, so no blob outlives its deletion.
    """

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        #: keys being written -> deleted meanwhile
        self._writing: dict[str, bool] = {}
        # the 256 folders of hex keys (the context's keys are uuid4 hex) are made once, here, so
        # that no write waits for a mkdir and an fsync of the root; other keys' folders on demand
        for first in _HEX:
            for second in _HEX:
                (self.root / f"{first}{second}").mkdir(exist_ok=True)
        #: fan-out folders known to exist durably: created by this process, or found at start
        #: (and made durable by the root's fsync below, also should a crashed process have skipped it)
        self._folders: frozenset[str] = frozenset(
            entry.name for entry in os.scandir(self.root) if entry.is_dir() and len(entry.name) == 2
        )
        if fsync:
            _fsync_dir(self.root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._lock:
            self._writing[key] = False
        try:
            self._write(path, data)
        finally:
            with self._lock:
                deleted = self._writing.pop(key, False)
            if deleted:
                path.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        folder = path.parent
        if folder.name not in self._folders:
            self._make_folder(folder)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fdatasync(fd)  # the data, its size and (journaled with them) its name
            finally:
                os.close(fd)
        except OSError as e:
            path.unlink(missing_ok=True)  # a failed write leaves nothing
            raise _storage_error(e, self.root) from e

    def create(self, key_prefix: str) -> FileBlobWriter:
        """A blob written piece by piece (an upload as it arrives), named by :meth:`FileBlobWriter.commit`
        with a key that starts with ``key_prefix`` (whose first two characters choose its folder)."""
        folder = self._path(key_prefix).parent
        if folder.name not in self._folders:
            self._make_folder(folder)
        return FileBlobWriter(self, folder, key_prefix)

    def local_path(self, key: str) -> str:
        """The file of ``key``, for worker processes that read it themselves (no bytes through a pipe)."""
        return str(self._path(key))

    def _make_folder(self, folder: Path) -> None:
        """Create a fan-out folder durably (once per folder and process: no stat per write)."""
        try:
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                if self.fsync:
                    _fsync_dir(self.root)
        except OSError as e:
            raise _storage_error(e, self.root) from e
        with self._lock:
            self._folders = self._folders | {folder.name}

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def modified(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"no stored data for key {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._lock:
            if key in self._writing:
                self._writing[key] = True
        path.unlink(missing_ok=True)

    def delete_durably(self, keys: Iterable[str]) -> None:
        """Delete blobs so that no crash or power cut brings them back: unlink, then fsync each folder.

        The context calls it before it removes their rows, so a blob without a row is never one that
        was deleted (reconcile re-indexes such blobs)."""
        folders: set[Path] = set()
        for key in keys:
            self.delete(key)
            folders.add(self._path(key).parent)
        if self.fsync:
            for folder in sorted(folders):
                _fsync_dir(folder)

    def keys(self, written_before: float | None = None) -> Iterator[str]:
        """Keys in order; ``written_before``: only blobs whose file was last modified before that time."""
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                for entry in sorted(folder.iterdir()):
                    if not entry.name.startswith(_TMP_PREFIX) and entry.is_file():
                        if written_before is not None and not _older(entry, written_before):
                            continue
                        yield entry.name

    def remove_incomplete(self, written_before: float | None = None) -> int:
        """Remove temp files of interrupted writes; ``written_before``: only those last modified before then.

        Several processes may share the folder: a young temp file may be another one's write in progress.
        """
        removed = 0
        for folder in self.root.iterdir():
            if folder.is_dir():
                for entry in folder.glob(f"{_TMP_PREFIX}*"):
                    if written_before is not None and not _older(entry, written_before):
                        continue
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


class FileBlobWriter:
    """One blob written in pieces: appended to a temp file, renamed to its key, then flushed once."""

    def __init__(self, storage: FileSystemStorage, folder: Path, key_prefix: str) -> None:
        self._storage = storage
        self._tmp = folder / f"{_TMP_PREFIX}{key_prefix}-{uuid.uuid4().hex[:8]}"
        self._path: Path | None = None
        self._prefix = key_prefix
        self.size = 0
        try:
            self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _storage_error(e, storage.root) from e

    @property
    def path(self) -> str | None:
        """The temp file, which another process (a worker) may write while this writer is open."""
        return str(self._tmp) if self._fd is not None and self._path is None else None

    def _open_fd(self) -> int:
        if self._fd is None:
            raise SliceboxError("the blob was already flushed or discarded")
        return self._fd

    def write(self, data: bytes | memoryview) -> None:
        fd = self._open_fd()
        view = memoryview(data)
        self.size += len(view)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            self.discard()
            raise _storage_error(e, self._storage.root) from e

    def name(self, key: str) -> str:
        """The blob is complete: rename it to ``key`` (readable by path from now on, durable after
        :meth:`flush`); returns the path, for worker processes that read it meanwhile."""
        self._open_fd()
        if self._path is not None:
            raise SliceboxError("the blob already has a name")
        if not key.startswith(self._prefix):
            raise ValueError(f"key {key!r} does not start with {self._prefix!r}")
        path = self._storage._path(key)
        try:
            os.replace(self._tmp, path)
        except OSError as e:
            self.discard()
            raise _storage_error(e, self._storage.root) from e
        self._path = path
        return str(path)

    def flush(self) -> None:
        """Make the named blob durable: one ``fsync`` (data, size, and the rename, which changed the
        file's ctime and so sits in the journal transaction the fsync commits)."""
        fd = self._open_fd()
        if self._path is None:
            raise SliceboxError("name the blob before flushing it")
        try:
            if self._storage.fsync:
                os.fsync(fd)
        except OSError as e:
            self.discard()
            raise _storage_error(e, self._storage.root) from e
        os.close(fd)
        self._fd = None

    def discard(self) -> None:
        """Forget the blob (a body cut short, a refused file), named or not: nothing is left behind."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None


def _storage_error(e: OSError, root: Path) -> SliceboxError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left in {root}: nothing was stored")
    return SliceboxError(f"could not write to storage: {e.strerror}")


def _older(path: Path, limit: float) -> bool:
    """Whether ``path`` was last modified before the time ``limit`` (a vanished file is not)."""
    try:
        return path.stat().st_mtime < limit
    except FileNotFoundError:
        return False


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
