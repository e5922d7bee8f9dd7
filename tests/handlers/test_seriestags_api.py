"""REST: series tags (CRUD, per series, bulk) and the tag/type/source filters of the metadata listings."""

from __future__ import annotations

import json

from generators import ct_bytes
from helpers import body_json

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def upload(api, data: bytes) -> dict:
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code == 201, r.body
    return body_json(r)


async def post(api, *parts, body) -> object:
    return await api(*parts, method="POST", body=json.dumps(body).encode(), headers=JSON)


async def flat(api, **params) -> list[int]:
    r = await api("metadata", "flatseries", params={"count": 100, **params})
    assert r.code == 200, r.body
    return [f["series"]["id"] for f in body_json(r)]


async def test_tag_a_cohort_query_by_tag_delete_images_and_the_tag_remains(api):
    images = [await upload(api, ct_bytes(PatientName=f"Cohort^{i}", PatientID=f"C{i}")) for i in range(4)]
    series = [i["series_id"] for i in images]
    r = await post(api, "metadata", "seriestags", body={"name": "cohort-A"})
    assert r.code == 201
    tag = body_json(r)
    assert tag == {"id": tag["id"], "name": "cohort-A", "series_count": 0}
    r = await post(api, "metadata", "seriestags", tag["id"], "series", body=series[:3])
    assert r.code == 200 and body_json(r)["added"] == 3

    assert await flat(api, seriestags=str(tag["id"])) == series[:3]
    assert await flat(api, seriestags=str(tag["id"]), filter="cohort^2") == [series[2]]
    r = await api("metadata", "patients", params={"seriestags": tag["id"], "orderby": "PatientID"})
    assert [p["PatientID"] for p in body_json(r)] == ["C0", "C1", "C2"]
    r = await api("metadata", "seriestags", tag["id"])
    assert body_json(r)["series_count"] == 3

    # another tag on one of them: any / all
    r = await post(api, "metadata", "series", series[0], "seriestags", body={"name": "reviewed"})
    assert r.code == 201
    reviewed = body_json(r)
    both = f"{tag['id']},{reviewed['id']}"
    assert await flat(api, seriestags=both) == series[:3]
    assert await flat(api, seriestags=both, seriestagsmatch="all") == [series[0]]
    r = await post(
        api,
        "metadata",
        "series",
        "query",
        body={"filters": {"series_tags": [tag["id"], reviewed["id"]], "series_tags_match": "all"}},
    )
    assert [s["id"] for s in body_json(r)] == [series[0]]

    # delete the images: the tags remain, with no series
    r = await post(api, "images", "delete", body=[i["id"] for i in images[:3]])
    assert r.code in (200, 204), r.body
    assert await flat(api, seriestags=str(tag["id"])) == []
    r = await api("metadata", "seriestags")
    assert {(t["name"], t["series_count"]) for t in body_json(r)} == {("cohort-A", 0), ("reviewed", 0)}


async def test_series_tag_routes_and_errors(api):
    image = await upload(api, ct_bytes())
    sid = image["series_id"]
    r = await post(api, "metadata", "series", sid, "seriestags", body={"name": "T1"})
    assert r.code == 201
    tag = body_json(r)
    r = await post(api, "metadata", "series", sid, "seriestags", body={"name": "T1"})
    assert r.code == 201 and body_json(r)["id"] == tag["id"] and body_json(r)["series_count"] == 1
    r = await api("metadata", "series", sid, "seriestags")
    assert [t["name"] for t in body_json(r)] == ["T1"]
    assert (await post(api, "metadata", "seriestags", body={"name": "T1"})).code == 409
    assert (await post(api, "metadata", "seriestags", body={"name": ""})).code == 400
    assert (await api("metadata", "seriestags", method="POST", body=b"{", headers=JSON)).code == 400
    assert (await post(api, "metadata", "series", 999, "seriestags", body={"name": "x"})).code == 404
    assert (await api("metadata", "series", 999, "seriestags")).code == 404
    assert (await api("metadata", "seriestags", 999)).code == 404
    assert (await post(api, "metadata", "seriestags", tag["id"], "series", body=[sid, 999])).code == 404
    assert (await post(api, "metadata", "seriestags", tag["id"], "series", body="1,2")).code == 400
    assert (await api("metadata", "seriestags", params={"orderby": "PatientName"})).code == 400
    assert (await api("metadata", "flatseries", params={"seriestags": "a,b"})).code == 400
    assert (await api("metadata", "flatseries", params={"seriestypes": "1;2"})).code == 400
    assert (await api("metadata", "flatseries", params={"seriestags": "1", "seriestagsmatch": "most"})).code == 400
    r = await post(api, "metadata", "series", "query", body={"filters": {"series_tags": "1"}})
    assert r.code == 400

    r = await api("metadata", "seriestags", tag["id"], method="PUT", body=json.dumps({"name": "T1w"}).encode())
    assert r.code == 200 and body_json(r)["name"] == "T1w"
    other = body_json(await post(api, "metadata", "seriestags", body={"name": "other"}))
    r = await api("metadata", "seriestags", other["id"], method="PUT", body=json.dumps({"name": "T1w"}).encode())
    assert r.code == 409
    r = await post(api, "metadata", "seriestags", tag["id"], "series", "remove", body={"series_ids": [sid]})
    assert body_json(r) == {"series_tag_id": tag["id"], "removed": 1}
    r = await api("metadata", "series", sid, "seriestags", other["id"], method="DELETE")
    assert r.code == 204
    r = await api("metadata", "seriestags", tag["id"], method="DELETE")
    assert r.code == 204
    assert (await api("metadata", "seriestags", tag["id"], method="DELETE")).code == 204
    r = await api("metadata", "seriestags", params={"filter": "oth"})
    assert [t["name"] for t in body_json(r)] == ["other"]


async def test_listings_combine_source_type_and_tag_filters(api):
    image = await upload(api, ct_bytes())
    sid = image["series_id"]
    r = await api("metadata", "series", sid, "source")
    source = body_json(r)
    tag = body_json(await post(api, "metadata", "series", sid, "seriestags", body={"name": "mine"}))
    sources = f"{source['source_type']}:{source['source_id']}"
    assert await flat(api, sources=sources, seriestags=str(tag["id"])) == [sid]
    assert await flat(api, sources=f"user:{source['source_id'] + 100}", seriestags=str(tag["id"])) == []
    assert await flat(api, seriestypes="1") == []
    study = body_json(await api("metadata", "studies", params={"patientid": 1, "seriestags": tag["id"]}))
    assert len(study) == 1
    r = await api("metadata", "series", params={"studyid": study[0]["id"], "seriestags": tag["id"], "sources": sources})
    assert [s["id"] for s in body_json(r)] == [sid]
