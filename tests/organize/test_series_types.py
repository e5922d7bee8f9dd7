"""Series types: rule matching, CRUD, classification on ingest and re-classification as a job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from generators import ct_bytes, ct_dataset
from pg import pg_engine, postgresql_url  # noqa: F401
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.events import ImageAdded
from slicebox_lab.index import Index, Query, create_engine, sqlite_url, upgrade
from slicebox_lab.index import query as index_query
from slicebox_lab.jobs import JobState
from slicebox_lab.model import Source
from slicebox_lab.organize import seriestypes as st
from slicebox_lab.storage import MemoryStorage

ALICE = Source("user", "alice")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def context(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SliceboxContext]:
    if request.param == "postgresql":
        engine: sa.Engine = request.getfixturevalue("pg_engine")
    else:
        engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
        upgrade(engine)
    context = SliceboxContext(MemoryStorage(), Index(engine))
    service = st.series_type_service_factory(context)
    service.start()
    yield context
    service.stop(5)
    context.close()


def _rule(*conditions: tuple[str, list[str]], rule_id: int = 1, type_id: int = 1) -> st.Rule:
    return st.Rule(rule_id, type_id, st._conditions([{"tag": t, "values": v} for t, v in conditions]))


def _file(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


def _types(context: SliceboxContext, series_id: int) -> list[str]:
    return [t.name for t in st.types_of_series(context.index, series_id)]


def _settle(context: SliceboxContext) -> None:
    """Wait for the ingest worker and for the latest re-classification job."""
    service = st.classifier(context)
    assert service.wait_idle(10)
    job = service.status()["job"]
    if job is not None:
        assert context.jobs.wait(job.id, 30).state == JobState.SUCCEEDED


def test_all_attributes_of_a_rule_must_match_and_an_empty_rule_matches_nothing() -> None:
    ds = ct_dataset(SeriesDescription="Axial T1 post", Modality="MR")
    assert st.rule_matches(_rule(("Modality", ["MR"])), ds)
    assert st.rule_matches(_rule(("Modality", ["CT", "MR"]), ("SeriesDescription", ["*T1*"])), ds)
    assert not st.rule_matches(_rule(("Modality", ["MR"]), ("SeriesDescription", ["*T2*"])), ds)
    assert not st.rule_matches(_rule(("Modality", ["mr"])), ds)  # case-sensitive
    assert not st.rule_matches(_rule(), ds)  # unlike Slicebox
    assert st.rule_matches(_rule(("ImageType", ["ORIGINAL\\PRIMARY\\AXIAL"])), ds)  # multi-values as DICOM text
    assert st.rule_matches(_rule(("ImageType", ["ORIGINAL\\*"])), ds)
    assert st.rule_matches(_rule(("BodyPartExamined", [""])), ds)  # absent = ""
    assert st.rule_matches(_rule(("(0008,0060)", ["M?"])), ds)
    assert st.rule_matches(_rule(("00080060", ["MR"])), ds)
    item = Dataset()
    item.CodeValue = "RPID16"
    other = Dataset()
    other.CodeValue = "X"
    ds.ProcedureCodeSequence = Sequence([other, item])
    assert st.rule_matches(_rule(("ProcedureCodeSequence[*].CodeValue", ["RPID16"])), ds)
    assert not st.rule_matches(_rule(("ProcedureCodeSequence[0].CodeValue", ["RPID16"])), ds)
    assert st.matching_types([_rule(("Modality", ["MR"]), type_id=2), _rule(("Modality", ["CT"]))], ds) == {2}


def test_rule_attributes_are_validated_and_stored_canonically() -> None:
    (condition,) = st._conditions({"attributes": [{"tag": "(0008,0060)", "values": "CT"}]})
    assert condition.to_json() == {"tag": "Modality", "values": ["CT"]}
    (condition,) = st._conditions([{"tag": 0x00080060, "values": ["CT", "CT"]}])
    assert condition.to_json() == {"tag": "Modality", "values": ["CT"]}
    for bad in (
        {"attributes": [{"tag": "NoSuchKeyword", "values": ["x"]}]},
        {"attributes": [{"tag": "Modality", "values": []}]},
        {"attributes": [{"tag": "Modality", "values": [1]}]},
        {"attributes": [{"values": ["x"]}]},
        {"attributes": ["Modality"]},
        {"attributes": "Modality=CT"},
        {"rules": []},
    ):
        with pytest.raises(InvalidInput):
            st._conditions(bad)


def test_types_and_rules_crud(context: SliceboxContext) -> None:
    ct = st.create_type(context.index, {"name": "CT"})
    with pytest.raises(Conflict):
        st.create_type(context.index, {"name": "CT"})
    with pytest.raises(InvalidInput):
        st.create_type(context.index, {"name": " "})
    mr = st.create_type(context.index, {"name": "MR"})
    with pytest.raises(Conflict):
        st.update_type(context.index, mr.id, {"name": "CT"})
    assert st.update_type(context.index, mr.id, {"name": "MR brain"}).name == "MR brain"
    assert [t.name for t in st.list_types(context.index)] == ["CT", "MR brain"]
    with pytest.raises(NotFound):
        st.get_type(context.index, 999)
    rule = st.create_rule(context, ct.id, {"attributes": [{"tag": "Modality", "values": ["CT"]}]})
    assert st.get_rule(context.index, ct.id, rule.id) == rule
    with pytest.raises(NotFound):
        st.get_rule(context.index, mr.id, rule.id)  # not a rule of that type
    with pytest.raises(NotFound):
        st.create_rule(context, 999, {"attributes": []})
    updated = st.update_rule(context, ct.id, rule.id, {"attributes": [{"tag": "Modality", "values": ["CT", "PT"]}]})
    assert st.list_rules(context.index, ct.id) == [updated]
    st.delete_rule(context, ct.id, rule.id)
    st.delete_rule(context, ct.id, rule.id)  # idempotent
    assert st.list_rules(context.index, ct.id) == []
    st.delete_type(context, ct.id)
    st.delete_type(context, ct.id)
    assert [t.name for t in st.list_types(context.index)] == ["MR brain"]
    _settle(context)


def test_ct_and_mr_are_classified_on_ingest_and_reclassified_when_a_rule_changes(context: SliceboxContext) -> None:
    """The acceptance test: pydicom's CT_small and MR_small get the right type; editing a rule re-classifies."""
    ct = st.create_type(context.index, {"name": "CT"})
    mr = st.create_type(context.index, {"name": "MR"})
    ct_rule = st.create_rule(context, ct.id, {"attributes": [{"tag": "Modality", "values": ["CT"]}]})
    st.create_rule(
        context,
        mr.id,
        {"attributes": [{"tag": "Modality", "values": ["MR"]}, {"tag": "ScanningSequence", "values": ["SE"]}]},
    )
    _settle(context)

    ct_series = context.ingest(_file("CT_small.dcm"), ALICE).image.series_id
    mr_series = context.ingest(_file("MR_small.dcm"), ALICE).image.series_id
    untyped = context.ingest(ct_bytes(Modality="US"), ALICE).image.series_id
    _settle(context)
    assert _types(context, ct_series) == ["CT"]
    assert _types(context, mr_series) == ["MR"]
    assert _types(context, untyped) == []
    with context.index.reading() as conn:
        assert [f.series.id for f in index_query.list_flat_series(conn, series_types=[mr.id])] == [mr_series]
    assert [s.id for s in context.index.query_series(Query(series_types=[ct.id, mr.id]))] == [ct_series, mr_series]

    # editing a rule re-classifies the series already stored, as a job with progress
    st.update_rule(context, ct.id, ct_rule.id, {"attributes": [{"tag": "Modality", "values": ["CT", "US"]}]})
    _settle(context)
    job = st.classifier(context).status()["job"]
    assert job.kind == st.CLASSIFY_JOB and job.progress_done == job.progress_total == 3
    assert _types(context, untyped) == ["CT"]
    assert _types(context, ct_series) == ["CT"]

    # a manual assignment survives re-classification; removing the rules removes rule-given types only
    st.assign_type(context.index, untyped, mr.id)
    st.assign_type(context.index, untyped, mr.id)  # idempotent
    with pytest.raises(NotFound):
        st.assign_type(context.index, untyped, 999)
    with pytest.raises(NotFound):
        st.assign_type(context.index, 999, mr.id)
    st.delete_rule(context, ct.id, ct_rule.id)
    _settle(context)
    assert _types(context, untyped) == ["MR"]
    assert _types(context, ct_series) == []
    assert _types(context, mr_series) == ["MR"]

    # deleting a type removes its assignments
    st.delete_type(context, mr.id)
    _settle(context)
    assert _types(context, mr_series) == [] and _types(context, untyped) == []


def test_ingest_only_queues_and_skips_series_already_classified(context: SliceboxContext) -> None:
    ct = st.create_type(context.index, {"name": "CT"})
    st.create_rule(context, ct.id, {"attributes": [{"tag": "Modality", "values": ["CT"]}]})
    _settle(context)
    service = st.classifier(context)
    calls: list[int] = []
    original = service.classify_series

    def counting(series_id: int) -> set[int]:
        calls.append(series_id)
        return original(series_id)

    service.classify_series = counting  # type: ignore[method-assign]
    first = context.ingest(ct_bytes(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4"), ALICE)
    service.wait_idle(10)
    for n in range(5):
        context.ingest(ct_bytes(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4", InstanceNumber=n + 2), ALICE)
    service.wait_idle(10)
    assert calls == [first.image.series_id]
    assert _types(context, first.image.series_id) == ["CT"]


def test_no_rules_means_no_work_on_ingest(context: SliceboxContext) -> None:
    service = st.classifier(context)
    started = time.perf_counter()
    for _ in range(200):
        service._on_image_added(ImageAdded(context.ingest(ct_bytes(), ALICE).image, ALICE, False))
    assert service.status() == {"running": False, "job": None}
    assert time.perf_counter() - started < 30
