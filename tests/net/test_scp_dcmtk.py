"""The SCP against real dcmtk peers: echoscu, storescu, findscu, getscu, movescu → storescp."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import netutil
import pydicom
from generators import ct_bytes
from netutil import DCMTK_ENV, SCP_AE, dcmtk, free_port, run_dcmtk, wait_listening, write_series
from pydicom.uid import generate_uid

from slicebox_lab.context import SliceboxContext
from slicebox_lab.model import Source
from slicebox_lab.net import nodes
from slicebox_lab.net.nodes import ScpConfig

# the shared fixtures (tests/net has no conftest.py: it would shadow tests/conftest.py)
context = netutil.context
scp_service = netutil.scp_service
scp = netutil.scp


def _peer(scp: ScpConfig) -> list[str]:
    return ["127.0.0.1", str(scp.port)]


def test_echo_and_wrong_called_ae_title(scp: ScpConfig):
    ok = run_dcmtk("echoscu", "-aec", SCP_AE, *_peer(scp))
    assert ok.returncode == 0, ok.stderr
    wrong = run_dcmtk("echoscu", "-aec", "NOT-THE-SCP", *_peer(scp))
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr
    # the listener keeps serving
    assert run_dcmtk("echoscu", "-aec", SCP_AE, *_peer(scp)).returncode == 0


def test_storescu_folder_of_100_files_over_one_association(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    paths = write_series(tmp_path / "in", 100, PatientID="STORE-100")
    result = run_dcmtk("storescu", "-v", "-aec", SCP_AE, "+sd", *_peer(scp), str(tmp_path / "in"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Requesting Association") == 1, result.stderr[:2000]
    assert context.index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 100}
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    flat = context.index.list_flat_series()
    images = context.index.images_of_series(flat[0].id)
    assert {image.SOPInstanceUID for image in images} == sent
    source = context.index.series_source(flat[0].id)
    assert (source.source_type, source.source_name) == ("scp", scp.name)
    # the stored objects are the ones sent
    original = pydicom.dcmread(paths[7])
    image = next(i for i in images if i.SOPInstanceUID == original.SOPInstanceUID)
    stored = pydicom.dcmread(io.BytesIO(context.image_bytes(image.id)))
    assert stored.PixelData == original.PixelData and stored.PatientID == "STORE-100"


def _fill(context: SliceboxContext) -> dict[str, str]:
    """Two patients; P1 has two studies (2024, 2023), the first with two series."""
    uids = {name: generate_uid() for name in ("st1", "st2", "st3", "se1", "se2", "se3", "se4")}
    plan = [
        ("Doe^John", "P1", "st1", "se1", "20240102", "CT", 3),
        ("Doe^John", "P1", "st1", "se2", "20240102", "MR", 2),
        ("Doe^John", "P1", "st2", "se3", "20230505", "CT", 1),
        ("Roe^Jane", "P2", "st3", "se4", "20220707", "CT", 2),
    ]
    for name, pid, study, series, date, modality, count in plan:
        for n in range(count):
            data = ct_bytes(
                PatientName=name,
                PatientID=pid,
                StudyInstanceUID=uids[study],
                SeriesInstanceUID=uids[series],
                StudyDate=date,
                Modality=modality,
                InstanceNumber=n + 1,
            )
            context.ingest(data, Source("user", "test"))
    return uids


def _findscu(scp: ScpConfig, tmp_path: Path, model: str, *keys: str) -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-aec", SCP_AE, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk("findscu", *args, *_peer(scp))
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_at_every_level(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    uids = _fill(context)
    patients = _findscu(scp, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName", "PatientID")
    assert sorted((str(d.PatientName), d.PatientID) for d in patients) == [("Doe^John", "P1"), ("Roe^Jane", "P2")]

    studies = _findscu(
        scp, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=P1", "StudyDate", "PatientName"
    )
    assert sorted(d.StudyInstanceUID for d in studies) == sorted([uids["st1"], uids["st2"]])
    assert all(str(d.PatientName) == "Doe^John" for d in studies)
    in_2024 = _findscu(
        scp, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20240101-20241231"
    )
    assert [d.StudyInstanceUID for d in in_2024] == [uids["st1"]]
    wildcard = _findscu(scp, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=R*", "PatientID")
    assert [d.PatientID for d in wildcard] == ["P2"]

    series = _findscu(
        scp,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={uids['st1']}",
        "SeriesInstanceUID",
        "Modality",
    )
    assert sorted((d.SeriesInstanceUID, d.Modality) for d in series) == sorted(
        [(uids["se1"], "CT"), (uids["se2"], "MR")]
    )
    listed = _findscu(
        scp, tmp_path, "-S", "QueryRetrieveLevel=SERIES", "SeriesInstanceUID", "Modality=MR\\XA", "StudyInstanceUID"
    )
    assert [d.SeriesInstanceUID for d in listed] == [uids["se2"]]

    images = _findscu(
        scp,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={uids['st1']}",
        f"SeriesInstanceUID={uids['se1']}",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
    )
    expected = {i.SOPInstanceUID for i in context.index.images_of_series(_series_id(context, uids["se1"]))}
    assert {d.SOPInstanceUID for d in images} == expected
    assert sorted(int(d.InstanceNumber) for d in images) == [1, 2, 3]
    assert all(d.Rows == 16 for d in images)  # not indexed: read from the stored file


def _series_id(context: SliceboxContext, uid: str) -> int:
    return next(f.id for f in context.index.list_flat_series(count=100) if f.series.SeriesInstanceUID == uid)


def test_getscu_retrieves_exactly_one_series(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    uids = _fill(context)
    out = tmp_path / "got"
    out.mkdir()
    result = run_dcmtk(
        "getscu",
        "-S",
        "-aec",
        SCP_AE,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={uids['st1']}",
        "-k",
        f"SeriesInstanceUID={uids['se1']}",
        *_peer(scp),
    )
    assert result.returncode == 0, result.stderr
    got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
    expected = {i.SOPInstanceUID for i in context.index.images_of_series(_series_id(context, uids["se1"]))}
    assert got == expected and len(got) == 3


def test_movescu_to_a_storescp_retrieves_exactly_one_series(scp: ScpConfig, context: SliceboxContext, tmp_path: Path):
    uids = _fill(context)
    out = tmp_path / "moved"
    out.mkdir()
    port = free_port()
    storescp = subprocess.Popen(
        # dcmtk 3.6.7's storescp cannot bind one address: it listens on every interface
        [dcmtk("storescp"), "-aet", "DEST", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port)
        nodes.add_scu(context.index, "destination", "DEST", "127.0.0.1", port)
        keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={uids['st1']}"]
        keys += ["-k", f"SeriesInstanceUID={uids['se2']}"]
        result = run_dcmtk("movescu", "-S", "-aec", SCP_AE, "-aem", "DEST", *keys, *_peer(scp))
        assert result.returncode == 0, result.stderr
        got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
        expected = {i.SOPInstanceUID for i in context.index.images_of_series(_series_id(context, uids["se2"]))}
        assert got == expected and len(got) == 2

        unknown = run_dcmtk("movescu", "-S", "-aec", SCP_AE, "-aem", "NOBODY", *keys, *_peer(scp))
        assert unknown.returncode != 0 and "MoveDestinationUnknown" in unknown.stderr, unknown.stderr
    finally:
        storescp.terminate()
        storescp.wait(10)
