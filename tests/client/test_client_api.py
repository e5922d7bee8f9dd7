"""slicebox_lab.client against a real `jupyter slicebox` node: DataFrames hold what the REST API holds,
errors carry the node's message, uploads report what was refused, selections act on the node."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pydicom
import pytest
from clientnode import client_of, running_node
from generators import ct_bytes, ct_dataset, to_bytes
from nodeproc import NodeProcess
from PIL import Image
from pydicom.uid import generate_uid

import slicebox_lab
from slicebox_lab.client import (
    BadRequest,
    ClientError,
    Forbidden,
    NodeUnreachable,
    NotFound,
    Selection,
    SliceboxClient,
    Unauthorized,
    UploadSummary,
    plots,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("client-api")) as n:
        yield n


@pytest.fixture(scope="module")
def sbx(node: NodeProcess) -> SliceboxClient:
    return client_of(node)


@pytest.fixture(scope="module")
def stored(node: NodeProcess, sbx: SliceboxClient) -> dict[str, Any]:
    """Two patients, three studies, four series of three images each."""
    ids: dict[str, list[int]] = {"images": []}
    for p in range(2):
        for s in range(2 if p == 0 else 1):
            study = generate_uid()
            for k in range(2 if s == 0 else 1):
                series = generate_uid()
                for n in range(3):
                    data = ct_bytes(
                        PatientName=f"Patient^{p}",
                        PatientID=f"P{p}",
                        StudyInstanceUID=study,
                        SeriesInstanceUID=series,
                        InstanceNumber=n + 1,
                        seed=n,
                        SeriesDescription=f"series {p}.{s}.{k}",
                    )
                    ids["images"].append(sbx.upload_bytes(data)["id"])
    return ids


def _rest(node: NodeProcess, path: str, **params: Any) -> Any:
    r = node.session().get(node.api + "/" + path, params={"count": 10000, **params}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows with NaN as None, numpy scalars as Python values."""
    out = []
    for row in df.to_dict("records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif isinstance(v, np.generic):
                v = v.item()
            clean[k] = v
        out.append(clean)
    return out


def _same(df: pd.DataFrame, rest: list[dict[str, Any]]) -> None:
    """Every REST row is a DataFrame row (same order, same values), and ``id`` comes first."""
    rows = _records(df)
    assert len(rows) == len(rest)
    for row, expected in zip(rows, rest, strict=True):
        assert {k: row[k] for k in expected} == expected
    if len(df.columns):
        assert df.columns[0] in ("id", "source_id", "tag")


def test_frames_hold_what_the_rest_api_holds(node: NodeProcess, sbx: SliceboxClient, stored: dict[str, Any]) -> None:
    _same(sbx.patients(), _rest(node, "metadata/patients"))
    assert list(sbx.patients().columns[:3]) == ["id", "PatientName", "PatientID"]
    all_studies: list[dict[str, Any]] = []
    for patient_id in sbx.patients()["id"]:
        rest = _rest(node, "metadata/studies", patientid=patient_id)
        _same(sbx.studies(int(patient_id)), rest)
        all_studies += rest
    assert sorted(sbx.studies()["id"]) == sorted(s["id"] for s in all_studies)
    all_series: list[dict[str, Any]] = []
    for study in all_studies:
        rest = _rest(node, "metadata/series", studyid=study["id"])
        _same(sbx.series(study["id"]), rest)
        all_series += rest
    assert sorted(sbx.series()["id"]) == sorted(s["id"] for s in all_series)
    all_images: list[int] = []
    for series in all_series:
        rest = _rest(node, "metadata/images", seriesid=series["id"])
        _same(sbx.images(series["id"]), rest)
        all_images += [i["id"] for i in rest]
    assert sorted(all_images) == sorted(stored["images"])
    assert sorted(sbx.images()["id"]) == sorted(all_images)

    flat = sbx.flat_series()
    rest_flat = _rest(node, "metadata/flatseries")
    owner = sbx.current_user()["user"]  # the token holder: the server's owner, by name
    assert owner != "anonymous"
    assert list(flat["series_id"]) == [r["id"] for r in rest_flat] == list(flat["id"])
    for row, r in zip(_records(flat), rest_flat, strict=True):
        assert row["patient_id"] == r["patient"]["id"] and row["study_id"] == r["study"]["id"]
        for part in ("patient", "study", "series"):
            for key, value in r[part].items():
                if key != "id":
                    assert row[key] == value, key
        assert row["source"] == f"user:{owner}"
        assert row["tags"] == [] and row["series_types"] == []
    # paging, ordering and the substring filter are the node's
    assert list(sbx.flat_series(limit=2, order_by="id", ascending=False)["id"]) == sorted(flat["id"])[::-1][:2]
    assert set(sbx.flat_series("series 0.1")["series_id"]) == {
        r["id"] for r in rest_flat if r["series"]["SeriesDescription"] == "series 0.1.0"
    }
    assert list(sbx.patients(PatientName="Patient^1")["PatientID"]) == ["P1"]
    assert set(sbx.flat_series(PatientID="P0")["PatientID"]) == {"P0"}

    attributes = sbx.attributes(stored["images"][0])
    rest_attributes = _rest(node, f"images/{stored['images'][0]}/attributes")
    _same(attributes, rest_attributes)
    name = attributes[attributes["name"] == "PatientName"].iloc[0]
    assert name["value"] == "Patient^0" and name["vr"] == "PN" and name["depth"] == 0

    _same(sbx.log(limit=None), _rest(node, "log"))
    _same(sbx.jobs(), _rest(node, "jobs"))
    _same(sbx.keys(), _rest(node, "anonymization/keys"))
    for direction in ("outgoing", "incoming"):
        _same(sbx.transactions(direction), _rest(node, f"boxes/{direction}/transactions"))
    _same(sbx.boxes(), _rest(node, "boxes"))
    _same(sbx.scus(), _rest(node, "scus"))
    _same(sbx.scps(), _rest(node, "scps"))
    _same(sbx.watches(), _rest(node, "directorywatches"))
    _same(sbx.forwarding_rules(), _rest(node, "forwarding/rules"))
    _same(sbx.filters(), _rest(node, "filtering/filters"))
    _same(sbx.series_types(), _rest(node, "seriestypes"))
    _same(sbx.users(), _rest(node, "users"))
    _same(sbx.series_tags(), _rest(node, "metadata/seriestags"))
    assert sbx.health() == {"status": "ok"}
    assert sbx.information()["counts"]["images"] == len(stored["images"])
    assert {o["name"] for o in sbx.anonymization_options()} >= {"RETAIN_UIDS"}


def test_admin_listings_follow_admin_verbs(node: NodeProcess, sbx: SliceboxClient, tmp_path: Path) -> None:
    scu = sbx.add_scu("pacs", "PACS", "127.0.0.1", 11112)
    scp = sbx.add_scp("listener", "LISTENER", 0, host="127.0.0.1")
    watched = tmp_path / "watched"
    watched.mkdir()
    watch = sbx.add_watch("incoming", watched)
    series_type = sbx.add_series_type("CT any")
    rule = sbx.add_series_type_rule(series_type["id"], {"Modality": ["CT"]})
    user = sbx.add_user("reader", "secret-pass", "USER")
    try:
        _same(sbx.scus(), _rest(node, "scus"))
        _same(sbx.scps(), _rest(node, "scps"))
        assert bool(sbx.scps().set_index("id").loc[scp["id"], "running"])
        _same(sbx.watches(), _rest(node, "directorywatches"))
        _same(sbx.series_types(), _rest(node, "seriestypes"))
        _same(sbx.series_type_rules(series_type["id"]), _rest(node, f"seriestypes/{series_type['id']}/rules"))
        assert sbx.series_type_rules(series_type["id"])["id"].tolist() == [rule["id"]]
        _same(sbx.users(), _rest(node, "users"))
        assert "reader" in set(sbx.users()["user"])
        # the node answers a C-ECHO to its own SCP through a remote node entry
        own = sbx.add_scu("self", "LISTENER", "127.0.0.1", scp["port"])
        assert sbx.echo_scu(own["id"]) == {"status": "ok"}
        sbx.delete_scu(own["id"])
    finally:
        sbx.delete_scu(scu["id"])
        sbx.delete_scp(scp["id"])
        sbx.delete_watch(watch["id"])
        sbx.delete_series_type(series_type["id"])
        sbx.delete_user(user["id"])
    assert scu["id"] not in set(sbx.scus()["id"])


def test_errors_carry_the_nodes_message(node: NodeProcess, sbx: SliceboxClient, stored: dict[str, Any]) -> None:
    with pytest.raises(NotFound) as not_found:
        sbx.attributes(987654)
    assert not_found.value.status == 404
    assert not_found.value.message == "image 987654 not found"
    assert "image 987654 not found" in str(not_found.value)
    with pytest.raises(NotFound, match="not found"):
        sbx.series_obj(987654).attributes  # noqa: B018
    with pytest.raises(BadRequest) as bad:
        sbx.upload_bytes(b"garbage")
    assert bad.value.status == 400 and "not a DICOM file" in bad.value.message
    assert bad.value.reason == "InvalidDicom"
    with pytest.raises(BadRequest, match="orderby|order"):
        sbx.patients(order_by="NoSuchColumn")
    with pytest.raises(ClientError) as conflict:
        sbx.add_series_tag("dup")
        sbx.add_series_tag("dup")
    assert conflict.value.status == 409 and conflict.value.message
    # a node-local USER may read but not configure: 403 with the node's explanation
    user = sbx.add_user("plain", "plain-password", "USER")
    try:
        plain = slicebox_lab.connect(node.url, username="plain", password="plain-password")
        assert len(plain.patients()) == len(sbx.patients())
        with pytest.raises(Forbidden) as forbidden:
            plain.add_scu("x", "X", "127.0.0.1", 104)
        assert forbidden.value.status == 403 and forbidden.value.message and forbidden.value.message != "Forbidden"
        with pytest.raises(Unauthorized):
            slicebox_lab.connect(node.url, username="plain", password="wrong")
    finally:
        sbx.delete_user(user["id"])
    with pytest.raises(Forbidden):
        slicebox_lab.connect(node.url, token="wrong-token")
    with pytest.raises(NodeUnreachable) as unreachable:
        slicebox_lab.connect("http://127.0.0.1:9/", token="x", timeout=5)
    assert unreachable.value.status is None


def test_upload_reports_added_and_refused(sbx: SliceboxClient, tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for n in range(4):
        (folder / ("sub" if n % 2 else ".") / f"ct{n}.dcm").write_bytes(
            ct_bytes(PatientID="UP", StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n + 1)
        )
    (folder / "notes.txt").write_text("not an image")
    whole = ct_bytes(PatientID="UP")
    (folder / "sub" / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    summary = sbx.upload(folder, progress=False)
    assert isinstance(summary, UploadSummary)
    assert len(summary.added) == 4 and summary.added["new"].all()
    assert summary.series_ids == sorted(set(sbx.flat_series(PatientID="UP")["series_id"]))
    assert sorted(summary.added["id"]) == sorted(sbx.images(summary.series_ids[0])["id"])
    refused = dict(summary.refused)
    assert set(refused) == {str(folder / "notes.txt"), str(folder / "sub" / "truncated.dcm")}
    assert "not a DICOM file" in refused[str(folder / "notes.txt")]
    assert "truncated" in refused[str(folder / "sub" / "truncated.dcm")]
    text = repr(summary)
    assert "4 file(s) stored" in text and "2 refused" in text and "notes.txt" in text
    again = sbx.upload(folder / "ct0.dcm", progress=True)
    assert len(again.added) == 1 and not again.added["new"].any() and again.refused == []


def test_pixels_png_and_info(sbx: SliceboxClient) -> None:
    ds = ct_dataset(PatientID="PIX", rows=20, columns=10, seed=7, PixelSpacing=[0.5, 0.7])
    image_id = sbx.upload_bytes(to_bytes(ds))["id"]
    stored = sbx.image_bytes(image_id)
    assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID == ds.SOPInstanceUID
    expected = ds.pixel_array.astype(np.float32) * 1 - 1024
    pixels = sbx.pixel_array(image_id)
    assert pixels.dtype == np.float32 and pixels.shape == (20, 10)
    np.testing.assert_array_equal(pixels, expected)
    np.testing.assert_array_equal(sbx.pixel_array(image_id, frame=1), expected)
    with pytest.raises(ValueError, match="out of range"):
        sbx.pixel_array(image_id, frame=2)
    info = sbx.image_info(image_id)
    assert info["Rows"] == 20 and info["Columns"] == 10 and info["NumberOfFrames"] == 1
    assert info["WindowCenter"] == 40 and info["WindowWidth"] == 400
    assert info["RescaleSlope"] == 1 and info["RescaleIntercept"] == -1024
    assert info["PixelSpacing"] == [0.5, 0.7]
    png = sbx.png(image_id)
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (10, 20)
    assert Image.open(io.BytesIO(sbx.png(image_id, width=20))).size == (20, 40)
    narrow = np.asarray(Image.open(io.BytesIO(sbx.png(image_id, window=(0, 10)))))
    wide = np.asarray(Image.open(io.BytesIO(sbx.png(image_id, window=4000, level=0))))
    assert not np.array_equal(narrow, wide)
    with pytest.raises(ClientError) as bad_frame:
        sbx.png(image_id, frame=5)
    assert bad_frame.value.status in (400, 404) and bad_frame.value.message
    single = sbx.series_obj(sbx.image(image_id)["series_id"]).to_numpy()
    assert single.shape == (1, 20, 10) and single.spacing[1:] == (0.5, 0.7)
    np.testing.assert_array_equal(np.asarray(single)[0], expected)


def test_selection_tag_review_export_anonymize_delete(sbx: SliceboxClient, tmp_path: Path) -> None:
    series_uids = [generate_uid(), generate_uid()]
    study = generate_uid()
    for uid in series_uids:
        for n in range(2):
            sbx.upload_bytes(
                ct_bytes(
                    PatientName="Sel^One",
                    PatientID="SEL",
                    StudyInstanceUID=study,
                    SeriesInstanceUID=uid,
                    InstanceNumber=n,
                )
            )
    frame = sbx.flat_series(PatientID="SEL")
    selection = sbx.select(frame)
    assert isinstance(selection, Selection) and len(selection) == 2
    assert selection.series_ids == list(frame["series_id"])
    assert sbx.select(list(frame["series_id"])).series_ids == selection.series_ids
    assert sbx.select(frame[["id"]]).series_ids == selection.series_ids
    image_ids = selection.image_ids()
    assert len(image_ids) == 4
    assert list(selection.to_frame()["series_id"]) == selection.series_ids

    assert selection.tag("cohort-A") == {
        "series_tag_id": selection._tag_id("cohort-A", False),
        "added": 2,
        "already_tagged": 0,
    }
    assert selection.tag("cohort-A")["already_tagged"] == 2
    assert set(sbx.flat_series(tags="cohort-A")["series_id"]) == set(selection.series_ids)
    assert all(t == ["cohort-A"] for t in sbx.flat_series(PatientID="SEL")["tags"])
    assert selection.untag("cohort-A")["removed"] == 2
    assert sbx.flat_series(tags="cohort-A").empty
    with pytest.raises(NotFound):
        selection.untag("never-made")

    report = selection.review()
    assert {"path", "outcome", "decided_by"} <= set(report.columns)
    row = report[report["path"] == "PatientName"].iloc[0]
    assert row["outcome"] in ("dummy", "emptied", "removed", "pseudonym")
    assert report.attrs["summary"]["images"] == 4
    kept = selection.review(["RETAIN_PATIENT_CHARACTERISTICS"])
    assert kept.attrs["summary"]["profile"]["options"] == ["RETAIN_PATIENT_CHARACTERISTICS"]

    files = selection.export(tmp_path / "export")
    assert len(files) == 4 and all(f.is_file() for f in files)
    assert {pydicom.dcmread(f).SOPInstanceUID for f in files} == {sbx.image(i)["SOPInstanceUID"] for i in image_ids}
    assert sbx.export([image_ids[0]], tmp_path / "one") and len(list((tmp_path / "one").rglob("*.dcm"))) == 1

    job = selection.anonymize(wait=True, progress=False, timeout=60)
    assert job["state"] == "SUCCEEDED", job
    assert sbx.flat_series(PatientID="SEL").empty
    anonymized = sbx.select(sorted({sbx.image(i)["series_id"] for i in job["result"]["images"]}))
    assert len(anonymized.image_ids()) == 4
    assert len(sbx.keys()) >= 4
    anonymized.delete()
    for image_id in job["result"]["images"]:
        with pytest.raises(NotFound):
            sbx.image(image_id)


def test_plots_have_panels_and_bins() -> None:
    from matplotlib.figure import Figure

    array = np.arange(10 * 8 * 8, dtype=np.float32).reshape(10, 8, 8)
    figure = plots.montage(array, columns=5)
    assert isinstance(figure, Figure) and len(figure.axes) == 10
    assert len(plots.montage(array, max_panels=4).axes) == 4
    assert len(plots.montage(array[0]).axes) == 1
    histogram = plots.histogram(array, bins=32)
    assert isinstance(histogram, Figure) and len(histogram.axes) == 1
    assert len(histogram.axes[0].patches) == 32
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert plots.montage(array, ax=ax) is ax.figure and len(ax.images) == 1
    plt.close("all")


def test_flat_series_details_for_a_page_and_for_many(sbx: SliceboxClient) -> None:
    """Tags come from one request per series for a page, one per tag for many series: the same answer."""
    study = generate_uid()
    for n in range(24):
        sbx.upload_bytes(ct_bytes(PatientID="MANY", StudyInstanceUID=study, SeriesDescription=f"many {n:02d}"))
    many = sbx.flat_series(PatientID="MANY", order_by="id")
    assert len(many) == 24
    sbx.select(many.iloc[::2]).tag("even")
    sbx.select(many.iloc[::3]).tag("third")
    series_type = sbx.add_series_type("CT series")
    sbx.add_series_type_rule(series_type["id"], {"Modality": ["CT"]})
    try:
        deadline = time.monotonic() + 30
        while not sbx.flat_series(PatientID="MANY", types="CT series").shape[0] == 24:
            assert time.monotonic() < deadline, "series types were not assigned"
            time.sleep(0.2)
        everything = sbx.flat_series(PatientID="MANY", order_by="id")
        page = sbx.flat_series(PatientID="MANY", order_by="id", limit=5)
        for df in (everything, page):
            for k, row in enumerate(df.to_dict("records")):
                expected = sorted((["even"] if k % 2 == 0 else []) + (["third"] if k % 3 == 0 else []))
                assert row["tags"] == expected
                assert row["series_types"] == ["CT series"]
        assert len(sbx.flat_series(tags=["even", "third"], tags_match="all")) == 4
        assert len(sbx.flat_series(tags="third")) == 8
    finally:
        sbx.delete_series_type(series_type["id"])
