"""REST: upload, browse, read, render, export and delete images through a real Jupyter server."""

from __future__ import annotations

import getpass
import io
import json
import os
import zipfile
from pathlib import Path

import pydicom
from generators import ct_bytes, ct_dataset, to_bytes
from helpers import body_json, stored_state
from PIL import Image as PILImage

DICOM = {"Content-Type": "application/dicom"}


async def upload(api, data: bytes):
    return await api("images", method="POST", body=data, headers=DICOM)


async def test_upload_browse_render_download_delete(api, node_dir: Path):
    data = ct_bytes(PatientName="Doe^Jane", PatientID="P7", rows=64, columns=48)
    r = await upload(api, data)
    assert r.code == 201, r.body
    image = body_json(r)
    assert image["id"] > 0 and image["SOPClassUID"] == pydicom.uid.CTImageStorage
    assert "storage_key" not in image

    again = await upload(api, data)
    assert again.code == 200 and body_json(again)["id"] == image["id"]

    patients = body_json(await api("metadata", "patients"))
    assert [(p["PatientName"], p["PatientID"]) for p in patients] == [("Doe^Jane", "P7")]
    studies = body_json(await api("metadata", "studies", params={"patientid": patients[0]["id"]}))
    series = body_json(await api("metadata", "series", params={"studyid": studies[0]["id"]}))
    images = body_json(await api("metadata", "images", params={"seriesid": series[0]["id"]}))
    assert [i["id"] for i in images] == [image["id"]]
    flat = body_json(await api("metadata", "flatseries"))
    assert flat[0]["patient"]["PatientID"] == "P7" and flat[0]["series"]["Modality"] == "CT"
    source = body_json(await api("metadata", "series", series[0]["id"], "source"))
    assert source["source_type"] == "user"
    assert any(s["source_type"] == "user" for s in body_json(await api("sources")))

    r = await api("images", image["id"])
    assert r.code == 200 and r.body == data

    attributes = body_json(await api("images", image["id"], "attributes"))
    by_keyword = {a["keyword"]: a for a in attributes}
    assert by_keyword["PatientName"]["values"] == ["Doe^Jane"]
    assert "PixelData" not in by_keyword

    info = body_json(await api("images", image["id"], "imageinformation"))
    assert info["number_of_frames"] == 1

    png = await api("images", image["id"], "png")
    assert png.code == 200 and png.headers["Content-Type"] == "image/png"
    assert PILImage.open(io.BytesIO(png.body)).size == (48, 64)
    small = await api("images", image["id"], "png", params={"imageheight": 32})
    assert PILImage.open(io.BytesIO(small.body)).size == (24, 32)
    windowed = await api("images", image["id"], "png", params={"windowmin": -1000, "windowmax": -900})
    assert windowed.body != png.body

    r = await api("images", image["id"], method="DELETE")
    assert r.code == 204
    assert (await api("metadata", "images", image["id"])).code == 404
    assert (await api("metadata", "patients", patients[0]["id"])).code == 404
    assert (await api("images", image["id"])).code == 404
    assert stored_state(node_dir) == ([], {"patients": 0, "studies": 0, "series": 0, "images": 0})
    # deleting again is fine (idempotent)
    assert (await api("images", image["id"], method="DELETE")).code == 204


async def test_multipart_upload_and_bulk_delete(api, node_dir: Path):
    ids = []
    for n in range(3):
        data = ct_bytes(PatientID=f"M{n}")
        boundary = "sbxboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.dcm"\r\n'
                "Content-Type: application/dicom\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = await api(
            "images",
            method="POST",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.code == 201, r.body
        ids.append(body_json(r)["id"])
    r = await api("images", "delete", method="POST", body=json.dumps([ids[0], ids[1], 99999]))
    assert r.code == 204
    assert [p["PatientID"] for p in body_json(await api("metadata", "patients"))] == ["M2"]
    blobs, counts = stored_state(node_dir)
    assert len(blobs) == 1 and counts["images"] == 1


async def test_export_streams_a_zip(api):
    ids = [body_json(await upload(api, ct_bytes(PatientID="E", InstanceNumber=n)))["id"] for n in (1, 2)]
    r = await api("images", "export", method="POST", body=json.dumps(ids))
    assert r.code == 201
    export_id = body_json(r)["id"]
    r = await api("images", "export", params={"id": export_id})
    assert r.code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert "slicebox-export.zip" in r.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(r.body)) as z:
        names = z.namelist()
        assert len(names) == 2 and all(n.count("/") == 3 and n.endswith(".dcm") for n in names)
        for name in names:
            pydicom.dcmread(io.BytesIO(z.read(name)))
    assert (await api("images", "export", method="POST", body="[]")).code == 204
    assert (await api("images", "export", params={"id": 9999})).code == 404


async def test_paging_ordering_and_queries(api):
    for n in range(5):
        await upload(api, ct_bytes(PatientName=f"Pat^{n}", PatientID=f"Q{n}"))
    page = body_json(await api("metadata", "patients", params={"startindex": 1, "count": 2}))
    assert len(page) == 2
    desc = body_json(await api("metadata", "patients", params={"orderby": "PatientID", "orderascending": "false"}))
    assert [p["PatientID"] for p in desc] == ["Q4", "Q3", "Q2", "Q1", "Q0"]
    filtered = body_json(await api("metadata", "patients", params={"filter": "pat^3"}))
    assert [p["PatientID"] for p in filtered] == ["Q3"]
    query = {
        "query_properties": [{"property_name": "PatientName", "operator": "wildcard", "property_value": "Pat^[1-2]*"}],
    }
    assert body_json(await api("metadata", "patients", "query", method="POST", body=json.dumps(query))) == []
    query["query_properties"][0]["property_value"] = "pat^?"
    assert len(body_json(await api("metadata", "patients", "query", method="POST", body=json.dumps(query)))) == 5
    query = {
        "order": {"order_by": "PatientID", "order_ascending": False},
        "count": 2,
        "query_properties": [{"property_name": "Modality", "operator": "=", "property_value": "CT"}],
    }
    result = body_json(await api("metadata", "patients", "query", method="POST", body=json.dumps(query)))
    assert [p["PatientID"] for p in result] == ["Q4", "Q3"]
    flat = body_json(await api("metadata", "flatseries", "query", method="POST", body=json.dumps(query)))
    assert [f["patient"]["PatientID"] for f in flat] == ["Q4", "Q3"]


async def test_same_image_uploaded_concurrently_is_stored_once(api, node_dir: Path):
    import asyncio

    data = to_bytes(ct_dataset(PatientID="RACE"))
    responses = await asyncio.gather(*(upload(api, data) for _ in range(8)))
    assert sorted(r.code for r in responses) == [200] * 7 + [201]
    assert len({body_json(r)["id"] for r in responses}) == 1
    blobs, counts = stored_state(node_dir)
    assert len(blobs) == 1 and counts == {"patients": 1, "studies": 1, "series": 1, "images": 1}


async def test_token_uploads_share_one_user_source(api):
    """jupyter_server invents a random user per cookie-less token request; they are one source, named after
    the server's owner (by default $JUPYTERHUB_USER, else the login name: tests/handlers/test_owner_name.py)."""
    for n in range(3):
        assert (await upload(api, ct_bytes(PatientID=f"S{n}"))).code == 201
    sources = body_json(await api("sources"))
    owner = os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    assert [(s["source_type"], s["source_name"]) for s in sources] == [("user", owner)]
