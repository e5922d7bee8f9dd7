"""REST: box connections (Jupyter-authenticated) and the transaction routes (box token only)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import logging
import zlib
from typing import Any

import pydicom
import pytest
from generators import ct_bytes
from helpers import body_json, finished_job

from slicebox_lab.box import HttpTransport, connections
from slicebox_lab.box.transfer import HashMismatch, ImageRefused, PartnerUnavailable
from slicebox_lab.box.transport import BatchUnsupported

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}
#: every transaction route and method, with valid query parameters and bodies
TOKEN_ROUTES: list[tuple[str, str, str, bytes | None]] = [
    ("POST", "image", "?transactionid=1&sequencenumber=1&totalimagecount=1", b"x"),
    ("GET", "outgoing/poll", "?n=5", None),
    ("GET", "outgoing", "?transactionid=1&imageid=1", None),
    ("POST", "outgoing/done", "", b'{"transaction_id": 1, "outgoing_image_id": 1}'),
    ("POST", "outgoing/failed", "", b'{"transaction_id": 1, "outgoing_image_id": 1, "message": "x"}'),
    ("GET", "status", "?transactionid=1", None),
]


async def _post(api: Any, *path: object, body: object) -> Any:
    return await api(*path, method="POST", body=json.dumps(body), headers=JSON)


async def _create(api: Any, name: str = "university") -> dict:
    r = await _post(api, "boxes", "createconnection", body={"name": name})
    assert r.code == 201, r.body
    return body_json(r)


@pytest.fixture
def raw(http_server_client: Any, jp_base_url: str) -> Any:
    """Requests without any Jupyter credentials, as the partner node makes them."""

    async def fetch(path: str, method: str = "GET", body: bytes | None = None, **kwargs: Any) -> Any:
        return await http_server_client.fetch(
            jp_base_url.rstrip("/") + "/slicebox/api/" + path,
            method=method,
            body=body,
            raise_error=False,
            follow_redirects=False,
            decompress_response=False,
            **kwargs,
        )

    return fetch


async def test_connections_are_made_listed_and_deleted(api: Any):
    created = await _create(api)
    token = created["token"]
    assert created["send_method"] == "POLL" and created["online"] is False
    assert created["base_url"].endswith(f"/slicebox/api/transactions/{token}")
    assert created["base_url"].startswith("http://127.0.0.1:")
    r = await _post(api, "boxes", "createconnection", body={"name": "university"})
    assert r.code == 409
    r = await _post(api, "boxes", "createconnection", body={"name": "x", "defaultProfile": {"options": ["NOPE"]}})
    assert r.code == 400

    r = await _post(api, "boxes", "connect", body={"name": "hospital", "url": "malformed/url"})
    assert r.code == 400 and "malformed box url" in body_json(r)["message"]
    url = "http://127.0.0.1:9/slicebox/api/transactions/" + "t" * 43
    r = await _post(api, "boxes", "connect", body={"name": "hospital", "url": url})
    assert r.code == 201 and body_json(r)["send_method"] == "PUSH"
    push_id = body_json(r)["id"]
    r = await _post(api, "boxes", "connect", body={"name": "hospital", "url": url})
    assert r.code == 200 and body_json(r)["id"] == push_id

    r = await _post(api, "boxes", "connect", body={"name": "hospital", "url": url, "sendAnonymousAsIs": True})
    assert r.code == 409 and "sendAnonymousAsIs" in body_json(r)["message"]
    r = await _post(api, "boxes", "createconnection", body={"name": "results", "sendAnonymousAsIs": "yes"})
    assert r.code == 400 and "sendAnonymousAsIs" in body_json(r)["message"]
    results = await _post(api, "boxes", "createconnection", body={"name": "results", "sendAnonymousAsIs": True})
    assert results.code == 201 and body_json(results)["send_anonymous_as_is"] is True

    r = await api("boxes")
    assert r.code == 200
    assert [(b["name"], b["send_anonymous_as_is"]) for b in body_json(r)] == [
        ("university", False),
        ("hospital", False),
        ("results", True),
    ]
    assert token.encode() not in r.body and b"t" * 43 not in r.body
    assert (await api("boxes", created["id"])).code == 200
    for box_id in (created["id"], push_id, body_json(results)["id"], 999):
        assert (await api("boxes", box_id, method="DELETE")).code == 204
    assert body_json(await api("boxes")) == []
    assert (await api("boxes", created["id"])).code == 404


@pytest.mark.parametrize("method,route,query,body", TOKEN_ROUTES)
async def test_every_transaction_route_refuses_a_wrong_missing_or_revoked_token(
    api: Any, raw: Any, method: str, route: str, query: str, body: bytes | None
):
    created = await _create(api)
    assert (await api("boxes", created["id"], method="DELETE")).code == 204
    for token in ("wrong-token", "", created["token"]):
        r = await raw(f"transactions/{token}/{route}{query}", method=method, body=body)
        assert r.code == 401, (token, r.code, r.body)
        # Jupyter credentials do not replace the box token
        params = dict(part.split("=") for part in query.lstrip("?").split("&") if part)
        r = await api("transactions", token, *route.split("/"), method=method, body=body, params=params)
        assert r.code in (401, 404), (token, r.code)  # 404: jp_fetch drops the empty path segment
        assert r.code == 401 or token == ""


async def test_a_box_token_opens_no_other_route(api: Any, raw: Any):
    token = (await _create(api))["token"]
    for path in ("boxes", "boxes/outgoing/transactions", "system/information", "jobs"):
        r = await raw(path, headers={"Authorization": f"token {token}"})
        assert r.code == 403, (path, r.code)
        r = await raw(f"{path}?token={token}")
        assert r.code == 403, (path, r.code)
    r = await raw(f"transactions/{token}/outgoing/poll")
    assert r.code == 200 and body_json(r) == []


async def test_pushed_images_are_verified_stored_once_and_counted(api: Any, raw: Any):
    token = (await _create(api, "hospital"))["token"]
    data = ct_bytes(PatientID="PUSHED")
    digest = hashlib.sha256(data).hexdigest()
    query = "?transactionid=7&sequencenumber=1&totalimagecount=2"

    def headers(encoding: str = "deflate", sha: str = digest) -> dict[str, str]:
        return {"Content-Type": "application/dicom", "Content-Encoding": encoding, "X-Slicebox-SHA256": sha}

    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 1
    r = await raw(f"transactions/{token}/image{query}", "POST", zlib.compress(bytes(corrupted)), headers=headers())
    assert r.code == 400 and body_json(r)["reason"] == "HashMismatch"
    r = await raw(f"transactions/{token}/status?transactionid=7")
    assert r.code == 404  # nothing was stored

    r = await raw(f"transactions/{token}/image{query}", "POST", zlib.compress(data), headers=headers())
    assert r.code == 200, r.body
    first = body_json(r)
    assert first["added"] is True and first["duplicate"] is False and first["status"] == "PROCESSING"
    r = await raw(f"transactions/{token}/image{query}", "POST", data, headers=headers("identity"))
    again = body_json(r)
    assert (again["image_id"], again["duplicate"]) == (first["image_id"], True)

    second = ct_bytes(PatientID="PUSHED", seed=2)
    query2 = "?transactionid=7&sequencenumber=2&totalimagecount=2"
    sha2 = hashlib.sha256(second).hexdigest()
    r = await raw(f"transactions/{token}/image{query2}", "POST", gzip.compress(second), headers=headers("gzip", sha2))
    assert r.code == 200 and body_json(r)["status"] == "FINISHED"
    r = await raw(f"transactions/{token}/status?transactionid=7")
    assert body_json(r) == {"status": "FINISHED", "received_image_count": 2, "total_image_count": 2}

    incoming = body_json(await api("boxes", "incoming", "transactions"))
    assert [(t["box_name"], t["outgoing_transaction_id"], t["added_image_count"]) for t in incoming] == [
        ("hospital", 7, 2)
    ]
    images = body_json(await api("boxes", "incoming", "transactions", incoming[0]["id"], "images"))
    assert [i["sequence_number"] for i in images] == [1, 2]
    r = await raw(f"transactions/{token}/image{query}", "POST", b"not dicom", headers=headers("identity", "0" * 64))
    assert r.code == 400
    assert (await api("boxes", "incoming", "transactions", incoming[0]["id"], method="DELETE")).code == 204
    assert body_json(await api("boxes", "incoming", "transactions")) == []


async def test_the_request_log_never_shows_the_token(api: Any, raw: Any, caplog: pytest.LogCaptureFixture):
    """A transaction route's path holds the secret token: its log line masks it, refused or not."""
    token = (await _create(api, "hospital"))["token"]
    data = ct_bytes(PatientID="LOGGED")
    query = "?transactionid=3&sequencenumber=1&totalimagecount=1"
    headers = {"Content-Type": "application/dicom", "X-Slicebox-SHA256": "0" * 64}
    with caplog.at_level(logging.DEBUG, logger="slicebox_lab.handlers.boxes"):
        assert (await raw(f"transactions/{token}/image{query}", "POST", data, headers=headers)).code == 400
        headers["X-Slicebox-SHA256"] = hashlib.sha256(data).hexdigest()
        assert (await raw(f"transactions/{token}/image{query}", "POST", data, headers=headers)).code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "slicebox_lab.handlers.boxes"]
    assert [(line.split()[0], "/transactions/***/image" in line) for line in lines] == [("400", True), ("200", True)]
    assert not any(token in r.getMessage() for r in caplog.records)
    assert [r.levelno for r in caplog.records if r.name == "slicebox_lab.handlers.boxes"] == [
        logging.WARNING,
        logging.DEBUG,
    ]


