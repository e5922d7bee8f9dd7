"""SIGKILL a real node while a bulk anonymization job runs, then resume the job.

The job does its index work per chunk: the chunk's keys in one durable transaction before any
anonymous blob is named, the rows in one transaction after the flushes, the originals deleted after
that.  Whatever moment the kill hits, after the restart and the resume every image is there exactly
once in its anonymous version, each with its key, no original is left, and storage and index agree.
"""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import pydicom
import requests
from generators import ct_bytes
from nodeproc import start_node

DICOM = {"Content-Type": "application/dicom"}
COUNT = 160


def _keys(data_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data_dir / 'slicebox.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM anonymization_keys").fetchone()[0])
    except sqlite3.Error:
        return 0


def _wait(session: requests.Session, url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = session.get(url, timeout=30).json()
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_sigkill_during_a_bulk_anonymization_then_resume(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    s = node.session()
    uids = [f"1.2.826.0.1.3680043.8.498.78.{n}" for n in range(COUNT)]
    ids = []
    for n, uid in enumerate(uids):
        data = ct_bytes(PatientID="REAL-ID", PatientName="Real^Name", SOPInstanceUID=uid, InstanceNumber=n, rows=64)
        r = s.post(node.api + "/images", data=data, headers=DICOM, timeout=30)
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["id"])
    r = s.post(node.api + "/anonymization/anonymize", json={"imageIds": ids}, timeout=30)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while _keys(data_dir) < COUNT // 4 and time.monotonic() < deadline:  # mid-job: a chunk in any phase
        time.sleep(0.005)
    node.kill()
    keys_at_kill = _keys(data_dir)
    assert 0 < keys_at_kill < COUNT, f"the kill came too late to test anything ({keys_at_kill} keys)"

    node = start_node(data_dir, tmp_path)
    try:
        s = node.session()
        interrupted = _wait(s, f"{node.api}/jobs/{job_id}")  # the restarted node marks it FAILED
        assert interrupted["state"] == "FAILED", interrupted
        r = s.post(f"{node.api}/jobs/{job_id}/resume", timeout=30)
        assert r.status_code == 201, r.text
        job = _wait(s, f"{node.api}/jobs/{r.json()['id']}")
        assert job["state"] == "SUCCEEDED" and job["counts"]["failed"] == 0, job

        with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
            images = dict(db.execute("SELECT SOPInstanceUID, storage_key FROM images").fetchall())
            keys = db.execute("SELECT SOPInstanceUID, AnonSOPInstanceUID FROM anonymization_keys").fetchall()
        # every original replaced by exactly one anonymous version, each with its key
        assert len(images) == COUNT and not set(images) & set(uids)
        assert sorted(real for real, _ in keys) == sorted(uids)
        assert {anonymous for _, anonymous in keys} == set(images)
        blobs = {p.name for p in (data_dir / "dicom").rglob("*") if p.is_file()}
        assert blobs == set(images.values())
        for path in (data_dir / "dicom").rglob("*"):
            if path.is_file():
                stored = pydicom.dcmread(io.BytesIO(path.read_bytes()))
                assert stored.PatientIdentityRemoved == "YES" and stored.PatientID != "REAL-ID", path
    finally:
        node.stop()
