"""Several server processes ingesting into one index at once (SQLite file and PostgreSQL).

``test_index_ingest.py`` races threads of one process over two engines; here real processes (each
with its own engine and connection pool, as two Jupyter servers have) and several threads in each
ingest overlapping sets at the same moment: every instance gets one row, every parent one row, and
of two ingests of one instance exactly one adds it while the other hands back the key it replaced.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from listing import list_patients
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab.index import Index, create_engine
from slicebox_lab.index.schema import images
from slicebox_lab.model import IndexedAttributes, Source

AttributesFactory = Callable[..., IndexedAttributes]
SOURCE = Source("user", "hub")
PROCESSES = 3
THREADS = 4
UIDS = [f"1.2.826.0.1.3680043.8.498.55.{n}" for n in range(60)]


def _attributes(n: int, PatientSex: str = "O") -> IndexedAttributes:
    """Instance ``n`` of 60: 5 patients, one study each, 2 series per study."""
    patient, series = n % 5, (n // 5) % 2
    return IndexedAttributes(
        patient={"PatientName": f"Hub^{patient}", "PatientID": f"HUB{patient}", "PatientSex": PatientSex},
        study={"StudyInstanceUID": f"1.2.55.{patient}", "StudyDate": "20240101"},
        series={"SeriesInstanceUID": f"1.2.55.{patient}.{series}", "Modality": "CT"},
        image={"SOPInstanceUID": UIDS[n], "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber": str(n)},
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        number_of_frames=1,
    )


def _server(url: str, name: str, numbers: list[int], start: Any, results: Any) -> None:
    """One server process: its own engine, THREADS threads, all starting when every process is ready."""
    engine = create_engine(url)
    index = Index(engine)
    out: list[tuple[str, int, bool, str | None, str]] = []
    lock = threading.Lock()
    try:
        start.wait(60)

        def work(n: int) -> None:
            key = f"{name}-{n}"
            result = index.ingest(_attributes(n, PatientSex=name), SOURCE, key, n)
            with lock:
                out.append((UIDS[n], result.image.id, result.image_added, result.replaced_storage_key, key))

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(work, numbers))
        results.put((name, out, ""))
    except BaseException as error:  # report it: an exception in a child would otherwise be lost
        results.put((name, out, f"{type(error).__name__}: {error}"))
    finally:
        engine.dispose()


def test_processes_ingest_overlapping_sets_into_one_index(engine: sa.Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    # every process ingests the 30 shared instances and 10 of its own
    shared = list(range(30))
    own = {f"p{p}": list(range(30 + 10 * p, 40 + 10 * p)) for p in range(PROCESSES)}
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(PROCESSES), spawn.Queue()
    processes = [
        spawn.Process(target=_server, args=(url, name, shared + mine, start, results)) for name, mine in own.items()
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(30)
    assert [error for _, _, error in reports if error] == []

    index = Index(engine)
    assert index.counts() == {"patients": 5, "studies": 5, "series": 10, "images": 60}
    assert len(index.sources()) == 1
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(images.c.SOPInstanceUID, images.c.storage_key)).all())
    assert sorted(rows) == sorted(UIDS)

    outcomes: dict[str, list[tuple[int, bool, str | None, str]]] = {}
    for _, out, _ in reports:
        for uid, image_id, added, replaced, key in out:
            outcomes.setdefault(uid, []).append((image_id, added, replaced, key))
    for n, uid in enumerate(UIDS):
        got = outcomes[uid]
        assert len(got) == (PROCESSES if n < 30 else 1)
        assert len({image_id for image_id, _, _, _ in got}) == 1  # one id for all
        assert sum(added for _, added, _, _ in got) == 1  # exactly one process added it
        # each stored key except the row's final one was handed back once, to be deleted
        keys = sorted(key for _, _, _, key in got)
        replaced = [r for _, added, r, _ in got if not added]
        assert None not in replaced
        assert sorted([*replaced, rows[uid]]) == keys  # type: ignore[type-var]


def test_concurrent_updates_of_one_patient_leave_one_row(engine: sa.Engine) -> None:
    """Two servers ingest images of one patient with different values: one row, the value of one of them."""
    indexes = [Index(create_engine(engine.url.render_as_string(hide_password=False))) for _ in range(2)]
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait(30)
        for n in range(t, 60, 8):
            if n % 5 == 0:  # patient HUB0 only
                indexes[t % 2].ingest(_attributes(n, PatientSex="MF"[t % 2]), SOURCE, f"u-{n}", n)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
        patients = list_patients(indexes[0], count=10)
        assert len(patients) == 1 and patients[0].PatientSex in ("M", "F")
        assert indexes[0].counts()["images"] == 12
    finally:
        for index in indexes:
            index.engine.dispose()