async def test_a_polling_partner_fetches_anonymized_images_and_acknowledges_them(api: Any, raw: Any):
    box = await _create(api, "university")
    token = box["token"]
    r = await api("images", method="POST", body=ct_bytes(PatientID="REAL-ID", PatientName="Real^Name"), headers=DICOM)
    image_id = body_json(r)["id"]
    r = await _post(api, "boxes", box["id"], "send", body={"imageIds": [image_id], "tagValues": {"REAL-ID": []}})
    assert r.code == 201, r.body
    job = body_json(r)
    assert job["kind"] == "box-send" and job["state"] == "RUNNING"

    r = await raw(f"transactions/{token}/outgoing/poll?n=10")
    items = body_json(r)
    assert len(items) == 1 and items[0]["sequence_number"] == 1 and items[0]["total_image_count"] == 1
    item = items[0]
    query = f"?transactionid={item['transaction_id']}&imageid={item['outgoing_image_id']}"
    r = await raw(f"transactions/{token}/outgoing{query}", headers={"Accept-Encoding": "deflate"})
    assert r.code == 200 and r.headers["Content-Encoding"] == "deflate"
    data = zlib.decompress(r.body)
    assert hashlib.sha256(data).hexdigest() == r.headers["X-Slicebox-SHA256"]
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID != "REAL-ID" and b"Real^Name" not in data
    r = await raw(f"transactions/{token}/outgoing?transactionid={item['transaction_id']}&imageid=999")
    assert r.code == 404

    done = {"transaction_id": item["transaction_id"], "outgoing_image_id": item["outgoing_image_id"]}
    unknown = {"transaction_id": item["transaction_id"], "outgoing_image_id": 999}
    r = await raw(f"transactions/{token}/outgoing/done", "POST", json.dumps([done, unknown]).encode())
    assert r.code == 404  # a list is acknowledged whole or not at all
    assert len(body_json(await raw(f"transactions/{token}/outgoing/poll?n=10"))) == 1
    r = await raw(f"transactions/{token}/outgoing/done", "POST", json.dumps(done).encode())
    assert r.code == 204
    assert body_json(await raw(f"transactions/{token}/outgoing/poll?n=10")) == []
    job = await finished_job(api, job["id"])
    assert (job["state"], job["counts"]) == ("SUCCEEDED", {"sent": 1, "failed": 0})

    outgoing = body_json(await api("boxes", "outgoing", "transactions"))
    assert [(t["status"], t["sent_image_count"], t["box_name"]) for t in outgoing] == [("FINISHED", 1, "university")]
    transaction = body_json(await api("boxes", "outgoing", "transactions", outgoing[0]["id"]))
    assert transaction["job_id"] == job["id"]
    images = body_json(await api("boxes", "outgoing", "transactions", outgoing[0]["id"], "images"))
    assert [(i["image_id"], i["state"]) for i in images] == [(image_id, "SENT")]
    assert (await api("boxes", "outgoing", "transactions", outgoing[0]["id"], method="DELETE")).code == 204
    assert (await api("boxes", "outgoing", "transactions", outgoing[0]["id"])).code == 404

    listed = body_json(await api("boxes"))
    assert listed[0]["online"] is True and listed[0]["last_contact"]


