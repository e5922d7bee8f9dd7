"""``SliceboxContext.anonymize_many``: a bulk job's chunk anonymized in place with its index work done once.

Keys in one durable transaction before any anonymous blob is named, rows in one transaction after the
flushes; an image that cannot be done fails alone, and a failure of the whole batch leaves nothing behind.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from generators import ct_bytes

from slicebox_lab.anonymization import Profile, keystore
from slicebox_lab.anonymization.jobs import CHUNK, _run
from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.errors import NotFound, SliceboxError, StorageFull
from slicebox_lab.events import ImageAdded
from slicebox_lab.index.repository import Index
from slicebox_lab.jobs import JobCancelled
from slicebox_lab.model import IngestResult, Source
from slicebox_lab.routing import filtering
from slicebox_lab.storage.filesystem import FileBlobWriter
from slicebox_lab.workers import WorkerFailed, tasks

WATCH = Source("directory", "incoming")
BASIC = Profile()


@pytest.fixture
def context(tmp_path: Path):
    context = SliceboxContext.open(tmp_path / "node", fsync=False)
    yield context
    context.close()


def _ingest(context: SliceboxContext, count: int) -> list[int]:
    return [
        context.ingest(ct_bytes(PatientID="REAL", SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.79.{n}"), WATCH).image.id
        for n in range(count)
    ]


def _files(context: SliceboxContext) -> set[str]:
    """Every file in storage, temp files included."""
    root = Path(context.storage.root)  # type: ignore[attr-defined]
    return {p.name for p in root.rglob("*") if p.is_file()}


def _key_rows(context: SliceboxContext) -> list[tuple[int | None, str]]:
    return sorted((key.imageId, key.AnonSOPInstanceUID) for key in keystore.list_keys(context.index, count=1000))


def test_a_chunk_is_anonymized_with_one_key_per_image_and_the_originals_kept(context: SliceboxContext):
    ids = _ingest(context, 5)
    added: list[ImageAdded] = []
    context.events.subscribe(ImageAdded, added.append)
    tag_values = {ids[0]: parse_tag_values([{"tagPath": "PatientName", "value": "Chosen^Name"}])}
    with ThreadPoolExecutor(4) as pool:
        outcomes = context.anonymize_many([*ids, 99999], BASIC, tag_values, pool)
    assert isinstance(outcomes[-1], NotFound)
    results = [o for o in outcomes[:-1] if isinstance(o, IngestResult)]
    assert len(results) == 5 and all(r.image_added for r in results)
    assert [e.image.id for e in added] == [r.image.id for r in results]
    for result in results:
        stored = pydicom.dcmread(io.BytesIO(context.image_bytes(result.image.id)))
        assert stored.PatientIdentityRemoved == "YES" and stored.PatientID != "REAL"
    assert str(pydicom.dcmread(io.BytesIO(context.image_bytes(results[0].image.id))).PatientName) == "Chosen^Name"
    # one key per image, naming the original; the originals stay (the job deletes them per chunk)
    assert _key_rows(context) == sorted((i, r.image.SOPInstanceUID) for i, r in zip(ids, results, strict=True))
    assert all(context.index.get_image(i) for i in ids)
    assert len(_files(context)) == 10  # five originals, five anonymous copies, nothing else

    again = context.anonymize_many(ids, BASIC, tag_values)  # the same chunk again (a resumed job)
    assert [o.image.id for o in again if isinstance(o, IngestResult)] == [r.image.id for r in results]
    assert not any(o.image_added for o in again if isinstance(o, IngestResult))
    assert len(_key_rows(context)) == 5 and len(_files(context)) == 10  # keys refreshed, blobs replaced


def test_keys_are_durable_before_any_anonymous_blob_is_named(context: SliceboxContext, monkeypatch):
    ids = _ingest(context, 3)
    originals = _files(context)
    seen: list[set[str]] = []
    real = keystore.store_key_records

    def store(index: Index, records: Any) -> None:
        seen.append({f for f in _files(context) if not f.startswith(".")})  # named blobs at this moment
        real(index, records)

    monkeypatch.setattr(keystore, "store_key_records", store)
    assert all(isinstance(o, IngestResult) for o in context.anonymize_many(ids, BASIC, {}))
    assert seen == [originals]


def test_a_failed_key_transaction_leaves_nothing_behind(context: SliceboxContext, monkeypatch):
    ids = _ingest(context, 3)
    originals = _files(context)

    def fail(index: Index, records: Any) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(keystore, "store_key_records", fail)
    with pytest.raises(RuntimeError, match="disk went away"):
        context.anonymize_many(ids, BASIC, {})
    assert _files(context) == originals and _key_rows(context) == []
    assert context.index.counts()["images"] == 3


def test_an_image_that_cannot_be_flushed_fails_alone(context: SliceboxContext, monkeypatch):
    ids = _ingest(context, 3)
    real = FileBlobWriter.flush
    calls: list[int] = []

    def flush(self: FileBlobWriter) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second anonymous copy meets a full disk
            self.discard()
            raise StorageFull("no space left: nothing was stored")
        real(self)

    monkeypatch.setattr(FileBlobWriter, "flush", flush)
    outcomes = context.anonymize_many(ids, BASIC, {})
    assert isinstance(outcomes[1], StorageFull)
    assert isinstance(outcomes[0], IngestResult) and isinstance(outcomes[2], IngestResult)
    assert context.index.counts()["images"] == 5 and len(_files(context)) == 5


def test_a_batch_the_index_refuses_is_indexed_one_at_a_time(context: SliceboxContext, monkeypatch):
    ids = _ingest(context, 4)
    real = Index.ingest_many

    def refuse_batches(self: Index, entries: Any, *args: Any, **kwargs: Any) -> Any:
        if len(entries) > 1:
            raise RuntimeError("a batch the database refused")
        return real(self, entries, *args, **kwargs)

    monkeypatch.setattr(Index, "ingest_many", refuse_batches)
    outcomes = context.anonymize_many(ids, BASIC, {})
    assert all(isinstance(o, IngestResult) for o in outcomes), outcomes
    assert context.index.counts()["images"] == 8 and len(_files(context)) == 8


def test_an_image_refused_by_the_profile_is_its_own_failure(context: SliceboxContext):
    ids = _ingest(context, 2)
    burned = ct_bytes(PatientID="REAL", SOPInstanceUID="1.2.826.0.1.3680043.8.498.79.99", BurnedInAnnotation="YES")
    refused = context.ingest(burned, WATCH).image.id
    outcomes = context.anonymize_many([ids[0], refused, ids[1]], BASIC, {})
    assert isinstance(outcomes[1], SliceboxError) and "burned" in outcomes[1].message.lower()
    assert isinstance(outcomes[0], IngestResult) and isinstance(outcomes[2], IngestResult)
    assert len(_key_rows(context)) == 2 and len(_files(context)) == 5


class _Job:
    """What the bulk job's runner sees of its job: cancelled at the ``cancel_at``-th check."""

    def __init__(self, ids: list[int], cancel_at: int = 0, done: int = 0) -> None:
        self.parameters = {"image_ids": ids, "profile": {}, "tag_values": {}}
        self.resume_from = {"progress_done": done} if done else {}
        self.cancel_at, self.checks, self.done = cancel_at, 0, done
        self.counts: dict[str, int] = {}

    def progress(self, done: int, total: int | None = None) -> None:
        self.done = done

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.checks == self.cancel_at:
            raise JobCancelled("cancelled")


