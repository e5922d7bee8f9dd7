"""REST: keyset paging (``afterid``) of the metadata listings and queries, next to startindex."""

from __future__ import annotations

import json

from generators import ct_bytes
from helpers import body_json

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def _ids(api, *parts: object, **params: object) -> list[int]:
    r = await api(*parts, params={k: str(v) for k, v in params.items()})
    assert r.code == 200, r.body
    return [row["id"] for row in body_json(r)]


async def test_afterid_pages_like_startindex(api):
    for n in range(5):
        r = await api("images", method="POST", body=ct_bytes(PatientID=f"K{n}", InstanceNumber=n + 1), headers=DICOM)
        assert r.code == 201, r.body
    patients = await _ids(api, "metadata", "patients", count=100)
    assert len(patients) == 5
    assert await _ids(api, "metadata", "patients", afterid=patients[1], count=2) == patients[2:4]
    assert await _ids(api, "metadata", "patients", startindex=2, count=2) == patients[2:4]
    assert await _ids(api, "metadata", "patients", afterid=patients[3], orderascending="false") == patients[2::-1]
    assert await _ids(api, "metadata", "flatseries", afterid=0, count=100) == await _ids(api, "metadata", "flatseries")
    series_id = (await _ids(api, "metadata", "flatseries"))[0]
    images = await _ids(api, "metadata", "images", seriesid=series_id)
    assert await _ids(api, "metadata", "images", seriesid=series_id, afterid=images[0]) == images[1:]

    body = {"count": 2, "after_id": patients[0], "query_properties": [
        {"property_name": "PatientID", "operator": "wildcard", "property_value": "k*"}]}  # fmt: skip
    r = await api("metadata", "patients", "query", method="POST", body=json.dumps(body), headers=JSON)
    assert r.code == 200, r.body
    assert [p["id"] for p in body_json(r)] == patients[1:3]


async def test_afterid_rejects_bad_values(api):
    for params in ({"afterid": "x"}, {"afterid": "-1"}, {"afterid": "3", "orderby": "PatientName"}):
        r = await api("metadata", "patients", params=params)
        assert r.code == 400, (params, r.body)