async def test_send_answers_bad_requests_with_400_and_unknown_ids_with_404(api: Any):
    box = await _create(api)
    assert (await _post(api, "boxes", 999, "send", body={"imageIds": [1]})).code == 404
    assert (await _post(api, "boxes", box["id"], "send", body={"imageIds": [12345]})).code == 404
    assert (await _post(api, "boxes", box["id"], "send", body={"imageIds": "1"})).code == 400
    assert (await _post(api, "boxes", box["id"], "send", body=[1])).code == 400


async def test_the_http_transport_maps_answers_to_retry_refuse_or_back_off(api: Any):
    box = await _create(api, "university")
    loop = asyncio.get_running_loop()

    async def call(transport: HttpTransport, name: str, *args: Any) -> Any:
        return await loop.run_in_executor(None, getattr(transport, name), *args)

    transport = HttpTransport(box["base_url"], timeout=10)
    data = ct_bytes(PatientID="HTTP")
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(HashMismatch):
        await call(transport, "push", 3, 1, 1, data, "0" * 64)
    with pytest.raises(ImageRefused):
        await call(transport, "push", 3, 1, 1, b"not dicom", hashlib.sha256(b"not dicom").hexdigest())
    await call(transport, "push", 3, 1, 1, data, digest)
    await call(transport, "push", 3, 1, 1, data, digest)  # a resend is answered, not stored again
    incoming = body_json(await api("boxes", "incoming", "transactions"))
    assert [(t["received_image_count"], t["status"]) for t in incoming] == [(1, "FINISHED")]
    assert await call(transport, "poll", 5) == []
    with pytest.raises(ImageRefused):
        await call(transport, "fetch", 1, 1)

    r = await api("images", method="POST", body=ct_bytes(PatientID="OUT"), headers=DICOM)
    await _post(api, "boxes", box["id"], "send", body={"imageIds": [body_json(r)["id"]]})
    [item] = await call(transport, "poll", 5)
    fetched, announced = await call(transport, "fetch", item["transaction_id"], item["outgoing_image_id"])
    assert hashlib.sha256(fetched).hexdigest() == announced
    await call(transport, "done", item["transaction_id"], item["outgoing_image_id"], announced)
    assert body_json(await api("boxes", "outgoing", "transactions"))[0]["status"] == "FINISHED"
    await loop.run_in_executor(None, transport.close)

    revoked = HttpTransport(box["base_url"], timeout=10)
    assert (await api("boxes", box["id"], method="DELETE")).code == 204
    with pytest.raises(PartnerUnavailable, match="token"):
        await call(revoked, "poll", 1)
    unreachable = HttpTransport("http://127.0.0.1:9/slicebox/api/transactions/" + "x" * 43, timeout=2)
    with pytest.raises(PartnerUnavailable, match="could not be reached"):
        await call(unreachable, "push", 1, 1, 1, data, digest)


