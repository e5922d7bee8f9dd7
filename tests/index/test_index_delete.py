"""Deleting images removes the parents they leave empty, in one transaction; unknown ids are ignored."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab import errors
from slicebox_lab.index import Index
from slicebox_lab.model import IndexedAttributes, IngestResult, Source

AttributesFactory = Callable[..., IndexedAttributes]
SCP = Source("scp", "PACS")


def _tree(index: Index, attributes: AttributesFactory) -> dict[str, IngestResult]:
    """Patient A: study 1 (series 1: a1, a2; series 2: a3), study 2 (series 3: a4). Patient B: b1."""
    spec = {
        "a1": dict(StudyInstanceUID="1", SeriesInstanceUID="1.1", SOPInstanceUID="1.1.1"),
        "a2": dict(StudyInstanceUID="1", SeriesInstanceUID="1.1", SOPInstanceUID="1.1.2"),
        "a3": dict(StudyInstanceUID="1", SeriesInstanceUID="1.2", SOPInstanceUID="1.2.1"),
        "a4": dict(StudyInstanceUID="2", SeriesInstanceUID="2.1", SOPInstanceUID="2.1.1"),
        "b1": dict(PatientName="B", PatientID="B", StudyInstanceUID="9", SeriesInstanceUID="9.1",
                   SOPInstanceUID="9.1.1"),
    }  # fmt: skip
    return {name: index.ingest(attributes(**values), SCP, f"key-{name}", 1) for name, values in spec.items()}


def test_delete_removes_empty_parents_only(index: Index, attributes: AttributesFactory) -> None:
    tree = _tree(index, attributes)
    a1, a2, a3, a4 = (tree[n].image for n in ("a1", "a2", "a3", "a4"))
    patient_a = index.get_flat_series(a1.series_id).patient.id
    study_1 = index.get_series(a1.series_id).study_id

    deleted = index.delete_images([a1.id])
    assert [(i.id, i.storage_key) for i in deleted] == [(a1.id, "key-a1")]
    assert index.get_series(a1.series_id)  # a2 is still in it
    assert index.counts() == {"patients": 2, "studies": 3, "series": 4, "images": 4}

    index.delete_images([a2.id])
    with pytest.raises(errors.NotFound):
        index.get_series(a1.series_id)
    assert index.get_study(study_1)  # series 2 is still in it
    assert index.counts() == {"patients": 2, "studies": 3, "series": 3, "images": 3}

    index.delete_images([a3.id])
    with pytest.raises(errors.NotFound):
        index.get_study(study_1)
    assert index.get_patient(patient_a)  # study 2 is still there

    index.delete_images([a4.id])
    with pytest.raises(errors.NotFound):
        index.get_patient(patient_a)
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 1}


def test_delete_is_idempotent_and_ignores_unknown_ids(index: Index, attributes: AttributesFactory) -> None:
    tree = _tree(index, attributes)
    ids = [r.image.id for r in tree.values()]
    assert index.delete_images([]) == []
    assert index.delete_images([123456, -1, 0, 2**40]) == []
    with pytest.raises(errors.InvalidInput, match="image id must be an integer"):
        index.delete_images(["1"])  # type: ignore[list-item]
    deleted = index.delete_images([*ids, *ids, 123456])
    assert sorted(i.id for i in deleted) == sorted(ids)
    assert {i.storage_key for i in deleted} == {f"key-{n}" for n in tree}
    assert index.counts() == {"patients": 0, "studies": 0, "series": 0, "images": 0}
    assert index.delete_images(ids) == []
    # sources stay: they are who delivered, not what is stored
    assert len(index.sources()) == 1


def test_delete_more_ids_than_one_batch(index: Index, attributes: AttributesFactory) -> None:
    results = [
        index.ingest(attributes(PatientID=f"P{i % 3}", SeriesInstanceUID=f"1.{i % 7}", SOPInstanceUID=f"1.{i}"),
                     SCP, f"k{i}", 1)
        for i in range(1100)
    ]  # fmt: skip
    ids = [r.image.id for r in results]
    deleted = index.delete_images([*ids[:1050], *range(10**6, 10**6 + 200)])
    assert [i.id for i in deleted] == sorted(ids[:1050])
    assert index.counts()["images"] == 50
    index.delete_images(ids[1050:])
    assert index.counts() == {"patients": 0, "studies": 0, "series": 0, "images": 0}


def test_ids_are_not_reused_after_delete(index: Index, attributes: AttributesFactory) -> None:
    first = index.ingest(attributes(), SCP, "k1", 1).image
    index.delete_images([first.id])
    second = index.ingest(attributes(), SCP, "k2", 1).image
    assert second.id > first.id
    assert index.get_series(second.series_id).id > first.series_id
