"""Sample data the project makes itself: a few synthetic patients to try the node, the tutorials and the dashboards.

No network and no real people: pydicom writes Part-10 files of three made-up patients, each with
realistic identifiers (names, IDs, birth dates, addresses, accession numbers, physicians, a
private tag) so that de-identification has something to remove:

* ``Andersson^Anna`` — a contrast CT chest (40 slices of 256×256, 5 mm) and a T1 MR head (20 slices);
* ``Berg^Erik`` — a portal venous CT abdomen (40 slices of 256×256, 5 mm);
* ``Lindqvist^Maria`` — a multi-frame secondary capture (a 12-frame cine) and an RGB secondary capture.

The images are drawn bodies (:mod:`slicebox_lab.sample.phantom`): lungs with vessels, heart and aorta
with contrast, liver, kidneys, spine and ribs at their usual Hounsfield units and sizes, so the lung,
bone and soft-tissue windows each show what they are for; a head with grey and white matter, CSF and
scalp fat for the MR.  UIDs are derived from fixed seeds, so making the files twice gives the same instances (uploading
them again replaces, it does not duplicate).  Use it from Python::

    from slicebox_lab.sample import make_sample_files
    files = make_sample_files("sample-dicom")

or from a shell, into a folder or straight into a running node::

    python -m slicebox_lab.sample --into sample-dicom
    python -m slicebox_lab.sample --into http://127.0.0.1:8888/ --token TOKEN
    python -m slicebox_lab.sample --into node     # the data folder of this machine's node (it must be stopped)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from . import phantom

__all__ = ["SAMPLE_PATIENTS", "DemoNode", "make_sample_files", "upload_files", "load_into_node", "main"]

#: the root of every UID the sample data uses (pydicom's, with a hash of a fixed seed)
_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1289.9")


def _uid(*seed: object) -> str:
    """A UID that is always the same for the same seed: re-made samples are the same instances."""
    return generate_uid(entropy_srcs=["slicebox_lab.sample", *map(str, seed)])


@dataclass(frozen=True)
class _Patient:
    PatientName: str
    PatientID: str
    PatientBirthDate: str
    PatientSex: str
    PatientAddress: str
    OtherPatientIDs: str
    PatientTelephoneNumbers: str


#: the made-up patients; their identifiers look real on purpose (a de-identification test needs them)
SAMPLE_PATIENTS: tuple[_Patient, ...] = (
    _Patient(
        "Andersson^Anna",
        "19560412-2384",
        "19560412",
        "F",
        "Storgatan 12, 411 38 Göteborg",
        "MRN-7781203",
        "+46 31 123 45 67",
    ),
    _Patient(
        "Berg^Erik",
        "19481103-5517",
        "19481103",
        "M",
        "Kungsgatan 5, 111 43 Stockholm",
        "MRN-6610045",
        "+46 8 765 43 21",
    ),
    _Patient(
        "Lindqvist^Maria",
        "19790227-4402",
        "19790227",
        "F",
        "Drottninggatan 81, 753 10 Uppsala",
        "MRN-9912788",
        "+46 18 55 66 77",
    ),
)


def _base(patient: _Patient, sop_class: str, study: str, series: str, sop_instance: str) -> Dataset:
    """The patient/study/series part every sample image shares, with identifiers to de-identify."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = _IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.PatientName = patient.PatientName
    ds.PatientID = patient.PatientID
    ds.IssuerOfPatientID = "SAHLGRENSKA"
    ds.PatientBirthDate = patient.PatientBirthDate
    ds.PatientSex = patient.PatientSex
    ds.PatientAddress = patient.PatientAddress
    ds.OtherPatientIDs = patient.OtherPatientIDs
    ds.PatientTelephoneNumbers = patient.PatientTelephoneNumbers
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.InstitutionName = "Sahlgrenska University Hospital"
    ds.InstitutionAddress = "Blå stråket 5, 413 45 Göteborg"
    ds.ReferringPhysicianName = "Nilsson^Karin^^Dr"
    ds.PerformingPhysicianName = "Holm^Johan"
    ds.OperatorsName = "Svensson^Lena"
    ds.StationName = "CT-SU-02"
    ds.Manufacturer = "slicebox_lab"
    ds.ManufacturerModelName = "Synthetic phantom"
    # a private block with an identifier inside, as scanners write them
    block = ds.private_block(0x0019, "SLICEBOX_LAB SAMPLE", create=True)
    block.add_new(0x10, "LO", f"Scanned for {patient.PatientName} ({patient.PatientID})")
    return ds


