"""Folder watches: files present and arriving are imported once complete; bad files skipped and kept."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from generators import ct_bytes, ct_dataset, to_bytes
from pydicom.uid import SecondaryCaptureImageStorage
from watching import wait_for

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict, InvalidInput
from slicebox_lab.model import Source
from slicebox_lab.server.services import service_factories
from slicebox_lab.watch import WatchService, create_watch_service


@pytest.fixture
def context(tmp_path: Path) -> Iterator[SliceboxContext]:
    context = SliceboxContext.open(tmp_path / "node", fsync=False)
    yield context
    context.close()


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    folder = tmp_path / "parent" / "incoming"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def service(context: SliceboxContext) -> Iterator[WatchService]:
    service = WatchService(context, tick_seconds=0.1)
    service.start()
    yield service
    service.stop(10)


def image_count(context: SliceboxContext) -> int:
    return context.index.counts()["images"]


def directory_warnings(context: SliceboxContext) -> list[str]:
    return [e.message for e in context.index.list_log(count=1000, subject="Directory", entry_type="WARN")]


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("slicebox-watch-")]


def secondary_capture_bytes() -> bytes:
    ds = ct_dataset(SOPClassUID=SecondaryCaptureImageStorage)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    return to_bytes(ds)


def test_existing_and_arriving_files_are_imported_recursively(context, service, watched: Path, tmp_path: Path):
    first = ct_bytes(PatientID="W1")
    (watched / "sub").mkdir()
    (watched / "sub" / "a.dcm").write_bytes(first)
    watch = service.add("incoming", str(watched))
    wait_for(lambda: image_count(context) == 1)

    # a file copied in later, deep in a folder that did not exist when the watch started
    outside = tmp_path / "b.dcm"
    outside.write_bytes(ct_bytes(PatientID="W2"))
    (watched / "x" / "y").mkdir(parents=True)
    shutil.copy(outside, watched / "x" / "y" / "b.dcm")
    wait_for(lambda: image_count(context) == 2)

    # a whole folder moved in at once
    bundle = tmp_path / "bundle"
    (bundle / "deeper").mkdir(parents=True)
    (bundle / "deeper" / "c.dcm").write_bytes(ct_bytes(PatientID="W3"))
    shutil.move(str(bundle), str(watched / "bundle"))
    wait_for(lambda: image_count(context) == 3)

    for flat in context.index.list_flat_series():
        assert context.index.series_source(flat.id) == Source("directory", watch.name, flat.series.source_id)
    # imported files stay where they are; nothing was refused
    assert (watched / "sub" / "a.dcm").read_bytes() == first
    assert (watched / "x" / "y" / "b.dcm").exists()
    assert directory_warnings(context) == []


def test_a_file_written_slowly_is_imported_complete(context, service, watched: Path):
    data = ct_bytes(PatientID="SLOW", rows=64, columns=64)
    service.add("incoming", str(watched))
    path = watched / "slow.dcm"
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(1.5)
        f.write(data[len(data) // 2 :])
    wait_for(lambda: image_count(context) == 1)
    [flat] = context.index.list_flat_series()
    [image] = context.index.images_of_series(flat.id)
    assert context.image_bytes(image.id) == data
    # give a refusal of the half-written state (were it to come) the time to be logged
    time.sleep(service.retry_seconds + service.settle_seconds)
    assert directory_warnings(context) == []
    assert image_count(context) == 1


def test_invalid_files_are_skipped_logged_and_kept(context, service, watched: Path):
    (watched / "notes.txt").write_text("not a DICOM file\n")
    (watched / "sc.dcm").write_bytes(secondary_capture_bytes())
    (watched / "ok.dcm").write_bytes(ct_bytes())
    service.add("incoming", str(watched), delete_on_import=True)
    warnings = wait_for(lambda: len(directory_warnings(context)) >= 2 and directory_warnings(context))
    assert any("notes.txt" in w for w in warnings)
    assert any("sc.dcm" in w and "Secondary Capture" in w for w in warnings)
    wait_for(lambda: not (watched / "ok.dcm").exists())  # imported, then deleted
    assert image_count(context) == 1
    # refused files are never deleted, and not retried while unchanged
    assert (watched / "notes.txt").exists() and (watched / "sc.dcm").exists()
    time.sleep(service.settle_seconds + 0.5)
    assert len(directory_warnings(context)) == 2


def test_delete_on_import_off_keeps_files(context, service, watched: Path):
    (watched / "keep.dcm").write_bytes(ct_bytes())
    service.add("incoming", str(watched))
    wait_for(lambda: image_count(context) == 1)
    time.sleep(0.3)
    assert (watched / "keep.dcm").exists()


def test_validation(context, service, watched: Path, tmp_path: Path):
    (watched / "inner").mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InvalidInput, match="No such directory"):
        service.add("missing", str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="Not a directory"):
        service.add("file", str(a_file))
    with pytest.raises(InvalidInput, match="absolute"):
        service.add("relative", "some/folder")
    with pytest.raises(InvalidInput):
        service.add("", str(watched))
    with pytest.raises(InvalidInput, match="storage"):
        service.add("storage", str(tmp_path / "node"))

    watch = service.add("incoming", str(watched))
    # the same name and path again: the existing watch
    assert service.add("incoming", str(watched)) == watch
    with pytest.raises(InvalidInput, match="intersects"):
        service.add("nested", str(watched / "inner"))
    with pytest.raises(InvalidInput, match="intersects existing directory"):
        service.add("containing", str(watched.parent))
    with pytest.raises(InvalidInput, match="intersects"):
        service.add("same path", str(watched))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(Conflict):
        service.add("incoming", str(other))
    assert [w.name for w in service.list()] == ["incoming"]


def test_remove_stop_and_restart(context, watched: Path, tmp_path: Path):
    service = WatchService(context, tick_seconds=0.1)
    (watched / "a.dcm").write_bytes(ct_bytes(PatientID="R1"))
    other = tmp_path / "other"
    other.mkdir()
    service.add("incoming", str(watched))
    second = service.add("other", str(other))
    assert watch_threads() == []  # not started yet: watches are only recorded
    service.start()
    wait_for(lambda: image_count(context) == 1)
    assert service.threads_alive == 2

    service.remove(second.id)
    assert [w.name for w in service.list()] == ["incoming"]
    assert len(watch_threads()) == 1
    service.remove(second.id)  # idempotent

    started = time.monotonic()
    service.stop(5)
    assert time.monotonic() - started < 5
    assert watch_threads() == []

    # a restart picks the watch up again; re-importing is idempotent
    [image] = context.index.images_of_series(context.index.list_flat_series()[0].id)
    again = WatchService(context, tick_seconds=0.1)
    again.start()
    try:
        assert [w.name for w in again.list()] == ["incoming"]
        (watched / "b.dcm").write_bytes(ct_bytes(PatientID="R2"))
        wait_for(lambda: image_count(context) == 2)
        assert context.index.get_image(image.id).SOPInstanceUID == image.SOPInstanceUID
    finally:
        again.stop(5)
    assert watch_threads() == []


def test_registered_as_a_service(context):
    assert create_watch_service in service_factories()
    service = create_watch_service(context)
    assert isinstance(service, WatchService)
    service.start()
    service.stop(5)
