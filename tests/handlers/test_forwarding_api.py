"""/slicebox/api/forwarding/rules over a real Jupyter server: validation, listing, batches, and the
node's forwarding service sending uploads to a real dcmtk storescp."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from generators import ct_bytes
from helpers import body_json

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
import netutil  # noqa: E402

storescp = netutil.storescp

DICOM = {"Content-Type": "application/dicom"}


async def _post(api: Any, *path: object, body: object) -> Any:
    return await api(*path, method="POST", body=json.dumps(body))


async def _scu(api: Any, port: int) -> int:
    r = await _post(api, "scus", body={"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port})
    assert r.code == 201, r.body
    return int(body_json(r)["id"])


async def test_rules_are_created_validated_listed_and_deleted(api: Any):
    r = await _post(api, "boxes", "createconnection", body={"name": "university"})
    assert r.code == 201, r.body
    box_id = body_json(r)["id"]
    scu_id = await _scu(api, 11112)

    body = {"source": {"sourceType": "scp", "sourceName": "ct"}, "destination": {"type": "box", "id": box_id},
            "keepImages": False, "quietSeconds": 5}  # fmt: skip
    r = await _post(api, "forwarding", "rules", body=body)
    assert r.code == 201, r.body
    rule = body_json(r)
    assert rule["source"] == {"sourceType": "scp", "sourceName": "ct", "sourceId": None}
    assert rule["destination"] == {"type": "box", "id": box_id, "name": "university"}
    assert rule["keepImages"] is False and rule["quietSeconds"] == 5 and rule["queuedImageCount"] == 0

    r = await _post(api, "forwarding", "rules", body=body | {"keepImages": True})
    assert r.code == 409 and f"rule {rule['id']}" in body_json(r)["message"]
    for bad, code in (
        (body | {"destination": {"type": "box", "id": 999}}, 404),
        (body | {"destination": {"type": "scu", "id": 999}}, 404),
        (body | {"destination": {"type": "fax", "id": 1}}, 400),
        (body | {"source": {"sourceType": "pigeon", "sourceName": "x"}}, 400),
        (body | {"source": {"sourceType": "scp"}}, 400),
        (body | {"keepImages": "no"}, 400),
        (body | {"quietSeconds": "soon"}, 400),
        ([1, 2], 400),
    ):
        r = await _post(api, "forwarding", "rules", body=bad)
        assert r.code == code, (bad, r.body)
    r = await api("forwarding", "rules", method="POST", body=b"not json")
    assert r.code == 400

    r = await _post(api, "forwarding", "rules", body=body | {"destination": {"type": "scu", "id": scu_id}})
    assert r.code == 201, r.body
    second = body_json(r)

    r = await api("forwarding", "rules")
    assert [x["id"] for x in body_json(r)] == [rule["id"], second["id"]]
    r = await api("forwarding", "rules", params={"startindex": 1, "count": 1})
    assert [x["id"] for x in body_json(r)] == [second["id"]]
    r = await api("forwarding", "rules", params={"count": -1})
    assert r.code == 400
    r = await api("forwarding", "rules", rule["id"])
    assert body_json(r) == rule
    r = await api("forwarding", "rules", rule["id"], "batches")
    assert r.code == 200 and body_json(r) == []

    r = await api("forwarding", "rules", rule["id"], method="DELETE")
    assert r.code == 204
    for path in ((rule["id"],), (rule["id"], "batches"), (99999999999,)):
        r = await api("forwarding", "rules", *path)
        assert r.code == 404, path
    r = await api("forwarding", "rules", rule["id"], method="DELETE")
    assert r.code == 404


async def test_the_node_forwards_uploads_to_a_remote_node_and_deletes_them_after_delivery(
    api: Any, storescp: tuple[int, Path]
):
    port, out = storescp
    scu_id = await _scu(api, port)
    r = await api("images", method="POST", body=ct_bytes(PatientID="FIRST", seed=99), headers=DICOM)
    assert r.code == 201, r.body
    sources = body_json(await api("sources"))
    user = next(s for s in sources if s["source_type"] == "user")
    body = {"source": {"sourceType": "user", "sourceId": user["source_id"]},
            "destination": {"type": "scu", "id": scu_id}, "keepImages": False, "quietSeconds": 0.3}  # fmt: skip
    r = await _post(api, "forwarding", "rules", body=body)
    assert r.code == 201, r.body
    rule = body_json(r)
    assert rule["source"]["sourceName"] == user["source_name"]

    ids = []
    for n in range(3):
        r = await api("images", method="POST", body=ct_bytes(PatientID="FWD", seed=n), headers=DICOM)
        assert r.code == 201, r.body
        ids.append(body_json(r)["id"])
    deadline = time.monotonic() + 60
    while True:
        batches = body_json(await api("forwarding", "rules", rule["id"], "batches"))
        if batches and batches[0]["state"] in ("DELIVERED", "FAILED"):
            break
        assert time.monotonic() < deadline, batches
        await asyncio.sleep(0.1)
    assert batches[0]["state"] == "DELIVERED" and batches[0]["imageCount"] == 3, batches
    assert len([p for p in out.iterdir() if p.is_file()]) == 3
    deadline = time.monotonic() + 30
    while (await api("images", ids[0])).code != 404:  # deleted by the next round after delivery
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    for image_id in ids:
        assert (await api("images", image_id)).code == 404
    # the images are marked deleted once the deletion is complete (blobs durably gone, then rows)
    while (images := body_json(await api("forwarding", "rules", rule["id"], "batches"))[0]["images"]) != {"DELETED": 3}:
        assert time.monotonic() < deadline, images
        await asyncio.sleep(0.1)
