"""Import sessions over REST (Slicebox checklist 70–72, 25): ownership, counters, refusals."""

from __future__ import annotations

import json

import pytest
from generators import ct_bytes, ct_dataset, to_bytes
from helpers import body_json
from pydicom.uid import SecondaryCaptureImageStorage

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import InvalidInput
from slicebox_lab.watch.imports import ImportSessions, is_secondary_capture

DICOM = {"Content-Type": "application/dicom"}


@pytest.fixture
def node(jp_serverapp) -> SliceboxContext:
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    return context


async def create(api, name: str):
    return await api("import", "sessions", method="POST", body=json.dumps({"name": name}))


async def post_image(api, session_id: int, data: bytes, headers=DICOM):
    return await api("import", "sessions", session_id, "images", method="POST", body=data, headers=headers)


def secondary_capture_bytes() -> bytes:
    ds = ct_dataset(SOPClassUID=SecondaryCaptureImageStorage)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    return to_bytes(ds)


def counters(session: dict) -> tuple[int, int, int]:
    return session["files_imported"], session["files_added"], session["files_rejected"]


async def test_create_is_owned_by_the_caller_and_idempotent_per_user(api, node: SliceboxContext):
    r = await create(api, "batch 1")
    assert r.code == 201, r.body
    session = body_json(r)
    # every holder of the server's shared token is one owner (jupyter_server makes up a new user per request)
    owner = body_json(await api("users", "current"))["user"]
    assert session["name"] == "batch 1" and session["user"] == owner != "anonymous"
    assert counters(session) == (0, 0, 0) and session["created"] == session["last_updated"]
    # a client cannot choose owner or counters
    r = await api(
        "import",
        "sessions",
        method="POST",
        body=json.dumps({"name": "batch 2", "user": "mallory", "files_added": 9}),
    )
    assert body_json(r)["user"] == session["user"] and counters(body_json(r)) == (0, 0, 0)
    # same name by the same user: the same session
    again = await create(api, "batch 1")
    assert again.code == 201 and body_json(again)["id"] == session["id"]
    # same name owned by another user: 400
    ImportSessions(node).create("theirs", "someone-else")
    r = await create(api, "theirs")
    assert r.code == 400 and "another user" in body_json(r)["message"]
    with pytest.raises(InvalidInput):
        ImportSessions(node).create("batch 1", "someone-else")
    # bad bodies
    assert (await create(api, "")).code == 400
    assert (await api("import", "sessions", method="POST", body="[1]")).code == 400
    assert (await api("import", "sessions", method="POST", body="{")).code == 400


async def test_counters_of_added_repeated_and_rejected_files(api, node: SliceboxContext):
    session = body_json(await create(api, "counting"))
    sid = session["id"]
    data = ct_bytes(PatientID="IMP1")

    r = await post_image(api, sid, data)
    assert r.code == 201, r.body
    image = body_json(r)
    after_first = body_json(await api("import", "sessions", sid))
    assert counters(after_first) == (1, 1, 0)
    assert after_first["last_updated"] > session["last_updated"]

    r = await post_image(api, sid, data)
    assert r.code == 200 and body_json(r)["id"] == image["id"]
    assert counters(body_json(await api("import", "sessions", sid))) == (2, 1, 0)

    r = await post_image(api, sid, b"this is not DICOM" * 20)
    assert r.code == 400
    assert counters(body_json(await api("import", "sessions", sid))) == (2, 1, 1)

    # multipart: the refusal names the file
    boundary = "sbxboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="junk.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"junk" * 50
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = await post_image(api, sid, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.code == 400 and body_json(r)["message"].startswith("junk.bin: ")
    assert counters(body_json(await api("import", "sessions", sid))) == (2, 1, 2)

    # the image's source is the session
    source = body_json(await api("metadata", "series", image["series_id"], "source"))
    assert (source["source_type"], source["source_name"]) == ("import", "counting")
    images = body_json(await api("import", "sessions", sid, "images"))
    assert [i["id"] for i in images] == [image["id"]]

    # unknown session: 404, nothing stored
    r = await post_image(api, 999999, ct_bytes(PatientID="NOPE"))
    assert r.code == 404
    assert node.index.counts()["images"] == 1

    # deleting the session keeps its images; deleting again is fine
    assert (await api("import", "sessions", sid, method="DELETE")).code == 204
    assert (await api("import", "sessions", sid)).code == 404
    assert (await api("import", "sessions", sid, "images")).code == 404
    assert (await api("images", image["id"])).code == 200
    assert (await api("import", "sessions", sid, method="DELETE")).code == 204


async def test_secondary_capture_is_refused_by_sessions_but_stored_by_upload(api):
    sid = body_json(await create(api, "sc"))["id"]
    data = secondary_capture_bytes()
    r = await post_image(api, sid, data)
    assert r.code == 400 and "Secondary Capture" in body_json(r)["message"]
    assert counters(body_json(await api("import", "sessions", sid))) == (0, 0, 1)
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code == 201


async def test_listing_is_paged(api):
    ids = [body_json(await create(api, f"s{n}"))["id"] for n in range(3)]
    listed = body_json(await api("import", "sessions"))
    assert [s["id"] for s in listed] == ids
    page = body_json(await api("import", "sessions", params={"startindex": 1, "count": 1}))
    assert [s["id"] for s in page] == [ids[1]]
    assert (await api("import", "sessions", params={"startindex": -1})).code == 400
    assert (await api("import", "sessions", params={"count": "x"})).code == 400


def test_secondary_capture_classes():
    assert is_secondary_capture("1.2.840.10008.5.1.4.1.1.7")
    assert is_secondary_capture("1.2.840.10008.5.1.4.1.1.7.4")
    assert not is_secondary_capture("1.2.840.10008.5.1.4.1.1.77.1.4")  # VL Photographic
    assert not is_secondary_capture("1.2.840.10008.5.1.4.1.1.2")
