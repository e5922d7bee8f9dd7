"""DICOMweb against a real `jupyter slicebox` process, spoken to by the PyPI client `dicomweb-client`.

Every answer is compared with what the node's REST API (/slicebox/api/metadata/...) reports.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from e2e.nodeproc import NodeProcess, start_node
from generators import ct_dataset, to_bytes
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

STUDY_A, STUDY_B = generate_uid(), generate_uid()
SERIES_A_CT, SERIES_A_MR, SERIES_B = generate_uid(), generate_uid(), generate_uid()


def _datasets() -> list[Dataset]:
    a = dict(
        PatientName="Doe^John",
        PatientID="PID-DW-1",
        StudyInstanceUID=STUDY_A,
        StudyDate="20200115",
        StudyTime="101500",
        AccessionNumber="ACC-A",
        ReferringPhysicianName="Ref^Doctor",
    )
    out = [
        ct_dataset(**a, SeriesInstanceUID=SERIES_A_CT, InstanceNumber=i, SeriesNumber=3, seed=i)  # type: ignore[arg-type]
        for i in range(1, 4)
    ]
    out.append(ct_dataset(**a, SeriesInstanceUID=SERIES_A_MR, Modality="MR", SeriesNumber=4))  # type: ignore[arg-type]
    b = ct_dataset(
        PatientName="Smith^Jane",
        PatientID="PID-DW-2",
        StudyInstanceUID=STUDY_B,
        SeriesInstanceUID=SERIES_B,
        StudyDate="20210620",
        AccessionNumber="ACC-B",
        rows=8,
        columns=6,
    )
    frames = np.arange(3 * 8 * 6, dtype=np.int16).reshape(3, 8, 6)
    b.NumberOfFrames = 3
    b.PixelData = frames.tobytes()
    out.append(b)
    return out


DATASETS = _datasets()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    work = tmp_path_factory.mktemp("dicomweb")
    process = start_node(work / "data", work)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> DICOMwebClient:
    c = DICOMwebClient(
        url=node.url.rstrip("/") + "/slicebox/dicom-web", headers={"Authorization": f"token {node.token}"}
    )
    response = c.store_instances(DATASETS)
    assert len(response.ReferencedSOPSequence) == len(DATASETS)
    assert "FailedSOPSequence" not in response
    return c


def _rest(node: NodeProcess, *path: str, **params: Any) -> Any:
    r = node.session().get(node.api + "/" + "/".join(path), params=params, timeout=30)
    r.raise_for_status()
    return r.json()


def _on_node(node: NodeProcess, url: str) -> str:
    """``url`` on the node's address: URLs are built from the Host header, and dicomweb-client sends
    its host without the port."""
    path = url.split("/slicebox/dicom-web/", 1)[1]
    return node.url.rstrip("/") + "/slicebox/dicom-web/" + path


def _uids(results: list[dict[str, Any]], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def _value(result: dict[str, Any], tag: str) -> Any:
    return result[tag].get("Value", [None])[0]


# ---------------------------------------------------------------------------------------------- QIDO-RS


def test_search_for_studies_matches_rest_api(node: NodeProcess, client: DICOMwebClient) -> None:
    studies = client.search_for_studies()
    assert _uids(studies, "0020000D") == {STUDY_A, STUDY_B}
    flat = _rest(node, "metadata", "flatseries", count=100)
    by_uid = {s["study"]["StudyInstanceUID"]: s for s in flat}
    for study in studies:
        uid = _value(study, "0020000D")
        rest = by_uid[uid]
        assert _value(study, "00100020") == rest["patient"]["PatientID"]
        assert _value(study, "00100010") == {"Alphabetic": rest["patient"]["PatientName"]}
        assert _value(study, "00080020") == rest["study"]["StudyDate"]
        assert _value(study, "00080050") == rest["study"]["AccessionNumber"]
        series_rest = [s for s in flat if s["study"]["StudyInstanceUID"] == uid]
        assert _value(study, "00201206") == len(series_rest)
        instances = sum(len(_rest(node, "metadata", "images", seriesid=s["id"], count=100)) for s in series_rest)
        assert _value(study, "00201208") == instances
        assert _value(study, "00081190").endswith(f"/slicebox/dicom-web/studies/{uid}")
    a = next(s for s in studies if _value(s, "0020000D") == STUDY_A)
    assert a["00080061"]["Value"] == ["CT", "MR"]
    assert _value(a, "00080030") == "101500"  # StudyTime: not indexed, read from an instance's header
    assert _value(a, "00080090") == {"Alphabetic": "Ref^Doctor"}


def test_search_filters_wildcards_ranges_and_paging(client: DICOMwebClient) -> None:
    assert _uids(client.search_for_studies(search_filters={"PatientName": "Doe*"}), "0020000D") == {STUDY_A}
    assert _uids(client.search_for_studies(search_filters={"00100020": "PID-DW-?"}), "0020000D") == {STUDY_A, STUDY_B}
    assert client.search_for_studies(search_filters={"PatientName": "doe^john"}) == []
    fuzzy = client.search_for_studies(search_filters={"PatientName": "jane"}, fuzzymatching=True)
    assert _uids(fuzzy, "0020000D") == {STUDY_B}
    ranges = {
        "20200101-20201231": {STUDY_A},
        "-20200115": {STUDY_A},
        "20200116-": {STUDY_B},
        "20210620": {STUDY_B},
    }
    for value, expected in ranges.items():
        found = client.search_for_studies(search_filters={"StudyDate": value})
        assert _uids(found, "0020000D") == expected, value
    both = client.search_for_studies(search_filters={"StudyInstanceUID": f"{STUDY_A},{STUDY_B}"})
    assert _uids(both, "0020000D") == {STUDY_A, STUDY_B}
    assert _uids(client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"}), "0020000D") == {STUDY_A}
    first = client.search_for_studies(limit=1)
    second = client.search_for_studies(limit=1, offset=1)
    assert len(first) == len(second) == 1
    assert _uids(first, "0020000D") | _uids(second, "0020000D") == {STUDY_A, STUDY_B}
    assert client.search_for_studies(offset=2) == []
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_search_series_and_instances(node: NodeProcess, client: DICOMwebClient) -> None:
    series = client.search_for_series(STUDY_A)
    assert _uids(series, "0020000E") == {SERIES_A_CT, SERIES_A_MR}
    ct = next(s for s in series if _value(s, "0020000E") == SERIES_A_CT)
    assert _value(ct, "00080060") == "CT" and _value(ct, "00201209") == 3 and _value(ct, "00200011") == 3
    assert _uids(client.search_for_series(search_filters={"Modality": "MR"}), "0020000E") == {SERIES_A_MR}
    all_series = client.search_for_series(search_filters={"PatientID": "PID-DW-2"})
    assert _uids(all_series, "0020000E") == {SERIES_B}
    assert _value(all_series[0], "00100010") == {"Alphabetic": "Smith^Jane"}  # study attributes when unscoped

    instances = client.search_for_instances(STUDY_A, SERIES_A_CT)
    flat = next(
        s for s in _rest(node, "metadata", "flatseries", count=100) if s["series"]["SeriesInstanceUID"] == SERIES_A_CT
    )
    rest = _rest(node, "metadata", "images", seriesid=flat["id"], count=100)
    assert _uids(instances, "00080018") == {i["SOPInstanceUID"] for i in rest}
    for item in instances:
        assert _value(item, "00280010") == 16 and _value(item, "00280011") == 16  # Rows, Columns from the header
        assert _value(item, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert len(client.search_for_instances(STUDY_A)) == 4
    every = client.search_for_instances()
    assert len(every) == len(DATASETS)
    one = client.search_for_instances(search_filters={"InstanceNumber": "2", "SeriesInstanceUID": SERIES_A_CT})
    assert len(one) == 1 and _value(one[0], "00200013") == 2
    assert _value(one[0], "0020000D") == STUDY_A


def test_includefield(client: DICOMwebClient) -> None:
    plain = client.search_for_studies(search_filters={"StudyInstanceUID": STUDY_A})[0]
    assert "00081030" not in plain  # StudyDescription is not a default attribute
    asked = client.search_for_studies(
        search_filters={"StudyInstanceUID": STUDY_A}, fields=["StudyDescription", "00101010"]
    )
    assert _value(asked[0], "00081030") == "Test study"
    assert "00101010" in asked[0]
    full = client.search_for_studies(search_filters={"StudyInstanceUID": STUDY_A}, get_remaining=False, fields=["all"])
    assert _value(full[0], "00081030") == "Test study"
    series = client.search_for_series(STUDY_A, fields=["SeriesDescription", "00080070,BodyPartExamined"])
    assert all(_value(s, "0008103E") == "Test series" for s in series)


def test_bad_query_parameters_are_400(node: NodeProcess) -> None:
    s = node.session()
    base = node.url.rstrip("/") + "/slicebox/dicom-web"
    for params in (
        {"NoSuchKeyword": "x"},
        {"StudyDate": "2020"},
        {"StudyDate": "20200101-2021"},
        {"limit": "-1"},
        {"offset": "x"},
        {"StudyInstanceUID": "not a uid"},
        {"fuzzymatching": "maybe"},
    ):
        r = s.get(base + "/studies", params=params, timeout=30)
        assert r.status_code == 400, (params, r.status_code, r.text)
        assert r.json()["message"]
    r = s.get(base + "/studies", params={"StudyTime": "1015"}, timeout=30)
    assert r.status_code == 200 and "StudyTime" in r.headers["Warning"]
    r = s.get(base + "/studies", headers={"Accept": "text/html"}, timeout=30)
    assert r.status_code == 406


# ---------------------------------------------------------------------------------------------- WADO-RS


def _sop(ds: Dataset) -> str:
    return str(ds.SOPInstanceUID)


def test_retrieve_study_series_instance(client: DICOMwebClient) -> None:
    sent = {_sop(d): d for d in DATASETS}
    study = client.retrieve_study(STUDY_A)
    assert {_sop(d) for d in study} == {_sop(d) for d in DATASETS if d.StudyInstanceUID == STUDY_A}
    for ds in study:
        assert ds.PixelData == sent[_sop(ds)].PixelData
    series = client.retrieve_series(STUDY_A, SERIES_A_MR)
    assert [_sop(d) for d in series] == [_sop(DATASETS[3])]
    instance = client.retrieve_instance(STUDY_B, SERIES_B, _sop(DATASETS[4]))
    assert instance.PatientName == "Smith^Jane" and instance.NumberOfFrames == 3
    explicit = client.retrieve_instance(
        STUDY_B, SERIES_B, _sop(DATASETS[4]), media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
    )
    assert explicit.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_retrieve_metadata(node: NodeProcess, client: DICOMwebClient) -> None:
    metadata = client.retrieve_study_metadata(STUDY_A)
    assert _uids(metadata, "00080018") == {_sop(d) for d in DATASETS if d.StudyInstanceUID == STUDY_A}
    item = client.retrieve_instance_metadata(STUDY_B, SERIES_B, _sop(DATASETS[4]))
    assert _value(item, "00280008") == 3 and _value(item, "00100020") == "PID-DW-2"
    bulk = item["7FE00010"]["BulkDataURI"]
    assert "Value" not in item["7FE00010"] and "InlineBinary" not in item["7FE00010"]
    r = node.session().get(_on_node(node, bulk), timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("multipart/related")
    assert DATASETS[4].PixelData in r.content
    series_md = client.retrieve_series_metadata(STUDY_A, SERIES_A_CT)
    assert len(series_md) == 3
    ds = Dataset.from_json(item)
    assert ds.PatientName == "Smith^Jane"


def test_retrieve_frames(client: DICOMwebClient) -> None:
    multi = DATASETS[4]
    frames = client.retrieve_instance_frames(STUDY_B, SERIES_B, _sop(multi), frame_numbers=[1, 3])
    size = 8 * 6 * 2
    assert frames == [multi.PixelData[:size], multi.PixelData[2 * size : 3 * size]]


def test_retrieve_frames_of_a_compressed_instance(node: NodeProcess, client: DICOMwebClient) -> None:
    path = get_testdata_file("JPEG2000.dcm")
    data = Path(str(path)).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    client.store_instances([ds])
    frames = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
    expected = np.ascontiguousarray(ds.pixel_array).tobytes()
    assert frames == [expected]
    explicit = client.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert explicit.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(explicit.pixel_array, ds.pixel_array)
    # a compressed syntax the node does not have for this instance
    base = node.url.rstrip("/") + "/slicebox/dicom-web"
    url = f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r = node.session().get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'}
    )
    assert r.status_code == 406


def test_retrieve_rendered(node: NodeProcess, client: DICOMwebClient) -> None:
    sop = _sop(DATASETS[0])
    png = client.retrieve_instance_rendered(STUDY_A, SERIES_A_CT, sop, media_types=("image/png",))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (16, 16)
    jpeg = client.retrieve_instance_rendered(STUDY_A, SERIES_A_CT, sop, media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    frame = client.retrieve_instance_frames_rendered(
        STUDY_B, SERIES_B, _sop(DATASETS[4]), [2], media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(frame)).size == (6, 8)
    # the window parameter reaches the node's renderer: the same as the REST PNG with that window
    base = node.url.rstrip("/") + "/slicebox/dicom-web"
    url = f"{base}/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/{sop}/rendered"
    windowed = node.session().get(url, params={"window": "0,200,linear"}, headers={"Accept": "image/png"})
    assert windowed.status_code == 200
    image_id = _rest(node, "metadata", "images", seriesid=_series_id(node, SERIES_A_CT), count=100)
    rest_id = next(i["id"] for i in image_id if i["SOPInstanceUID"] == sop)
    rest = node.session().get(f"{node.api}/images/{rest_id}/png", params={"windowmin": -100, "windowmax": 100})
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(windowed.content))), np.asarray(Image.open(io.BytesIO(rest.content)))
    )
    assert node.session().get(url, params={"window": "1,2,3,4"}).status_code == 400
    assert node.session().get(url, headers={"Accept": "image/gif"}).status_code == 406


def _series_id(node: NodeProcess, uid: str) -> int:
    flat = _rest(node, "metadata", "flatseries", count=100)
    return int(next(s["id"] for s in flat if s["series"]["SeriesInstanceUID"] == uid))


def test_unknown_uids_are_404(node: NodeProcess, client: DICOMwebClient) -> None:
    s = node.session()
    base = node.url.rstrip("/") + "/slicebox/dicom-web"
    for path in (
        "/studies/1.2.3",
        "/studies/1.2.3/metadata",
        f"/studies/{STUDY_A}/series/1.2.3",
        f"/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/1.2.3",
        f"/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/1.2.3/frames/1",
        f"/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/1.2.3/rendered",
    ):
        assert s.get(base + path, timeout=30).status_code == 404, path
    sop = _sop(DATASETS[0])
    assert s.get(f"{base}/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/{sop}/frames/2").status_code == 404
    assert s.get(f"{base}/studies/{STUDY_A}/series/{SERIES_A_CT}/instances/{sop}/frames/x").status_code == 400
    r = s.get(f"{base}/studies/{STUDY_A}", headers={"Accept": "application/zip"})
    assert r.status_code == 406


# ---------------------------------------------------------------------------------------------- STOW-RS


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for content_type, body in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _stow(node: NodeProcess, path: str, body: bytes, content_type: str) -> requests.Response:
    url = node.url.rstrip("/") + "/slicebox/dicom-web" + path
    return node.session().post(url, data=body, headers={"Content-Type": content_type}, timeout=60)


CT_RELATED = 'multipart/related; type="application/dicom"; boundary=b0undary'


def test_store_reports_each_instance(node: NodeProcess, client: DICOMwebClient) -> None:
    study = generate_uid()
    good = ct_dataset(StudyInstanceUID=study, PatientID="PID-DW-STOW")
    other = ct_dataset(PatientID="PID-DW-STOW")
    body = _multipart([("application/dicom", to_bytes(good)), ("application/dicom", b"not dicom at all"),
                       ("application/dicom", to_bytes(other))])  # fmt: skip
    r = _stow(node, f"/studies/{study}", body, CT_RELATED)
    assert r.status_code == 202, r.text
    assert r.headers["Content-Type"].startswith("application/dicom+json")
    response = Dataset.from_json(r.json())
    assert [i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence] == [good.SOPInstanceUID]
    stored_url = response.ReferencedSOPSequence[0].RetrieveURL
    assert stored_url.endswith(f"/studies/{study}/series/{good.SeriesInstanceUID}/instances/{good.SOPInstanceUID}")
    assert node.session().get(_on_node(node, stored_url)).status_code == 200
    assert response.RetrieveURL.endswith(f"/studies/{study}")
    reasons = {i.get("ReferencedSOPInstanceUID", ""): i.FailureReason for i in response.FailedSOPSequence}
    assert reasons == {"": 0xC000, other.SOPInstanceUID: 0xA900}
    # only the good part was stored, through the one ingest path: the REST API shows it from a user
    found = client.search_for_instances(search_filters={"SOPInstanceUID": other.SOPInstanceUID})
    assert found == []
    assert len(client.search_for_instances(study)) == 1
    source = _rest(node, "metadata", "series", str(_series_id(node, good.SeriesInstanceUID)), "source")
    assert source["source_type"] == "user"

    all_bad = _stow(node, f"/studies/{study}", _multipart([("application/dicom", b"junk")]), CT_RELATED)
    assert all_bad.status_code == 409
    assert Dataset.from_json(all_bad.json()).FailedSOPSequence[0].FailureReason == 0xC000


def test_store_refuses_bad_requests(node: NodeProcess) -> None:
    data = to_bytes(ct_dataset())
    assert _stow(node, "/studies", data, "application/dicom").status_code == 415
    assert _stow(node, "/studies", _multipart([("application/dicom", data)]),
                 'multipart/related; type="application/dicom+xml"; boundary=b0undary').status_code == 415  # fmt: skip
    assert _stow(node, "/studies", b"--nope\r\n", CT_RELATED).status_code == 400
    assert _stow(node, "/studies", data, 'multipart/related; type="application/dicom"').status_code == 400
    truncated = _multipart([("application/dicom", data)])[:-20]
    assert _stow(node, "/studies", truncated, CT_RELATED).status_code == 400


def test_dicomweb_requires_authentication(node: NodeProcess) -> None:
    base = node.url.rstrip("/") + "/slicebox/dicom-web"
    for path in ("/studies", "/series", "/instances", f"/studies/{STUDY_A}", f"/studies/{STUDY_A}/metadata"):
        r = requests.get(base + path, timeout=30)
        assert r.status_code in (401, 403), (path, r.status_code)
        assert b"Doe" not in r.content
    assert requests.post(base + "/studies", data=b"", headers={"Content-Type": CT_RELATED}).status_code in (401, 403)
