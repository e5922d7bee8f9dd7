"""A private Orthanc as a DICOM peer of the tests: its own configuration, storage and index in a
temporary folder, a free HTTP port and a free DICOM port on 127.0.0.1, always stopped.

Started by ``bench/harness.py``'s :func:`running_orthanc` (one way to run Orthanc), with its DICOM
server enabled (AE title ``ORTHANC``) and C-FIND/C-GET/C-MOVE allowed from any calling AE.  Our
node's SCPs are made known to it at run time through its REST API (:meth:`Orthanc.add_modality`).
Skips the test when ``/usr/sbin/Orthanc`` is not installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

_BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import harness  # noqa: E402

ORTHANC_AE = "ORTHANC"


@dataclass
class Orthanc:
    """A running private Orthanc: REST at ``url``, DICOM at ``ae_title``@127.0.0.1:``dicom_port``."""

    url: str
    dicom_port: int
    ae_title: str
    session: requests.Session

    def get(self, path: str) -> Any:
        response = self.session.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, payload: Any = None, data: bytes | None = None) -> Any:
        if data is not None:
            response = self.session.post(self.url + path, data=data, timeout=60, headers=harness.DICOM)
        else:
            response = self.session.post(self.url + path, json=payload, timeout=60)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, data: bytes) -> str:
        """``POST /instances``: the new instance's Orthanc id."""
        return str(self.post("/instances", data=data)["ID"])

    def add_modality(self, name: str, ae_title: str, port: int, host: str = "127.0.0.1") -> None:
        """``PUT /modalities/{name}``: a DICOM node Orthanc may C-FIND, C-MOVE to and from."""
        response = self.session.put(
            f"{self.url}/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port}, timeout=30
        )
        response.raise_for_status()

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])


def orthanc_installed() -> None:
    if not os.access(harness.ORTHANC, os.X_OK):
        pytest.skip("Orthanc not installed: apt-get install orthanc")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One private Orthanc per test module (tests use their own UIDs)."""
    orthanc_installed()
    dicom_port = harness.free_port()
    overrides = {
        "Name": "test-orthanc",
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomModalities": {},
    }
    with harness.running_orthanc(tmp_path_factory.mktemp("orthanc"), **overrides) as process:
        with process.session() as session:
            yield Orthanc(process.url, dicom_port, ORTHANC_AE, session)
