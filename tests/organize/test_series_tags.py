"""Series tags: CRUD, per-series and bulk tagging, filtering listings and queries, survival of deletes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from generators import ct_bytes
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index, Query, QueryProperty, create_engine, sqlite_url, upgrade
from slicebox_lab.index import query as index_query
from slicebox_lab.model import Source
from slicebox_lab.organize import tags
from slicebox_lab.storage import MemoryStorage

ALICE = Source("user", "alice")
SCANNER = Source("scp", "scanner")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def context(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SliceboxContext]:
    if request.param == "postgresql":
        engine: sa.Engine = request.getfixturevalue("pg_engine")
    else:
        engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
        upgrade(engine)
    context = SliceboxContext(MemoryStorage(), Index(engine))
    yield context
    context.close()


def _series(context: SliceboxContext, source: Source = ALICE, **attributes: object) -> int:
    return context.ingest(ct_bytes(**attributes), source).image.series_id


def _flat(context: SliceboxContext, **filters: object) -> list[int]:
    with context.index.reading() as conn:
        return [f.series.id for f in index_query.list_flat_series(conn, count=100, **filters)]  # type: ignore[arg-type]


def test_tags_are_created_renamed_listed_and_deleted(context: SliceboxContext) -> None:
    t1 = tags.create_tag(context.index, {"name": "  cohort-A "})
    t2 = tags.create_tag(context.index, {"name": "T1"})
    assert t1.name == "cohort-A" and t1.series_count == 0
    with pytest.raises(Conflict):
        tags.create_tag(context.index, {"name": "cohort-A"})
    assert tags.create_tag(context.index, {"name": "t1"}).name == "t1"  # case-sensitive, as Orthanc labels
    for bad in ({}, {"name": ""}, {"name": 3}, [], {"name": "x" * 201}):
        with pytest.raises(InvalidInput):
            tags.create_tag(context.index, bad)
    assert tags.rename_tag(context.index, t2.id, {"name": "T1w"}).name == "T1w"
    with pytest.raises(Conflict):
        tags.rename_tag(context.index, t2.id, {"name": "cohort-A"})
    assert tags.rename_tag(context.index, t2.id, {"name": "T1w"}).name == "T1w"  # its own name is fine
    with pytest.raises(NotFound):
        tags.rename_tag(context.index, 999, {"name": "new"})
    with pytest.raises(NotFound):
        tags.get_tag(context.index, 999)
    names = [t.name for t in tags.list_tags(context.index, order_by="name")]
    assert names == sorted(names) and len(names) == 3
    assert [t.name for t in tags.list_tags(context.index, filter="OHORT")] == ["cohort-A"]
    assert [t.id for t in tags.list_tags(context.index, order_by="id", order_ascending=False, count=1)] == [3]
    with pytest.raises(InvalidInput):
        tags.list_tags(context.index, order_by="PatientName")
    tags.delete_tag(context.index, t1.id)
    tags.delete_tag(context.index, t1.id)  # idempotent
    assert "cohort-A" not in [t.name for t in tags.list_tags(context.index)]


def test_tagging_one_series_reuses_names_and_is_idempotent(context: SliceboxContext) -> None:
    a, b = _series(context), _series(context)
    tag = tags.tag_series(context.index, a, {"name": "cohort-A"})
    again = tags.tag_series(context.index, b, {"name": "cohort-A"})
    assert again.id == tag.id and again.series_count == 2
    assert tags.tag_series(context.index, b, {"id": tag.id}).series_count == 2  # no duplicate link
    assert [t.name for t in tags.tags_of_series(context.index, a)] == ["cohort-A"]
    with pytest.raises(NotFound):
        tags.tag_series(context.index, 999, {"name": "x"})
    with pytest.raises(NotFound):
        tags.tag_series(context.index, a, {"id": 999})
    with pytest.raises(InvalidInput):
        tags.tag_series(context.index, a, {"colour": "red"})
    with pytest.raises(NotFound):
        tags.tags_of_series(context.index, 999)
    tags.untag_series(context.index, a, tag.id)
    tags.untag_series(context.index, a, tag.id)
    assert tags.tags_of_series(context.index, a) == []
    assert tags.get_tag(context.index, tag.id).series_count == 1  # the tag stays


def test_bulk_tagging_is_all_or_none(context: SliceboxContext) -> None:
    ids = [_series(context) for _ in range(3)]
    tag = tags.create_tag(context.index, {"name": "cohort"})
    with pytest.raises(NotFound, match="999"):
        tags.add_series_to_tag(context.index, tag.id, [*ids, 999])
    assert tags.get_tag(context.index, tag.id).series_count == 0
    assert tags.add_series_to_tag(context.index, tag.id, {"series_ids": ids[:2]})["added"] == 2
    result = tags.add_series_to_tag(context.index, tag.id, ids)
    assert (result["added"], result["already_tagged"]) == (1, 2)
    for bad in ("1,2", [True], {"series_ids": "x"}, [1.5]):
        with pytest.raises(InvalidInput):
            tags.add_series_to_tag(context.index, tag.id, bad)
    with pytest.raises(NotFound):
        tags.add_series_to_tag(context.index, 999, ids)
    assert tags.remove_series_from_tag(context.index, tag.id, [ids[0], 999])["removed"] == 1
    assert tags.get_tag(context.index, tag.id).series_count == 2


def test_listings_and_queries_filter_by_tags_types_and_sources(context: SliceboxContext) -> None:
    """Tag 3 series of a cohort; list by tag (any/all), with another filter; delete the images: the tag stays."""
    cohort = [_series(context, PatientName=f"Cohort^{i}", PatientID=f"C{i}") for i in range(3)]
    other = _series(context, PatientName="Other^1", PatientID="O1", source=SCANNER)
    scanner_series = _series(context, PatientName="Cohort^0", PatientID="C0", source=SCANNER)
    tag = tags.create_tag(context.index, {"name": "cohort"})
    reviewed = tags.create_tag(context.index, {"name": "reviewed"})
    tags.add_series_to_tag(context.index, tag.id, cohort)
    tags.add_series_to_tag(context.index, reviewed.id, [cohort[0], other])

    assert _flat(context, series_tags=[tag.id]) == cohort
    assert _flat(context, series_tags=[tag.id, reviewed.id]) == [*cohort, other]
    assert _flat(context, series_tags=[tag.id, reviewed.id], series_tags_match="all") == [cohort[0]]
    assert _flat(context, series_tags=[tag.id, 2**40], series_tags_match="all") == []
    assert _flat(context, series_tags=[tag.id], filter="cohort^1") == [cohort[1]]
    assert context.index.series_source(scanner_series).source_type == "scp"
    sources = [s.source_id for s in context.index.sources() if s.source_type == "scp"]
    assert _flat(context, series_tags=[reviewed.id], sources=sources) == [other]
    assert _flat(context, series_types=[1]) == []  # no type assigned
    with pytest.raises(InvalidInput):
        _flat(context, series_tags=[tag.id], series_tags_match="some")
    with pytest.raises(InvalidInput):
        _flat(context, series_tags="1,2")

    with context.index.reading() as conn:
        patients = index_query.list_patients(conn, series_tags=[tag.id], order_by="PatientID")
        assert [p.PatientID for p in patients] == ["C0", "C1", "C2"]
        c0 = patients[0]
        studies = index_query.list_studies(conn, c0.id, series_tags=[tag.id])
        assert len(studies) == 1
        listed = index_query.list_series(conn, studies[0].id, series_tags=[tag.id])
        assert [s.id for s in listed] == [cohort[0]]
        assert index_query.list_patients(conn, series_tags=[reviewed.id], filter="Other") != []
    q = Query(count=100, series_tags=[tag.id], query_properties=[QueryProperty("PatientID", "=", "C2")])
    assert [s.id for s in context.index.query_series(q)] == [cohort[2]]
    q = Query(count=100, series_tags=[tag.id, reviewed.id], series_tags_match="all")
    assert [p.PatientID for p in context.index.query_patients(q)] == ["C0"]

    context.delete_images(i.id for s in cohort for i in context.index.images_of_series(s))
    assert _flat(context, series_tags=[tag.id]) == []
    kept = tags.get_tag(context.index, tag.id)
    assert (kept.name, kept.series_count) == ("cohort", 0)
    assert [t.name for t in tags.list_tags(context.index)] == ["cohort", "reviewed"]
