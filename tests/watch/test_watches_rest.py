"""Directory watches over REST: create, list, import, refuse, delete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from generators import ct_bytes
from helpers import body_json, serve_with

from slicebox_lab.context import SliceboxContext
from slicebox_lab.watch import WatchService, create_watch_service


@pytest.fixture
def watch_service(jp_serverapp) -> Iterator[WatchService]:
    """A watch service of the server's context with a short tick, the one its handlers use."""
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    service = create_watch_service(context)
    service.tick_seconds = 0.1
    service.start()
    serve_with(jp_serverapp, service)
    yield service
    service.stop(10)


async def add_watch(api, **body):
    return await api("directorywatches", method="POST", body=json.dumps(body))


async def eventually(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_watch_imports_files_and_can_be_removed(api, watch_service: WatchService, tmp_path: Path):
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.dcm").write_bytes(ct_bytes(PatientID="REST1"))
    (folder / "readme.txt").write_text("hello")

    r = await add_watch(api, name="scanner", path=str(folder))
    assert r.code == 201, r.body
    watch = body_json(r)
    assert watch["name"] == "scanner" and watch["path"] == str(folder.resolve())
    assert watch["delete_on_import"] is False
    # the same name and path again: the same watch
    again = await add_watch(api, name="scanner", path=str(folder))
    assert again.code == 201 and body_json(again)["id"] == watch["id"]
    assert [w["id"] for w in body_json(await api("directorywatches"))] == [watch["id"]]
    assert body_json(await api("directorywatches", watch["id"]))["path"] == watch["path"]

    async def patients():
        return body_json(await api("metadata", "patients"))

    [patient] = await eventually(patients)
    assert patient["PatientID"] == "REST1"
    sources = body_json(await api("sources"))
    assert any(s["source_type"] == "directory" and s["source_name"] == "scanner" for s in sources)

    async def skipped():
        log = body_json(await api("log", params={"subject": "Directory", "type": "WARN"}))
        return [e for e in log if "readme.txt" in e["message"]]

    await eventually(skipped)
    assert (folder / "readme.txt").exists() and (folder / "sub" / "a.dcm").exists()

    assert (await api("directorywatches", watch["id"], method="DELETE")).code == 204
    assert (await api("directorywatches", watch["id"])).code == 404
    assert body_json(await api("directorywatches")) == []
    assert (await api("directorywatches", watch["id"], method="DELETE")).code == 204
    assert watch_service.threads_alive == 0


async def test_watch_validation(api, watch_service: WatchService, tmp_path: Path):
    folder = tmp_path / "parent" / "incoming"
    (folder / "inner").mkdir(parents=True)
    r = await add_watch(api, name="missing", path=str(tmp_path / "nowhere"))
    assert r.code == 400 and "No such directory" in body_json(r)["message"]
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    r = await add_watch(api, name="file", path=str(a_file))
    assert r.code == 400 and "Not a directory" in body_json(r)["message"]
    assert (await add_watch(api, name="nameless")).code == 400
    assert (await api("directorywatches", method="POST", body="[]")).code == 400
    assert (await add_watch(api, name="x", path=str(folder), delete_on_import="yes")).code == 400

    assert (await add_watch(api, name="top", path=str(folder), delete_on_import=True)).code == 201
    r = await add_watch(api, name="nested", path=str(folder / "inner"))
    assert r.code == 400 and "intersects" in body_json(r)["message"]
    r = await add_watch(api, name="containing", path=str(tmp_path / "parent"))
    assert r.code == 400 and "intersects existing directory" in body_json(r)["message"]
    r = await add_watch(api, name="data", path=str(tmp_path))  # contains the node's data
    assert r.code == 400 and "storage folder" in body_json(r)["message"]
    other = tmp_path / "other"
    other.mkdir()
    assert (await add_watch(api, name="top", path=str(other))).code == 409
    assert (await api("directorywatches", params={"count": -1})).code == 400
    assert (await api("directorywatches", 424242)).code == 404
