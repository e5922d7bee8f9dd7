"""REST: /slicebox/api/filtering — tag filters, their tag paths, their attachment to sources, and the errors."""

from __future__ import annotations

import json
from typing import Any

from generators import ct_bytes
from helpers import body_json

from slicebox_lab.model import Source
from slicebox_lab.routing import filtering

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def post(api: Any, *parts: object, body: object) -> Any:
    return await api(*parts, method="POST", body=json.dumps(body).encode(), headers=JSON)


async def delete(api: Any, *parts: object) -> Any:
    return await api(*parts, method="DELETE")


def error(r: Any, code: int, fragment: str) -> None:
    assert r.code == code, (r.code, r.body)
    assert fragment in body_json(r)["message"], body_json(r)


async def test_filters_crud(api: Any):
    paths = ["(0010,1040)", "OtherPatientIDsSequence[*].PatientID"]
    r = await post(api, "filtering", "filters", body={"name": "no addresses", "type": "BLACKLIST", "tagPaths": paths})
    assert r.code == 201, r.body
    created = body_json(r)
    assert created["name"] == "no addresses" and created["type"] == "BLACKLIST"
    assert [p["tagPath"] for p in created["tagPaths"]] == ["PatientAddress", "OtherPatientIDsSequence[*].PatientID"]
    filter_id = created["id"]

    assert body_json(await api("filtering", "filters")) == [created]
    assert body_json(await api("filtering", "filters", filter_id)) == created

    r = await post(api, "filtering", "filters", filter_id, "tagpaths", body={"tagPath": "(0019,1010)"})
    assert r.code == 201, r.body
    added = body_json(r)
    assert added == {"id": added["id"], "tagFilterId": filter_id, "tagPath": "(0019,1010)"}
    paths = body_json(await api("filtering", "filters", filter_id, "tagpaths"))
    assert [p["tagPath"] for p in paths] == ["PatientAddress", "OtherPatientIDsSequence[*].PatientID", "(0019,1010)"]

    r = await delete(api, "filtering", "filters", filter_id, "tagpaths", added["id"])
    assert r.code == 204
    assert len(body_json(await api("filtering", "filters", filter_id))["tagPaths"]) == 2
    error(await delete(api, "filtering", "filters", filter_id, "tagpaths", added["id"]), 404, "not found")

    r = await delete(api, "filtering", "filters", filter_id)
    assert r.code == 204
    assert body_json(await api("filtering", "filters")) == []
    error(await api("filtering", "filters", filter_id), 404, f"tag filter {filter_id} not found")
    error(await delete(api, "filtering", "filters", filter_id), 404, "not found")


async def test_filter_errors(api: Any):
    r = await post(api, "filtering", "filters", body={"name": "w", "type": "WHITELIST"})
    assert r.code == 201
    filter_id = body_json(r)["id"]
    error(await post(api, "filtering", "filters", body={"name": "w", "type": "BLACKLIST"}), 409, "already exists")
    error(await post(api, "filtering", "filters", body={"name": "x", "type": "GREY"}), 400, "WHITELIST or BLACKLIST")
    error(await post(api, "filtering", "filters", body=["PatientName"]), 400, "JSON object")
    error(await api("filtering", "filters", method="POST", body=b"{", headers=JSON), 400, "not valid JSON")
    bad_path = {"name": "x", "type": "BLACKLIST", "tagPaths": ["Seq.Attr"]}
    error(await post(api, "filtering", "filters", body=bad_path), 400, "tag path")
    protected = {"name": "x", "type": "BLACKLIST", "tagPaths": ["StudyInstanceUID"]}
    error(await post(api, "filtering", "filters", body=protected), 400, "cannot remove StudyInstanceUID")
    error(await post(api, "filtering", "filters", filter_id, "tagpaths", body={"tagPath": ""}), 400, "non-empty")
    error(await post(api, "filtering", "filters", filter_id, "tagpaths", body={}), 400, "tagPath")
    r = await post(api, "filtering", "filters", filter_id, "tagpaths", body={"tagPath": "Modality"})
    assert r.code == 201
    error(await post(api, "filtering", "filters", filter_id, "tagpaths", body={"tagPath": "00080060"}), 409, "already")
    error(await post(api, "filtering", "filters", 999, "tagpaths", body={"tagPath": "Modality"}), 404, "not found")
    error(await api("filtering", "filters", 99999999999999999999), 404, "not found")
    assert [f["name"] for f in body_json(await api("filtering", "filters"))] == ["w"]


