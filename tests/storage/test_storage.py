"""Storage areas: durable writes (one flush each), streamed blobs; a full disk loses nothing and leaves nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from slicebox_lab.errors import NotFound, StorageFull
from slicebox_lab.storage import FileSystemStorage, MemoryStorage, StorageArea, filesystem


@pytest.fixture(params=["filesystem", "memory"])
def storage(request, tmp_path: Path) -> StorageArea:
    return FileSystemStorage(tmp_path / "blobs") if request.param == "filesystem" else MemoryStorage()


def test_write_read_delete(storage: StorageArea):
    assert isinstance(storage, StorageArea)
    storage.write("abc123", b"hello")
    assert storage.read("abc123") == b"hello"
    assert storage.exists("abc123") and storage.size("abc123") == 5
    with storage.open("abc123") as f:
        assert f.read() == b"hello"
    storage.write("abc123", b"replaced")
    assert storage.read("abc123") == b"replaced"
    assert list(storage.keys()) == ["abc123"]
    storage.delete("abc123")
    storage.delete("abc123")
    assert not storage.exists("abc123")
    with pytest.raises(NotFound):
        storage.read("abc123")


def test_keys_are_checked(tmp_path: Path):
    storage = FileSystemStorage(tmp_path)
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            storage.write(bad, b"x")


def test_full_disk_raises_storage_full_and_leaves_nothing(tmp_path: Path, monkeypatch):
    storage = FileSystemStorage(tmp_path)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(filesystem.os, "fdatasync", no_space)
    monkeypatch.setattr(filesystem.os, "fsync", no_space)
    with pytest.raises(StorageFull, match="no space"):
        storage.write("abcd", b"x" * 1000)
    blob = storage.create("ab12")
    blob.write(b"y" * 1000)
    blob.name("ab12.1.f00d")
    with pytest.raises(StorageFull, match="no space"):
        blob.flush()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_streamed_blobs_are_named_then_flushed(storage: StorageArea):
    blob = storage.create("cd34")
    blob.write(b"hello ")
    blob.write(memoryview(b"world"))
    assert blob.size == 11 and list(storage.keys()) == []  # nothing under a key before it is named
    path = blob.name("cd34.7.beef")
    if path is not None:
        assert Path(path).read_bytes() == b"hello world"  # a worker process may read it now
    blob.flush()
    assert storage.read("cd34.7.beef") == b"hello world"
    with pytest.raises(ValueError):
        storage.create("ef56").name("other")  # the key must start with the prefix


def test_a_discarded_blob_leaves_nothing(storage: StorageArea, tmp_path: Path):
    for named in (False, True):
        blob = storage.create("ab99")
        blob.write(b"cut short")
        if named:
            blob.name("ab99.1.dead")
        blob.discard()
        assert list(storage.keys()) == []
    if isinstance(storage, FileSystemStorage):
        assert [p for p in storage.root.rglob("*") if p.is_file()] == []


def test_interrupted_streams_are_invisible_and_removed(tmp_path: Path):
    storage = FileSystemStorage(tmp_path)
    storage.write("ab01", b"complete")
    # what a crash in the middle of a streamed write leaves: a temp file beside the blobs
    blob = storage.create("ab02")
    blob.write(b"half")
    assert list(storage.keys()) == ["ab01"]
    assert storage.remove_incomplete() == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ab01"]


def test_a_durable_delete_flushes_the_folders(tmp_path: Path, monkeypatch):
    storage = FileSystemStorage(tmp_path)
    for key in ("aa01", "aa02", "bb01"):
        storage.write(key, b"x")
    synced: list[str] = []
    monkeypatch.setattr(filesystem, "_fsync_dir", lambda folder: synced.append(folder.name))
    storage.delete_durably(["aa01", "aa02", "bb01", "cc01"])
    assert list(storage.keys()) == [] and sorted(synced) == ["aa", "bb", "cc"]
