"""SIGKILL a real node while concurrent clients upload new images AND replace stored ones.

The ingest overlaps the blob write with the index commit (and concurrent ingests share one
commit): whatever moment the kill hits, after the restart every answered upload is there with the
bytes of its last answered version (or of a version still in flight at the kill), and storage and
index agree exactly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from generators import ct_bytes
from nodeproc import start_node

DICOM = {"Content-Type": "application/dicom"}


def test_sigkill_during_uploads_and_replacements(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    lock = threading.Lock()
    answered: dict[str, bytes] = {}  # SOPInstanceUID -> bytes of the last answered version
    in_flight: dict[str, list[bytes]] = {}  # SOPInstanceUID -> versions sent but not answered
    stop = threading.Event()
    errors: list[str] = []

    def uploader(worker: int) -> None:
        s = node.session()
        n = 0
        while not stop.is_set():
            # every third upload replaces an earlier image of this worker with new pixels
            number = n // 3 if n % 3 == 2 else n
            uid = f"1.2.826.0.1.3680043.8.498.77.{worker}.{number}"
            data = ct_bytes(
                PatientID=f"W{worker}", SOPInstanceUID=uid, InstanceNumber=number, rows=96, columns=96, seed=n
            )
            n += 1
            with lock:
                in_flight.setdefault(uid, []).append(data)
            try:
                r = s.post(node.api + "/images", data=data, headers=DICOM, timeout=30)
            except Exception:  # the server died mid-request: never answered
                return
            if r.status_code in (200, 201):
                with lock:
                    answered[uid] = data
                    in_flight[uid].remove(data)
            else:
                errors.append(r.text)

    threads = [threading.Thread(target=uploader, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while len(answered) < 150 and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    node.kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(answered) >= 20, "too few uploads before the kill to test anything"

    node = start_node(data_dir, tmp_path)
    try:
        s = node.session()
        with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
            rows = dict(db.execute("SELECT SOPInstanceUID, id FROM images").fetchall())
            keys = {k for (k,) in db.execute("SELECT storage_key FROM images")}
        for uid, data in answered.items():
            assert uid in rows, uid
            r = s.get(f"{node.api}/images/{rows[uid]}")
            assert r.status_code == 200, uid
            assert r.content == data or r.content in in_flight.get(uid, []), uid
        blobs = {p.name for p in (data_dir / "dicom").rglob("*") if p.is_file()}
        assert keys == blobs
        assert not [p for p in (data_dir / "dicom").rglob(".tmp-*")]
    finally:
        node.stop()
