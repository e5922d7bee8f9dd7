"""The sample data the project makes itself (slicebox_lab/sample.py): valid, realistic, stable, accepted by a node."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from helpers import body_json

from slicebox_lab.sample import SAMPLE_PATIENTS, make_sample_files

DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


def _read(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def test_three_patients_five_series_of_the_promised_kinds(tmp_path: Path):
    paths = make_sample_files(tmp_path / "sample")
    assert all(p.is_file() and p.is_relative_to(tmp_path / "sample") for p in paths)
    datasets = _read(paths)
    assert {str(ds.PatientName) for ds in datasets} == {p.PatientName for p in SAMPLE_PATIENTS}
    per_series = Counter((ds.SeriesInstanceUID, ds.Modality, ds.SOPClassUID.name) for ds in datasets)
    kinds = sorted((modality, sop, n) for (_, modality, sop), n in per_series.items())
    assert kinds == [
        ("CT", "CT Image Storage", 40),
        ("CT", "CT Image Storage", 40),
        ("MR", "MR Image Storage", 20),
        ("OT", "Multi-frame Grayscale Byte Secondary Capture Image Storage", 1),
        ("OT", "Secondary Capture Image Storage", 1),
    ]
    # every SOP instance once, and Part-10 files that pydicom decodes
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        ds.pixel_array  # noqa: B018  (decodes, or raises)


def test_ct_phantom_has_spheres_of_different_hu_on_a_consistent_geometry(tmp_path: Path):
    datasets = [ds for ds in _read(make_sample_files(tmp_path)) if ds.PatientName == "Andersson^Anna"]
    ct = sorted((ds for ds in datasets if ds.Modality == "CT"), key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert (ct[0].Rows, ct[0].Columns) == (128, 128)
    z = [float(ds.ImagePositionPatient[2]) for ds in ct]
    assert np.allclose(np.diff(z), float(ct[0].SliceThickness))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ct])
    assert np.median(hu[:, 0, 0]) < -900  # air outside the body
    # the four spheres (bone, fat, contrast, lung) show up as four distinct HU populations
    rounded = np.round(hu / 50) * 50
    values, counts = np.unique(rounded, return_counts=True)
    present = {int(v) for v, c in zip(values, counts, strict=True) if c > 150}
    assert {-1000, 0, 700, -100, 200, -800} <= present
    assert len({ds.FrameOfReferenceUID for ds in ct}) == 1


def test_identifiers_to_remove_are_there(tmp_path: Path):
    ds = _read(make_sample_files(tmp_path)[:1])[0]
    patient = next(p for p in SAMPLE_PATIENTS if p.PatientName == str(ds.PatientName))
    assert ds.PatientID == patient.PatientID and ds.PatientBirthDate == patient.PatientBirthDate
    for keyword in (
        "PatientAddress",
        "OtherPatientIDs",
        "InstitutionName",
        "ReferringPhysicianName",
        "AccessionNumber",
        "OperatorsName",
        "StationName",
    ):
        assert str(ds.get(keyword, "")), keyword
    private = ds.private_block(0x0019, "SLICEBOX_LAB SAMPLE")
    assert patient.PatientID in private[0x10].value


def test_the_multiframe_and_rgb_captures(tmp_path: Path):
    datasets = _read(make_sample_files(tmp_path))
    cine = next(ds for ds in datasets if ds.get("NumberOfFrames"))
    assert int(cine.NumberOfFrames) == 12 and cine.pixel_array.shape == (12, 128, 128)
    rgb = next(ds for ds in datasets if ds.PhotometricInterpretation == "RGB")
    assert rgb.pixel_array.shape == (128, 128, 3)
    # no burned-in text: the node lets them leave de-identified
    assert cine.BurnedInAnnotation == rgb.BurnedInAnnotation == "NO"


def test_made_twice_the_same_instances(tmp_path: Path):
    first = _read(make_sample_files(tmp_path / "a"))
    second = _read(make_sample_files(tmp_path / "b"))
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]
    assert [ds.StudyInstanceUID for ds in first] == [ds.StudyInstanceUID for ds in second]
    assert first[0].PixelData == second[0].PixelData


def test_command_line_writes_a_folder(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "slicebox_lab.sample", "--into", str(tmp_path / "dicom")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "wrote 102 sample files" in out.stdout
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == 102


async def test_a_node_stores_all_of_it_and_de_identifies_it(api, tmp_path: Path):
    images = []
    for path in make_sample_files(tmp_path):
        r = await api("images", method="POST", body=path.read_bytes(), headers=DICOM)
        assert r.code == 201, r.body
        images.append(body_json(r))
    patients = body_json(await api("metadata", "patients"))
    assert sorted(p["PatientName"] for p in patients) == sorted(p.PatientName for p in SAMPLE_PATIENTS)
    series = body_json(await api("metadata", "flatseries", params={"count": 100}))
    assert len(series) == 5
    assert len({image["id"] for image in images}) == 102
    # every sample image renders, the multi-frame and RGB ones included
    for image in images[-3:] + images[:1]:
        r = await api("images", image["id"], "png")
        assert r.code == 200 and r.body[:4] == b"\x89PNG"
    # and de-identifies: identifiers gone, the private tag with the patient's ID in it gone
    r = await api("images", images[0]["id"], "anonymized", method="POST", body=b"", headers=JSON)
    assert r.code == 200, r.body
    anonymized = pydicom.dcmread(io.BytesIO(r.body))
    text = str(anonymized)
    for patient in SAMPLE_PATIENTS:
        assert patient.PatientID not in text and patient.PatientAddress not in text
    assert "Sahlgrenska" not in text


def test_into_node_loads_a_stopped_node_once(tmp_path: Path):
    """What Binder's postBuild and start run: the node's own ingest, then nothing on the next launch."""
    from slicebox_lab.sample import DemoNode, load_into_node

    data = tmp_path / "node-data"
    assert load_into_node(data) == 102
    assert load_into_node(data) == 0  # files there already: not even started
    with DemoNode.start(data) as node:
        sbx = node.client()
        assert sorted(sbx.patients().PatientName) == sorted(p.PatientName for p in SAMPLE_PATIENTS)
        assert len(sbx.flat_series()) == 5
    assert node.process.poll() is not None
