"""Uploads and STOW-RS bodies are stored while they arrive: chunked bodies, bodies larger than the
server's buffer, bodies cut short (nothing left behind), strangers refused before a byte is stored."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from generators import ct_bytes, ct_dataset, to_bytes
from helpers import body_json, raw_post, stored_state
from pydicom.uid import generate_uid

TOKEN = "slicebox-test-token"


@pytest.fixture
def jp_server_config(node_dir: Path) -> dict[str, Any]:
    # a server that buffers at most 4 MiB of a request body: a streamed upload must not care
    return {
        "ServerApp": {"jpserver_extensions": {"slicebox_lab": True}, "max_body_size": 4 << 20},
        "IdentityProvider": {"token": TOKEN},
        "SliceboxApp": {"data_dir": str(node_dir), "workers": 0},
    }


async def _raw(
    port: int, path: str, headers: dict[str, str], body_parts: list[bytes], close_early: bool = False
) -> str:
    return await raw_post(port, path, TOKEN, headers, body_parts, close_early)


def _chunked(data: bytes, size: int = 65536) -> list[bytes]:
    pieces = [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n" for i in range(0, len(data), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


def _files(node_dir: Path) -> list[Path]:
    return [p for p in (node_dir / "dicom").rglob("*") if p.is_file()]


def _big_multiframe(frames: int = 40) -> bytes:
    """A 10 MiB image: more than the server's 4 MiB body limit."""
    ds = ct_dataset(rows=256, columns=256)
    ds.NumberOfFrames = frames
    ds.PixelData = np.random.default_rng(3).integers(0, 2000, size=(frames, 256, 256), dtype=np.int16).tobytes()
    return to_bytes(ds)


async def test_a_chunked_upload_larger_than_the_servers_buffer_is_stored(api, jp_http_port, jp_base_url, node_dir):
    data = _big_multiframe()
    assert len(data) > 4 << 20
    path = f"{jp_base_url}slicebox/api/images"
    status = await _raw(
        jp_http_port, path, {"Content-Type": "application/dicom", "Transfer-Encoding": "chunked"}, _chunked(data)
    )
    assert " 201 " in status, status
    assert (await api("images", 1)).body == data
    assert not any(p.name.startswith(".tmp-") for p in _files(node_dir))


async def test_a_multipart_form_upload_is_streamed(api, node_dir):
    data = ct_bytes(PatientID="FORM")
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="comment"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ct.dcm"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = await api(
        "images", method="POST", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.code == 201, r.body
    assert (await api("images", body_json(r)["id"])).body == data
    no_file = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="comment"\r\n\r\nhello\r\n--{boundary}--\r\n'
    ).encode()
    r = await api(
        "images", method="POST", body=no_file, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.code == 400 and "no field named 'file'" in body_json(r)["message"]


async def test_a_body_cut_short_leaves_nothing_behind(api, jp_http_port, jp_base_url, node_dir):
    data = _big_multiframe()
    path = f"{jp_base_url}slicebox/api/images"
    headers = {"Content-Type": "application/dicom", "Content-Length": str(len(data))}
    await _raw(jp_http_port, path, headers, [data[: len(data) // 2]], close_early=True)
    for _ in range(50):
        if not _files(node_dir):
            break
        await asyncio.sleep(0.1)
    assert _files(node_dir) == []
    assert stored_state(node_dir)[1]["images"] == 0
    # the node is fine afterwards
    r = await api("images", method="POST", body=ct_bytes(), headers={"Content-Type": "application/dicom"})
    assert r.code == 201


async def test_stow_stores_the_parts_that_arrived_whole_and_nothing_of_a_cut_one(
    api, jp_http_port, jp_base_url, node_dir
):
    study = generate_uid()
    boundary = uuid.uuid4().hex
    whole = [ct_bytes(StudyInstanceUID=study, seed=i, rows=128, columns=128) for i in range(2)]
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in whole
    )
    cut = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + _big_multiframe()[: 3 << 20]
    path = f"{jp_base_url}slicebox/dicom-web/studies"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Content-Length": str(len(body) + len(cut) + 1000),
    }
    await _raw(jp_http_port, path, headers, [body, cut], close_early=True)
    for _ in range(50):
        files = _files(node_dir)
        if len(files) == 2 and not any(p.name.startswith(".tmp-") for p in files):
            break
        await asyncio.sleep(0.1)
    files = _files(node_dir)
    assert len(files) == 2 and not any(p.name.startswith(".tmp-") for p in files)
    assert stored_state(node_dir)[1]["images"] == 2
    stored = sorted(p.read_bytes() for p in files)
    assert stored == sorted(whole)


async def test_chunked_stow(jp_fetch, jp_http_port, jp_base_url, node_dir):
    study = generate_uid()
    boundary = uuid.uuid4().hex
    parts = [ct_bytes(StudyInstanceUID=study, seed=i) for i in range(3)]
    body = (
        b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts)
        + f"--{boundary}--\r\n".encode()
    )
    path = f"{jp_base_url}slicebox/dicom-web/studies/{study}"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Transfer-Encoding": "chunked",
        "Accept": "application/dicom+json",
    }
    status = await _raw(jp_http_port, path, headers, _chunked(body, 4096))
    assert " 200 " in status, status
    assert stored_state(node_dir)[1]["images"] == 3


async def test_strangers_are_refused_before_anything_is_stored(jp_fetch, jp_http_port, jp_base_url, node_dir):
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    data = ct_bytes()
    writer.write(
        f"POST {jp_base_url}slicebox/api/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    status = (await asyncio.wait_for(reader.readline(), 20)).decode()
    writer.close()
    assert " 403 " in status, status
    assert _files(node_dir) == []
