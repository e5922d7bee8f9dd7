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


def _hu_volume(datasets: list[pydicom.Dataset], patient: str, modality: str = "CT") -> np.ndarray:
    series = sorted(
        (ds for ds in datasets if ds.PatientName == patient and ds.Modality == modality),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in series])


def _share(volume: np.ndarray, low: float, high: float) -> float:
    return float(np.mean((volume >= low) & (volume < high)))


def test_ct_chest_is_a_body_every_window_shows_something_in(tmp_path: Path):
    datasets = _read(make_sample_files(tmp_path))
    ct = sorted((ds for ds in datasets if ds.PatientName == "Andersson^Anna" and ds.Modality == "CT"),
                key=lambda ds: float(ds.ImagePositionPatient[2]))  # fmt: skip
    assert (ct[0].Rows, ct[0].Columns) == (256, 256)
    z = [float(ds.ImagePositionPatient[2]) for ds in ct]
    assert np.allclose(np.diff(z), float(ct[0].SliceThickness))
    assert len({ds.FrameOfReferenceUID for ds in ct}) == 1
    # a body of a chest's size: about 33 x 23 cm across, in air
    hu = _hu_volume(datasets, "Andersson^Anna")
    middle = hu[len(hu) // 2]
    spacing = float(ct[0].PixelSpacing[0])
    body = middle > -500
    columns, rows = np.flatnonzero(body.any(axis=0)), np.flatnonzero(body.any(axis=1))
    width, depth = (columns[-1] - columns[0]) * spacing, (rows[-1] - rows[0]) * spacing
    assert 280 < width < 380 and 180 < depth < 260, (width, depth)
    assert np.median(hu[:, :5, :5]) < -950
    # every tissue at its usual HU, each a real share of the volume (what the windows are for)
    assert _share(hu, -920, -780) > 0.05  # lung parenchyma: the lung window
    assert _share(hu, -140, -60) > 0.03  # fat
    assert _share(hu, 20, 80) > 0.03  # muscle, myocardium: the soft-tissue and brain windows
    assert _share(hu, 180, 350) > 0.002  # contrast in the heart and aorta
    assert _share(hu, 600, 1300) > 0.002  # cortical bone: the bone window
    # two lungs, one each side of the midline, and the spine behind the middle
    left, right = middle[:, :128], middle[:, 128:]
    assert ((left > -920) & (left < -780)).sum() > 1500 and ((right > -920) & (right < -780)).sum() > 1500
    spine = middle[150:210, 118:138]
    assert (spine > 600).any()


def test_ct_abdomen_and_mr_head_show_their_organs(tmp_path: Path):
    datasets = _read(make_sample_files(tmp_path))
    abdomen = _hu_volume(datasets, "Berg^Erik")
    assert _share(abdomen, 85, 130) > 0.02  # liver and spleen, portal venous
    assert _share(abdomen, 150, 220) > 0.002  # kidney cortex, aorta
    assert _share(abdomen, -140, -60) > 0.05  # fat
    assert _share(abdomen, -1100, -900) > 0.2  # air around, and gas in the bowel and stomach
    mr = np.stack([ds.pixel_array for ds in sorted(
        (ds for ds in datasets if ds.Modality == "MR"), key=lambda ds: float(ds.ImagePositionPatient[2]))])  # fmt: skip
    brain = mr[len(mr) // 2]
    # T1: white matter brighter than grey, CSF darker, scalp fat brightest; each a real population
    for low, high in ((150, 350), (550, 700), (800, 950), (1250, 1500)):
        assert np.mean((brain >= low) & (brain < high)) > 0.004, (low, high)


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