async def test_associations_and_their_effect_without_restart(api: Any, jp_serverapp: Any):
    index = jp_serverapp.web_app.settings["slicebox_context"].index
    r = await post(
        api, "filtering", "filters", body={"name": "drop", "type": "BLACKLIST", "tagPaths": ["PatientAddress"]}
    )
    filter_id = body_json(r)["id"]

    # an uploaded image makes the user a known source, which can be named by its id
    r = await api("images", method="POST", body=ct_bytes(), headers=DICOM)
    assert r.code == 201
    user = next(s for s in index.sources() if s.source_type == "user")
    r = await post(api, "filtering", "associations", body={"sourceType": "user", "sourceId": user.source_id,
                                                           "filterId": filter_id})  # fmt: skip
    assert r.code == 201, r.body
    by_id = body_json(r)
    assert by_id == {"id": by_id["id"], "sourceType": "user", "sourceName": user.source_name,
                     "sourceId": user.source_id, "filterId": filter_id, "filterName": "drop"}  # fmt: skip
    r = await post(
        api, "filtering", "associations", body={"sourceType": "scp", "sourceName": "ct", "filterId": filter_id}
    )
    assert r.code == 201
    by_name = body_json(r)
    assert by_name["sourceId"] is None
    assert body_json(await api("filtering", "associations")) == [by_id, by_name]

    # the running node sees the change at once, only for the sources it is attached to
    attached = filtering.filter_for_source(index, Source("scp", "ct"))
    assert attached is not None and attached.blacklist.paths[0].text == "PatientAddress"
    assert filtering.filter_for_source(index, Source("scp", "mr")) is None
    r = await post(api, "filtering", "filters", filter_id, "tagpaths", body={"tagPath": "OperatorsName"})
    assert r.code == 201
    changed = filtering.filter_for_source(index, Source("scp", "ct"))
    assert changed is not None and [p.text for p in changed.blacklist.paths] == ["PatientAddress", "OperatorsName"]

    r = await delete(api, "filtering", "associations", by_name["id"])
    assert r.code == 204
    assert filtering.filter_for_source(index, Source("scp", "ct")) is None
    error(await delete(api, "filtering", "associations", by_name["id"]), 404, "not found")

    # deleting the filter detaches it everywhere
    assert (await delete(api, "filtering", "filters", filter_id)).code == 204
    assert body_json(await api("filtering", "associations")) == []
    assert filtering.filter_for_source(index, user) is None


async def test_association_errors(api: Any):
    r = await post(api, "filtering", "filters", body={"name": "drop", "type": "BLACKLIST"})
    filter_id = body_json(r)["id"]
    good = {"sourceType": "directory", "sourceName": "incoming", "filterId": filter_id}
    assert (await post(api, "filtering", "associations", body=good)).code == 201
    error(await post(api, "filtering", "associations", body=good), 409, "already attached")
    error(await post(api, "filtering", "associations", body={**good, "filterId": 404}), 404, "tag filter 404 not found")
    error(await post(api, "filtering", "associations", body={**good, "sourceType": "pacs"}), 400, "sourceType")
    error(await post(api, "filtering", "associations", body={**good, "sourceName": ""}), 400, "sourceName")
    error(await post(api, "filtering", "associations", body={**good, "sourceId": 77}), 404, "source 77 not found")
    error(await post(api, "filtering", "associations", body={**good, "filterId": True}), 400, "integer")
    error(await post(api, "filtering", "associations", body={"sourceType": "scp"}), 400, "filterId")
    error(await post(api, "filtering", "associations", body=[]), 400, "JSON object")
