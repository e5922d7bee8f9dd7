"""REST: anonymization keys, CSV export, re-identification of returning data, bulk anonymization, modify."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pydicom
from generators import ct_bytes
from helpers import body_json, finished_job

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}
TIMEOUT = 60


def parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


async def upload(api: Any, data: bytes) -> dict[str, Any]:
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code in (200, 201), r.body
    return body_json(r)


def real_ct(**kwargs: object) -> bytes:
    return ct_bytes(
        PatientName="Real^Person", PatientID="MRN-9", AccessionNumber="ACC-1", StudyDate="20240115", **kwargs
    )


async def test_keys_are_listed_read_exported_and_deleted(api: Any):
    image = await upload(api, real_ct())
    r = await api("images", image["id"], "anonymized", method="POST", body=b"{}", headers=JSON)
    assert r.code == 200
    anonymous = parse(r.body)

    keys = body_json(await api("anonymization", "keys", params={"filter": "real"}))
    assert len(keys) == 1
    key = keys[0]
    assert (key["PatientName"], key["AnonPatientID"], key["imageId"]) == (
        "Real^Person",
        anonymous.PatientID,
        image["id"],
    )
    assert body_json(await api("anonymization", "keys", key["id"])) == key
    values = body_json(await api("anonymization", "keys", key["id"], "keyvalues"))
    assert {v["tagPath"]: v["value"] for v in values}["AccessionNumber"] == "ACC-1"
    assert body_json(await api("anonymization", "keys", params={"filter": "nobody"})) == []

    r = await api("anonymization", "keys", "export", "csv")
    assert r.code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.body.decode()), delimiter=";"))
    assert rows[0][:3] == ["ID", "Image ID", "Created"] and len(rows) == 1 + len(values)

    assert (await api("anonymization", "keys", params={"orderby": "bogus"})).code == 400
    assert (await api("anonymization", "keys", 9999)).code == 404
    assert (await api("anonymization", "keys", 9999, "keyvalues")).code == 404
    assert (await api("anonymization", "keys", key["id"], method="DELETE")).code == 204
    assert (await api("anonymization", "keys", key["id"])).code == 404


async def test_anonymize_export_reimport_restores_the_real_values(api: Any):
    data = real_ct()
    real = parse(data)
    image = await upload(api, data)
    r = await api("images", image["id"], "anonymize", method="PUT", body=b"{}", headers=JSON)
    assert r.code == 200, r.body
    anonymized = body_json(r)
    r = await api("images", "export", method="POST", body=json.dumps([anonymized["id"]]).encode(), headers=JSON)
    export = await api("images", "export", params={"id": body_json(r)["id"]})
    with zipfile.ZipFile(io.BytesIO(export.body)) as archive:
        exported = archive.read(archive.namelist()[0])
    assert parse(exported).PatientIdentityRemoved == "YES"
    await api("images", "delete", method="POST", body=json.dumps([anonymized["id"]]).encode(), headers=JSON)

    back = await upload(api, exported)
    stored = parse((await api("images", back["id"])).body)
    assert (stored.PatientName, stored.PatientID, stored.AccessionNumber, stored.StudyDate) == (
        "Real^Person",
        "MRN-9",
        "ACC-1",
        "20240115",
    )
    assert stored.SOPInstanceUID == real.SOPInstanceUID and "PatientIdentityRemoved" not in stored
    patients = body_json(await api("metadata", "patients"))
    assert [p["PatientID"] for p in patients] == ["MRN-9"]


async def test_bulk_anonymization_job_with_tag_values_and_skips(api: Any):
    ids = [(await upload(api, real_ct(SOPInstanceUID=f"1.2.826.0.1.3680043.10.5.{n}")))["id"] for n in range(1, 6)]
    body = {
        "imageIds": [*ids, 9999],
        "options": ["RETAIN_PATIENT_CHARACTERISTICS"],
        "imageTagValues": [{"imageId": ids[0], "tagValues": [{"tagPath": "PatientName", "value": "anon 001"}]}],
    }
    r = await api("anonymization", "anonymize", method="POST", body=json.dumps(body).encode(), headers=JSON)
    assert r.code == 201, r.body
    job = await finished_job(api, body_json(r)["id"])
    assert job["state"] == "SUCCEEDED", job
    assert job["counts"] == {"anonymized": 5, "skipped": 1, "failed": 0}
    assert (job["progress_done"], job["progress_total"]) == (6, 6)
    new_ids = job["result"]["images"]
    assert len(new_ids) == 5 and not set(new_ids) & set(ids)
    names = {str(parse((await api("images", i)).body).PatientName) for i in new_ids}
    assert "anon 001" in names and len(names) == 2
    for old in ids:
        assert (await api("images", old)).code == 404
    assert len(body_json(await api("anonymization", "keys"))) == 5

    bad = [
        {"options": []},
        {"imageIds": [], "options": []},
        {"imageIds": [1], "options": ["NOPE"]},
        {"imageIds": [1], "imageTagValues": [{"imageId": 1, "tagValues": [{"tagPath": "Nope", "value": 1}]}]},
    ]
    for body in bad:
        r = await api("anonymization", "anonymize", method="POST", body=json.dumps(body).encode(), headers=JSON)
        assert r.code == 400, (body, r.body)


async def test_modify_writes_nested_tag_values_into_a_new_image(api: Any):
    image = await upload(api, real_ct())
    values = [
        {"tagPath": "PatientName", "value": "Renamed^Patient"},
        {"tagPath": "ReferencedStudySequence[0].ReferencedSOPInstanceUID", "value": "1.2.3.4"},
        {"tagPath": "AccessionNumber", "value": None},
    ]
    r = await api("images", image["id"], "modify", method="PUT", body=json.dumps(values).encode(), headers=JSON)
    assert r.code == 200, r.body
    modified = body_json(r)
    stored = parse((await api("images", modified["id"])).body)
    assert stored.PatientName == "Renamed^Patient" and "AccessionNumber" not in stored
    assert stored.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert modified["id"] != image["id"] and (await api("images", image["id"])).code == 404
    assert [p["PatientName"] for p in body_json(await api("metadata", "patients"))] == ["Renamed^Patient"]

    for body in (b"[]", b'[{"tagPath": "Rows", "value": "many"}]', b'{"x": 1}', b"nope"):
        r = await api("images", modified["id"], "modify", method="PUT", body=body, headers=JSON)
        assert r.code == 400, body
    r = await api("images", 9999, "modify", method="PUT", body=json.dumps(values).encode(), headers=JSON)
    assert r.code == 404


def test_node_configuration_reaches_the_context(jp_serverapp: Any):
    """The traits of SliceboxApp (masks, re-identification sources, key attributes) configure the node's context."""
    from slicebox_lab.app import SliceboxApp

    app = SliceboxApp(
        data_dir=str(Path(jp_serverapp.root_dir) / "configured"),
        anonymization_pixel_masks=json.dumps(
            [{"match": {"Modality": "US"}, "rectangles": [{"x": 0, "y": 0, "width": 9, "height": 9}]}]
        ),
        reidentify_sources=["box:university"],
        anonymization_key_attributes=["InstitutionName:STUDY"],
        secondary_capture_burned_in=False,
    )
    app.serverapp = jp_serverapp
    app.initialize_settings()
    try:
        context = app.context
        assert context is not None
        assert [m.to_json()["match"] for m in context.pixel_masks] == [{"Modality": "US"}]
        assert context.reidentify_sources == frozenset({"box:university"})
        assert [(a.keyword, a.level) for a in context.key_attributes] == [("InstitutionName", "STUDY")]
        assert context.secondary_capture_burned_in is False
    finally:
        from slicebox_lab.server.services import stop_services

        stop_services(app.services, 5)
        app.context.close()
