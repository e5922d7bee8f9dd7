"""The one ingest path: blob then rows, undone on failure; crash repair; events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from generators import ct_bytes

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import InvalidDicom
from slicebox_lab.events import ImageAdded, ImagesDeleted
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

USER = Source("user", "alice")


@pytest.fixture
def context(tmp_path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


def test_ingest_stores_blob_and_rows_and_publishes(context: SliceboxContext):
    events: list[object] = []
    context.events.subscribe(ImageAdded, events.append)
    context.events.subscribe(ImagesDeleted, events.append)
    data = ct_bytes()
    first = context.ingest(data, USER)
    assert first.image_added and first.patient_added
    assert context.image_bytes(first.image.id) == data
    second = context.ingest(data, USER)
    assert second.image.id == first.image.id and not second.image_added
    # the replaced blob is gone: one blob per image
    assert list(context.storage.keys()) == [second.image.storage_key]
    assert [type(e) for e in events] == [ImageAdded, ImageAdded]
    assert events[1].overwrite  # type: ignore[attr-defined]
    context.delete_images([first.image.id])
    assert list(context.storage.keys()) == []
    assert isinstance(events[-1], ImagesDeleted)


def test_invalid_dicom_stores_nothing(context: SliceboxContext):
    with pytest.raises(InvalidDicom):
        context.ingest(b"not dicom", USER)
    assert list(context.storage.keys()) == []
    assert context.index.counts()["images"] == 0


def test_index_failure_removes_the_blob(context: SliceboxContext, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(context.index, "ingest", broken)
    with pytest.raises(RuntimeError):
        context.ingest(ct_bytes(), USER)
    assert list(context.storage.keys()) == []


def test_failing_subscriber_does_not_undo_ingest(context: SliceboxContext):
    def bad_subscriber(event: object) -> None:
        raise ValueError("subscriber bug")

    context.events.subscribe(ImageAdded, bad_subscriber)
    result = context.ingest(ct_bytes(), USER)
    assert context.index.get_image(result.image.id)


def test_concurrent_ingest_of_many_images(context: SliceboxContext):
    datas = [ct_bytes(PatientID=f"C{n % 3}", InstanceNumber=n) for n in range(30)]
    errors: list[BaseException] = []

    def work(chunk: list[bytes]) -> None:
        try:
            for d in chunk:
                context.ingest(d, USER)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(datas[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert context.index.counts()["images"] == 30
    assert len(list(context.storage.keys())) == 30


def test_reopen_after_crash_repairs_storage_and_index(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=False)
    kept = context.ingest(ct_bytes(PatientID="KEPT"), USER)
    lost = context.ingest(ct_bytes(PatientID="LOST"), USER)
    # simulate a crash: a blob written but never indexed, a half-written temp file,
    # a row whose blob vanished; and no clean close (the running marker stays)
    context.storage.write("0123456789abcdef0123456789abcdef", b"orphan")
    (data_dir / "dicom" / "01" / ".tmp-halfwritten").write_bytes(b"half")
    context.storage.delete(lost.image.storage_key)
    context.index.engine.dispose()

    reopened = SliceboxContext.open(data_dir, fsync=False)
    try:
        assert set(reopened.storage.keys()) == {kept.image.storage_key}
        assert reopened.index.counts()["images"] == 1
        assert reopened.image_bytes(kept.image.id)
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("1 partial blobs" in m and "1 rows without a blob" in m for m in messages)
    finally:
        reopened.close()
    # a clean close means no repair next time
    again = SliceboxContext.open(data_dir, fsync=False)
    try:
        warnings = again.index.list_log(count=100, entry_type="WARN")
        assert sum("unclean shutdown" in e.message for e in warnings) == 1
    finally:
        again.close()