def test_a_cancelled_job_leaves_no_copy_written_ahead_and_resumes_after_its_last_deleted_chunk(
    context: SliceboxContext,
):
    ids = _ingest(context, 2 * CHUNK + 3)
    job = _Job(ids, cancel_at=2)  # chunk 1 is being written ahead when the job stops
    with pytest.raises(JobCancelled):
        _run(context, job)  # type: ignore[arg-type]
    assert job.done == CHUNK and job.counts["anonymized"] == CHUNK
    assert not [f for f in _files(context) if f.startswith(".")]  # no temp file left
    assert len(_files(context)) == len(ids) and len(_key_rows(context)) == CHUNK
    assert all(context.index.get_image(i) for i in ids[CHUNK:])

    resumed = _Job(ids, done=job.done)
    result = _run(context, resumed)  # type: ignore[arg-type]
    assert resumed.done == len(ids) and resumed.counts["anonymized"] == len(ids) - CHUNK
    assert len(result["images"]) == len(ids) - CHUNK
    assert len(_files(context)) == len(ids) and len(_key_rows(context)) == len(ids)
    assert context.index.counts()["images"] == len(ids)
    for image_id in ids:
        with pytest.raises(NotFound):
            context.index.get_image(image_id)


def test_a_source_with_a_tag_filter_has_its_copies_filtered_in_the_same_chunk(context: SliceboxContext):
    """The copies of a filtered source go the way of any filtered ingest (rewritten, then indexed alone); the
    others of the chunk are indexed together."""
    scanner = Source("scp", "ct-scanner")
    kept = context.ingest(ct_bytes(SOPInstanceUID="1.2.826.0.1.3680043.8.498.79.50", KVP="120"), WATCH).image.id
    filtered = context.ingest(ct_bytes(SOPInstanceUID="1.2.826.0.1.3680043.8.498.79.51", KVP="120"), scanner).image.id
    tag_filter = filtering.create_filter(context.index, {"name": "no kVp", "type": "BLACKLIST", "tagPaths": ["KVP"]})
    filtering.create_association(
        context.index, {"sourceType": "scp", "sourceName": "ct-scanner", "filterId": tag_filter.id}
    )
    outcomes = context.anonymize_many([kept, filtered], BASIC, {})
    assert all(isinstance(o, IngestResult) for o in outcomes), outcomes
    first, second = (pydicom.dcmread(io.BytesIO(context.image_bytes(o.image.id))) for o in outcomes)  # type: ignore[union-attr]
    assert first.KVP == "120" and "KVP" not in second
    assert first.PatientIdentityRemoved == second.PatientIdentityRemoved == "YES"
    assert len(_key_rows(context)) == 2 and len(_files(context)) == 4


