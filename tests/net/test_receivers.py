"""Storage associations served by the worker processes (``net/receivers.py``), with a node that has workers.

What must hold whichever process serves an association: every object acknowledged is in the index, a
refused object gets its failure status and leaves nothing, the tag filter of the SCP's source applies,
ImageAdded is published (forwarding and apps depend on it), Query/Retrieve stays with the index, and
a worker that dies aborts only its own associations and is replaced.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netutil
import pydicom
import pytest
from generators import ct_dataset
from netutil import SCP_AE, run_dcmtk, write_series
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, build_role

from slicebox_lab.context import SliceboxContext
from slicebox_lab.events import ImageAdded
from slicebox_lab.index import query as index_query
from slicebox_lab.net.nodes import ScpConfig
from slicebox_lab.net.receivers import proposes_storage_only
from slicebox_lab.net.scp import ScpService
from slicebox_lab.routing import filtering

VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@pytest.fixture
def context(tmp_path: Path) -> Iterator[SliceboxContext]:
    ctx = SliceboxContext.open(tmp_path / "node", fsync=True, workers=2)
    yield ctx
    ctx.close()


scp_service = netutil.scp_service
scp = netutil.scp


def _associate(scp: ScpConfig, *contexts: str, ae_title: str = "") -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for uid in contexts:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
    return ae.associate("127.0.0.1", scp.port, ae_title=ae_title or scp.ae_title)


def _blobs(node: Path) -> list[Path]:
    return [p for p in (node / "dicom").rglob("*") if p.is_file()]


def test_storescu_over_four_associations_is_served_by_the_workers(
    scp: ScpConfig, scp_service: ScpService, context: SliceboxContext, tmp_path: Path
):
    added: list[ImageAdded] = []
    context.events.subscribe(ImageAdded, added.append)
    receivers = scp_service._receivers
    assert receivers is not None
    held = _associate(scp, CTImageStorage)  # an association a worker serves while the others run
    assert held.is_established and receivers.busy() == 1
    folders = [tmp_path / f"in{n}" for n in range(4)]
    for n, folder in enumerate(folders):
        write_series(folder, 10, PatientID=f"RECV-{n}")
    results = [
        run_dcmtk("storescu", "-aec", SCP_AE, "+sd", "127.0.0.1", str(scp.port), str(folder)) for folder in folders
    ]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert held.send_c_store(ct_dataset(PatientID="HELD")).Status == 0
    held.release()
    assert context.index.counts()["images"] == 41
    assert len(added) == 41 and {e.source.source_name for e in added} == {scp.name}
    deadline = time.monotonic() + 5
    while receivers.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receivers.busy() == 0
    # the stored files are the ones sent, under keys the start-up reconcile understands
    assert len(_blobs(tmp_path / "node")) == 41
    report = context.reconcile()
    assert report.blobs_reindexed == 0 and report.orphan_blobs_removed == 0


def test_a_refused_object_gets_its_status_and_leaves_nothing(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    bad = ct_dataset(rows=16, columns=16)
    bad.Rows = 64  # the pixel data is too short for the declared size
    assoc = _associate(scp, CTImageStorage)
    try:
        assert assoc.is_established
        status = assoc.send_c_store(bad)
        assert status.Status & 0xF000 in (0xA000, 0xC000) and "Pixel" in str(status.get("ErrorComment", ""))
        assert assoc.send_c_store(ct_dataset(PatientID="GOOD")).Status == 0  # the association goes on
    finally:
        assoc.release()
    assert context.index.counts()["images"] == 1
    assert len(_blobs(tmp_path / "node")) == 1


def test_the_sources_tag_filter_applies_to_what_a_receiver_stored(scp: ScpConfig, context: SliceboxContext):
    created = filtering.create_filter(context.index, {"name": "x", "type": "BLACKLIST", "tagPaths": ["PatientAddress"]})
    filtering.create_association(context.index, {"sourceType": "scp", "sourceName": scp.name, "filterId": created.id})
    assoc = _associate(scp, CTImageStorage)
    try:
        assert assoc.send_c_store(ct_dataset(PatientID="FILTERED", PatientAddress="1 Main St")).Status == 0
    finally:
        assoc.release()
    series = context.index.list_flat_series()[0]
    stored = context.dataset(context.index.images_of_series(series.id)[0].id)
    assert stored.PatientID == "FILTERED" and "PatientAddress" not in stored


def test_wrong_called_ae_title_is_rejected_by_the_receiver(scp: ScpConfig):
    result = run_dcmtk("echoscu", "-aec", "NOT-THE-SCP", "127.0.0.1", str(scp.port))
    assert result.returncode != 0 and "Called AE Title Not Recognized" in result.stderr
    assert run_dcmtk("echoscu", "-aec", SCP_AE, "127.0.0.1", str(scp.port)).returncode == 0


def test_query_retrieve_associations_stay_with_the_index(
    scp: ScpConfig, scp_service: ScpService, context: SliceboxContext
):
    assoc = _associate(scp, CTImageStorage)
    try:
        assert assoc.send_c_store(ct_dataset(PatientID="FINDME")).Status == 0
    finally:
        assoc.release()
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "FINDME"
    query.StudyInstanceUID = ""
    find = _associate(scp, STUDY_FIND)
    try:
        answers = [ds for status, ds in find.send_c_find(query, STUDY_FIND) if status.Status == 0xFF00]
    finally:
        find.release()
    assert len(answers) == 1 and answers[0].PatientID == "FINDME"


def test_what_is_handed_to_a_receiver(scp: ScpConfig):
    """Storage and verification without roles: yes; a Q/R model, or role selection (C-GET): no."""

    def proposed(*contexts: str, roles: bool = False) -> bool:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        ae = AE(ae_title="TESTSCU")
        ae.acse_timeout = 2
        for uid in contexts:
            ae.add_requested_context(uid, [ExplicitVRLittleEndian])
        extended = [build_role(CTImageStorage, scp_role=True)] if roles else []
        threading.Thread(
            target=lambda: ae.associate("127.0.0.1", port, ae_title="X", ext_neg=extended), daemon=True
        ).start()
        connection, _ = listener.accept()
        try:
            return proposes_storage_only(connection, timeout=5)
        finally:
            connection.close()
            listener.close()

    assert proposed(CTImageStorage, VERIFICATION)
    assert not proposed(CTImageStorage, STUDY_FIND)
    assert not proposed(STUDY_GET, CTImageStorage, roles=True)


def test_a_killed_worker_aborts_only_its_association_and_is_replaced(
    scp: ScpConfig, scp_service: ScpService, context: SliceboxContext, tmp_path: Path
):
    first = _associate(scp, CTImageStorage)
    assert first.is_established
    assert first.send_c_store(ct_dataset(PatientID="BEFORE")).Status == 0
    victims = context.workers.worker_pids()
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while first.is_alive() and time.monotonic() < deadline:  # the sender sees its association end
        try:
            first.send_c_store(ct_dataset(PatientID="LOST"))
        except Exception:
            break
        time.sleep(0.05)
    assert not first.is_established
    # nothing half-stored: the image acknowledged is there, the one cut off is not in the index
    assert [i.PatientID for i in _patients(context)] == ["BEFORE"]
    # a new association is served by a new worker
    second = _associate(scp, CTImageStorage)
    try:
        assert second.is_established
        assert second.send_c_store(ct_dataset(PatientID="AFTER")).Status == 0
    finally:
        second.release()
    assert context.workers.worker_pids() and set(context.workers.worker_pids()).isdisjoint(victims)
    assert sorted(i.PatientID for i in _patients(context)) == ["AFTER", "BEFORE"]


def test_stopping_the_scp_service_ends_the_associations_the_workers_serve(
    scp: ScpConfig, scp_service: ScpService, context: SliceboxContext
):
    assoc = _associate(scp, CTImageStorage)
    assert assoc.send_c_store(ct_dataset()).Status == 0
    receivers = scp_service._receivers
    assert receivers is not None and receivers.busy() == 1
    scp_service.stop(1.0)  # half the time to finish, then the connection is cut
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    while receivers.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receivers.busy() == 0
    assert context.index.counts()["images"] == 1


def _patients(context: SliceboxContext) -> list[Any]:
    with context.index.reading() as conn:
        return index_query.list_patients(conn)


def test_a_rejected_association_leaves_no_listener_thread_waiting(scp: ScpConfig, scp_service: ScpService):
    assert run_dcmtk("echoscu", "-aec", "NOT-THE-SCP", "127.0.0.1", str(scp.port)).returncode != 0
    assert run_dcmtk("echoscu", "-aec", SCP_AE, "127.0.0.1", str(scp.port)).returncode == 0
    receivers = scp_service._receivers
    assert receivers is not None
    deadline = time.monotonic() + 5
    while receivers.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receivers.busy() == 0  # no listener thread is left waiting on an association that ended
