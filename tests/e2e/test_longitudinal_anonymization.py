"""Issue 4 acceptance on a real `jupyter slicebox`: longitudinal pseudonyms across restarts, referential
integrity of a CT plus the RT structure set that references it, validated with dicom3tools' dciodvfy."""

from __future__ import annotations

import datetime
import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from generators import rt_structure_set, to_bytes
from nodeproc import start_node
from pydicom.data import get_testdata_file

DICOM = {"Content-Type": "application/dicom"}
MODIFIED_DATES = {"options": ["RETAIN_LONGITUDINAL_MODIFIED_DATES"]}
DCIODVFY = shutil.which("dciodvfy")


def study(date: str, study_uid: str) -> pydicom.Dataset:
    """pydicom's bundled CT (a well-formed IOD) as a study of one patient on ``date``."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.PatientName, ct.PatientID = "Longitudinal^Lena", "MRN-LONG-1"
    ct.StudyDate = ct.SeriesDate = ct.AcquisitionDate = ct.ContentDate = date
    ct.StudyInstanceUID = study_uid
    ct.SeriesInstanceUID = study_uid + ".1"
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = study_uid + ".1.1"
    return ct


def anonymized(node, image_id: int, body: dict) -> pydicom.Dataset:
    r = node.session().post(f"{node.api}/images/{image_id}/anonymized", json=body)
    assert r.status_code == 200, r.text
    return pydicom.dcmread(io.BytesIO(r.content))


def upload(node, ds: pydicom.Dataset) -> int:
    r = node.session().post(node.api + "/images", data=to_bytes(ds), headers=DICOM)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_two_studies_a_week_apart_across_a_restart_share_the_pseudonym_and_the_interval(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    try:
        first = anonymized(node, upload(node, study("20240101", "1.2.826.0.1.3680043.10.4242.1")), MODIFIED_DATES)
    finally:
        node.stop()
    node = start_node(data_dir, tmp_path)  # a week later, a new process
    try:
        second = anonymized(node, upload(node, study("20240108", "1.2.826.0.1.3680043.10.4242.2")), MODIFIED_DATES)
        keys = node.session().get(node.api + "/anonymization/keys", params={"orderby": "id"}).json()
    finally:
        node.stop()
    assert first.PatientID == second.PatientID and first.PatientName == second.PatientName
    assert first.PatientID != "MRN-LONG-1"
    day = datetime.date.fromisoformat
    interval = day(_iso(second.StudyDate)) - day(_iso(first.StudyDate))
    assert interval == datetime.timedelta(days=7)
    assert first.StudyDate != "20240101"  # shifted, not kept
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [k["AnonPatientID"] for k in keys] == [first.PatientID, second.PatientID]  # keys survived the restart


def _iso(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}"


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools)")
def test_ct_and_structure_set_still_reference_each_other_with_no_new_dciodvfy_errors(tmp_path: Path):
    ct = study("20240101", "1.2.826.0.1.3680043.10.4243.1")
    rs = rt_structure_set(ct)
    node = start_node(tmp_path / "node", tmp_path)
    try:
        ct_id, rs_id = upload(node, ct), upload(node, rs)
        results = {}
        for name, body in (
            ("basic", {}),
            ("clean+dates", {"options": ["CLEAN_DESCRIPTORS", *MODIFIED_DATES["options"]]}),
        ):
            results[name] = (anonymized(node, ct_id, body), anonymized(node, rs_id, body))
    finally:
        node.stop()
    for name, (a_ct, a_rs) in results.items():
        frame = a_rs.ReferencedFrameOfReferenceSequence[0]
        series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert frame.FrameOfReferenceUID == a_ct.FrameOfReferenceUID != ct.FrameOfReferenceUID, name
        assert series.SeriesInstanceUID == a_ct.SeriesInstanceUID, name
        assert series.ContourImageSequence[0].ReferencedSOPInstanceUID == a_ct.SOPInstanceUID, name
        assert a_rs.StudyInstanceUID == a_ct.StudyInstanceUID != ct.StudyInstanceUID, name
        for original, output in ((ct, a_ct), (rs, a_rs)):
            new = _errors(tmp_path, output) - _errors(tmp_path, original)
            assert not new, (name, original.Modality, sorted(new))


def _errors(tmp_path: Path, ds: pydicom.Dataset) -> set[str]:
    """dciodvfy's Error lines (warnings, e.g. about values a DICOMDIR would need, are not errors)."""
    path = tmp_path / "check.dcm"
    path.write_bytes(to_bytes(ds))
    out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}
