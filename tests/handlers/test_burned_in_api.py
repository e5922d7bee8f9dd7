"""REST: burned-in images are refused (422) unless the body keeps them or gives a matching pixel mask."""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from generators import ct_bytes
from helpers import body_json

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}
MASK = {
    "name": "top bar",
    "match": {"Modality": "CT", "Rows": 16},
    "rectangles": [{"x": 0, "y": 0, "width": 16, "height": 4}],
}


async def upload_burned_in(api, patient_id: str) -> tuple[dict, bytes]:
    data = ct_bytes(PatientID=patient_id, BurnedInAnnotation="YES")
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code == 201, r.body
    return body_json(r), data


async def anonymized(api, image_id: int, body: object = None):
    raw = b"" if body is None else json.dumps(body).encode()
    return await api("images", image_id, "anonymized", method="POST", body=raw, headers=JSON)


def parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


async def test_a_burned_in_image_is_refused_with_422_and_a_message(api):
    image, data = await upload_burned_in(api, "BURN-1")
    for method, action in (("POST", "anonymized"), ("PUT", "anonymize")):
        r = await api("images", image["id"], action, method=method, body=b"{}", headers=JSON)
        assert r.code == 422, (method, r.body)
        error = body_json(r)
        assert error["reason"] == "AnonymizationRefused"
        assert image["SOPInstanceUID"] in error["message"]
        assert '"burnedInAnnotation": "keep"' in error["message"] and "pixel mask" in error["message"]
    assert (await anonymized(api, image["id"])).code == 422  # an empty body is the basic profile too
    assert (await api("images", image["id"])).body == data  # nothing stored changed


async def test_keep_answers_the_image_with_its_pixels(api):
    image, data = await upload_burned_in(api, "BURN-2")
    r = await anonymized(api, image["id"], {"burnedInAnnotation": "keep"})
    assert r.code == 200, r.body
    out = parse(r.body)
    assert out.BurnedInAnnotation == "YES" and out.PatientID != "BURN-2"
    assert out.PixelData == parse(data).PixelData


async def test_a_pixel_mask_in_the_body_cleans_the_image(api):
    image, data = await upload_burned_in(api, "BURN-3")
    r = await anonymized(api, image["id"], {"options": ["RETAIN_UIDS"], "pixelMasks": [MASK]})
    assert r.code == 200, r.body
    out = parse(r.body)
    before, after = parse(data).pixel_array, out.pixel_array
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert before[:4].any() and not after[:4].any()
    np.testing.assert_array_equal(after[4:], before[4:])

    # in place: the stored replacement is the cleaned image
    r = await api(
        "images", image["id"], "anonymize", method="PUT", body=json.dumps({"pixelMasks": [MASK]}), headers=JSON
    )
    assert r.code == 200, r.body
    stored = parse((await api("images", body_json(r)["id"])).body)
    assert stored.BurnedInAnnotation == "NO" and not stored.pixel_array[:4].any()


async def test_a_mask_that_does_not_match_is_still_refused(api):
    image, _ = await upload_burned_in(api, "BURN-4")
    other = {**MASK, "match": {"Modality": "US"}}
    assert (await anonymized(api, image["id"], {"pixelMasks": [other]})).code == 422


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"pixelMasks": [{"match": {}, "rectangles": [{"x": 0, "y": 0, "width": 1, "height": 1}]}]}, "which images"),
        ({"pixelMasks": [{"match": {"Modality": "CT"}, "rectangles": [{"x": 0, "y": 0}]}]}, "rectangle"),
        ({"pixelMasks": "everything"}, "JSON array"),
        ({"burnedInAnnotation": "blur"}, "burnedInAnnotation"),
    ],
)
async def test_bad_masks_and_policies_are_400(api, body, needle):
    image, data = await upload_burned_in(api, "BURN-5")
    for method, action in (("POST", "anonymized"), ("PUT", "anonymize")):
        r = await api("images", image["id"], action, method=method, body=json.dumps(body), headers=JSON)
        assert r.code == 400, (method, r.body)
        assert needle in body_json(r)["message"]
    assert (await api("images", image["id"])).body == data