@pytest.fixture
def two_workers(tmp_path: Path):
    context = SliceboxContext.open(tmp_path / "node", fsync=False, workers=2)
    yield context
    context.close()
    context.workers.close()


def test_worker_calls_carry_several_images_each_failing_alone(two_workers: SliceboxContext, monkeypatch):
    """A chunk goes to the workers a few images to a call (the server pays a call's hand-over once for them);
    an image refused inside a call, or one that is gone, fails alone, in its place."""
    context = two_workers
    ids = _ingest(context, 5)
    burned = ct_bytes(PatientID="REAL", SOPInstanceUID="1.2.826.0.1.3680043.8.498.79.99", BurnedInAnnotation="YES")
    refused = context.ingest(burned, WATCH).image.id
    calls: list[int] = []
    real_start = context.workers.start

    def start(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn is tasks.anonymize_each_into:
            calls.append(len(args[0]))
        return real_start(fn, *args, **kwargs)

    monkeypatch.setattr(context.workers, "start", start)
    chunk = [ids[0], ids[1], refused, 99999, ids[2], ids[3], ids[4]]
    tag_values = {ids[3]: parse_tag_values([{"tagPath": "PatientName", "value": "Chosen^Name"}])}
    with ThreadPoolExecutor(4) as pool:
        outcomes = context.anonymize_many(chunk, BASIC, tag_values, pool)
    assert sorted(calls) == [3, 3]  # seven images over two workers, four and three to a call; the gone one not sent
    assert isinstance(outcomes[2], SliceboxError) and "burned" in outcomes[2].message.lower()
    assert isinstance(outcomes[3], NotFound)
    done = [o for i, o in enumerate(outcomes) if i not in (2, 3)]
    assert all(isinstance(o, IngestResult) and o.image_added for o in done), outcomes
    renamed = pydicom.dcmread(io.BytesIO(context.image_bytes(outcomes[5].image.id)))  # type: ignore[union-attr]
    assert str(renamed.PatientName) == "Chosen^Name" and renamed.PatientIdentityRemoved == "YES"
    assert _key_rows(context) == sorted(
        (i, o.image.SOPInstanceUID) for i, o in zip(chunk, outcomes, strict=True) if isinstance(o, IngestResult)
    )
    assert len(_files(context)) == 6 + 5  # originals and five copies: nothing of the refused image


def test_a_worker_that_dies_fails_the_images_of_its_call_and_leaves_nothing_behind(
    two_workers: SliceboxContext, monkeypatch
):
    context = two_workers
    ids = _ingest(context, 6)
    originals = _files(context)
    killed: list[int | None] = []
    real_start = context.workers.start

    def start(fn: Any, *args: Any, **kwargs: Any) -> Any:
        call = real_start(fn, *args, **kwargs)
        if fn is tasks.anonymize_each_into and not killed:
            killed.append(call.pid)
            call.terminate()  # the first call's worker dies with its images under way
        return call

    monkeypatch.setattr(context.workers, "start", start)
    with ThreadPoolExecutor(4) as pool:
        outcomes = context.anonymize_many(ids, BASIC, {}, pool)
    failed = [o for o in outcomes if isinstance(o, WorkerFailed)]
    stored = [o for o in outcomes if isinstance(o, IngestResult)]
    assert len(failed) == 3 and len(stored) == 3, outcomes
    assert "nothing of this request was stored" in failed[0].message
    assert _files(context) == originals | {o.image.storage_key for o in stored}  # no temp file, no half copy
    assert len(_key_rows(context)) == 3
    assert killed[0] not in context.workers.worker_pids() and len(context.workers.worker_pids()) == 2

    monkeypatch.undo()  # the replacement worker does the failed ones
    again = context.anonymize_many([i for i, o in zip(ids, outcomes, strict=True) if o in failed], BASIC, {})
    assert all(isinstance(o, IngestResult) for o in again)
    assert len(_key_rows(context)) == 6 and len(_files(context)) == 12
