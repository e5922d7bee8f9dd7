"""A raw upload's header is inspected by a worker while the rest of the body arrives: the image is then only
flushed and indexed once its last byte is in.  The early answer is used only for the file it holds for: a body
cut short, or one with elements after its Pixel Data, gets the whole-file inspection (and its verdict)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from generators import ct_bytes
from helpers import body_json, raw_post, stored_state
from pydicom.data import get_testdata_file

from slicebox_lab import dicom

TOKEN = "slicebox-test-token"


@pytest.fixture
def jp_server_config(node_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"slicebox_lab": True}},
        "IdentityProvider": {"token": TOKEN},
        "SliceboxApp": {"data_dir": str(node_dir), "workers": 1},
    }


@pytest.fixture
def started(jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tasks the node hands its workers, in order (whole-file ``inspect`` or ``inspect_head``)."""
    pool = jp_serverapp.web_app.settings["slicebox_context"].workers
    names: list[str] = []
    start = pool.start

    def recorded(fn: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(fn.__name__)
        return start(fn, *args, **kwargs)

    monkeypatch.setattr(pool, "start", recorded)  # submit's calls go through it too
    return names


async def _post_in_parts(port: int, base_url: str, data: bytes, length: int | None = None) -> str:
    """POST ``data`` as ``application/dicom`` in 16 KiB parts, as a client on a slow link does."""
    parts = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    headers = {"Content-Type": "application/dicom", "Content-Length": str(len(data) if length is None else length)}
    return await raw_post(port, f"{base_url}slicebox/api/images", TOKEN, headers, parts)


async def test_an_upload_is_stored_on_its_early_inspection(api, jp_http_port, jp_base_url, node_dir, started):
    data = ct_bytes(rows=512, columns=512, PatientName="Early^Anna", PatientID="EARLY-1")
    status = await _post_in_parts(jp_http_port, jp_base_url, data)
    assert " 201 " in status, status
    assert started == ["inspect_head"]  # the whole file was not parsed again
    assert (await api("images", 1)).body == data
    patients = body_json(await api("metadata", "patients"))
    assert [(p["PatientName"], p["PatientID"]) for p in patients] == [("Early^Anna", "EARLY-1")]


async def test_a_body_cut_inside_its_pixels_is_refused_whatever_its_header_said(
    api, jp_http_port, jp_base_url, node_dir, started
):
    data = ct_bytes(rows=512, columns=512)
    cut = data[: len(data) - 1000]
    header = dicom.parse_header(cut[:16384])
    assert header is not None and header.size == len(data)  # the header alone vouches for the whole file
    status = await _post_in_parts(jp_http_port, jp_base_url, cut)
    assert " 400 " in status, status
    assert started == ["inspect_head", "inspect"]  # its answer did not hold for the file that came
    blobs, counts = stored_state(node_dir)
    assert blobs == [] and counts["images"] == 0


async def test_elements_after_the_pixels_get_the_whole_file_inspection(
    api, jp_http_port, jp_base_url, node_dir, started
):
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()  # (FFFC,FFFC) padding after its Pixel Data
    status = await _post_in_parts(jp_http_port, jp_base_url, data)
    assert " 201 " in status, status
    assert started == ["inspect_head", "inspect"]
    blobs, counts = stored_state(node_dir)
    assert len(blobs) == 1 and counts["images"] == 1


async def test_a_small_upload_makes_no_early_inspection(api, jp_http_port, jp_base_url, started):
    data = ct_bytes(rows=16, columns=16)
    status = await _post_in_parts(jp_http_port, jp_base_url, data)
    assert " 201 " in status, status
    assert started == ["inspect"]  # the whole body came at once: nothing to overlap


async def _push_in_parts(port: int, base_url: str, token: str, data: bytes, encoding: str, sha: str) -> str:
    """A partner's push of one image (its body ``data`` as encoded) in 16 KiB parts."""
    parts = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    headers = {
        "Content-Type": "application/dicom",
        "Content-Encoding": encoding,
        "X-Slicebox-SHA256": sha,
        "Content-Length": str(len(data)),
    }
    path = f"{base_url}slicebox/api/transactions/{token}/image?transactionid=3&sequencenumber=1&totalimagecount=1"
    return await raw_post(port, path, "", headers, parts)


@pytest.mark.parametrize("encoding", ["identity", "deflate", "gzip"])
async def test_a_pushed_box_image_is_stored_on_its_early_inspection(
    api, jp_http_port, jp_base_url, node_dir, started, encoding
):
    r = await api("boxes", "createconnection", method="POST", body=json.dumps({"name": "hospital"}))
    token = body_json(r)["token"]
    data = ct_bytes(rows=512, columns=512, PatientName="Pushed^Paul", PatientIdentityRemoved="YES")
    body = {"identity": data, "deflate": zlib.compress(data), "gzip": gzip.compress(data)}[encoding]
    sha = hashlib.sha256(data).hexdigest()
    status = await _push_in_parts(jp_http_port, jp_base_url, token, body, encoding, sha)
    assert " 200 " in status, status
    assert started == ["inspect_head"]  # the header, inflated apart, was inspected while the rest arrived
    assert (await api("images", 1)).body == data
    patients = body_json(await api("metadata", "patients"))
    assert [p["PatientName"] for p in patients] == ["Pushed^Paul"]


async def test_a_pushed_image_cut_inside_its_pixels_is_refused_whatever_its_header_said(
    api, jp_http_port, jp_base_url, node_dir, started
):
    r = await api("boxes", "createconnection", method="POST", body=json.dumps({"name": "hospital"}))
    token = body_json(r)["token"]
    cut = ct_bytes(rows=512, columns=512)[:-1000]
    status = await _push_in_parts(jp_http_port, jp_base_url, token, cut, "identity", hashlib.sha256(cut).hexdigest())
    assert " 400 " in status, status
    assert started == ["inspect_head", "inspect"]
    blobs, counts = stored_state(node_dir)
    assert blobs == [] and counts["images"] == 0


async def test_each_image_of_a_push_of_several_is_stored_on_its_early_inspection(
    api, jp_http_port, jp_base_url, node_dir, started
):
    r = await api("boxes", "createconnection", method="POST", body=json.dumps({"name": "hospital"}))
    token = body_json(r)["token"]
    images = [ct_bytes(rows=512, columns=512, PatientName=f"Pushed^{n}", seed=n) for n in range(3)]
    body = b""
    for n, data in enumerate(images, start=1):
        sha = hashlib.sha256(data).hexdigest()
        body += b"--sep\r\nContent-Type: application/dicom\r\n"
        body += f"X-Slicebox-Sequence-Number: {n}\r\nX-Slicebox-SHA256: {sha}\r\n\r\n".encode() + data + b"\r\n"
    body += b"--sep--\r\n"
    headers = {
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=sep',
        "Content-Length": str(len(body)),
    }
    path = f"{jp_base_url}slicebox/api/transactions/{token}/images?transactionid=4&totalimagecount=3"
    parts = [body[i : i + 16384] for i in range(0, len(body), 16384)]
    status = await raw_post(jp_http_port, path, "", headers, parts)
    assert " 200 " in status, status
    assert started == ["inspect_head"] * 3  # no image read back whole
    blobs, counts = stored_state(node_dir)
    assert len(blobs) == 3 and counts["images"] == 3
