"""Ingest flushes the blob while a worker validates it, and writes the rows only once the blob is durable:
faults at each step.

A "crash" here is a second ``SliceboxContext.open`` on the same data folder while the first
context is stuck mid-ingest and never closed (its running marker stays), as after a SIGKILL:
the reopen runs ``reconcile``.  What a power cut leaves is simulated by cutting the unflushed file
short.  tests/e2e/test_node_process.py kills a real node.
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
from slicebox_lab.storage import FileSystemStorage, filesystem

USER = Source("user", "alice")
UID = "1.2.826.0.1.3680043.8.498.424242"


class StuckFlush:
    """Replaces the flush of streamed blobs: optionally cuts the file short (what a power cut leaves of
    unflushed data), waits, then fails."""

    def __init__(self, cut: bool = True, before_fail: Callable[[], None] | None = None) -> None:
        self.original = filesystem.FileBlobWriter.flush
        self.started = threading.Event()
        self.release = threading.Event()
        self.before_fail = before_fail
        self.cut = cut
        stuck = self

        def flush(writer: filesystem.FileBlobWriter) -> None:
            if stuck.cut and writer._path is not None:
                data = writer._path.read_bytes()
                writer._path.write_bytes(data[: len(data) // 2])
            stuck.started.set()
            if stuck.before_fail is not None:
                stuck.before_fail()
            else:
                assert stuck.release.wait(30)
            raise SliceboxError("could not write to storage: injected fault")

        filesystem.FileBlobWriter.flush = flush  # type: ignore[method-assign]

    def restore(self) -> None:
        filesystem.FileBlobWriter.flush = self.original  # type: ignore[method-assign]


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


def test_a_crash_before_the_flush_leaves_no_row_and_the_partial_blob_is_removed(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    published: list[object] = []
    context.events.subscribe(ImageAdded, published.append)
    stuck = StuckFlush(cut=True)
    try:
        thread, errors = _ingest_in_thread(context, ct_bytes(rows=64, columns=64))
        assert stuck.started.wait(10)
        time.sleep(0.3)  # time enough for the rows to commit, were they not waiting for the blob
        assert context.index.counts()["images"] == 0  # no row before its blob is durable
        assert published == []

        reopened = SliceboxContext.open(data_dir, fsync=False)  # the crash: the marker is still there
        try:
            assert reopened.index.counts()["images"] == 0
            assert _blobs(data_dir) == []  # its content no longer matched the digest in its name
            messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
            assert any("1 partial blobs" in m and "0 blobs indexed again" in m for m in messages), messages
        finally:
            reopened.close()
        stuck.release.set()
        thread.join(30)
        assert len(errors) == 1 and isinstance(errors[0], SliceboxError)
    finally:
        stuck.restore()
        context.close()


def test_a_crash_after_the_flush_before_the_rows_commit_is_indexed_again(tmp_path: Path):
    """The blob is durable: the image may have been acknowledged, so the next start indexes it again,
    under its source, and announces it once the services listen."""
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    entered, go_on = threading.Event(), threading.Event()
    original = context.index.ingest

    def stuck_ingest(*args: object, **kwargs: object) -> object:
        entered.set()
        assert go_on.wait(30)
        raise SliceboxError("injected: the process died before its commit")

    context.index.ingest = stuck_ingest  # type: ignore[method-assign]
    data = ct_bytes(PatientID="DURABLE", rows=64, columns=64)
    thread, errors = _ingest_in_thread(context, data)
    assert entered.wait(10)

    reopened = SliceboxContext.open(data_dir, fsync=False)
    announced: list[ImageAdded] = []
    reopened.events.subscribe(ImageAdded, announced.append)
    try:
        (image,) = reopened.index.images_of_series(1)
        assert reopened.image_bytes(image.id) == data
        source = reopened.index.get_source(image.source_id)
        assert (source.source_type, source.source_name) == (USER.source_type, USER.source_name)
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("1 blobs indexed again" in m for m in messages), messages
        assert announced == []
        reopened.announce_reindexed()
        assert [(e.image.id, e.source.source_name) for e in announced] == [(image.id, USER.source_name)]
    finally:
        reopened.close()
    go_on.set()
    thread.join(30)
    context.index.ingest = original  # type: ignore[method-assign]
    context.close()


def test_a_replacement_repoints_the_row_only_after_its_blob_is_durable(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    old = ct_bytes(SOPInstanceUID=UID, rows=64, columns=64, seed=1)
    first = context.ingest(old, USER)
    stuck = StuckFlush(cut=True)
    try:
        thread, errors = _ingest_in_thread(context, ct_bytes(SOPInstanceUID=UID, rows=64, columns=64, seed=2))
        assert stuck.started.wait(10)
        time.sleep(0.3)  # time enough for the rows to commit, were they not waiting for the blob
        assert context.index.get_image(first.image.id).storage_key == first.image.storage_key
        assert context.image_bytes(first.image.id) == old

        reopened = SliceboxContext.open(data_dir, fsync=False)  # a power cut while the new blob is flushed
        try:
            assert reopened.index.counts()["images"] == 1
            assert reopened.image_bytes(first.image.id) == old  # the acknowledged version survives
            assert [p.name for p in _blobs(data_dir)] == [first.image.storage_key]
        finally:
            reopened.close()
        stuck.release.set()
        thread.join(30)
        assert len(errors) == 1 and isinstance(errors[0], SliceboxError)
    finally:
        stuck.restore()
        context.close()


def test_a_blob_that_cannot_be_flushed_leaves_no_rows_and_no_file(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    stuck = StuckFlush(cut=False, before_fail=lambda: None)
    try:
        with pytest.raises(SliceboxError, match="injected fault"):
            context.ingest(ct_bytes(rows=64, columns=64), USER)
        stuck.restore()
        assert context.index.counts() == {**context.index.counts(), "images": 0, "patients": 0}
        assert _blobs(data_dir) == []
        # the node keeps working
        result = context.ingest(ct_bytes(rows=64, columns=64), USER)
        assert context.image_bytes(result.image.id)
    finally:
        stuck.restore()
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
