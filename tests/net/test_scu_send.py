"""C-STORE sends as jobs (``scu-send``) to real peers: dcmtk storescp, and a pynetdicom SCP that
drops the association after a number of images (the job fails with what arrived, a resume sends
the rest)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import netutil
import pydicom
import pytest
from generators import ct_bytes
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt

from slicebox_lab.context import SliceboxContext
from slicebox_lab.jobs import JobState
from slicebox_lab.model import Source
from slicebox_lab.net import nodes
from slicebox_lab.net.scu_jobs import register_scu_jobs, submit_send

context = netutil.context
refused_port = netutil.refused_port
storescp = netutil.storescp


@pytest.fixture
def jobs_context(context: SliceboxContext) -> SliceboxContext:
    register_scu_jobs(context)
    return context


def _ingest_series(context: SliceboxContext, count: int) -> list[int]:
    study, series = generate_uid(), generate_uid()
    ids = []
    for n in range(count):
        data = ct_bytes(PatientID="SEND", StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n + 1)
        ids.append(context.ingest(data, Source("user", "test")).image.id)
    return ids


def test_send_20_images_to_storescp(jobs_context: SliceboxContext, storescp: tuple[int, Path]):
    port, out = storescp
    ids = _ingest_series(jobs_context, 20)
    node = nodes.add_scu(jobs_context.index, "storescp", "STORESCP", "127.0.0.1", port)
    job = submit_send(jobs_context, node.id, ids)
    job = jobs_context.jobs.wait(job.id, timeout=60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.counts == {"sent": 20, "failed": 0}
    assert (job.progress_done, job.progress_total) == (20, 20)
    received = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
    assert received == {jobs_context.index.get_image(i).SOPInstanceUID for i in ids}


def test_missing_images_are_counted_as_failed(jobs_context: SliceboxContext, storescp: tuple[int, Path]):
    port, out = storescp
    ids = _ingest_series(jobs_context, 2)
    node = nodes.add_scu(jobs_context.index, "storescp", "STORESCP", "127.0.0.1", port)
    job = jobs_context.jobs.wait(submit_send(jobs_context, node.id, [ids[0], 999999, ids[1]]).id, timeout=60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.counts == {"sent": 2, "failed": 1}
    assert job.result["failed"] == {"999999": "no such image"}
    assert len(list(out.iterdir())) == 2


class AbortingScp:
    """A pynetdicom storage SCP that stores ``limit`` objects per association, then aborts it."""

    def __init__(self, limit: int | None, delay: float = 0.0) -> None:
        self.limit = limit
        self.delay = delay
        self.received: list[str] = []
        self.ae = AE(ae_title="FLAKY")
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                self.ae.add_supported_context(cx.abstract_syntax)
        self.server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = int(self.server.server_address[1])
        self._per_assoc: dict[int, int] = {}

    def _on_store(self, event: evt.Event) -> int:
        key = id(event.assoc)
        if self.limit is not None and self._per_assoc.get(key, 0) >= self.limit:
            # abort from another thread: the association's own thread is the one running this handler
            threading.Thread(target=event.assoc.abort, daemon=True).start()
            time.sleep(1.0)
            return 0xA700
        self._per_assoc[key] = self._per_assoc.get(key, 0) + 1
        time.sleep(self.delay)
        self.received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def test_peer_dropping_mid_send_fails_the_job_with_counts_and_resume_sends_the_rest(
    jobs_context: SliceboxContext,
):
    ids = _ingest_series(jobs_context, 12)
    uids = [jobs_context.index.get_image(i).SOPInstanceUID for i in ids]
    peer = AbortingScp(limit=5)
    try:
        node = nodes.add_scu(jobs_context.index, "flaky", "FLAKY", "127.0.0.1", peer.port)
        failed = jobs_context.jobs.wait(submit_send(jobs_context, node.id, ids).id, timeout=60)
        assert failed.state == JobState.FAILED
        assert "dropped the association" in failed.error or "closed the association" in failed.error, failed.error
        assert "(5 of 12 images sent)" in failed.error, failed.error
        assert failed.counts["sent"] == len(peer.received) == 5
        assert failed.progress_done == 5 and failed.progress_total == 12
        assert peer.received == uids[:5]

        peer.limit = None  # the peer works again
        resumed = jobs_context.jobs.wait(jobs_context.jobs.resume(failed.id).id, timeout=60)
        assert resumed.state == JobState.SUCCEEDED, resumed.error
        assert resumed.counts == {"sent": 7, "failed": 0}
        assert resumed.result["skipped"] == 5
        assert (resumed.progress_done, resumed.progress_total) == (12, 12)
        assert peer.received == uids  # each image once, in order
    finally:
        peer.close()


def test_unreachable_peer_fails_the_job(jobs_context: SliceboxContext, refused_port: int):
    ids = _ingest_series(jobs_context, 1)
    node = nodes.add_scu(jobs_context.index, "nobody", "NOBODY", "127.0.0.1", refused_port)
    job = jobs_context.jobs.wait(submit_send(jobs_context, node.id, ids).id, timeout=60)
    assert job.state == JobState.FAILED and "Cannot connect" in job.error
    assert job.counts == {"sent": 0, "failed": 0}


def test_cancelling_a_running_send_stops_it_between_images_and_a_resume_sends_the_rest(
    jobs_context: SliceboxContext,
):
    ids = _ingest_series(jobs_context, 30)
    peer = AbortingScp(limit=None, delay=0.1)  # a slow peer: 3 s for the whole series
    try:
        node = nodes.add_scu(jobs_context.index, "slow", "FLAKY", "127.0.0.1", peer.port)
        job = submit_send(jobs_context, node.id, ids)
        deadline = time.monotonic() + 30
        while jobs_context.jobs.get(job.id).progress_done < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        jobs_context.jobs.cancel(job.id)
        cancelled = jobs_context.jobs.wait(job.id, timeout=30)
        assert cancelled.state == JobState.CANCELLED, cancelled.error
        sent = cancelled.counts["sent"]
        assert 3 <= sent < 30 and len(peer.received) == sent == cancelled.progress_done

        resumed = jobs_context.jobs.wait(jobs_context.jobs.resume(cancelled.id).id, timeout=60)
        assert resumed.state == JobState.SUCCEEDED, resumed.error
        assert resumed.counts["sent"] == 30 - sent
        assert sorted(peer.received) == sorted(jobs_context.index.get_image(i).SOPInstanceUID for i in ids)
    finally:
        peer.close()
