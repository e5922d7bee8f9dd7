"""REST: /slicebox/api/scus/{id}/send, /query and /retrieve through a real Jupyter server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import netutil
import pytest
from generators import ct_bytes
from helpers import serve_with
from orthanc_fixture import Orthanc, orthanc
from pydicom.uid import generate_uid

from slicebox_lab.context import SliceboxContext
from slicebox_lab.model import Source
from slicebox_lab.net.scp import ScpService, scp_service_factory

refused_port = netutil.refused_port
orthanc = orthanc  # noqa: PLW0127  (the module-scoped fixture)


def body(response: Any) -> Any:
    return json.loads(response.body)


def post(api: Any, *parts: object, payload: Any) -> Any:
    return api(*parts, method="POST", body=json.dumps(payload))


@pytest.fixture
def node(jp_serverapp: Any) -> Iterator[tuple[SliceboxContext, ScpService]]:
    """The server's context and an SCP service of it, the one its handlers use."""
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    service = scp_service_factory(context)
    service.start()
    serve_with(jp_serverapp, service)
    yield context, service
    service.stop(5.0)


def _ingest(context: SliceboxContext, count: int, **attributes: Any) -> list[int]:
    study, series = generate_uid(), generate_uid()
    return [
        context.ingest(
            ct_bytes(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n + 1, **attributes),
            Source("user", "test"),
        ).image.id
        for n in range(count)
    ]


async def _finished(api: Any, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = body(await api("jobs", job_id))
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def test_query_ourselves(api: Any, node: tuple[SliceboxContext, ScpService]):
    """Our node as its own PACS: C-FIND over the loopback answers from the index."""
    context, _ = node
    _ingest(context, 2, PatientID="REST-Q", PatientName="Rest^Query")
    scp = body(await post(api, "scps", payload={"name": "in", "ae_title": "SBX-IN", "port": 0, "host": "127.0.0.1"}))
    me = body(
        await post(api, "scus", payload={"name": "me", "ae_title": "SBX-IN", "host": "127.0.0.1", "port": scp["port"]})
    )

    r = await post(
        api,
        "scus",
        me["id"],
        "query",
        payload={"level": "PATIENT", "identifier": {"PatientName": "Rest*", "PatientID": None}},
    )
    assert r.code == 200, r.body
    assert body(r) == [
        {
            "PatientName": "Rest^Query",
            "PatientID": "REST-Q",
            "QueryRetrieveLevel": "PATIENT",
            "RetrieveAETitle": "SBX-IN",
        }
    ]
    r = await post(
        api,
        "scus",
        me["id"],
        "query",
        payload={"level": "IMAGE", "identifier": {"PatientID": "REST-Q", "InstanceNumber": ""}},
    )
    assert r.code == 200 and sorted(row["InstanceNumber"] for row in body(r)) == ["1", "2"]


async def test_send_and_retrieve_with_orthanc(api: Any, node: tuple[SliceboxContext, ScpService], orthanc: Orthanc):
    context, _ = node
    ids = _ingest(context, 3, PatientID="REST-SEND")
    scp = body(await post(api, "scps", payload={"name": "in", "ae_title": "SBX-REST", "port": 0, "host": "127.0.0.1"}))
    pacs = body(
        await post(
            api,
            "scus",
            payload={"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port},
        )
    )
    r = await post(api, "scus", pacs["id"], "send", payload={"image_ids": ids})
    assert r.code == 201, r.body
    job = body(r)
    assert job["kind"] == "scu-send" and job["parameters"] == {"scu_id": pacs["id"], "image_ids": ids}
    job = await _finished(api, job["id"])
    assert job["state"] == "SUCCEEDED" and job["counts"] == {"sent": 3, "failed": 0}, job

    study = body(
        await post(
            api,
            "scus",
            pacs["id"],
            "query",
            payload={"level": "STUDY", "identifier": {"PatientID": "REST-SEND", "StudyInstanceUID": ""}},
        )
    )
    assert len(study) == 1
    uid = study[0]["StudyInstanceUID"]
    context.delete_images(ids)

    orthanc.add_modality("slicebox-rest", "SBX-REST", scp["port"])
    r = await post(
        api,
        "scus",
        pacs["id"],
        "retrieve",
        payload={
            "level": "STUDY",
            "identifier": {"StudyInstanceUID": uid},
            "method": "move",
            "destination_scp_id": scp["id"],
        },
    )
    assert r.code == 201, r.body
    job = await _finished(api, body(r)["id"])
    assert job["kind"] == "scu-retrieve" and job["state"] == "SUCCEEDED", job
    assert job["counts"]["completed"] == 3 and (job["progress_done"], job["progress_total"]) == (3, 3)
    assert context.index.counts()["images"] == 3


async def test_errors(api: Any, node: tuple[SliceboxContext, ScpService], refused_port: int):
    context, _ = node
    nobody = body(
        await post(api, "scus", payload={"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": refused_port})
    )

    # unreachable peer: 502 with the reason for a query; a send job fails with it
    r = await post(
        api, "scus", nobody["id"], "query", payload={"level": "STUDY", "identifier": {"StudyInstanceUID": ""}}
    )
    assert r.code == 502 and "Cannot connect" in body(r)["message"], r.body
    ids = _ingest(context, 1)
    r = await post(api, "scus", nobody["id"], "send", payload={"image_ids": ids})
    assert r.code == 201
    job = await _finished(api, body(r)["id"])
    assert job["state"] == "FAILED" and "Cannot connect" in job["error"]

    # unknown remote node (or destination SCP): 404
    for route, payload in [
        ("send", {"image_ids": [1]}),
        ("query", {"level": "STUDY", "identifier": {}}),
        ("retrieve", {"level": "STUDY", "identifier": {"StudyInstanceUID": "1.2"}, "method": "get"}),
    ]:
        assert (await post(api, "scus", 999999, route, payload=payload)).code == 404, route
    r = await post(
        api,
        "scus",
        nobody["id"],
        "retrieve",
        payload={
            "level": "STUDY",
            "identifier": {"StudyInstanceUID": "1.2"},
            "method": "move",
            "destination_scp_id": 999999,
        },
    )
    assert r.code == 404

    # bad bodies: 400
    bad = [
        ("send", "not json"),
        ("send", []),
        ("send", {"image_ids": []}),
        ("send", {"image_ids": ["1"]}),
        ("send", {}),
        ("query", {"level": "NOPE", "identifier": {}}),
        ("query", {"level": "STUDY", "identifier": {"NotAKeyword": ""}}),
        ("query", {"level": "STUDY", "identifier": []}),
        ("query", {"level": "STUDY", "identifier": {"PatientName": {"x": 1}}}),
        ("query", {"level": "STUDY", "identifier": {"ReferencedSeriesSequence": ""}}),
        ("retrieve", {"level": "STUDY", "identifier": {"StudyInstanceUID": "1.2"}, "method": "push"}),
        ("retrieve", {"level": "STUDY", "identifier": {"StudyInstanceUID": "1.2"}, "method": "move"}),
        ("retrieve", {"level": "SERIES", "identifier": "x", "method": "get"}),
    ]
    for route, payload in bad:
        raw = payload if isinstance(payload, str) else json.dumps(payload)
        r = await api("scus", nobody["id"], route, method="POST", body=raw)
        assert r.code == 400, (route, payload, r.body)
        assert body(r)["message"]
    assert body(await api("jobs", params={"kind": "scu-retrieve"})) == []
