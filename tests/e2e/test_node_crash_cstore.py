"""SIGKILL a real node while four associations store images through its worker processes.

Whatever moment the kill hits, after the restart every image whose C-STORE was answered with success
is in the index with its blob, storage and index agree exactly, and no worker outlived its server.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from generators import ct_dataset
from nodeproc import start_node
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

AE_TITLE = "CRASHSCP"


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (the forkserver, and the workers it started)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    """Alive, not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_during_four_storage_associations(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path, "secret-token", "--SliceboxApp.workers=2")
    s = node.session()
    r = s.post(node.api + "/scps", json={"name": "crash", "ae_title": AE_TITLE, "port": 0, "host": "127.0.0.1"})
    assert r.status_code == 201, r.text
    port = int(r.json()["port"])
    lock = threading.Lock()
    answered: set[str] = set()
    errors: list[str] = []
    killed = threading.Event()

    def sender(worker: int) -> None:
        ae = AE(ae_title=f"SENDER{worker}")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        if not assoc.is_established:
            errors.append(f"sender {worker}: no association")
            return
        n = 0
        while True:
            uid = f"1.2.826.0.1.3680043.8.498.78.{worker}.{n}"
            n += 1
            try:
                status = assoc.send_c_store(ct_dataset(PatientID=f"S{worker}", SOPInstanceUID=uid, rows=96, columns=96))
            except Exception:  # the node died mid-C-STORE: never answered
                return
            if not assoc.is_established or "Status" not in status:
                return
            if status.Status != 0:  # a failure status is right once the server is gone, never before
                if not killed.is_set():
                    errors.append(f"sender {worker}: status {status.Status:#06x}")
                return
            with lock:
                answered.add(uid)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while len(answered) < 120 and time.monotonic() - t0 < 60 and not errors:
        time.sleep(0.01)
    descendants = _descendants(node.process.pid)
    killed.set()
    node.kill()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(answered) >= 20, "too few images before the kill to test anything"
    deadline = time.monotonic() + 10  # the workers end when their server does
    while any(map(_running, descendants)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(descendants) >= 3  # the forkserver and the two workers
    assert not [pid for pid in descendants if _running(pid)]

    node = start_node(data_dir, tmp_path)
    try:
        with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
            stored = {uid for (uid,) in db.execute("SELECT SOPInstanceUID FROM images")}
            keys = {k for (k,) in db.execute("SELECT storage_key FROM images")}
        assert answered <= stored, sorted(answered - stored)[:5]
        blobs = {p.name for p in (data_dir / "dicom").rglob("*") if p.is_file()}
        assert keys == blobs
        assert not [p for p in (data_dir / "dicom").rglob(".tmp-*")]
    finally:
        node.stop()