def _set_pixels(ds: Dataset, array: np.ndarray) -> None:
    """Pixel module attributes for a monochrome uint8/uint16 or RGB uint8 array (rows, cols[, 3]) or frames."""
    color = array.ndim >= 3 and array.shape[-1] == 3
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    bits = array.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(array.shape[-3 if color else -2]), int(array.shape[-2 if color else -1])
    ds.PixelData = np.ascontiguousarray(array).tobytes()


def _ct_series(
    patient: _Patient,
    key: str,
    description: str,
    body_part: str,
    hu: np.ndarray,
    *,
    study: str,
    study_date: str,
    accession: str,
    spacing: tuple[float, float, float] = (5.0, 1.5625, 1.5625),
) -> list[Dataset]:
    """A CT series of axial images from a volume of HU (z, y, x), z from the feet up."""
    stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
    out = _axial_stack(patient, CTImageStorage, key, study, stored, spacing)
    for i, ds in enumerate(out):
        ds.Modality = "CT"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.ContentTime = f"1016{i % 60:02d}"
        ds.StudyID = "1"
        ds.AccessionNumber = accession
        ds.StudyDescription = f"CT {body_part.lower()} with contrast"
        ds.SeriesDescription = description
        ds.BodyPartExamined = body_part
        ds.SeriesNumber = 2
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    return out


def _mr_series(patient: _Patient, key: str, *, study: str, study_date: str, accession: str) -> list[Dataset]:
    """A T1-weighted MR head series (spin echo): scalp fat bright, white matter brighter than grey, CSF dark."""
    volume = np.clip(np.round(phantom.mr_head()), 0, 4095).astype(np.uint16)
    out = _axial_stack(patient, MRImageStorage, key, study, volume, (5.0, 0.9375, 0.9375))
    for i, ds in enumerate(out):
        ds.Modality = "MR"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = "143000"
        ds.StudyID = "2"
        ds.AccessionNumber = accession
        ds.StudyDescription = "MR head"
        ds.SeriesDescription = "T1 SE axial"
        ds.BodyPartExamined = "HEAD"
        ds.SeriesNumber = 3
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 15
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
        ds.WindowCenter = 700
        ds.WindowWidth = 1400
    return out


def _axial_stack(
    patient: _Patient, sop_class: str, key: str, study: str, volume: np.ndarray, spacing: tuple[float, float, float]
) -> list[Dataset]:
    """One image per slice of ``volume`` (z, y, x), head first supine, centred on the origin, z from the feet
    up, with its pixels: what a CT and an MR series share (the caller adds the modality's own attributes)."""
    slices, rows, _columns = volume.shape
    origin = -(rows - 1) / 2 * spacing[1]
    first_z = -(slices - 1) / 2 * spacing[0]
    series, frame_of_reference = _uid(key, "series"), _uid(key, "frame")
    out = []
    for i in range(slices):
        ds = _base(patient, sop_class, study, series, _uid(key, "image", i))
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.SliceThickness = spacing[0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin, origin, first_z + i * spacing[0]]
        ds.SliceLocation = first_z + i * spacing[0]
        _set_pixels(ds, volume[i])
        out.append(ds)
    return out


