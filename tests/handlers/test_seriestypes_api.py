"""REST: series types and rules; CT/MR classification on ingest, re-classification as a job."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from helpers import body_json, finished_job
from pydicom.data import get_testdata_file

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def send(api, method: str, *parts, body) -> object:
    return await api(*parts, method=method, body=json.dumps(body).encode(), headers=JSON)


async def upload_file(api, name: str) -> dict:
    data = Path(str(get_testdata_file(name))).read_bytes()
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code == 201, r.body
    return body_json(r)


async def types_of(api, series_id: int, expected: list[str], timeout: float = 20) -> list[str]:
    """The type names of a series once they equal ``expected`` (classification is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await api("metadata", "series", series_id, "seriestypes")
        assert r.code == 200, r.body
        names = [t["name"] for t in body_json(r)]
        if names == expected or time.monotonic() > deadline:
            return names
        await asyncio.sleep(0.05)


async def settled(api) -> dict:
    """The update status once nothing is being classified."""
    deadline = time.monotonic() + 30
    while True:
        status = body_json(await api("seriestypes", "updatestatus"))
        if not status["running"]:
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def test_ct_and_mr_are_typed_on_ingest_and_a_rule_edit_reclassifies(api):
    ct = body_json(await send(api, "POST", "seriestypes", body={"name": "CT"}))
    mr = body_json(await send(api, "POST", "seriestypes", body={"name": "MR"}))
    r = await send(
        api, "POST", "seriestypes", ct["id"], "rules", body={"attributes": [{"tag": "Modality", "values": ["CT"]}]}
    )
    assert r.code == 201
    ct_rule = body_json(r)
    assert ct_rule == {
        "id": ct_rule["id"],
        "series_type_id": ct["id"],
        "attributes": [{"tag": "Modality", "values": ["CT"]}],
    }
    mr_attributes = [{"tag": "(0008,0060)", "values": ["MR"]}, {"tag": "ScanningSequence", "values": ["SE", "IR"]}]
    r = await send(api, "POST", "seriestypes", mr["id"], "rules", body={"attributes": mr_attributes})
    assert body_json(r)["attributes"][0]["tag"] == "Modality"
    await settled(api)

    ct_image = await upload_file(api, "CT_small.dcm")
    mr_image = await upload_file(api, "MR_small.dcm")
    assert await types_of(api, ct_image["series_id"], ["CT"]) == ["CT"]
    assert await types_of(api, mr_image["series_id"], ["MR"]) == ["MR"]
    r = await api("metadata", "flatseries", params={"seriestypes": mr["id"]})
    assert [f["series"]["id"] for f in body_json(r)] == [mr_image["series_id"]]
    ids = [ct_image["series_id"], mr_image["series_id"], 999]
    r = await send(api, "POST", "seriestypes", "series", "query", body={"series_ids": ids})
    assert body_json(r) == [
        {"series_id": ct_image["series_id"], "series_type": ct},
        {"series_id": mr_image["series_id"], "series_type": mr},
    ]
    assert (await send(api, "POST", "seriestypes", "series", "query", body={"series_ids": "1"})).code == 400

    # edit the CT rule so that it types the MR series too: a re-classification job runs by itself
    r = await send(
        api,
        "PUT",
        "seriestypes",
        ct["id"],
        "rules",
        ct_rule["id"],
        body={"attributes": [{"tag": "Modality", "values": ["CT", "MR"]}]},
    )
    assert r.code == 200
    status = await settled(api)
    job = await finished_job(api, status["job"]["id"])
    assert job["state"] == "SUCCEEDED" and job["kind"] == "classify_series_types"
    assert job["progress_done"] == job["progress_total"] == 2
    assert await types_of(api, mr_image["series_id"], ["CT", "MR"]) == ["CT", "MR"]

    # a manual re-run through updatestatus
    r = await api("seriestypes", "updatestatus", method="POST", body=b"")
    assert r.code == 202
    assert (await finished_job(api, body_json(r)["id"]))["state"] == "SUCCEEDED"

    # deleting the rule takes the type away again; deleting a type removes its assignments
    assert (await api("seriestypes", ct["id"], "rules", ct_rule["id"], method="DELETE")).code == 204
    await settled(api)
    assert await types_of(api, ct_image["series_id"], []) == []
    assert (await api("seriestypes", mr["id"], method="DELETE")).code == 204
    assert await types_of(api, mr_image["series_id"], []) == []
    r = await api("seriestypes")
    assert [t["name"] for t in body_json(r)] == ["CT"]


async def test_series_type_routes_and_errors(api):
    image = await upload_file(api, "CT_small.dcm")
    sid = image["series_id"]
    t = body_json(await send(api, "POST", "seriestypes", body={"name": "Chest"}))
    assert (await send(api, "POST", "seriestypes", body={"name": "Chest"})).code == 409
    assert (await send(api, "POST", "seriestypes", body={"title": "x"})).code == 400
    assert (await api("seriestypes", 999)).code == 404
    assert (await api("seriestypes", 999, "rules")).code == 404
    assert (await send(api, "POST", "seriestypes", 999, "rules", body={"attributes": []})).code == 404
    bad_rules = ({"attributes": [{"tag": "Nope", "values": ["x"]}]}, {"attributes": [{"tag": "Modality"}]}, {"x": 1})
    for bad in bad_rules:
        assert (await send(api, "POST", "seriestypes", t["id"], "rules", body=bad)).code == 400, bad
    r = await send(api, "POST", "seriestypes", t["id"], "rules", body={"attributes": []})
    assert r.code == 201  # stored, but an empty rule matches nothing
    rule = body_json(r)
    await settled(api)
    assert await types_of(api, sid, [], timeout=0) == []
    assert (await api("seriestypes", t["id"], "rules", rule["id"])).code == 200
    assert (await api("seriestypes", t["id"], "rules", 999)).code == 404
    r = await send(api, "PUT", "seriestypes", t["id"], body={"name": "Thorax"})
    assert r.code == 200 and body_json(r) == {"id": t["id"], "name": "Thorax"}

    # manual assignment: idempotent, kept by re-classification, 404 for unknown series or type
    assert (await api("metadata", "series", sid, "seriestypes", t["id"], method="PUT", body=b"")).code == 204
    assert (await api("metadata", "series", sid, "seriestypes", t["id"], method="PUT", body=b"")).code == 204
    assert (await api("metadata", "series", sid, "seriestypes", 999, method="PUT", body=b"")).code == 404
    assert (await api("metadata", "series", 999, "seriestypes", t["id"], method="PUT", body=b"")).code == 404
    assert (await api("metadata", "series", 999, "seriestypes")).code == 404
    r = await api("seriestypes", "updatestatus", method="POST", body=b"")
    await finished_job(api, body_json(r)["id"])
    assert await types_of(api, sid, ["Thorax"], timeout=0) == ["Thorax"]
    assert (await api("metadata", "series", sid, "seriestypes", t["id"], method="DELETE")).code == 204
    assert await types_of(api, sid, [], timeout=0) == []
    assert (await api("metadata", "series", sid, "seriestypes", method="DELETE")).code == 204
    assert (await api("seriestypes", t["id"], "rules", 999, method="DELETE")).code == 204
