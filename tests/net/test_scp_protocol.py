"""The SCP against pynetdicom peers: negotiation, refused and broken C-STOREs, C-FIND details, lifecycle."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import netutil
import pytest
from generators import ct_bytes, ct_dataset
from netutil import free_port
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import query as index_query
from slicebox_lab.model import Source
from slicebox_lab.net import nodes
from slicebox_lab.net.nodes import ScpConfig
from slicebox_lab.net.scp import ScpService
from slicebox_lab.net.transport import MAX_PDU

VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

# the shared fixtures (tests/net has no conftest.py: it would shadow tests/conftest.py)
context = netutil.context
scp_service = netutil.scp_service
scp = netutil.scp


def _associate(scp: ScpConfig, *contexts: str, ae_title: str = "", handlers=None):
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for uid in contexts:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
    return ae.associate("127.0.0.1", scp.port, ae_title=ae_title or scp.ae_title, evt_handlers=handlers or [])


def _echo_ok(scp: ScpConfig) -> bool:
    assoc = _associate(scp, VERIFICATION)
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        if assoc.is_established:
            assoc.release()


def _stored(context: SliceboxContext, node_dir: Path) -> tuple[dict[str, int], list[Path]]:
    blobs = [p for p in (node_dir / "dicom").rglob("*") if p.is_file()]
    return context.index.counts(), blobs


def test_unknown_sop_class_is_refused_in_negotiation(scp: ScpConfig):
    assoc = _associate(scp, "1.2.3.4.5.6.7.8.9", VERIFICATION)
    assert assoc.is_established
    try:
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7.8.9"]
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [VERIFICATION]
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    assert _echo_ok(scp)


def test_wrong_called_ae_title_is_rejected(scp: ScpConfig):
    assoc = _associate(scp, VERIFICATION, ae_title="SOMEONE-ELSE")
    assert assoc.is_rejected
    assert _echo_ok(scp)


def test_truncated_dataset_gets_a_failure_status_and_nothing_is_stored(
    scp: ScpConfig, context: SliceboxContext, tmp_path: Path
):
    data = ct_bytes(rows=64, columns=64)
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 3000])  # cut inside the pixel data
    assoc = _associate(scp, CTImageStorage)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)  # sent as the raw bytes of the file, not decoded
        assert status.Status == 0xC000
        assert "ixel" in status.ErrorComment or "runcat" in status.ErrorComment, status.ErrorComment
        # the association keeps working: a good object next is stored
        good = tmp_path / "good.dcm"
        good.write_bytes(ct_bytes(PatientID="GOOD"))
        assert assoc.send_c_store(good).Status == 0
    finally:
        assoc.release()
    counts, blobs = _stored(context, tmp_path / "node")
    assert counts["images"] == 1 and len(blobs) == 1
    with context.index.reading() as conn:
        assert index_query.list_patients(conn)[0].PatientID == "GOOD"


def test_dataset_that_fails_ingest_gets_a_failure_status(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    ds = ct_dataset(rows=16, columns=16)
    ds.Rows = 64  # the pixel data is too short for the declared size: ingest refuses it
    assoc = _associate(scp, CTImageStorage)
    try:
        status = assoc.send_c_store(ds)
        assert status.Status != 0 and status.Status & 0xF000 in (0xA000, 0xC000)
    finally:
        assoc.release()
    counts, blobs = _stored(context, tmp_path / "node")
    assert counts["images"] == 0 and blobs == []


def test_sender_closing_the_socket_mid_c_store_leaves_nothing_and_the_listener_serves(
    scp: ScpConfig, context: SliceboxContext, tmp_path: Path
):
    side = int((MAX_PDU / 2) ** 0.5) + 64  # 16-bit pixels: more than one PDU of data
    big = ct_dataset(rows=side, columns=side)
    pdata_sent = 0

    def cut(event: evt.Event) -> None:
        nonlocal pdata_sent
        if type(event.pdu).__name__ == "P_DATA_TF":
            pdata_sent += 1
            if pdata_sent == 2:  # the command, then the first fragment of the data set
                event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)

    assoc = _associate(scp, CTImageStorage, handlers=[(evt.EVT_PDU_SENT, cut)])
    assert assoc.is_established
    try:
        assoc.send_c_store(big)
    except Exception:
        pass
    finally:
        if assoc.is_established:
            assoc.abort()
    assert pdata_sent >= 2
    time.sleep(0.2)
    counts, blobs = _stored(context, tmp_path / "node")
    assert counts["images"] == 0 and blobs == []
    assert _echo_ok(scp)
    good = _associate(scp, CTImageStorage)
    try:
        assert good.send_c_store(ct_dataset(PatientID="AFTER")).Status == 0
    finally:
        good.release()
    assert context.index.counts()["images"] == 1


def _find(scp: ScpConfig, identifier: Dataset) -> list[Dataset]:
    assoc = _associate(scp, STUDY_FIND)
    try:
        answers = []
        for status, ds in assoc.send_c_find(identifier, STUDY_FIND):
            assert status.Status in (0xFF00, 0xFF01, 0x0000), hex(status.Status)
            if status.Status in (0xFF00, 0xFF01):
                answers.append(ds)
        return answers
    finally:
        assoc.release()


def test_c_find_matching(scp: ScpConfig, context: SliceboxContext):
    study_uids = []
    for n, (date, name) in enumerate([("20240101", "Doe^John"), ("20240615", "Doe^Jane"), ("20231231", "Roe^Rick")]):
        uid = generate_uid()
        study_uids.append(uid)
        context.ingest(
            ct_bytes(PatientName=name, PatientID=f"P{n}", StudyInstanceUID=uid, StudyDate=date), Source("user", "t")
        )

    def studies(**keys: object) -> list[str]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        identifier.PatientName = ""
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        return sorted(a.StudyInstanceUID for a in _find(scp, identifier))

    assert studies() == sorted(study_uids)
    assert studies(StudyDate="20240101-20241231") == sorted(study_uids[:2])
    assert studies(StudyDate="-20231231") == [study_uids[2]]
    assert studies(StudyDate="20240615") == [study_uids[1]]
    assert studies(PatientName="doe^j*") == sorted(study_uids[:2])
    assert studies(PatientName="Doe^Ja?e") == [study_uids[1]]
    assert studies(PatientID=["P0", "P2"]) == sorted([study_uids[0], study_uids[2]])
    assert studies(StudyInstanceUID=[study_uids[1], study_uids[2]]) == sorted(study_uids[1:])
    assert studies(PatientID="nobody") == []

    bad = Dataset()
    bad.QueryRetrieveLevel = "EVERYTHING"
    assoc = _associate(scp, STUDY_FIND)
    try:
        statuses = [status.Status for status, _ in assoc.send_c_find(bad, STUDY_FIND)]
    finally:
        assoc.release()
    assert statuses == [0xA900]


def test_add_validates_and_refuses_a_port_in_use(scp_service: ScpService, scp: ScpConfig):
    with pytest.raises(InvalidInput, match="16"):
        scp_service.add("long", "A" * 17, 0, host="127.0.0.1")
    with pytest.raises(InvalidInput, match="backslash"):
        scp_service.add("slash", "A\\B", 0, host="127.0.0.1")
    with pytest.raises(InvalidInput, match="empty"):
        scp_service.add("spaces", "   ", 0, host="127.0.0.1")
    with pytest.raises(InvalidInput, match="port"):
        scp_service.add("port", "AE", 70000, host="127.0.0.1")
    with pytest.raises(Conflict, match="already exists"):
        scp_service.add(scp.name, "OTHER", 0, host="127.0.0.1")
    with pytest.raises(Conflict, match=f"Port {scp.port} is already in use"):
        scp_service.add("same port", "OTHER", scp.port, host="127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Conflict, match=f"Port {port} is already in use"):
            scp_service.add("taken", "OTHER", port, host="127.0.0.1")
    assert [c.name for c in scp_service.list()] == [scp.name]


def test_remove_stops_the_listener_and_restart_restores_it(context: SliceboxContext):
    service = ScpService(context)
    service.start()
    port = free_port()
    config = service.add("kept", "KEPT", port, host="127.0.0.1")
    assert config.port == port and _echo_ok(config)
    service.stop(5)
    assert not _echo_ok(config)
    again = ScpService(context)
    again.start()  # listeners come back for every stored SCP
    try:
        assert again.is_running(config.id) and _echo_ok(config)
        again.remove(config.id)
        assert not _echo_ok(config)
        with pytest.raises(NotFound):
            again.remove(config.id)
        assert nodes.list_scps(context.index) == []
    finally:
        again.stop(5)


def test_sockets_have_tcp_nodelay(scp_service: ScpService, scp: ScpConfig):
    seen: list[int] = []

    def client_side(event: evt.Event) -> None:
        seen.append(event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    assoc = _associate(scp, VERIFICATION, handlers=[(evt.EVT_CONN_OPEN, client_side)])
    try:
        assert assoc.is_established
        acceptors = [a for a in scp_service._listeners[scp.id].ae.active_associations if a.is_alive()]
        assert acceptors
        assert all(a.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for a in acceptors)
        assert assoc.acceptor.maximum_length == MAX_PDU
    finally:
        assoc.release()


def test_c_find_cancel_stops_the_answers(scp: ScpConfig, context: SliceboxContext):
    for n in range(150):
        context.ingest(ct_bytes(PatientID=f"C{n:03d}"), Source("user", "t"))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = ""
    assoc = _associate(scp, "1.2.840.10008.5.1.4.1.2.1.1", VERIFICATION)
    try:
        statuses = []
        responses = assoc.send_c_find(identifier, "1.2.840.10008.5.1.4.1.2.1.1", msg_id=7)
        for status, _ in responses:
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model="1.2.840.10008.5.1.4.1.2.1.1")
        # the answers race the cancel over loopback: the SCP stops at its next answer after it
        assert statuses[-1] in (0xFE00, 0x0000)
        if statuses[-1] == 0xFE00:
            assert len(statuses) < 151
        else:
            assert len(statuses) == 151
        print("C-FIND answers before the cancel took effect:", len(statuses) - 1)
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_an_scp_whose_port_is_taken_at_start_is_logged_and_skipped(context: SliceboxContext):
    service = ScpService(context)
    service.start()
    config = service.add("blocked", "BLOCKED", 0, host="127.0.0.1")
    service.stop(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", config.port))
        taken.listen()
        again = ScpService(context)
        again.start()
        try:
            assert not again.is_running(config.id)
            assert [c.id for c in again.list()] == [config.id]  # kept: it starts when the port is free
            messages = [e.message for e in context.index.list_log(subject="SCP", entry_type="ERROR")]
            assert any("blocked" in m and "already in use" in m for m in messages), messages
        finally:
            again.stop(2)