def _secondary_captures(patient: _Patient, key: str, *, study: str, study_date: str, accession: str) -> list[Dataset]:
    """A 12-frame grayscale cine (multi-frame SC) and one RGB 'screenshot' (SC); no burned-in text."""
    frames = 12
    yy, xx = np.mgrid[0:128, 0:128]
    cine = np.zeros((frames, 128, 128), dtype=np.uint8)
    for f in range(frames):
        radius = 20 + 12 * np.sin(2 * np.pi * f / frames)
        cine[f][(yy - 64) ** 2 + (xx - 64) ** 2 <= radius**2] = 200
        cine[f][(yy - 64) ** 2 + (xx - 64) ** 2 <= (radius * 0.6) ** 2] = 90
    multi = _base(
        patient,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        study,
        _uid(key, "series", "cine"),
        _uid(key, "image", "cine"),
    )
    multi.NumberOfFrames = frames
    multi.FrameIncrementPointer = 0x00181063  # FrameTime
    multi.FrameTime = 80.0
    multi.SeriesDescription = "Cardiac cine (secondary capture)"
    multi.SeriesNumber = 10
    _set_pixels(multi, cine)

    rgb = np.zeros((128, 128, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]
    rgb[..., 1] = np.linspace(0, 255, 128, dtype=np.uint8)[:, None]
    rgb[..., 2][(yy - 64) ** 2 + (xx - 64) ** 2 <= 30**2] = 255
    single = _base(patient, SecondaryCaptureImageStorage, study, _uid(key, "series", "rgb"), _uid(key, "image", "rgb"))
    single.SeriesDescription = "Perfusion map (secondary capture)"
    single.SeriesNumber = 11
    _set_pixels(single, rgb)

    out = []
    for ds in (multi, single):
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.BurnedInAnnotation = "NO"  # no text in the pixels, but captures are refused on the way out unless masked
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = "091000"
        ds.StudyID = "3"
        ds.AccessionNumber = accession
        ds.StudyDescription = "Cardiac MR post-processing"
        ds.InstanceNumber = 1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        out.append(ds)
    return out


def sample_datasets() -> list[Dataset]:
    """Every sample image as a pydicom Dataset (about 100 images, 3 patients, 5 series)."""
    anna, erik, maria = SAMPLE_PATIENTS
    return [
        *_ct_series(
            anna,
            "anna-ct",
            "Thorax 5 mm",
            "CHEST",
            phantom.ct_chest(),
            study=_uid("anna-ct", "study"),
            study_date="20240115",
            accession="A20240115-0042",
        ),
        *_mr_series(anna, "anna-mr", study=_uid("anna-mr", "study"), study_date="20240302", accession="A20240302-0917"),
        *_ct_series(
            erik,
            "erik-ct",
            "Abdomen 5 mm portal venous",
            "ABDOMEN",
            phantom.ct_abdomen(),
            study=_uid("erik-ct", "study"),
            study_date="20231120",
            accession="A20231120-0310",
        ),
        *_secondary_captures(
            maria, "maria-sc", study=_uid("maria-sc", "study"), study_date="20240510", accession="A20240510-1205"
        ),
    ]


def make_sample_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Write the sample images as Part-10 files under ``folder`` (created; one sub-folder per series)."""
    root = Path(folder)
    paths: list[Path] = []
    for ds in sample_datasets():
        name = str(ds.PatientName).split("^")[0].lower()
        series_dir = root / name / f"{int(ds.SeriesNumber):02d}-{ds.Modality}"
        series_dir.mkdir(parents=True, exist_ok=True)
        path = series_dir / f"{int(ds.InstanceNumber):03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def upload_files(url: str, token: str | None, files: Iterable[Path], *, timeout: float = 60) -> list[int]:
    """POST each file to a node's ``slicebox/api/images`` (token auth); the stored image ids.

    Plain HTTP (requests) so that it works without the notebook client, e.g. from a Binder ``start`` script."""
    import requests

    parts = urlsplit(url)
    token = token or parse_qs(parts.query).get("token", [""])[0] or os.environ.get("SLICEBOX_TOKEN") or None
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/", "", ""))
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"token {token}"
    ids: list[int] = []
    for path in files:
        response = session.post(
            base + "slicebox/api/images",
            data=Path(path).read_bytes(),
            headers={"Content-Type": "application/dicom"},
            timeout=timeout,
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{path}: the node answered {response.status_code}: {response.text[:300]}")
        ids.append(int(response.json()["id"]))
    return ids


class DemoNode:
    """A throwaway ``jupyter slicebox`` process on a loopback port, for tutorials and scripts: a second node
    to send to, a "PACS" to query. ``with DemoNode.start(folder) as node: node.client()``; ``stop()`` ends it.

    Its data lives in ``data_dir`` (a new temporary folder when None); its token is random."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str, workdir: Path, data_dir: Path) -> None:
        self.process, self.url, self.token, self.workdir, self.data_dir = process, url, token, workdir, data_dir

    @classmethod
    def start(cls, data_dir: str | os.PathLike[str] | None = None, *extra: str, timeout: float = 120) -> DemoNode:
        import json
        import secrets
        import tempfile
        import time

        import requests

        token = secrets.token_hex(16)
        workdir = Path(tempfile.mkdtemp(prefix="slicebox-node-"))
        data = Path(data_dir).resolve() if data_dir is not None else workdir / "data"
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(workdir), PYTHONUNBUFFERED="1")
        for name in ("SLICEBOX_URL", "SLICEBOX_TOKEN"):
            env.pop(name, None)
        command = [
            sys.executable,
            "-m",
            "slicebox_lab.app",
            "--ip=127.0.0.1",
            "--port=0",
            "--no-browser",
            f"--IdentityProvider.token={token}",
            "--SliceboxApp.fsync=False",
            f"--SliceboxApp.data_dir={data}",
            f"--ServerApp.root_dir={workdir}",
            *extra,
        ]
        log_path = workdir / "node.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        headers = {"Authorization": f"token {token}"}
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"jupyter slicebox did not start: {log_path.read_text()[-2000:]}")
            for info in workdir.glob("jpserver-*.json"):
                try:
                    url = json.loads(info.read_text())["url"]
                    requests.get(url + "slicebox/api/system/health", headers=headers, timeout=5).raise_for_status()
                except (ValueError, KeyError, requests.RequestException):
                    continue
                return cls(process, url, token, workdir, data)
            time.sleep(0.2)

    def client(self) -> Any:
        """A :class:`slicebox_lab.client.SliceboxClient` of this node."""
        from ..client import connect

        return connect(self.url, token=self.token)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> DemoNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else f"stopped ({self.process.returncode})"
        return f"<DemoNode {self.url} {state}, data in {self.data_dir}>"


