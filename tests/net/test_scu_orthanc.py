"""Orthanc as the PACS: this node C-FINDs it, C-MOVEs and C-GETs from it, C-STOREs to it; and
Orthanc C-FINDs this node and C-MOVEs from it (configured through Orthanc's REST API)."""

from __future__ import annotations

from typing import Any

import netutil
import pytest
from generators import ct_bytes
from netutil import SCP_AE
from orthanc_fixture import Orthanc, orthanc
from pydicom.uid import generate_uid

from slicebox_lab.context import SliceboxContext
from slicebox_lab.jobs import JobState
from slicebox_lab.model import Source
from slicebox_lab.net import nodes, scu
from slicebox_lab.net.nodes import RemoteNode, ScpConfig
from slicebox_lab.net.scu_jobs import register_scu_jobs, submit_retrieve, submit_send

context = netutil.context
scp_service = netutil.scp_service
scp = netutil.scp
orthanc = orthanc  # noqa: PLW0127  (the module-scoped fixture)


@pytest.fixture
def pacs(context: SliceboxContext, orthanc: Orthanc) -> RemoteNode:
    """Orthanc as a remote node of ours (C-FIND/C-MOVE/C-GET/C-STORE target, C-MOVE destination)."""
    register_scu_jobs(context)
    return nodes.add_scu(context.index, "orthanc", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)


def _study(count_per_series: tuple[int, ...], **attributes: Any) -> tuple[dict[str, Any], list[bytes]]:
    """Files of one study with one series per count; (uids, files)."""
    uids: dict[str, Any] = {"study": generate_uid(), "series": [generate_uid() for _ in count_per_series]}
    files = []
    for series, count in zip(uids["series"], count_per_series, strict=True):
        for n in range(count):
            files.append(
                ct_bytes(StudyInstanceUID=uids["study"], SeriesInstanceUID=series, InstanceNumber=n + 1, **attributes)
            )
    return uids, files


def _preload(orthanc: Orthanc, files: list[bytes]) -> None:
    for data in files:
        orthanc.upload(data)


def test_send_to_orthanc(context: SliceboxContext, orthanc: Orthanc, pacs: RemoteNode):
    _, files = _study((5,), PatientID="SENT-TO-ORTHANC")
    ids = [context.ingest(data, Source("user", "test")).image.id for data in files]
    before = orthanc.instance_count()
    job = context.jobs.wait(submit_send(context, pacs.id, ids).id, timeout=60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.counts == {"sent": 5, "failed": 0}
    assert orthanc.instance_count() == before + 5
    found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"PatientID": "SENT-TO-ORTHANC"}})
    assert len(found) == 5


def test_query_orthanc_at_every_level(orthanc: Orthanc, pacs: RemoteNode):
    uids, files = _study((3, 2), PatientID="QUERY-1", PatientName="Query^Anna", StudyDate="20240102")
    _preload(orthanc, files)

    patients = scu.query(pacs, "PATIENT", {"PatientName": "Query^A*", "PatientID": ""})
    assert [(r["PatientName"], r["PatientID"]) for r in patients] == [("Query^Anna", "QUERY-1")]

    studies = scu.query(pacs, "STUDY", {"PatientID": "QUERY-1", "StudyInstanceUID": "", "StudyDate": ""})
    assert [(r["StudyInstanceUID"], r["StudyDate"]) for r in studies] == [(uids["study"], "20240102")]
    assert studies[0]["QueryRetrieveLevel"] == "STUDY"

    series = scu.query(
        pacs,
        "SERIES",
        {"StudyInstanceUID": uids["study"], "SeriesInstanceUID": "", "NumberOfSeriesRelatedInstances": ""},
    )
    assert sorted((r["SeriesInstanceUID"], int(r["NumberOfSeriesRelatedInstances"])) for r in series) == sorted(
        zip(uids["series"], (3, 2), strict=True)
    )

    images = scu.query(
        pacs,
        "IMAGE",
        {
            "StudyInstanceUID": uids["study"],
            "SeriesInstanceUID": uids["series"][0],
            "SOPInstanceUID": "",
            "InstanceNumber": "",
        },
    )
    assert sorted(int(r["InstanceNumber"]) for r in images) == [1, 2, 3]

    assert scu.query(pacs, "STUDY", {"PatientID": "NOBODY-AT-ALL", "StudyInstanceUID": ""}) == []


def _images_of_study(context: SliceboxContext, study_uid: str) -> list[Any]:
    found = []
    for flat in context.index.list_flat_series(count=1000):
        if flat.study.StudyInstanceUID == study_uid:
            found.extend(context.index.images_of_series(flat.id))
    return found


def test_c_move_a_study_from_orthanc_into_our_scp(
    context: SliceboxContext, orthanc: Orthanc, pacs: RemoteNode, scp: ScpConfig
):
    uids, files = _study((4, 2), PatientID="MOVE-1")
    _preload(orthanc, files)
    orthanc.add_modality("slicebox", SCP_AE, scp.port)
    job = submit_retrieve(context, pacs.id, "STUDY", {"StudyInstanceUID": uids["study"]}, "move", scp.id)
    job = context.jobs.wait(job.id, timeout=60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.counts.get("completed") == 6 and job.counts.get("failed", 0) == 0
    assert job.progress_done == 6
    images = _images_of_study(context, uids["study"])
    assert len(images) == 6
    source = context.index.series_source(images[0].series_id)
    assert (source.source_type, source.source_name) == ("scp", scp.name)


def test_c_get_a_series_from_orthanc(context: SliceboxContext, orthanc: Orthanc, pacs: RemoteNode):
    uids, files = _study((3, 2), PatientID="GET-1")
    _preload(orthanc, files)
    identifier = {"StudyInstanceUID": uids["study"], "SeriesInstanceUID": uids["series"][0]}
    job = context.jobs.wait(submit_retrieve(context, pacs.id, "SERIES", identifier, "get").id, timeout=60)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.counts.get("completed") == 3
    images = _images_of_study(context, uids["study"])
    assert len(images) == 3 and {i.InstanceNumber for i in images} == {"1", "2", "3"}
    source = context.index.series_source(images[0].series_id)
    assert (source.source_type, source.source_name) == ("scp", "orthanc")


def test_orthanc_finds_and_moves_from_our_node(
    context: SliceboxContext, orthanc: Orthanc, pacs: RemoteNode, scp: ScpConfig
):
    uids, files = _study((2, 1), PatientID="FROM-SBX", PatientName="From^Slicebox")
    for data in files:
        context.ingest(data, Source("user", "test"))
    orthanc.add_modality("slicebox", SCP_AE, scp.port)  # pacs: Orthanc is a remote node of ours

    query = orthanc.post("/modalities/slicebox/query", {"Level": "Study", "Query": {"PatientID": "FROM-SBX"}})
    answers = orthanc.get(f"/queries/{query['ID']}/answers?expand&simplify")
    assert [a["StudyInstanceUID"] for a in answers] == [uids["study"]]

    before = orthanc.instance_count()
    orthanc.post(f"/queries/{query['ID']}/retrieve", {"TargetAet": orthanc.ae_title, "Synchronous": True})
    assert orthanc.instance_count() == before + 3
    found = orthanc.post("/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": uids["study"]}})
    assert len(found) == 2
