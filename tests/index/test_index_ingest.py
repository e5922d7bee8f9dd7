"""Ingest: Slicebox's upsert semantics, sources, reads, and races between threads and processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from listing import list_series, list_studies
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab import errors
from slicebox_lab.index import Index
from slicebox_lab.model import IndexedAttributes, IngestResult, Source

AttributesFactory = Callable[..., IndexedAttributes]
SCP = Source("scp", "PACS")
USER = Source("user", "alice")


def test_first_ingest_adds_every_level(index: Index, attributes: AttributesFactory) -> None:
    result = index.ingest(attributes(), SCP, "key-1", 1234)
    assert (result.patient_added, result.study_added, result.series_added, result.image_added) == (True,) * 4
    assert result.replaced_storage_key is None
    image = result.image
    assert image == index.get_image(image.id)
    assert (image.SOPInstanceUID, image.ImageType, image.size, image.storage_key) == (
        "1.2.1.1.1", "ORIGINAL\\PRIMARY", 1234, "key-1",
    )  # fmt: skip
    assert (image.TransferSyntaxUID, image.NumberOfFrames) == ("1.2.840.10008.1.2.1", 1)
    assert datetime.fromisoformat(image.created).utcoffset() is not None
    series = index.get_series(image.series_id)
    study = index.get_study(series.study_id)
    patient = index.get_patient(study.patient_id)
    assert (patient.PatientName, patient.PatientID, patient.PatientBirthDate) == ("Doe^John", "PID1", "19700101")
    assert (study.StudyInstanceUID, study.StudyDate, study.AccessionNumber) == ("1.2.1", "20240102", "")
    assert (series.SeriesInstanceUID, series.Modality) == ("1.2.1.1", "CT")
    assert index.get_source(series.source_id) == Source("scp", "PACS", series.source_id)
    flat = index.get_flat_series(series.id)
    assert (flat.id, flat.patient, flat.study, flat.series) == (series.id, patient, study, series)
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 1}


def test_reingest_same_keys_keeps_ids_and_updates_values(index: Index, attributes: AttributesFactory) -> None:
    first = index.ingest(attributes(), SCP, "key-1", 10)
    again = index.ingest(
        attributes(PatientSex="F", StudyDescription="New study", Modality="MR", InstanceNumber="7",
                   transfer_syntax_uid="1.2.840.10008.1.2", number_of_frames=3),
        USER, "key-2", 20,
    )  # fmt: skip
    assert (again.patient_added, again.study_added, again.series_added, again.image_added) == (False,) * 4
    assert again.replaced_storage_key == "key-1"
    assert again.image.id == first.image.id
    assert again.image.created == first.image.created
    image = index.get_image(first.image.id)
    assert image == again.image
    assert (image.InstanceNumber, image.size, image.storage_key, image.NumberOfFrames) == ("7", 20, "key-2", 3)
    assert image.TransferSyntaxUID == "1.2.840.10008.1.2"
    series = index.get_series(image.series_id)
    assert series.Modality == "MR"
    assert index.get_study(series.study_id).StudyDescription == "New study"
    assert index.get_patient(index.get_study(series.study_id).patient_id).PatientSex == "F"
    # the series (and the image) now belong to the latest source
    assert index.series_source(series.id) == Source("user", "alice", series.source_id)
    assert image.source_id == series.source_id
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 1}
    assert list(index.storage_keys()) == ["key-2"]


def test_reingest_with_the_same_storage_key_replaces_nothing(index: Index, attributes: AttributesFactory) -> None:
    index.ingest(attributes(), SCP, "key-1", 10)
    assert index.ingest(attributes(), SCP, "key-1", 11).replaced_storage_key is None


def test_same_sop_instance_under_another_patient_is_a_new_branch(index: Index, attributes: AttributesFactory) -> None:
    first = index.ingest(attributes(), SCP, "key-1", 10)
    other = index.ingest(attributes(PatientID="PID2"), SCP, "key-2", 10)
    assert (other.patient_added, other.study_added, other.series_added, other.image_added) == (True,) * 4
    assert other.replaced_storage_key is None
    assert other.image.id != first.image.id
    assert index.counts() == {"patients": 2, "studies": 2, "series": 2, "images": 2}


def test_new_series_uid_makes_a_new_series_with_its_own_source(index: Index, attributes: AttributesFactory) -> None:
    first = index.ingest(attributes(), SCP, "key-1", 10)
    second = index.ingest(attributes(SeriesInstanceUID="1.2.1.2"), USER, "key-2", 10)
    assert (second.patient_added, second.study_added, second.series_added) == (False, False, True)
    assert index.series_source(first.image.series_id).source_type == "scp"
    assert index.series_source(second.image.series_id).source_type == "user"
    assert [image.id for image in index.images_of_patient(index.get_flat_series(first.image.series_id).patient.id)] == [
        first.image.id,
        second.image.id,
    ]


def test_sources_are_created_once(index: Index, attributes: AttributesFactory) -> None:
    index.ingest(attributes(SOPInstanceUID="1"), SCP, "k1", 1)
    index.ingest(attributes(SOPInstanceUID="2"), USER, "k2", 1)
    index.ingest(attributes(SOPInstanceUID="3"), Source("scp", "PACS", source_id=99), "k3", 1)
    found = index.sources()
    assert [(s.source_type, s.source_name) for s in found] == [("scp", "PACS"), ("user", "alice")]
    assert index.get_source(found[1].source_id) == found[1]
    with pytest.raises(errors.NotFound, match="source 12345 not found"):
        index.get_source(12345)


def test_ingest_rejects_bad_input(index: Index, attributes: AttributesFactory) -> None:
    with pytest.raises(errors.InvalidInput, match="source type"):
        index.ingest(attributes(), Source("carrier-pigeon", "x"), "k", 1)
    with pytest.raises(errors.InvalidInput, match="storage key"):
        index.ingest(attributes(), SCP, "", 1)
    with pytest.raises(errors.InvalidInput, match="size"):
        index.ingest(attributes(), SCP, "k", -1)
    index.ingest(attributes(), SCP, "taken", 1)
    with pytest.raises(errors.Conflict, match="taken"):
        index.ingest(attributes(SOPInstanceUID="9.9"), SCP, "taken", 1)
    assert index.counts()["images"] == 1


def test_absent_and_nul_values_are_stored_as_text(index: Index) -> None:
    bare = IndexedAttributes(
        patient={"PatientName": "A\x00"}, study={}, series={}, image={"SOPInstanceUID": "1.2\x00"},
        transfer_syntax_uid="",
    )  # fmt: skip
    image = index.ingest(bare, SCP, "k", 1).image
    assert image.SOPInstanceUID == "1.2"
    flat = index.get_flat_series(image.series_id)
    assert (flat.patient.PatientName, flat.patient.PatientID, flat.study.StudyInstanceUID) == ("A", "", "")


def test_reads_of_unknown_ids(index: Index) -> None:
    for method, what in ((index.get_patient, "patient"), (index.get_study, "study"), (index.get_series, "series"),
                         (index.get_image, "image"), (index.get_flat_series, "series"),
                         (index.series_source, "series")):  # fmt: skip
        with pytest.raises(errors.NotFound, match=f"^{what} 7 not found$"):
            method(7)
    assert index.images_of_patient(7) == index.images_of_study(7) == index.images_of_series(7) == []
    # ids no row can have (beyond the INTEGER columns) are "not found", not a database error
    with pytest.raises(errors.NotFound, match=f"^patient {2**40} not found$"):
        index.get_patient(2**40)
    with pytest.raises(errors.NotFound):
        index.get_image(-1)
    with pytest.raises(errors.NotFound):
        index.get_source(2**63)
    assert index.images_of_patient(2**40) == index.images_of_series(0) == []
    assert list_studies(index, 2**40) == list_series(index, 2**40) == index.list_images(2**40) == []
    with pytest.raises(errors.InvalidInput, match="patient id must be an integer"):
        index.get_patient("7")  # type: ignore[arg-type]
    assert index.images_by_storage_keys(["nope"]) == []
    assert list(index.storage_keys()) == []
    assert index.counts() == {"patients": 0, "studies": 0, "series": 0, "images": 0}


def test_images_of_each_level_and_by_storage_key(index: Index, attributes: AttributesFactory) -> None:
    results = [
        index.ingest(attributes(SeriesInstanceUID=f"1.2.1.{s}", SOPInstanceUID=f"1.2.1.{s}.{i}"), SCP, f"k{s}{i}", 1)
        for s in range(2)
        for i in range(3)
    ]
    image_ids = [r.image.id for r in results]
    flat = index.get_flat_series(results[0].image.series_id)
    assert [i.id for i in index.images_of_patient(flat.patient.id)] == image_ids
    assert [i.id for i in index.images_of_study(flat.study.id)] == image_ids
    assert [i.id for i in index.images_of_series(flat.series.id)] == image_ids[:3]
    found = index.images_by_storage_keys(["k12", "k00", "unknown", "k00"])
    assert [i.storage_key for i in found] == ["k00", "k12"]


def test_storage_keys_are_streamed_in_batches(index: Index, attributes: AttributesFactory) -> None:
    for i in range(25):
        index.ingest(attributes(SOPInstanceUID=f"1.{i}"), SCP, f"key-{i:02d}", 1)
    assert sorted(index.storage_keys(batch_size=4)) == [f"key-{i:02d}" for i in range(25)]


# ---------------------------------------------------------------------------------------------
# races


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(0..count-1)`` in threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)

    def run(n: int) -> Any:
        barrier.wait()
        return work(n)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_same_sop_instance_from_eight_threads(index: Index, second_index: Index, attributes: AttributesFactory) -> None:
    """One row and one id for all; every stored-then-replaced key handed back exactly once."""
    keys = [f"key-{n}" for n in range(8)]

    def work(n: int) -> IngestResult:
        # half the threads use another engine, as a second process would
        return (index if n % 2 else second_index).ingest(attributes(), SCP, keys[n], n)

    results: list[IngestResult] = _at_once(8, work)
    assert len({r.image.id for r in results}) == 1
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 1}
    added = [r for r in results if r.image_added]
    assert len(added) == 1 and added[0].replaced_storage_key is None
    assert sum(r.patient_added for r in results) == sum(r.series_added for r in results) == 1
    replaced = [r.replaced_storage_key for r in results if not r.image_added]
    final = index.get_image(results[0].image.id).storage_key
    assert None not in replaced and len(set(replaced)) == 7
    assert sorted([*replaced, final]) == sorted(keys)  # type: ignore[type-var]


def test_replaced_keys_chain_over_all_rounds(index: Index, second_index: Index, attributes: AttributesFactory) -> None:
    """Across rounds too: every stored key except the final one is replaced exactly once."""
    stored: list[str] = []
    replaced: list[str | None] = []
    for round_ in range(3):
        keys = [f"r{round_}-k{n}" for n in range(8)]
        stored.extend(keys)

        def work(n: int, keys: list[str] = keys) -> IngestResult:
            return (index if n % 2 else second_index).ingest(attributes(), SCP, keys[n], n)

        replaced.extend(r.replaced_storage_key for r in _at_once(8, work))
    final = list(index.storage_keys())
    assert replaced.count(None) == 1
    assert sorted([*(k for k in replaced if k is not None), *final]) == sorted(stored)


def test_fifty_new_images_of_one_new_series_from_eight_threads(
    index: Index, second_index: Index, attributes: AttributesFactory
) -> None:
    def work(n: int) -> list[IngestResult]:
        target = index if n % 2 else second_index
        return [
            target.ingest(attributes(SOPInstanceUID=f"1.2.3.{i}", InstanceNumber=str(i)), USER, f"key-{i}", i)
            for i in range(n, 50, 8)
        ]

    results = [r for chunk in _at_once(8, work) for r in chunk]
    assert len(results) == 50
    assert all(r.image_added and r.replaced_storage_key is None for r in results)
    assert sum(r.patient_added for r in results) == 1
    assert sum(r.study_added for r in results) == 1
    assert sum(r.series_added for r in results) == 1
    assert len({r.image.series_id for r in results}) == 1
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "images": 50}
    assert sorted(index.storage_keys()) == sorted(f"key-{i}" for i in range(50))
    assert len(index.sources()) == 1


def test_ingest_racing_a_delete_of_the_same_series(
    index: Index, second_index: Index, attributes: AttributesFactory
) -> None:
    """Deleting the last image of a series while images arrive for it loses no ingested row."""
    for round_ in range(5):
        first = index.ingest(attributes(SOPInstanceUID=f"{round_}.0"), SCP, f"r{round_}-0", 1)

        def work(n: int, round_: int = round_, first_id: int = first.image.id) -> Any:
            if n == 0:
                return second_index.delete_images([first_id])
            return index.ingest(attributes(SOPInstanceUID=f"{round_}.{n}"), SCP, f"r{round_}-{n}", 1)

        results = _at_once(6, work)
        assert [i.id for i in results[0]] == [first.image.id]
        kept = sorted(r.image.id for r in results[1:])
        assert sorted(i.id for i in index.images_by_storage_keys(f"r{round_}-{n}" for n in range(6))) == kept
        for r in results[1:]:  # every ingested image is reachable through its hierarchy
            assert index.get_flat_series(index.get_image(r.image.id).series_id)
        index.delete_images(kept)
        assert index.counts() == {"patients": 0, "studies": 0, "series": 0, "images": 0}