async def test_requests_in_flight_together_record_the_partners_contact_once(
    api: Any, raw: Any, monkeypatch: pytest.MonkeyPatch
):
    token = (await _create(api, "clinic"))["token"]
    recorded: list[int] = []
    record = connections.record_contact

    def counted(index: Any, box_id: int, error: str = "") -> None:
        recorded.append(box_id)
        record(index, box_id, error)

    monkeypatch.setattr(connections, "record_contact", counted)
    answers = await asyncio.gather(*(raw(f"transactions/{token}/outgoing/poll?n=1") for _ in range(8)))
    assert [r.code for r in answers] == [200] * 8
    assert len(recorded) == 1  # each stale read of the contact used to write it again
    (box,) = body_json(await api("boxes"))
    assert box["online"] is True


def _related(parts: list[tuple[int, bytes, str]], boundary: str = "b0und4ry") -> tuple[bytes, dict[str, str]]:
    """A push of several images: (sequence number, bytes, SHA-256) each, as multipart/related."""
    body = b""
    for number, data, digest in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n".encode()
        body += f"X-Slicebox-Sequence-Number: {number}\r\nX-Slicebox-SHA256: {digest}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


@pytest.mark.parametrize("encoding", ["identity", "deflate"])
async def test_several_images_pushed_in_one_request_are_each_verified_stored_once_and_answered(
    api: Any, raw: Any, encoding: str
):
    token = (await _create(api, "hospital"))["token"]
    images = [ct_bytes(PatientID="BATCH", seed=n) for n in range(3)]
    digests = [hashlib.sha256(data).hexdigest() for data in images]
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    body, headers = _related([(1, images[0], digests[0]), (2, images[1], wrong), (3, images[2], digests[2])])
    if encoding == "deflate":
        body, headers = zlib.compress(body), {**headers, "Content-Encoding": "deflate"}
    query = "?transactionid=9&totalimagecount=3"
    r = await raw(f"transactions/{token}/images{query}", "POST", body, headers=headers)
    assert r.code == 200, r.body
    first = body_json(r)
    assert [a["sequence_number"] for a in first] == [1, 2, 3]
    assert first[0]["added"] is True and first[2]["added"] is True and first[2]["status"] == "PROCESSING"
    assert first[1]["error"]["reason"] == "HashMismatch" and first[1]["error"]["status"] == 400
    assert body_json(await api("system", "information"))["counts"]["images"] == 2  # the bad part stored nothing

    body, headers = _related([(1, images[0], digests[0]), (2, images[1], digests[1])])
    r = await raw(f"transactions/{token}/images{query}", "POST", body, headers=headers)
    again = body_json(r)
    assert (again[0]["image_id"], again[0]["duplicate"]) == (first[0]["image_id"], True)  # answered from its receipt
    assert again[1]["added"] is True and again[1]["status"] == "FINISHED"
    r = await raw(f"transactions/{token}/status?transactionid=9")
    assert body_json(r) == {"status": "FINISHED", "received_image_count": 3, "total_image_count": 3}