def load_into_node(data_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> int:
    """Put the sample data into a stopped node's data folder (default: the one ``jupyter slicebox`` uses):
    start ``jupyter slicebox`` on a loopback port, upload (unless the node has patients already and not
    ``force``), stop it. Through the node's own ingest, so the files and the index are as any upload makes them.
    The number of images uploaded (0 when skipped)."""
    import tempfile

    import requests

    if data_dir is None:
        from jupyter_core.paths import jupyter_data_dir

        data_dir = Path(jupyter_data_dir()) / "slicebox"
    storage = Path(data_dir) / "dicom"
    # fast path (Binder's start runs this at every launch): files in the default storage folder already
    if not force and storage.is_dir() and any(p.is_file() for p in storage.rglob("*")):
        return 0
    with DemoNode.start(data_dir) as node:
        headers = {"Authorization": f"token {node.token}"}
        patients = requests.get(node.url + "slicebox/api/metadata/patients", headers=headers, timeout=30).json()
        if patients and not force:
            return 0
        with tempfile.TemporaryDirectory() as files:
            return len(upload_files(node.url, node.token, make_sample_files(files)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slicebox_lab.sample", description="Make the synthetic sample DICOM data (no network)."
    )
    parser.add_argument(
        "--into",
        required=True,
        help="a folder to write the files to; a running node's URL (http://host:port/[?token=...]) to upload to; "
        "or 'node': the data folder of this machine's stopped node (see --data-dir)",
    )
    parser.add_argument("--token", help="the node's token (default: ?token= in the URL, or $SLICEBOX_TOKEN)")
    parser.add_argument("--data-dir", help="with --into node: the node's data folder (default: jupyter slicebox's)")
    parser.add_argument("--force", action="store_true", help="with --into node: upload even if the node has patients")
    args = parser.parse_args(argv)
    if args.into == "node":
        count = load_into_node(args.data_dir, force=args.force)
        print(f"uploaded {count} sample images into the node" if count else "the node has patients already: skipped")
    elif args.into.startswith(("http://", "https://")):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ids = upload_files(args.into, args.token, make_sample_files(tmp))
        print(f"uploaded {len(ids)} sample images to {args.into.split('?')[0]}")
    else:
        files = make_sample_files(args.into)
        print(f"wrote {len(files)} sample files under {args.into}")
    return 0
