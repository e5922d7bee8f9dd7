"""Sending from the client between two real nodes: through a box (PUSH one way, POLL the other) waited to
FINISHED with a progress bar, and by C-STORE to the other node's SCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clientnode import client_of, running_node
from generators import ct_bytes
from nodeproc import NodeProcess
from pydicom.uid import generate_uid

from slicebox_lab.client import NotFound, SliceboxClient, Transfer

N = 6


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    base: Path = tmp_path_factory.mktemp("client-transfer")
    with running_node(base, "a") as a, running_node(base, "b") as b:
        yield a, b


def _upload(sbx: SliceboxClient, patient_id: str) -> list[int]:
    study, series = generate_uid(), generate_uid()
    return [
        sbx.upload_bytes(
            ct_bytes(
                PatientName="Real^Name",
                PatientID=patient_id,
                StudyInstanceUID=study,
                SeriesInstanceUID=series,
                InstanceNumber=n + 1,
            )
        )["id"]
        for n in range(N)
    ]


def test_send_through_a_box_both_ways(
    nodes: tuple[NodeProcess, NodeProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (client_of(n) for n in nodes)
    polled = b.create_box_connection("to-a")
    assert polled["base_url"].startswith("http") and polled["token"] in polled["base_url"]
    pushing = a.connect_box("to-b", polled["base_url"])
    assert pushing["send_method"] == "PUSH" and polled["send_method"] == "POLL"
    assert list(a.boxes()["name"]) == ["to-b"]

    _upload(a, "BOX-A")
    selection = a.select(a.flat_series(PatientID="BOX-A"))
    transfer = selection.send(box="to-b", wait=True, progress=True, timeout=120)
    assert isinstance(transfer, Transfer) and transfer.kind == "box"
    assert transfer.transaction is not None
    assert transfer.transaction["status"] == "FINISHED", transfer.transaction
    assert transfer.transaction["sent_image_count"] == N
    assert transfer.succeeded and transfer.job["state"] == "SUCCEEDED"
    err = capsys.readouterr().err
    assert f"transaction {transfer.transaction['id']}" in err and f"{N}/{N}" in err
    outgoing = a.transactions("outgoing")
    assert outgoing.iloc[0]["id"] == transfer.transaction["id"] and outgoing.iloc[0]["status"] == "FINISHED"
    # de-identified on the way: B has N images, none under the real identity
    assert b.flat_series(PatientID="BOX-A").empty
    incoming = b.transactions("incoming")
    assert incoming.iloc[0]["status"] == "FINISHED" and incoming.iloc[0]["received_image_count"] == N
    assert b.information()["counts"]["images"] == N
    assert len(a.keys()) >= 1

    # the other way: B queues for A, A polls
    _upload(b, "BOX-B")
    ids = b.select(b.flat_series(PatientID="BOX-B")).image_ids()
    transaction = b.send_to_box("to-a", ids, options=["RETAIN_UIDS"])
    assert transaction["total_image_count"] == N and transaction["job_id"]
    final = b.wait_transaction(transaction["id"], progress=False, timeout=120)
    assert final["status"] == "FINISHED" and final["sent_image_count"] == N
    assert a.transactions("incoming").iloc[0]["received_image_count"] == N
    with pytest.raises(NotFound, match="box"):
        a.send_to_box("no-such-box", ids)


def test_send_to_scu_stores_on_the_other_nodes_scp(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = (client_of(n) for n in nodes)
    scp = b.add_scp("receiver", "BRECEIVER", 0, host="127.0.0.1")
    scu = a.add_scu("node-b", "BRECEIVER", "127.0.0.1", scp["port"])
    assert a.echo_scu("node-b") == {"status": "ok"}
    ids = _upload(a, "SCU-A")
    uids = {a.image(i)["SOPInstanceUID"] for i in ids}
    transfer = a.select(a.flat_series(PatientID="SCU-A")).send(scu=scu["id"], wait=True, progress=False, timeout=120)
    assert transfer.kind == "scu" and transfer.job["state"] == "SUCCEEDED", transfer.job
    assert transfer.job["counts"]["sent"] == N
    received = b.flat_series(PatientID="SCU-A")
    assert len(received) == 1 and received.iloc[0]["source"] == "scp:receiver"
    assert {r["SOPInstanceUID"] for r in b.images(int(received.iloc[0]["series_id"])).to_dict("records")} == uids
    job = a.send_to_scu(scu["id"], ids[:2])
    assert a.wait_job(job["id"], progress=False, timeout=60)["counts"]["sent"] == 2
    assert any(a.jobs(kind="scu-send")["id"] == job["id"])
