"""REST: anonymization options, anonymized download, in-place anonymization, the node secret."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import stat
import time
from pathlib import Path

import pydicom
import pytest
import yaml
from generators import ct_bytes
from helpers import body_json

from slicebox_lab.anonymization import Option, PseudonymKeys

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}
OPENAPI = Path(__file__).parents[2] / "server_extension" / "openapi.yaml"


async def upload(api, data: bytes) -> dict:
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code == 201, r.body
    return body_json(r)


async def anonymized(api, image_id: int, body: object = None):
    raw = b"" if body is None else json.dumps(body).encode()
    return await api("images", image_id, "anonymized", method="POST", body=raw, headers=JSON)


def parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


async def test_options_are_listed(api):
    r = await api("anonymization", "options")
    assert r.code == 200
    options = body_json(r)
    assert [o["name"] for o in options] == [o.name for o in Option]
    retain_uids = next(o for o in options if o["name"] == "RETAIN_UIDS")
    assert retain_uids == {
        "name": "RETAIN_UIDS",
        "title": "Retain UIDs Option",
        "description": Option.RETAIN_UIDS.description,
        "code": "113110",
    }


async def test_a_large_anonymized_copy_is_streamed_from_the_spool_and_released(api, jp_serverapp, monkeypatch):
    """Copies up to ``_WHOLE`` bytes are answered in one piece; larger ones are streamed from the spool file,
    which is removed after the answer: the same bytes either way, no spool file left behind."""
    from slicebox_lab.handlers import anonymization as handlers

    image = await upload(api, ct_bytes(PatientName="Doe^Jane", PatientID="P8"))
    whole = (await anonymized(api, image["id"])).body
    monkeypatch.setattr(handlers, "_WHOLE", 0)
    streamed = await anonymized(api, image["id"])
    assert streamed.code == 200 and streamed.body == whole
    assert int(streamed.headers["Content-Length"]) == len(whole)
    spool = jp_serverapp.web_app.settings["slicebox_context"].spool
    deadline = time.monotonic() + 10  # the handler releases the file once the last chunk is sent
    while list(spool.iterdir()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert list(spool.iterdir()) == []


async def test_anonymized_download_is_deterministic_and_leaves_storage_unchanged(api, node_dir: Path):
    data = ct_bytes(PatientName="Doe^Jane", PatientID="P7")
    original = parse(data)
    image = await upload(api, data)

    r = await anonymized(api, image["id"])
    assert r.code == 200, r.body
    assert r.headers["Content-Type"] == "application/dicom"
    anon = parse(r.body)
    assert anon.PatientIdentityRemoved == "YES"
    assert anon.PatientID != "P7" and str(anon.PatientName) != "Doe^Jane"
    assert anon.StudyInstanceUID != original.StudyInstanceUID
    assert anon.SOPInstanceUID != original.SOPInstanceUID
    assert anon.file_meta.MediaStorageSOPInstanceUID == anon.SOPInstanceUID

    # nothing stored changed
    assert (await api("images", image["id"])).body == data
    patients = body_json(await api("metadata", "patients"))
    assert [(p["PatientName"], p["PatientID"]) for p in patients] == [("Doe^Jane", "P7")]

    # the same image again, and with `{}`: the same anonymous values (keyed, not random)
    for body in (None, {}, {"options": []}):
        again = parse((await anonymized(api, image["id"], body)).body)
        assert (again.PatientID, again.StudyInstanceUID, again.SeriesInstanceUID, again.SOPInstanceUID) == (
            anon.PatientID,
            anon.StudyInstanceUID,
            anon.SeriesInstanceUID,
            anon.SOPInstanceUID,
        )

    # derived from the secret in the data directory, which a restart loads again (see also
    # tests/context/test_anonymize.py, which reopens a node on the same data directory)
    keys = PseudonymKeys.load_or_create(node_dir / "anonymization.key")
    assert anon.StudyInstanceUID == keys.uid(original.StudyInstanceUID)
    assert (str(anon.PatientName), anon.PatientID) == keys.patient_pseudonym("Doe^Jane", "P7")


async def test_options_change_the_output(api):
    data = ct_bytes(PatientID="OPT")
    original = parse(data)
    image = await upload(api, data)
    r = await anonymized(api, image["id"], {"options": ["RETAIN_UIDS", "RETAIN_PATIENT_CHARACTERISTICS"]})
    assert r.code == 200, r.body
    anon = parse(r.body)
    assert anon.StudyInstanceUID == original.StudyInstanceUID
    assert anon.PatientSex == "O"
    assert "Retain UIDs Option" in "".join(anon.DeidentificationMethod)


async def test_anonymize_in_place(api):
    data = ct_bytes(PatientName="Real^Name", PatientID="REAL-1")
    image = await upload(api, data)
    series_id = image["series_id"]
    source = body_json(await api("metadata", "series", series_id, "source"))

    r = await api("images", image["id"], "anonymize", method="PUT", body=b"{}", headers=JSON)
    assert r.code == 200, r.body
    new = body_json(r)
    assert new["id"] != image["id"] and new["SOPInstanceUID"] != image["SOPInstanceUID"]
    assert (await api("images", image["id"])).code == 404
    assert (await api("metadata", "series", series_id)).code == 404

    patients = body_json(await api("metadata", "patients"))
    assert len(patients) == 1
    assert patients[0]["PatientID"].startswith("ANON-") and patients[0]["PatientName"].startswith("ANON^")
    assert "REAL" not in json.dumps(patients)

    new_source = body_json(await api("metadata", "series", new["series_id"], "source"))
    assert (new_source["source_type"], new_source["source_name"]) == (source["source_type"], source["source_name"])

    stored = parse((await api("images", new["id"])).body)
    assert stored.PatientIdentityRemoved == "YES" and stored.SOPInstanceUID == new["SOPInstanceUID"]


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"options": ["RETAIN_EVERYTHING"]}, "RETAIN_EVERYTHING"),
        ({"options": ["RETAIN_LONGITUDINAL_FULL_DATES", "RETAIN_LONGITUDINAL_MODIFIED_DATES"]}, "alternatives"),
        ({"options": "RETAIN_UIDS"}, "array"),
        (["RETAIN_UIDS"], "object"),
    ],
)
async def test_bad_profiles_are_400(api, body, needle):
    image = await upload(api, ct_bytes(PatientID="BAD"))
    for method, action in (("POST", "anonymized"), ("PUT", "anonymize")):
        r = await api("images", image["id"], action, method=method, body=json.dumps(body), headers=JSON)
        assert r.code == 400, (method, r.body)
        assert needle in body_json(r)["message"]
    assert (await api("images", image["id"])).code == 200  # nothing was changed


async def test_bad_json_is_400(api):
    image = await upload(api, ct_bytes(PatientID="JSON"))
    r = await api("images", image["id"], "anonymized", method="POST", body=b"{not json", headers=JSON)
    assert r.code == 400


async def test_unknown_image_is_404(api):
    assert (await anonymized(api, 999999)).code == 404
    r = await api("images", 999999, "anonymize", method="PUT", body=b"{}", headers=JSON)
    assert r.code == 404
    assert "999999" in body_json(r)["message"]


async def test_an_image_whose_stored_file_is_gone_is_404_and_leaves_the_spool_empty(api, jp_serverapp):
    """Deleted from the disk under the index (or meanwhile): the 404 storage gives elsewhere, not a 500."""
    image = await upload(api, ct_bytes(PatientID="GONE"))
    context = jp_serverapp.web_app.settings["slicebox_context"]
    Path(context.storage.local_path(context.index.get_image(image["id"]).storage_key)).unlink()
    r = await anonymized(api, image["id"])
    assert r.code == 404 and "is gone" in body_json(r)["message"]
    assert list(context.spool.iterdir()) == []


async def test_the_secret_is_private_and_never_served(api, node_dir: Path):
    image = await upload(api, ct_bytes(PatientID="KEY"))
    await anonymized(api, image["id"])
    key_file = node_dir / "anonymization.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_bytes()
    forms = [secret, secret.hex().encode(), base64.b64encode(secret), base64.b32encode(secret)]

    # every documented GET route, with the uploaded image's id where a path needs one
    spec = yaml.safe_load(OPENAPI.read_text())
    checked = 0
    for path, item in spec["paths"].items():
        if "get" not in item:
            continue
        params = {
            p["name"]: p for p in [*item.get("parameters", []), *item["get"].get("parameters", [])] if "name" in p
        }
        concrete = [path]
        for name in re.findall(r"{(\w+)}", path):
            values = params.get(name, {}).get("schema", {}).get("enum") or [image["id"]]
            concrete = [c.replace("{" + name + "}", str(v)) for c in concrete for v in values]
        for url in concrete:
            r = await api(*url.strip("/").split("/"))
            assert not any(form in (r.body or b"") for form in forms), url
            checked += 1
    assert checked > 10
    # not a stored image either
    assert all(p.name != "anonymization.key" for p in (node_dir / "dicom").rglob("*"))
