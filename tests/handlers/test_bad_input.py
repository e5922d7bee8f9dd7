"""Bad input gets a 4xx JSON error that says why, and leaves no row and no blob behind."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from generators import ct_bytes, ct_dataset
from helpers import body_json, stored_state
from pydicom import dcmwrite

EMPTY = ([], {"patients": 0, "studies": 0, "series": 0, "images": 0})


def _without_file_meta() -> bytes:
    ds = ct_dataset()
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return buf.getvalue()


_ct = ct_bytes(rows=64, columns=64)
BAD_BODIES = {
    "empty": (b"", "empty"),
    "random bytes": (os.urandom(4096), ""),
    "truncated header": (_ct[:300], ""),
    "cut inside pixel data": (_ct[: len(_ct) - 1000], ""),
    "no file meta": (_without_file_meta(), "meta"),
    "text": (b"hello, this is not DICOM at all" * 10, ""),
}


@pytest.mark.parametrize("name", BAD_BODIES)
async def test_bad_dicom_is_refused_and_nothing_is_left(api, node_dir: Path, name: str):
    data, word = BAD_BODIES[name]
    r = await api("images", method="POST", body=data, headers={"Content-Type": "application/dicom"})
    assert r.code == 400, r.body
    error = body_json(r)
    assert error["message"] and word in error["message"].lower()
    assert stored_state(node_dir) == EMPTY


async def test_multipart_without_file_field(api, node_dir: Path):
    boundary = "b0undary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--{boundary}--\r\n'
    r = await api(
        "images",
        method="POST",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.code == 400 and "file" in body_json(r)["message"]
    assert stored_state(node_dir) == EMPTY


@pytest.mark.parametrize(
    "path,params,word",
    [
        (("metadata", "patients"), {"count": "-1"}, "non-negative"),
        (("metadata", "patients"), {"startindex": "-5"}, "non-negative"),
        (("metadata", "patients"), {"count": "ten"}, "integer"),
        (("metadata", "patients"), {"orderby": "nonsense"}, "nonsense"),
        (("metadata", "patients"), {"orderascending": "maybe"}, "true or false"),
        (("metadata", "patients"), {"sources": "garbage"}, "sourcetype"),
        (("metadata", "flatseries"), {"orderby": "PatientName; DROP TABLE patients"}, "does not exist"),
        (("metadata", "studies"), {}, "patientid"),
        (("metadata", "series"), {}, "studyid"),
        (("metadata", "images"), {}, "seriesid"),
        (("images", "1", "png"), {"framenumber": "0"}, "framenumber"),
        (("images", "1", "png"), {"windowmin": "nan"}, "finite"),
        (("log",), {"count": "-1"}, "non-negative"),
        (("dicom", "dictionary", "keyword"), {"tag": "x"}, "integer"),
    ],
)
async def test_bad_parameters_are_400(api, path, params, word):
    await api("images", method="POST", body=ct_bytes(), headers={"Content-Type": "application/dicom"})
    r = await api(*path, params=params)
    assert r.code == 400, (r.code, r.body)
    assert word in body_json(r)["message"].lower()


@pytest.mark.parametrize("injection", ["x' OR '1'='1", "%", "_", "'; DROP TABLE patients; --", "\\", '" OR ""="'])
async def test_sql_injection_in_filter_and_query_matches_nothing(api, injection):
    await api(
        "images",
        method="POST",
        body=ct_bytes(PatientName="Safe^Patient"),
        headers={"Content-Type": "application/dicom"},
    )
    r = await api("metadata", "patients", params={"filter": injection})
    assert r.code == 200 and body_json(r) == []
    for operator in ("=", "like", "wildcard"):
        query = {
            "query_properties": [{"property_name": "PatientName", "operator": operator, "property_value": injection}]
        }
        r = await api("metadata", "patients", "query", method="POST", body=json.dumps(query))
        assert r.code == 200 and body_json(r) == []
    assert len(body_json(await api("metadata", "patients"))) == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        json.dumps({"query_properties": [{"property_name": "Nope", "property_value": "x"}]}),
        json.dumps({"query_properties": [{"property_name": "PatientName", "operator": "~", "property_value": "x"}]}),
        json.dumps({"count": -1}),
        json.dumps({"query_properties": "PatientName"}),
    ],
)
async def test_bad_query_bodies_are_400(api, body):
    r = await api("metadata", "patients", "query", method="POST", body=body)
    assert r.code == 400, r.body
    assert body_json(r)["message"]


@pytest.mark.parametrize("body", ["", "nope", "{}", '[1, "a"]', "[true]"])
async def test_bad_id_lists_are_400(api, body):
    r = await api("images", "delete", method="POST", body=body, allow_nonstandard_methods=True)
    assert r.code == 400


async def test_unknown_ids_are_404(api):
    for path in [
        ("images", 42),
        ("images", 42, "attributes"),
        ("images", 42, "png"),
        ("images", 42, "imageinformation"),
        ("metadata", "patients", 42),
        ("metadata", "studies", 42),
        ("metadata", "series", 42),
        ("metadata", "images", 42),
        ("metadata", "flatseries", 42),
        ("metadata", "series", 42, "source"),
    ]:
        r = await api(*path)
        assert r.code == 404, path
        assert body_json(r)["message"]
    assert body_json(await api("metadata", "patients", 42, "images")) == []
