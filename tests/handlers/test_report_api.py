"""REST: POST /slicebox/api/anonymization/report, the review report of a selection under a profile."""

from __future__ import annotations

import json

import pandas
import pytest
from generators import ct_bytes
from helpers import body_json
from pydicom.uid import generate_uid

from slicebox_lab.anonymization.report import COLUMNS, OUTCOMES, report_frame
from slicebox_lab.handlers import anonymization_report

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def upload(api, data: bytes) -> dict:
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code in (200, 201), r.body
    return body_json(r)


async def report(api, body: object):
    return await api("anonymization", "report", method="POST", body=json.dumps(body).encode(), headers=JSON)


async def test_report_of_images_and_series(api):
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    marked = {"InstitutionName": "St. Elsewhere", "BurnedInAnnotation": "YES"}
    images = [await upload(api, ct_bytes(InstanceNumber=n, **series, **marked)) for n in (1, 2)]
    assert images[0]["series_id"] == images[1]["series_id"]
    other = await upload(api, ct_bytes(PatientName="Roe^Richard", PatientID="P2"))

    body = {"imageIds": [images[0]["id"]], "options": ["RETAIN_INSTITUTION_IDENTITY"], "burnedInAnnotation": "keep"}
    r = await report(api, body)
    assert r.code == 200, r.body
    data = body_json(r)
    summary = data["summary"]
    assert summary["images"] == 1
    assert summary["profile"]["options"] == ["RETAIN_INSTITUTION_IDENTITY"]
    assert set(summary["outcomes"]) == set(OUTCOMES)
    assert sum(summary["outcomes"].values()) == len(data["attributes"])
    rows = {row["path"]: row for row in data["attributes"]}
    assert all(set(row) == set(COLUMNS) for row in data["attributes"])
    institution = rows["InstitutionName"]
    assert (institution["outcome"], institution["decided_by"]) == ("kept", "Retain Institution Identity Option (K)")
    assert institution["risk"]
    assert rows["PatientName"]["outcome"] == "pseudonym"
    assert rows["StudyInstanceUID"]["outcome"] == "uid-mapped"
    assert "PixelData" not in rows
    risky = {risk["path"] for risk in summary["risks"]}
    assert {"InstitutionName", "BurnedInAnnotation"} <= risky
    assert summary["burned_in"] == {"refused": 0, "masked": 0, "kept": 1}
    assert "St. Elsewhere" not in r.body.decode()  # names attributes, never values

    # a series and an image: three images, duplicates counted once
    r = await report(api, {"imageIds": [other["id"], images[1]["id"]], "seriesIds": [images[0]["series_id"]]})
    assert r.code == 200, r.body
    data = body_json(r)
    assert data["summary"]["images"] == 3
    assert data["summary"]["profile"]["options"] == []
    rows = {row["path"]: row for row in data["attributes"]}
    assert rows["InstitutionName"]["occurrences"] == 2
    assert rows["InstitutionName"]["outcome"] == "dummy"
    assert rows["InstitutionName"]["risk"] is None
    assert rows["SOPInstanceUID"]["occurrences"] == 3
    assert "in 2 image(s)" in rows["BurnedInAnnotation"]["risk"]
    assert data["summary"]["burned_in"] == {"refused": 2, "masked": 0, "kept": 0}

    frame = report_frame(data)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == len(data["attributes"])
    assert frame.set_index("path").loc["SOPInstanceUID", "occurrences"] == 3


@pytest.mark.parametrize(
    "body, needle",
    [
        ({}, "imageIds"),
        ({"imageIds": []}, "imageIds"),
        ({"imageIds": ["1"]}, "integer ids"),
        ({"seriesIds": [True]}, "integer ids"),
        ({"imageIds": 3}, "integer ids"),
        ([1, 2], "JSON object"),
        ({"imageIds": [1], "options": ["NO_SUCH_OPTION"]}, "NO_SUCH_OPTION"),
        (
            {"imageIds": [1], "options": ["RETAIN_LONGITUDINAL_FULL_DATES", "RETAIN_LONGITUDINAL_MODIFIED_DATES"]},
            "alternatives",
        ),
    ],
)
async def test_bad_requests_are_400(api, body, needle):
    await upload(api, ct_bytes())
    r = await report(api, body)
    assert r.code == 400, r.body
    assert needle in body_json(r)["message"]


async def test_bad_json_is_400(api):
    r = await api("anonymization", "report", method="POST", body=b"{nope", headers=JSON)
    assert r.code == 400
    r = await api("anonymization", "report", method="POST", body=b"", headers=JSON, allow_nonstandard_methods=True)
    assert r.code == 400


async def test_unknown_ids_are_404(api):
    image = await upload(api, ct_bytes())
    for body in ({"imageIds": [image["id"], 999999]}, {"seriesIds": [999999]}, {"imageIds": [2**70]}):
        r = await report(api, body)
        assert r.code == 404, (body, r.body)
        assert "not found" in body_json(r)["message"]


async def test_too_large_a_selection_is_400(api, monkeypatch):
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    image = None
    for n in (1, 2, 3):
        image = await upload(api, ct_bytes(InstanceNumber=n, **series))
    assert image is not None
    monkeypatch.setattr(anonymization_report, "MAX_REPORT_IMAGES", 2)
    r = await report(api, {"seriesIds": [image["series_id"]]})
    assert r.code == 400
    assert "more than 2 images" in body_json(r)["message"]
    monkeypatch.setattr(anonymization_report, "MAX_REPORT_IMAGES", 3)
    assert (await report(api, {"seriesIds": [image["series_id"]]})).code == 200
