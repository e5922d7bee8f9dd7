"""Orthanc with its Debian DICOMweb plugin (orthanc-dicomweb) uses the node as a DICOMweb server:
it queries the node (QIDO-RS) and retrieves a whole study from it (WADO-RS), as a PACS would."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e.nodeproc import NodeProcess, start_node
from generators import ct_bytes
from pydicom.uid import generate_uid

_BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import harness  # noqa: E402

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
IDENTITY = {"Accept-Encoding": "identity"}

pytestmark = pytest.mark.orthanc


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = start_node(tmp_path / "node", tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def orthanc(tmp_path: Path, node: NodeProcess) -> Iterator[harness.OrthancProcess]:
    if not os.access(harness.ORTHANC, os.X_OK):
        pytest.skip(f"Orthanc not installed ({harness.ORTHANC}): apt-get install orthanc")
    if not os.path.exists(PLUGIN):
        pytest.skip(f"Orthanc's DICOMweb plugin is missing ({PLUGIN}): apt-get install orthanc-dicomweb")
    dicomweb = {
        "Enable": True,
        "Root": "/dicom-web/",
        "Servers": {
            "sbx": {
                "Url": node.url.rstrip("/") + "/slicebox/dicom-web/",
                "HttpHeaders": {"Authorization": f"token {node.token}"},
            }
        },
    }
    with harness.running_orthanc(tmp_path / "orthanc", Plugins=[PLUGIN], DicomWeb=dicomweb) as process:
        yield process


def _post(orthanc: harness.OrthancProcess, path: str, body: Any) -> Any:
    r = requests.post(orthanc.url + path, data=json.dumps(body), headers=IDENTITY, timeout=120)
    assert r.status_code == 200, (path, r.status_code, r.text, orthanc.log_path.read_text()[-3000:])
    return r.json()


def _get(orthanc: harness.OrthancProcess, path: str) -> Any:
    r = requests.get(orthanc.url + path, headers=IDENTITY, timeout=60)
    r.raise_for_status()
    return r.json()


def test_orthanc_queries_and_retrieves_a_study(node: NodeProcess, orthanc: harness.OrthancProcess) -> None:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    sent: dict[str, bytes] = {}
    session = node.session()
    for n in range(5):
        sop = generate_uid()
        data = ct_bytes(
            PatientName="Orthanc^Test",
            PatientID="PID-ORTHANC",
            StudyInstanceUID=study,
            SeriesInstanceUID=series[n % 2],
            SOPInstanceUID=sop,
            InstanceNumber=n + 1,
            seed=n,
        )
        r = session.post(node.api + "/images", data=data, headers={"Content-Type": "application/dicom"}, timeout=30)
        assert r.status_code == 201, r.text
        sent[sop] = data
    # an unrelated study, which Orthanc must not get
    r = session.post(
        node.api + "/images", data=ct_bytes(PatientID="OTHER"), headers={"Content-Type": "application/dicom"}
    )
    assert r.status_code == 201

    assert "sbx" in _get(orthanc, "/dicom-web/servers")
    found = _post(
        orthanc, "/dicom-web/servers/sbx/qido", {"Uri": "/studies", "Arguments": {"PatientID": "PID-ORTHANC"}}
    )
    # Orthanc answers the node's DICOM JSON in its own form: {"Name": ..., "Value": "<text>", "vr": ...}
    assert [item["0020000D"]["Value"] for item in found] == [study]
    assert found[0]["00100010"]["Value"] == "Orthanc^Test"
    in_series = _post(orthanc, "/dicom-web/servers/sbx/qido", {"Uri": f"/studies/{study}/series"})
    assert {item["0020000E"]["Value"] for item in in_series} == set(series)

    _post(orthanc, "/dicom-web/servers/sbx/retrieve", {"Resources": [{"Study": study}]})

    instances = _get(orthanc, "/instances?expand")
    held = {i["MainDicomTags"]["SOPInstanceUID"] for i in instances}
    assert held == set(sent)
    studies = _get(orthanc, "/studies?expand")
    assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [study]
    # the files arrived intact: WADO-RS sends the stored files as they are
    for instance in instances:
        r = requests.get(f"{orthanc.url}/instances/{instance['ID']}/file", headers=IDENTITY, timeout=60)
        assert r.content == sent[instance["MainDicomTags"]["SOPInstanceUID"]]
