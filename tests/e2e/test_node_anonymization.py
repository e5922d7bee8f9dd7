"""`jupyter slicebox` as a process: anonymous values survive a restart (the secret is in the data directory)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from generators import ct_bytes
from nodeproc import start_node

DICOM = {"Content-Type": "application/dicom"}


def test_anonymized_uids_are_the_same_after_a_restart(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    try:
        s = node.session()
        image_id = s.post(node.api + "/images", data=ct_bytes(PatientID="RESTART"), headers=DICOM).json()["id"]
        first = pydicom.dcmread(io.BytesIO(s.post(f"{node.api}/images/{image_id}/anonymized", json={}).content))
    finally:
        node.stop()
    node = start_node(data_dir, tmp_path)
    try:
        r = node.session().post(f"{node.api}/images/{image_id}/anonymized", json={})
        assert r.status_code == 200, r.text
        second = pydicom.dcmread(io.BytesIO(r.content))
    finally:
        node.stop()
    assert first.PatientIdentityRemoved == "YES"
    assert (second.PatientID, second.StudyInstanceUID, second.SOPInstanceUID) == (
        first.PatientID,
        first.StudyInstanceUID,
        first.SOPInstanceUID,
    )
