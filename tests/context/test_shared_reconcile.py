"""The crash repair of a server that shares database and storage with other live servers.

A blob without a row may be another server's ingest in flight (blob durable, row not yet
committed), a temp file its write in progress: while another server is live, only leftovers older
than ``SHARED_RECONCILE_GRACE_S`` are removed.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from generators import ct_bytes

from slicebox_lab.context import SHARED_RECONCILE_GRACE_S, SliceboxContext
from slicebox_lab.index import sqlite_url
from slicebox_lab.index.schema import servers
from slicebox_lab.model import Source

USER = Source("user", "alice")


def _crashed_node(tmp_path: Path) -> tuple[Path, str, Path, int, bytes]:
    """A node (own data_dir, shared database and storage) that stopped without a clean close."""
    url, storage = sqlite_url(tmp_path / "shared.sqlite"), tmp_path / "shared-storage"
    context = SliceboxContext.open(tmp_path / "a", database_url=url, storage_dir=storage, fsync=False)
    data = ct_bytes(PatientID="KEPT")
    kept = context.ingest(data, USER)
    context.jobs.shutdown(timeout=5)  # its server is gone with it (a dead process beats no more)
    context.index.engine.dispose()
    return tmp_path / "a", url, storage, kept.image.id, data


def _leftovers(storage: Path, age: float) -> tuple[str, Path]:
    """An orphan blob and a temp file, last written ``age`` seconds ago."""
    key = os.urandom(16).hex()
    blob = storage / key[:2] / key
    blob.write_bytes(b"blob of an ingest in flight")
    temp = storage / key[:2] / f".tmp-{key}"
    temp.write_bytes(b"half")
    then = time.time() - age
    for path in (blob, temp):
        os.utime(path, (then, then))
    return key, temp


def test_with_another_live_server_only_old_leftovers_are_removed(tmp_path: Path) -> None:
    data_dir, url, storage, kept_id, data = _crashed_node(tmp_path)
    young_key, young_temp = _leftovers(storage, 5)
    old_key, old_temp = _leftovers(storage, SHARED_RECONCILE_GRACE_S + 60)
    # another server process of this host is live (pid 1 exists; it beats)
    context = SliceboxContext.open(tmp_path / "other-dir", database_url=url, storage_dir=storage, fsync=False)
    now = datetime.now(UTC)
    with context.index.writing() as conn:
        conn.execute(servers.insert().values(server=f"{socket.gethostname()}:1:feedf00d", host=socket.gethostname(),
                                             pid=1, started=now, heartbeat=now))  # fmt: skip
    context.close()

    reopened = SliceboxContext.open(data_dir, database_url=url, storage_dir=storage, fsync=False)
    try:
        assert reopened.storage.exists(young_key) and young_temp.exists()  # maybe the other server's: kept
        assert not reopened.storage.exists(old_key) and not old_temp.exists()
        assert reopened.image_bytes(kept_id) == data
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("1 temporary files, 1 partial blobs" in m for m in messages), messages
    finally:
        reopened.close()


def test_alone_every_leftover_is_removed(tmp_path: Path) -> None:
    data_dir, url, storage, kept_id, data = _crashed_node(tmp_path)
    young_key, young_temp = _leftovers(storage, 5)
    reopened = SliceboxContext.open(data_dir, database_url=url, storage_dir=storage, fsync=False)
    try:
        assert not reopened.storage.exists(young_key) and not young_temp.exists()
        assert set(reopened.storage.keys()) == {reopened.index.get_image(kept_id).storage_key}
    finally:
        reopened.close()


def test_a_dead_server_does_not_count_as_live(tmp_path: Path) -> None:
    data_dir, url, storage, kept_id, data = _crashed_node(tmp_path)
    young_key, _ = _leftovers(storage, 5)
    context = SliceboxContext.open(tmp_path / "other-dir", database_url=url, storage_dir=storage, fsync=False)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    with context.index.writing() as conn:  # a server of another host that stopped beating long ago
        conn.execute(servers.insert().values(server="elsewhere:77:0badf00d", host="elsewhere", pid=77,
                                             started=long_ago, heartbeat=long_ago))  # fmt: skip
    context.close()
    reopened = SliceboxContext.open(data_dir, database_url=url, storage_dir=storage, fsync=False)
    try:
        assert not reopened.storage.exists(young_key)
        assert reopened.jobs.live_servers() == []  # and it was forgotten
    finally:
        reopened.close()
