"""The worker pool: work runs in other processes; a worker that dies fails only its own task, cleanly,
and is replaced; a node whose worker is killed mid-upload answers a clean 503 and stores nothing."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from generators import ct_bytes, ct_dataset, to_bytes
from helpers import body_json, stored_state
from pydicom.uid import JPEG2000Lossless

from slicebox_lab.workers import WorkerFailed, WorkerPool


def _pid() -> int:
    return os.getpid()


def _slow(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_work_runs_in_other_processes_and_in_process_without_workers():
    pool = WorkerPool(2)
    try:
        assert pool.run(_pid) != os.getpid()
        assert set(pool.worker_pids()) and os.getpid() not in pool.worker_pids()
    finally:
        pool.close()
    assert WorkerPool(0).run(_pid) == os.getpid()


def test_a_dead_worker_fails_only_its_task_and_is_replaced():
    pool = WorkerPool(2)
    try:
        pool.run(_pid)  # started
        doomed = pool.start(_slow, 30)
        survivor = pool.start(_slow, 0.5).result()  # the other worker
        (victim,) = [p for p in pool.worker_pids() if p != survivor]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="died during _slow"):
            doomed.result()
        assert pool.run(_slow, 0) != victim  # the pool still works
        deadline = time.monotonic() + 20
        while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:  # and a new worker took its place
            time.sleep(0.05)
        assert len(pool.worker_pids()) == 2 and victim not in pool.worker_pids()
    finally:
        pool.close()


def test_a_call_that_cannot_be_pickled_fails_at_once_and_holds_no_worker():
    pool = WorkerPool(1)
    try:
        pool.run(_pid)  # started
        for _ in range(3):  # each would have kept the one worker had it been taken first
            with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
                pool.run(_slow, lambda: 0)
        assert pool.run(_slow, 0) in pool.worker_pids()
    finally:
        pool.close()


@pytest.fixture
def jp_server_config(node_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"slicebox_lab": True}},
        "IdentityProvider": {"token": "slicebox-test-token"},
        "SliceboxApp": {"data_dir": str(node_dir), "workers": 1},
    }


def _slow_to_validate() -> bytes:
    """A 2048² JPEG 2000 image: validating it decodes its frame, about a second of a worker's time."""
    ds = ct_dataset(rows=2048, columns=2048)
    pixels = np.random.default_rng(1).integers(0, 4000, size=(2048, 2048), dtype=np.int16)
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    return to_bytes(ds)


def test_a_submitted_call_answers_in_a_future_and_holds_no_worker():
    pool = WorkerPool(1)
    try:
        first = pool.submit(_pid)
        worker = first.result(timeout=30)
        assert worker != os.getpid()
        # nobody took the next answer, yet the one worker is free for the next call
        pool.submit(_slow, 0)
        assert pool.run(_pid) == worker
        doomed = pool.submit(_slow, 30)
        deadline = time.monotonic() + 20
        while not doomed.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the worker has the call
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="died during _slow"):
            doomed.result(timeout=30)
        assert pool.submit(_pid).result(timeout=30) not in (worker, os.getpid())
    finally:
        pool.close()
    with pytest.raises(Exception, match="shutting down"):
        pool.submit(_pid)


async def test_a_worker_killed_mid_upload_answers_503_and_stores_nothing(api, jp_serverapp, node_dir):
    context = jp_serverapp.web_app.settings["slicebox_context"]
    data = await asyncio.to_thread(_slow_to_validate)
    r = await api(
        "images", method="POST", body=ct_bytes(PatientID="WARM"), headers={"Content-Type": "application/dicom"}
    )
    assert r.code == 201  # the worker is up
    (worker,) = context.workers.worker_pids()
    before = _cpu_seconds(worker)
    upload = asyncio.ensure_future(
        api("images", method="POST", body=data, headers={"Content-Type": "application/dicom"}, request_timeout=120)
    )
    deadline = time.monotonic() + 60
    while _cpu_seconds(worker) - before < 0.2:  # the worker is decoding the upload now
        assert time.monotonic() < deadline and not upload.done()
        await asyncio.sleep(0.02)
    os.kill(worker, signal.SIGKILL)
    r = await upload
    assert r.code == 503, r.body
    error = body_json(r)
    assert error["reason"] == "WorkerFailed" and "nothing of this request was stored" in error["message"]
    blobs, counts = stored_state(node_dir)
    assert counts["images"] == 1 and len(blobs) == 1  # only the warm-up image: nothing half-stored
    # the pool replaced the worker: the node keeps storing
    r = await api(
        "images", method="POST", body=ct_bytes(PatientID="AFTER"), headers={"Content-Type": "application/dicom"}
    )
    assert r.code == 201, r.body
    assert worker not in context.workers.worker_pids()
