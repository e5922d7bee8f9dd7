"""Two real `jupyter slicebox` servers on ONE PostgreSQL database and ONE storage folder.

As with one Jupyter server per user under JupyterHub: both start at once on an empty database
(the migration runs once), ingest overlapping sets in parallel (the shared images sent to both at
the same moment), and afterwards every instance is indexed once, both list all of them and serve
their bytes, and storage holds exactly the indexed blobs.  Jobs: a server starting does not fail
another's running job; the job of a killed server is recovered (FAILED, resumable) by the live one,
and the killed server's restart (a crash repair) leaves the live one's fresh blobs alone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from generators import ct_bytes
from nodeproc import NodeProcess, start_node
from pg import postgresql_url  # noqa: F401  (fixture)
from sqlalchemy.engine import make_url

from slicebox_lab.jobs import INTERRUPTED_BY_RESTART

DICOM = {"Content-Type": "application/dicom"}
THREADS = 4  # client threads per server
UID = "1.2.826.0.1.3680043.8.498.4242"


@pytest.fixture
def empty_database(postgresql_url: str) -> Iterator[str]:  # noqa: F811
    """A fresh, un-migrated PostgreSQL database: the servers migrate it themselves."""
    base = make_url(postgresql_url)
    name = f"multi_{uuid.uuid4().hex}"
    admin = sa.create_engine(
        base.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.NullPool,
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def start_servers(tmp_path: Path, url: str, names: tuple[str, ...]) -> list[NodeProcess]:
    """Start servers at the same moment, each with its own data_dir, sharing database and storage."""
    storage = tmp_path / "shared-storage"

    def start(name: str) -> NodeProcess:
        return start_server(tmp_path, url, storage, name)

    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(start, name) for name in names]
    started = []
    failure: BaseException | None = None
    for future in futures:
        try:
            started.append(future.result())
        except BaseException as error:  # stop the others before failing
            failure = error
    if failure is not None:
        for node in started:
            node.stop()
        raise failure
    return started


def start_server(tmp_path: Path, url: str, storage: Path, name: str) -> NodeProcess:
    return start_node(
        tmp_path / name,
        tmp_path,
        "secret-token",
        f"--SliceboxApp.database_url={url}",
        f"--SliceboxApp.storage_dir={storage}",
    )


def blob_keys(storage: Path) -> list[str]:
    return sorted(p.name for p in storage.rglob("*") if p.is_file())


def all_images(node: NodeProcess) -> list[dict[str, Any]]:
    r = node.session().post(node.api + "/metadata/images/query", json={"count": 10000, "query_properties": []})
    assert r.status_code == 200, r.text
    return list(r.json())


def test_two_servers_ingest_overlapping_sets_into_one_index(tmp_path: Path, empty_database: str) -> None:
    # 3 patients x 2 series; 30 images only for A, 30 only for B, 30 for both at the same moment
    files: dict[str, bytes] = {}
    for n in range(90):
        patient = n % 3
        series = (n // 3) % 2
        sop = f"{UID}.{n}"
        files[sop] = ct_bytes(
            PatientName=f"Multi^{patient}",
            PatientID=f"MULTI{patient}",
            StudyInstanceUID=f"{UID}.1.{patient}",
            SeriesInstanceUID=f"{UID}.2.{patient}.{series}",
            SOPInstanceUID=sop,
            InstanceNumber=n,
            seed=n,
        )
    uids = list(files)
    shared, only_a, only_b = uids[:30], uids[30:60], uids[60:]

    nodes = start_servers(tmp_path, empty_database, ("a", "b"))
    a, b = nodes
    try:
        statuses: dict[str, list[int]] = {uid: [] for uid in uids}
        errors: list[str] = []
        lock = threading.Lock()
        barriers = [threading.Barrier(2, timeout=60) for _ in range(THREADS)]

        def client(node: NodeProcess, own: list[str], k: int) -> None:
            s = node.session()
            mine_shared, mine_own = shared[k::THREADS], own[k::THREADS]
            for n in range(max(len(mine_shared), len(mine_own))):
                batch = []
                if n < len(mine_shared):
                    barriers[k].wait()  # the same instance goes to the other server now too
                    batch.append(mine_shared[n])
                if n < len(mine_own):
                    batch.append(mine_own[n])
                for uid in batch:
                    r = s.post(node.api + "/images", data=files[uid], headers=DICOM, timeout=60)
                    with lock:
                        statuses[uid].append(r.status_code)
                        if r.status_code not in (200, 201):
                            errors.append(f"{uid}: {r.status_code} {r.text}")

        threads = [
            threading.Thread(target=client, args=(node, own, k))
            for node, own in ((a, only_a), (b, only_b))
            for k in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        for uid in shared:  # one server added it, the other found it there
            assert sorted(statuses[uid]) == [200, 201], (uid, statuses[uid])
        for uid in only_a + only_b:
            assert statuses[uid] == [201]

        # the index: every instance once, one row per patient, study and series
        engine = sa.create_engine(empty_database, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text('SELECT "SOPInstanceUID", storage_key FROM images')).all()
                counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                          for t in ("patients", "studies", "series")}  # fmt: skip
                versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        finally:
            engine.dispose()
        assert sorted(uid for uid, _ in rows) == sorted(uids)
        assert counts == {"patients": 3, "studies": 3, "series": 6}
        assert len(versions) == 1  # migrated once, to one head
        # storage: exactly the indexed blobs (a loser's replaced blob was removed, no temp files)
        assert blob_keys(tmp_path / "shared-storage") == sorted(key for _, key in rows)

        # both servers list and serve all of them
        listed = {}
        for node in nodes:
            s = node.session()
            patients = s.get(node.api + "/metadata/patients", params={"count": 100}).json()
            assert sorted(p["PatientID"] for p in patients) == ["MULTI0", "MULTI1", "MULTI2"]
            series_count = 0
            for patient in patients:
                for study in s.get(node.api + "/metadata/studies", params={"patientid": patient["id"]}).json():
                    series_count += len(s.get(node.api + "/metadata/series", params={"studyid": study["id"]}).json())
            assert series_count == 6
            images = all_images(node)
            listed[node.url] = sorted((i["id"], i["SOPInstanceUID"]) for i in images)
            assert sorted(i["SOPInstanceUID"] for i in images) == sorted(uids)
            for image in images:
                r = s.get(f"{node.api}/images/{image['id']}", timeout=30)
                assert r.status_code == 200 and r.content == files[image["SOPInstanceUID"]]
        assert listed[a.url] == listed[b.url]
    finally:
        for node in nodes:
            node.stop()


# ---------------------------------------------------------------------------------------------- jobs


@pytest.fixture
def slow_scp() -> Iterator[tuple[int, list[str]]]:
    """A C-STORE SCP that takes 0.4 s per image: a send job stays RUNNING for a while."""
    from pynetdicom import AE, StoragePresentationContexts, evt

    received: list[str] = []

    def on_store(event: Any) -> int:
        time.sleep(0.4)
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="SLOWSCP")
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def wait_for(what: str, condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def job(node: NodeProcess, job_id: int) -> dict[str, Any]:
    r = node.session().get(f"{node.api}/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_jobs_survive_another_server_and_are_recovered_when_theirs_dies(
    tmp_path: Path, empty_database: str, slow_scp: tuple[int, list[str]]
) -> None:
    port, _ = slow_scp
    storage = tmp_path / "shared-storage"
    a = start_server(tmp_path, empty_database, storage, "a")
    nodes = [a]
    try:
        s = a.session()
        ids = []
        for n in range(40):
            r = s.post(a.api + "/images", data=ct_bytes(PatientID="JOBS", SOPInstanceUID=f"{UID}.9.{n}"), headers=DICOM)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        r = s.post(a.api + "/scus", json={"name": "slow", "ae_title": "SLOWSCP", "host": "127.0.0.1", "port": port})
        assert r.status_code == 201, r.text
        scu_id = r.json()["id"]

        # 1. B starts while A's job runs: the job keeps running and succeeds; B lists it
        first = s.post(f"{a.api}/scus/{scu_id}/send", json={"image_ids": ids}).json()
        wait_for("the job to run", lambda: job(a, first["id"])["state"] == "RUNNING")
        b = start_server(tmp_path, empty_database, storage, "b")
        nodes.append(b)
        seen = job(b, first["id"])
        assert seen["state"] == "RUNNING" and seen["server"] == job(a, first["id"])["server"]
        assert first["id"] in [j["id"] for j in b.session().get(b.api + "/jobs").json()]
        done = wait_for("the job to finish", lambda: (j := job(a, first["id"]))["state"] != "RUNNING" and j)
        assert done["state"] == "SUCCEEDED" and done["counts"]["sent"] == 40, done

        # 2. A dies during a job: B marks it FAILED (resumable) and resumes it
        second = s.post(f"{a.api}/scus/{scu_id}/send", json={"image_ids": ids}).json()
        wait_for("some images sent", lambda: job(a, second["id"])["progress_done"] >= 3)
        a.kill()
        failed = wait_for("B to recover the job", lambda: (j := job(b, second["id"]))["state"] == "FAILED" and j, 30)
        assert failed["error"] == INTERRUPTED_BY_RESTART
        r = b.session().post(f"{b.api}/jobs/{second['id']}/resume")
        assert r.status_code == 201, r.text
        resumed = wait_for("the resumed job", lambda: (j := job(b, r.json()["id"]))["state"] != "PENDING" and j)
        assert resumed["server"] != failed["server"]

        # 3. A restarts (a crash repair: its running marker stayed) while B ingests: B's blobs stay
        answered: dict[str, bytes] = {}
        stop = threading.Event()
        upload_errors: list[str] = []

        def upload() -> None:
            session, n = b.session(), 0
            while not stop.is_set():
                uid = f"{UID}.8.{n}"
                data = ct_bytes(PatientID="DURING", SOPInstanceUID=uid, seed=n)
                response = session.post(b.api + "/images", data=data, headers=DICOM, timeout=60)
                if response.status_code == 201:
                    answered[uid] = data
                else:
                    upload_errors.append(response.text)
                n += 1

        uploader = threading.Thread(target=upload)
        uploader.start()
        try:
            wait_for("uploads on B", lambda: len(answered) >= 5)
            a = start_server(tmp_path, empty_database, storage, "a")
            nodes.append(a)
            time.sleep(1.0)
        finally:
            stop.set()
            uploader.join(60)
        assert upload_errors == [] and answered
        logs = a.session().get(a.api + "/log", params={"count": 100}).json()
        assert any("unclean shutdown" in entry["message"] for entry in logs)
        by_uid: dict[str, list[int]] = {}
        for image in all_images(a):
            by_uid.setdefault(image["SOPInstanceUID"], []).append(image["id"])
        for uid, data in answered.items():
            assert len(by_uid[uid]) == 1, uid
            for node in (a, b):
                r = node.session().get(f"{node.api}/images/{by_uid[uid][0]}", timeout=30)
                assert r.status_code == 200 and r.content == data
        final = wait_for("the resumed job to finish", lambda: (j := job(a, resumed["id"]))["state"] != "RUNNING" and j)
        assert final["state"] == "SUCCEEDED", final
    finally:
        for node in nodes:
            try:
                node.stop()
            except (OSError, requests.RequestException):
                pass
