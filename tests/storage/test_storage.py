"""Storage areas: atomic, durable writes; a full disk loses nothing and leaves nothing."""

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

    monkeypatch.setattr(filesystem.os, "fsync", no_space)
    with pytest.raises(StorageFull, match="no space"):
        storage.write("abcd", b"x" * 1000)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_interrupted_writes_are_invisible_and_removed(tmp_path: Path):
    storage = FileSystemStorage(tmp_path)
    storage.write("ab01", b"complete")
    # what a crash in the middle of a write leaves: a temp file beside the blobs
    (tmp_path / "ab" / ".tmp-deadbeef").write_bytes(b"half")
    assert list(storage.keys()) == ["ab01"]
    assert storage.remove_incomplete() == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ab01"]
