"""Ingest writes the blob while it parses, and the rows only once the blob is durable: faults at each step.

A "crash" here is a second ``SliceboxContext.open`` on the same data folder while the first
context is stuck mid-ingest and never closed (its running marker stays), as after a SIGKILL:
the reopen runs ``reconcile``.  tests/e2e/test_node_process.py kills a real node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from generators import ct_bytes

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import SliceboxError
from slicebox_lab.events import ImageAdded
from slicebox_lab.model import Source
from slicebox_lab.storage import FileSystemStorage

USER = Source("user", "alice")
UID = "1.2.826.0.1.3680043.8.498.424242"


class StuckWrite:
    """Replaces a FileSystemStorage's file write: leaves a temp file, waits, then fails."""

    def __init__(self, storage: FileSystemStorage, before_fail: Callable[[], None] | None = None) -> None:
        self.storage = storage
        self.original = storage._write
        self.started = threading.Event()
        self.release = threading.Event()
        self.before_fail = before_fail
        storage._write = self  # type: ignore[method-assign]

    def __call__(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(exist_ok=True)
        (path.parent / ".tmp-stuck").write_bytes(data[: len(data) // 2])  # half written
        self.started.set()
        if self.before_fail is not None:
            self.before_fail()
        else:
            assert self.release.wait(30)
        raise SliceboxError("could not write to storage: injected fault")

    def restore(self) -> None:
        self.storage._write = self.original  # type: ignore[method-assign]


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _ingest_in_thread(context: SliceboxContext, data: bytes) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            context.ingest(data, USER)
        except BaseException as error:  # noqa: BLE001 - collected for the test to assert
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "dicom").rglob("*") if p.is_file()]


def test_crash_while_the_blob_is_written_leaves_no_row_and_is_repaired(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    published: list[object] = []
    context.events.subscribe(ImageAdded, published.append)
    assert isinstance(context.storage, FileSystemStorage)
    stuck = StuckWrite(context.storage)
    thread, errors = _ingest_in_thread(context, ct_bytes(rows=64, columns=64))
    assert stuck.started.wait(10)
    time.sleep(0.3)  # time enough for the rows to commit, were they not waiting for the blob
    assert context.index.counts()["images"] == 0  # no row before its blob is durable
    assert published == []

    reopened = SliceboxContext.open(data_dir, fsync=False)  # the crash: the marker is still there
    try:
        assert reopened.index.counts()["images"] == 0
        assert _blobs(data_dir) == []
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("1 temporary files" in m for m in messages), messages
    finally:
        reopened.close()
    stuck.release.set()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], SliceboxError)
    stuck.restore()
    context.close()


def test_a_replacement_repoints_the_row_only_after_its_blob_is_durable(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    old = ct_bytes(SOPInstanceUID=UID, rows=64, columns=64, seed=1)
    first = context.ingest(old, USER)
    assert isinstance(context.storage, FileSystemStorage)
    stuck = StuckWrite(context.storage)
    thread, errors = _ingest_in_thread(context, ct_bytes(SOPInstanceUID=UID, rows=64, columns=64, seed=2))
    assert stuck.started.wait(10)
    time.sleep(0.3)  # time enough for the rows to commit, were they not waiting for the blob
    assert context.index.get_image(first.image.id).storage_key == first.image.storage_key
    assert context.image_bytes(first.image.id) == old

    reopened = SliceboxContext.open(data_dir, fsync=False)  # crash while the new blob is written
    try:
        assert reopened.index.counts()["images"] == 1
        assert reopened.image_bytes(first.image.id) == old  # the acknowledged version survives
        assert [p.name for p in _blobs(data_dir)] == [first.image.storage_key]
    finally:
        reopened.close()
    stuck.release.set()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], SliceboxError)
    stuck.restore()
    context.close()


def test_a_blob_that_cannot_be_written_leaves_no_rows(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    try:
        assert isinstance(context.storage, FileSystemStorage)
        stuck = StuckWrite(context.storage, before_fail=lambda: None)
        with pytest.raises(SliceboxError, match="injected fault"):
            context.ingest(ct_bytes(rows=64, columns=64), USER)
        stuck.restore()
        assert context.index.counts() == {**context.index.counts(), "images": 0, "patients": 0}
        assert [p for p in _blobs(data_dir) if not p.name.startswith(".tmp-")] == []
        # the node keeps working
        result = context.ingest(ct_bytes(rows=64, columns=64), USER)
        assert context.image_bytes(result.image.id)
    finally:
        context.close()


def test_a_delete_racing_the_blob_write_leaves_no_blob(tmp_path: Path):
    storage = FileSystemStorage(tmp_path / "blobs", fsync=False)
    original = storage._write
    entered, go_on = threading.Event(), threading.Event()

    def slow_write(path: Path, data: bytes) -> None:
        entered.set()
        assert go_on.wait(10)
        original(path, data)

    storage._write = slow_write  # type: ignore[method-assign]
    key = "ab" + "0" * 30
    writer = threading.Thread(target=storage.write, args=(key, b"bytes"))
    writer.start()
    assert entered.wait(10)
    storage.delete(key)  # e.g. the image was deleted while its ingest was still writing
    go_on.set()
    writer.join(10)
    assert not storage.exists(key) and list(storage.keys()) == []
    storage.write(key, b"again")  # a later write of the key is not affected
    assert storage.read(key) == b"again"
