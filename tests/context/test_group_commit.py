"""Concurrent ingests into a SQLite file share fsynced commits (group commit), and stay correct."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa
from generators import ct_bytes

from slicebox_lab import dicom
from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.storage import FileSystemStorage

USER = Source("user", "alice")


def _index(tmp_path: Path) -> Index:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    return Index(engine)


def test_concurrent_ingests_share_commits_and_all_are_stored(tmp_path: Path):
    index = _index(tmp_path)
    context = SliceboxContext(FileSystemStorage(tmp_path / "blobs"), index)  # fsync on: commits cost
    commits = []
    sa.event.listen(index.engine, "commit", lambda conn: commits.append(1))
    threads, per_thread = 8, 8
    stored: dict[int, bytes] = {}
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(per_thread):
                data = ct_bytes(PatientID=f"P{worker % 3}", InstanceNumber=n, seed=worker * 100 + n)
                stored[context.ingest(data, USER).image.id] = data
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not failures
    assert len(stored) == threads * per_thread == index.counts()["images"]
    assert index.counts()["patients"] == 3
    for image_id, data in stored.items():
        assert context.image_bytes(image_id) == data
    # fewer commits than ingests: waiting ingests were committed together
    assert len(commits) < threads * per_thread, len(commits)
    context.close()


def test_a_failing_ingest_in_a_shared_transaction_is_rolled_back_alone(tmp_path: Path):
    index = _index(tmp_path)
    group = index._group
    assert group is not None
    source = Source("user", "alice")

    first = index.ingest(dicom.extract_attributes(dicom.parse_part10(ct_bytes(seed=1))), source, "key-a", 10)
    # one batch: a new image, one whose storage key is taken (IntegrityError), another new one
    results: dict[str, object] = {}
    barrier = threading.Barrier(3)

    def run(name: str, data: bytes, key: str) -> None:
        barrier.wait()
        try:
            results[name] = index.ingest(dicom.extract_attributes(dicom.parse_part10(data)), source, key, 10)
        except Conflict as error:
            results[name] = error

    with group._lock:  # a leader is busy: the three calls queue up as followers, then go in one batch
        group._leader = True
        threads = [
            threading.Thread(target=run, args=("b", ct_bytes(PatientID="B", seed=2), "key-b")),
            threading.Thread(target=run, args=("dup", ct_bytes(PatientID="D", seed=3), "key-a")),
            threading.Thread(target=run, args=("c", ct_bytes(PatientID="C", seed=4), "key-c")),
        ]
        for t in threads:
            t.start()
    deadline = time.monotonic() + 30
    while True:
        with group._lock:
            if len(group._queue) == 3:
                group._queue[0].wake.release()  # the busy leader hands over to the first: it takes all three
                break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert isinstance(results["dup"], Conflict)
    assert set(index.storage_keys()) == {"key-a", "key-b", "key-c"}
    assert index.get_image(first.image.id).storage_key == "key-a"
    assert index.counts()["patients"] == 3


def test_in_memory_index_does_not_batch():
    engine = create_engine("sqlite://")
    upgrade(engine)
    assert Index(engine)._group is None


def test_keys_of_concurrent_anonymizations_share_commits_and_each_is_recorded(tmp_path: Path):
    """A box's images in flight and a bulk job's threads each record a key: those of the same moment
    share one fsynced commit (with the ingests of that moment), and every key is there afterwards."""
    from slicebox_lab.anonymization import Profile

    index = _index(tmp_path)
    context = SliceboxContext(FileSystemStorage(tmp_path / "blobs"), index)
    ids = [context.ingest(ct_bytes(PatientID=f"P{n % 2}", seed=n), USER).image.id for n in range(32)]
    commits = []
    sa.event.listen(index.engine, "commit", lambda conn: commits.append(1))
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for image_id in ids[worker::8]:
                context.anonymized_bytes(image_id, Profile())
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not failures
    with index.reading() as conn:
        keyed = conn.execute(sa.text("SELECT image_id FROM anonymization_keys")).scalars().all()
    assert sorted(keyed) == sorted(ids)
    assert len(commits) < len(ids), len(commits)
    context.close()


def test_each_caller_is_woken_once_with_its_own_answer_also_beyond_a_full_batch(tmp_path: Path):
    """A commit wakes the callers it finished and hands the lead to the next one waiting; with batches of two
    and twelve callers, every caller gets its own result or its own error, and a wake-up only once."""
    index = _index(tmp_path)
    group = index._group
    assert group is not None
    group.max_batch = 2
    answers: dict[int, object] = {}
    barrier = threading.Barrier(12)

    def work(n: int) -> object:
        def write(conn: sa.Connection) -> int:
            time.sleep(0.002)  # the others queue up meanwhile
            if n % 5 == 4:
                raise ValueError(f"caller {n} fails alone")
            return int(conn.execute(sa.text("SELECT :n + 1000"), {"n": n}).scalar_one())

        barrier.wait()
        try:
            return group.run(write)
        except ValueError as error:
            return str(error)

    threads = [threading.Thread(target=lambda n=n: answers.__setitem__(n, work(n))) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == {n: f"caller {n} fails alone" if n % 5 == 4 else n + 1000 for n in range(12)}
    assert group._queue == [] and group._leader is False
