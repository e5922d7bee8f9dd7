"""The DICOMweb domain code without a server: multipart framing, QIDO in SQL (SQLite and PostgreSQL),
WADO frames and metadata, STOW per-part outcomes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from generators import ct_bytes, ct_dataset, to_bytes
from pg import pg_engine, postgresql_url  # noqa: F401  (fixtures)
from pydicom.uid import generate_uid

from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicomweb import multipart, qido, stow, wado
from slicebox_lab.dicomweb.errors import NotAcceptable, UnsupportedMediaType
from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

ROOT = "http://node/slicebox/dicom-web/"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def context(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SliceboxContext]:
    if request.param == "sqlite":
        engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
        upgrade(engine)
    else:
        engine = request.getfixturevalue("pg_engine")
    context = SliceboxContext(MemoryStorage(), Index(engine))
    try:
        yield context
    finally:
        context.close()


def _search(context: SliceboxContext, level: str, scope: dict[str, str] | None = None, **params: Any) -> Any:
    arguments = {k: v if isinstance(v, list) else [str(v)] for k, v in params.items()}
    return qido.search(context.index, context.storage, level, arguments, ROOT, scope)


def _uid(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


# ---------------------------------------------------------------------------------------------- multipart


def test_parse_related_parts_with_and_without_headers() -> None:
    body = (
        b"preamble\r\n--xyz\r\nContent-Type: application/dicom\r\nContent-Location: a\r\n\r\nONE\r\n"
        b"--xyz\r\n\r\nTWO\r\n\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\n\r\n--xyz--\r\nepilogue"
    )
    parts = multipart.parse_related(body, "xyz")
    assert [p.body for p in parts] == [b"ONE", b"TWO\r\n", b""]
    assert parts[0].headers == {"content-type": "application/dicom", "content-location": "a"}
    assert parts[1].content_type == ""
    for bad in (b"", b"--xyz\r\nContent-Type: a\r\n\r\nbody", b"no boundary", b"--xyz--\r\n"):
        with pytest.raises(InvalidInput):
            multipart.parse_related(bad, "xyz")


def test_content_types_and_accept() -> None:
    assert (
        multipart.related_boundary('multipart/related; type="application/dicom"; boundary="a;b"', "application/dicom")
        == "a;b"
    )
    with pytest.raises(UnsupportedMediaType):
        multipart.related_boundary("application/dicom", "application/dicom")
    with pytest.raises(UnsupportedMediaType):
        multipart.related_boundary('multipart/related; type="application/dicom+json"; boundary=x', "application/dicom")
    with pytest.raises(InvalidInput):
        multipart.related_boundary("multipart/related; type=application/dicom", "application/dicom")
    accept = multipart.parse_accept('image/png;q=0.5, multipart/related; type="application/dicom"; transfer-syntax=*')
    assert [m.type for m in accept] == ["multipart/related", "image/png"]
    assert accept[0].parameters == {"type": "application/dicom", "transfer-syntax": "*"}
    assert multipart.parse_accept(None)[0].matches("image/jpeg")


# ---------------------------------------------------------------------------------------------- QIDO


def _populate(context: SliceboxContext, studies: int) -> list[str]:
    uids = []
    for n in range(studies):
        uid = generate_uid()
        uids.append(uid)
        for m in range(2):
            data = ct_bytes(
                PatientName=f"Patient^{n:03d}",
                PatientID=f"P{n:03d}",
                StudyInstanceUID=uid,
                StudyDate=f"2020{(n % 12) + 1:02d}01",
                Modality="MR" if m else "CT",
                seed=n,
            )
            context.ingest(data, Source("user", "test"))
    return uids


def test_search_runs_a_fixed_number_of_queries_on_the_page_only(context: SliceboxContext) -> None:
    uids = _populate(context, 12)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(context.index.engine, "before_cursor_execute", record)
    try:
        page = _search(context, "study", limit=3, offset=2)
    finally:
        sa.event.remove(context.index.engine, "before_cursor_execute", record)
    assert [_uid(i, "0020000D") for i in page.items] == uids[2:5]
    assert all(i["00201206"]["Value"] == [2] and i["00080061"]["Value"] == ["CT", "MR"] for i in page.items)
    # one page query, three aggregates, two for the header of each result's first instance
    assert len(statements) <= 6, statements
    assert all("LIMIT" in s.upper() or "IN (" in s.upper() or "IN (__" in s.upper() for s in statements)


def test_matching(context: SliceboxContext) -> None:
    uids = _populate(context, 5)
    assert [_uid(i, "0020000D") for i in _search(context, "study", PatientID="P003").items] == [uids[3]]
    assert len(_search(context, "study", PatientName="patient^00*").items) == 5
    assert len(_search(context, "study", StudyDate="20200201-20200401").items) == 3
    assert len(_search(context, "study", StudyDate="-20200101").items) == 1
    assert len(_search(context, "study", **{"0020000D": f"{uids[0]},{uids[4]}"}).items) == 2
    assert len(_search(context, "study", ModalitiesInStudy="MR").items) == 5
    assert len(_search(context, "series", Modality="MR").items) == 5
    assert len(_search(context, "series", scope={"StudyInstanceUID": uids[1]}).items) == 2
    assert len(_search(context, "instance", scope={"StudyInstanceUID": uids[1]}, Modality="CT").items) == 1
    assert _search(context, "study", PatientName="PATIENT^001").items == []
    fuzzy = _search(context, "study", PatientName="PATIENT^001", fuzzymatching="true").items
    assert [_uid(i, "0020000D") for i in fuzzy] == [uids[1]]
    ignored = _search(context, "study", StudyTime="1200")
    assert len(ignored.items) == 5 and "StudyTime" in ignored.warnings[0]
    for bad in ({"StudyDate": "2020-01-01"}, {"Foo": "1"}, {"limit": "x"}, {"includefield": "NotAKeyword"}):
        with pytest.raises(InvalidInput):
            _search(context, "study", **bad)


# ---------------------------------------------------------------------------------------------- WADO, STOW


def test_metadata_and_frames(context: SliceboxContext) -> None:
    ds = ct_dataset(rows=4, columns=5)
    ds.NumberOfFrames = 2
    ds.PixelData = np.arange(40, dtype=np.int16).tobytes()
    context.ingest(to_bytes(ds), Source("user", "test"))
    (instance,) = wado.locate(context.index, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    item = wado.metadata(context.storage, instance, ROOT)
    assert item["7FE00010"] == {"vr": "OW", "BulkDataURI": instance.url(ROOT) + "/bulkdata/7FE00010"}
    assert pydicom.Dataset.from_json(item).PatientID == "PID-1"
    source = wado.open_frames(context.storage, instance, [2])
    assert source.frame(2) == ds.PixelData[40:]
    with pytest.raises(NotFound):
        wado.open_frames(context.storage, instance, [3])
    assert wado.bulk_data(context.storage, instance, "7FE00010") == ds.PixelData
    with pytest.raises(NotFound):
        wado.locate(context.index, ds.StudyInstanceUID, "1.2.3")
    accept = multipart.parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    )
    with pytest.raises(NotAcceptable):
        wado.choose_transfer_syntaxes(accept, [instance])
    implicit = multipart.parse_accept('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2')
    (syntax,) = wado.choose_transfer_syntaxes(implicit, [instance])
    data = wado.transcoded(context.storage, instance, str(syntax))
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"


def test_stow_part_outcomes(context: SliceboxContext) -> None:
    """Each part ends as an upload (handlers/upload.py streams the body); outcomes per part."""
    study = generate_uid()
    response = stow.StowResponse(ROOT)

    def series_uids(series_id: int) -> tuple[str, str]:
        flat = context.index.get_flat_series(series_id)
        return flat.study.StudyInstanceUID, flat.series.SeriesInstanceUID

    parts = [
        ("application/dicom", ct_bytes(StudyInstanceUID=study)),
        ("", ct_bytes(StudyInstanceUID=study)),
        ("application/dicom", ct_bytes()),  # another study
        ("text/plain", b"hello"),
        ("application/dicom", b"not DICOM at all"),
    ]
    for content_type, data in parts:
        upload = context.upload(Source("user", "test"))
        upload.write(data)
        stow.store_part(upload, content_type, study, series_uids, response)
    assert response.status == 202
    body = pydicom.Dataset.from_json(response.to_json(study))
    assert len(body.ReferencedSOPSequence) == 2
    assert [i.FailureReason for i in body.FailedSOPSequence] == [
        stow.STUDY_MISMATCH,
        stow.CANNOT_UNDERSTAND,
        stow.CANNOT_UNDERSTAND,
    ]
    assert body.RetrieveURL == f"{ROOT}studies/{study}"
    assert len(_search(context, "instance", scope={"StudyInstanceUID": study}).items) == 2


@pytest.mark.parametrize("step", [1, 2, 7, 64, 10_000])
def test_a_streamed_body_gives_the_same_parts_however_it_is_cut(step: int):
    """Headers (and data) split across writes, down to one byte each: a push's X-Slicebox-SHA256 cut inside its
    value once lost its tail, and the image was refused."""
    sha = "0123456789abcdef" * 4
    body = (
        b"--B\r\nContent-Type: application/dicom\r\nX-Slicebox-Sequence-Number: 12\r\n"
        b"X-Slicebox-SHA256: " + sha.encode() + b"\r\n\r\nFIRST PART\r\n"
        b"--B\r\nContent-Type: application/dicom\r\n\r\nSECOND\r\n--B--\r\n"
    )
    parts: list[tuple[dict[str, str], bytearray]] = []
    stream = multipart.PartStream(
        "B", lambda headers: parts.append((headers, bytearray())), lambda d: parts[-1][1].extend(d), lambda: None
    )
    for at in range(0, len(body), step):
        stream.write(body[at : at + step])
    stream.finish()
    assert parts == [
        (
            {"content-type": "application/dicom", "x-slicebox-sequence-number": "12", "x-slicebox-sha256": sha},
            bytearray(b"FIRST PART"),
        ),
        ({"content-type": "application/dicom"}, bytearray(b"SECOND")),
    ]