async def test_a_push_of_several_images_refuses_what_it_cannot_read(api: Any, raw: Any):
    token = (await _create(api, "hospital"))["token"]
    data = ct_bytes(PatientID="BATCH")
    body, headers = _related([(1, data, hashlib.sha256(data).hexdigest())])
    route = f"transactions/{token}/images"
    r = await raw(f"{route}?transactionid=1&totalimagecount=1", "POST", body[:-30], headers=headers)  # no closing
    assert r.code == 400 and "cut short" in body_json(r)["message"]
    r = await raw(f"{route}?transactionid=1&totalimagecount=1", "POST", body, headers=DICOM)
    assert r.code == 415
    r = await raw(f"{route}?totalimagecount=1", "POST", body, headers=headers)
    assert r.code == 400
    nameless, headers = _related([(0, data, hashlib.sha256(data).hexdigest())])
    r = await raw(f"{route}?transactionid=1&totalimagecount=1", "POST", nameless, headers=headers)
    assert body_json(r)[0]["error"]["reason"] == "InvalidInput"
    r = await raw("transactions/wrong/images?transactionid=1&totalimagecount=1", "POST", body, headers=headers)
    assert r.code == 401
    assert body_json(await api("system", "information"))["counts"]["images"] == 0


async def test_the_http_transport_pushes_several_images_and_answers_each(api: Any):
    box = await _create(api, "university")
    loop = asyncio.get_running_loop()
    transport = HttpTransport(box["base_url"], timeout=10, encoding="deflate")
    images = [ct_bytes(PatientID="MANY", seed=n) for n in range(3)]
    digests = [hashlib.sha256(data).hexdigest() for data in images]
    sent = [
        (1, images[0], digests[0]),
        (2, images[1], "0" * 64),
        (3, b"not dicom", hashlib.sha256(b"not dicom").hexdigest()),
    ]
    outcomes = await loop.run_in_executor(None, transport.push_many, 5, 3, sent)
    assert outcomes[0] is None and isinstance(outcomes[1], HashMismatch) and isinstance(outcomes[2], ImageRefused)
    outcomes = await loop.run_in_executor(
        None, transport.push_many, 5, 3, [(1, images[0], digests[0]), (2, images[1], digests[1])]
    )
    assert outcomes == [None, None]  # the first answered from its receipt, the second stored
    incoming = body_json(await api("boxes", "incoming", "transactions"))
    assert [t["received_image_count"] for t in incoming] == [2]

    # a partner without the route (an older node): the sender is told to push one image per request
    older = HttpTransport(box["base_url"].replace("/transactions/", "/transactions-of-old/"), timeout=10)
    with pytest.raises(BatchUnsupported):
        await loop.run_in_executor(None, older.push_many, 6, 1, [(1, images[2], digests[2])])
    for t in (transport, older):
        await loop.run_in_executor(None, t.close)
