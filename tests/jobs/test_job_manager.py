"""JobManager on a real SQLite file: run, fail, cancel, resume, throttled persistence, restart, shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from slicebox_lab.errors import Conflict, InvalidInput, NotFound, PeerFailure
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.index.schema import jobs
from slicebox_lab.jobs import (
    INTERRUPTED_BY_RESTART,
    INTERRUPTED_BY_SHUTDOWN,
    Job,
    JobCancelled,
    JobContext,
    JobManager,
)
from slicebox_lab.model import to_json

TIMEOUT = 10.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(sqlite_url(tmp_path / "node" / "slicebox.sqlite"))
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def index(engine: sa.Engine) -> Index:
    return Index(engine)


@pytest.fixture
def make_manager(index: Index) -> Iterator[Callable[..., JobManager]]:
    managers: list[JobManager] = []

    def make(**kwargs: Any) -> JobManager:
        manager = JobManager(index, **kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.shutdown(timeout=5)


@pytest.fixture
def manager(make_manager: Callable[..., JobManager]) -> JobManager:
    return make_manager()


def stored_row(index: Index, job_id: int) -> dict[str, Any]:
    """The row as persisted (not the live values ``get`` overlays)."""
    with index.reading() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
    return dict(row._mapping)


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def cooperative(started: threading.Event | None = None) -> Callable[[JobContext], dict[str, Any]]:
    """A runner that works until cancelled, counting its steps."""

    def run(job: JobContext) -> dict[str, Any]:
        if started is not None:
            started.set()
        while True:
            job.check_cancelled()
            job.count("steps")
            time.sleep(0.005)

    return run


# ---------------------------------------------------------------------------------------------- running


def test_success_records_progress_counts_and_result(manager: JobManager):
    def send(job: JobContext) -> dict[str, Any]:
        images = job.parameters["images"]
        for n, _ in enumerate(images, start=1):
            job.count("sent")
            job.progress(n, len(images))
        job.count("skipped", 2)
        return {"sent": len(images)}

    manager.register("c_store", send)
    job = manager.submit("c_store", "send to PACS", {"images": [1, 2, 3]}, owner="alice", total=3)
    assert job.state == "PENDING" and job.progress_total == 3 and job.owner == "alice"
    assert job.parameters == {"images": [1, 2, 3]} and job.started is None and job.finished is None

    done = manager.wait(job.id, TIMEOUT)
    assert done.state == "SUCCEEDED", done.error
    assert (done.progress_done, done.progress_total) == (3, 3)
    assert done.counts == {"sent": 3, "skipped": 2}
    assert done.result == {"sent": 3} and done.error == ""
    assert done.created <= done.started <= done.finished  # type: ignore[operator]
    assert done.finished.endswith("+00:00")  # type: ignore[union-attr]
    # what the REST API returns, and it is JSON
    as_json = to_json(done)
    assert json.loads(json.dumps(as_json)) == as_json and set(as_json) == set(Job.__dataclass_fields__)
    # persisted, not only in memory
    row = stored_row(manager._index, job.id)
    assert row["state"] == "SUCCEEDED" and json.loads(row["counts"]) == {"sent": 3, "skipped": 2}


def test_runner_returning_none_gives_an_empty_result(manager: JobManager):
    manager.register("noop", lambda job: None)
    assert manager.wait(manager.submit("noop", "", {}).id, TIMEOUT).result == {}


def test_failure_keeps_counts_and_records_the_message(manager: JobManager):
    def drops(job: JobContext) -> dict[str, Any]:
        for n in range(1, 6):
            job.count("sent")
            job.progress(n, 10)
        raise PeerFailure("association with PACS aborted")

    def crashes(job: JobContext) -> dict[str, Any]:
        job.count("sent", 4)
        raise ValueError("bad pixel data")

    manager.register("drops", drops)
    manager.register("crashes", crashes)
    failed = manager.wait(manager.submit("drops", "send", {}).id, TIMEOUT)
    assert failed.state == "FAILED" and failed.error == "association with PACS aborted"
    assert failed.counts == {"sent": 5} and (failed.progress_done, failed.progress_total) == (5, 10)
    assert failed.finished is not None
    crashed = manager.wait(manager.submit("crashes", "send", {}).id, TIMEOUT)
    assert crashed.state == "FAILED" and crashed.error == "ValueError: bad pixel data"
    assert crashed.counts == {"sent": 4}


def test_bad_results_and_bad_reports_fail_the_job(manager: JobManager):
    manager.register("list", lambda job: [1, 2])  # type: ignore[arg-type,return-value]
    manager.register("unjsonable", lambda job: {"value": object()})

    def bad_progress(job: JobContext) -> None:
        job.progress(-1)

    manager.register("bad_progress", bad_progress)
    assert "not a dict" in manager.wait(manager.submit("list", "", {}).id, TIMEOUT).error
    assert "JSON" in manager.wait(manager.submit("unjsonable", "", {}).id, TIMEOUT).error
    assert "non-negative" in manager.wait(manager.submit("bad_progress", "", {}).id, TIMEOUT).error


def test_submit_validates(manager: JobManager):
    with pytest.raises(InvalidInput, match="unknown job kind"):
        manager.submit("nope", "", {})
    manager.register("noop", lambda job: None)
    with pytest.raises(InvalidInput, match="JSON"):
        manager.submit("noop", "", {"when": object()})
    with pytest.raises(InvalidInput, match="JSON object"):
        manager.submit("noop", "", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        manager.submit("noop", "", {}, total=-1)
    assert manager.list() == []


# ---------------------------------------------------------------------------------------------- reading


def test_get_and_list(manager: JobManager):
    manager.register("a", lambda job: None)
    manager.register("b", lambda job: {"x": 1})
    ids = [manager.submit(kind, f"job {n}", {"n": n}).id for n, kind in enumerate("abab")]
    for job_id in ids:
        manager.wait(job_id, TIMEOUT)
    assert [j.id for j in manager.list()] == ids[::-1]
    assert [j.id for j in manager.list(start_index=1, count=2)] == [ids[2], ids[1]]
    assert [j.id for j in manager.list(kind="b")] == [ids[3], ids[1]]
    assert [j.id for j in manager.list(state="SUCCEEDED", kind="a")] == [ids[2], ids[0]]
    assert manager.list(state="FAILED") == [] and manager.list(count=0) == []
    assert manager.get(ids[1]).parameters == {"n": 1}
    with pytest.raises(InvalidInput, match="unknown job state"):
        manager.list(state="DONE")
    with pytest.raises(InvalidInput):
        manager.list(start_index=-1)
    with pytest.raises(InvalidInput):
        manager.list(count=-1)
    for missing in (ids[-1] + 1, 0, -3, 2**40):
        with pytest.raises(NotFound):
            manager.get(missing)
    with pytest.raises(InvalidInput):
        manager.get("1")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- cancel


def test_cancel_pending_job(make_manager: Callable[..., JobManager]):
    manager = make_manager(workers=1)
    started = threading.Event()
    manager.register("loop", cooperative(started))
    ran: list[int] = []
    manager.register("record", lambda job: ran.append(job.job_id))  # type: ignore[func-returns-value]
    busy = manager.submit("loop", "occupies the only worker", {})
    assert started.wait(TIMEOUT)
    pending = manager.submit("record", "waits", {})
    assert manager.get(pending.id).state == "PENDING"

    cancelled = manager.cancel(pending.id)
    assert cancelled.state == "CANCELLED" and cancelled.finished is not None and cancelled.started is None
    with pytest.raises(Conflict, match=f"job {pending.id} already finished"):
        manager.cancel(pending.id)

    manager.cancel(busy.id)
    assert manager.wait(busy.id, TIMEOUT).state == "CANCELLED"
    # the worker is free again, and never ran the cancelled job
    assert manager.wait(manager.submit("record", "", {}).id, TIMEOUT).state == "SUCCEEDED"
    assert pending.id not in ran and manager.get(pending.id).state == "CANCELLED"


def test_cancel_running_job_stops_at_its_next_check(manager: JobManager):
    started = threading.Event()
    manager.register("loop", cooperative(started))
    job = manager.submit("loop", "", {})
    assert started.wait(TIMEOUT)
    wait_until(lambda: manager.get(job.id).counts.get("steps", 0) >= 3)
    answer = manager.cancel(job.id)
    assert answer.state in ("RUNNING", "CANCELLED")
    done = manager.wait(job.id, TIMEOUT)
    assert done.state == "CANCELLED" and done.error == "" and done.counts["steps"] >= 3
    with pytest.raises(Conflict, match="already finished"):
        manager.cancel(job.id)
    with pytest.raises(NotFound):
        manager.cancel(job.id + 100)


def test_cancel_finished_job_is_a_conflict(manager: JobManager):
    manager.register("noop", lambda job: None)
    job = manager.wait(manager.submit("noop", "", {}).id, TIMEOUT)
    with pytest.raises(Conflict, match=f"job {job.id} already finished"):
        manager.cancel(job.id)
    assert manager.get(job.id).state == "SUCCEEDED"


# ---------------------------------------------------------------------------------------------- resume


def test_resume_gets_resume_from(manager: JobManager):
    seen: list[dict[str, Any]] = []
    images = list(range(10))

    def send(job: JobContext) -> dict[str, Any]:
        seen.append(job.resume_from)
        done = job.resume_from.get("progress_done", 0)
        for name, n in job.resume_from.get("counts", {}).items():  # cumulative counts over resumes
            job.count(name, n)
        for image in images[done:]:
            if image == 4 and not job.resume_from:
                raise PeerFailure("connection dropped")
            job.count("sent")
            done += 1
            job.progress(done, len(images))
        return {"sent": job.snapshot()[2]["sent"]}

    manager.register("c_store", send)
    first = manager.wait(manager.submit("c_store", "send", {"node": 2}, owner="alice", total=10).id, TIMEOUT)
    assert first.state == "FAILED" and first.counts == {"sent": 4} and first.progress_done == 4

    resumed = manager.resume(first.id)
    assert resumed.id != first.id and resumed.kind == "c_store" and resumed.owner == "alice"
    assert resumed.description == f"send (resume of job {first.id})" and resumed.progress_total == 10
    resume_from = {"job_id": first.id, "progress_done": 4, "progress_total": 10, "counts": {"sent": 4}}
    assert resumed.parameters == {"node": 2, "resume_from": resume_from}
    done = manager.wait(resumed.id, TIMEOUT)
    assert done.state == "SUCCEEDED" and done.counts == {"sent": 10} and done.result == {"sent": 10}
    assert seen == [{}, resume_from]
    # the old job is unchanged; only failed or cancelled jobs resume
    assert manager.get(first.id).state == "FAILED"
    with pytest.raises(Conflict, match="only failed or cancelled"):
        manager.resume(done.id)
    again = manager.resume(first.id, owner="bob")
    assert again.owner == "bob" and again.description == f"send (resume of job {first.id})"
    manager.wait(again.id, TIMEOUT)
    with pytest.raises(NotFound):
        manager.resume(again.id + 100)


def test_resume_cancelled_job_and_running_job_conflict(manager: JobManager):
    started = threading.Event()
    manager.register("loop", cooperative(started))
    job = manager.submit("loop", "", {"x": 1})
    assert started.wait(TIMEOUT)
    with pytest.raises(Conflict, match="RUNNING"):
        manager.resume(job.id)
    manager.cancel(job.id)
    assert manager.wait(job.id, TIMEOUT).state == "CANCELLED"
    resumed = manager.resume(job.id)
    assert resumed.parameters["x"] == 1 and resumed.parameters["resume_from"]["job_id"] == job.id
    manager.cancel(resumed.id)
    assert manager.wait(resumed.id, TIMEOUT).state == "CANCELLED"


# ---------------------------------------------------------------------------------------------- persistence


def test_progress_is_persisted_throttled(manager: JobManager, engine: sa.Engine):
    updates: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            updates.append(statement)

    def many_steps(job: JobContext) -> dict[str, Any]:
        for n in range(1, 5001):
            job.progress(n, 5000)
            job.count("sent")
        return {}

    manager.register("many", many_steps)
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        job = manager.wait(manager.submit("many", "", {}).id, TIMEOUT)
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    assert job.state == "SUCCEEDED" and job.progress_done == 5000 and job.counts == {"sent": 5000}
    # start, final state, and at most one progress write per interval of the run
    assert 2 <= len(updates) <= 12, len(updates)
    row = stored_row(manager._index, job.id)
    assert row["progress_done"] == 5000 and json.loads(row["counts"]) == {"sent": 5000}


def test_progress_reaches_the_database_while_running(make_manager: Callable[..., JobManager], index: Index):
    manager = make_manager(persist_interval=0.05)
    release = threading.Event()

    def slow(job: JobContext) -> None:
        for n in range(1, 4):
            job.count("sent")
            job.progress(n, 3)
            time.sleep(0.1)
        release.wait(TIMEOUT)

    manager.register("slow", slow)
    job = manager.submit("slow", "", {})
    try:
        # the row itself (what another process sees) shows progress before the job ends
        wait_until(lambda: stored_row(index, job.id)["progress_done"] >= 2)
        row = stored_row(index, job.id)
        assert row["state"] == "RUNNING" and json.loads(row["counts"])["sent"] >= 2
    finally:
        release.set()
    assert manager.wait(job.id, TIMEOUT).state == "SUCCEEDED"


def test_restart_marks_interrupted_jobs_failed_and_they_resume(
    make_manager: Callable[..., JobManager], engine: sa.Engine
):
    crashed = make_manager()
    release = threading.Event()

    def hangs(job: JobContext) -> None:
        job.count("sent", 7)
        job.progress(7, 20)
        release.wait(TIMEOUT)

    crashed.register("c_store", hangs)
    running = crashed.submit("c_store", "send", {"node": 1}, total=20)
    wait_until(lambda: crashed.get(running.id).state == "RUNNING")
    with engine.begin() as conn:  # its process is gone (this one lives on): a server that stopped beating long ago
        old = datetime(2000, 1, 1, tzinfo=UTC)
        conn.execute(jobs.update().where(jobs.c.id == running.id).values(server="gone-host:1:0", heartbeat=old))
    with engine.begin() as conn:  # a job the crashed process had accepted but not started
        pending_id = conn.execute(
            jobs.insert()
            .values(kind="c_store", state="PENDING", created=datetime.now(UTC), parameters='{"node": 3}')
            .returning(jobs.c.id)
        ).scalar_one()

    # a new process on the same database (its own engine and index), as after a crash
    other_engine = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        restarted = JobManager(Index(other_engine))
        try:
            for job_id in (running.id, pending_id):
                job = restarted.get(job_id)
                assert job.state == "FAILED" and job.error == INTERRUPTED_BY_RESTART and job.finished is not None
            resumed_from: list[dict[str, Any]] = []
            restarted.register("c_store", lambda job: resumed_from.append(job.resume_from))  # type: ignore[func-returns-value]
            resumed = restarted.wait(restarted.resume(running.id).id, TIMEOUT)
            assert resumed.state == "SUCCEEDED" and resumed.parameters["node"] == 1
            assert restarted.wait(restarted.resume(pending_id).id, TIMEOUT).state == "SUCCEEDED"
            assert resumed_from[0]["job_id"] == running.id and resumed_from[1]["job_id"] == pending_id
            # the crashed process's runner finishing late changes nothing
            release.set()
            time.sleep(0.2)
            assert restarted.get(running.id).state == "FAILED"
        finally:
            restarted.shutdown(timeout=5)
    finally:
        release.set()
        other_engine.dispose()


# ---------------------------------------------------------------------------------------------- shutdown


def test_shutdown_stops_cooperative_jobs_and_marks_queued_ones(make_manager: Callable[..., JobManager]):
    manager = make_manager(workers=1)
    started = threading.Event()
    manager.register("loop", cooperative(started))
    running = manager.submit("loop", "", {})
    assert started.wait(TIMEOUT)
    queued = manager.submit("loop", "", {})
    begun = time.monotonic()
    manager.shutdown(timeout=5)
    assert time.monotonic() - begun < 2
    for job_id in (running.id, queued.id):
        job = manager.get(job_id)
        assert job.state == "FAILED" and job.error == INTERRUPTED_BY_SHUTDOWN, job
    assert manager.get(running.id).counts["steps"] >= 1
    with pytest.raises(Conflict, match="shutting down"):
        manager.submit("loop", "", {})
    manager.shutdown(timeout=1)  # again: nothing to do


def test_shutdown_timeout_marks_stuck_jobs_failed(make_manager: Callable[..., JobManager]):
    manager = make_manager()
    release = threading.Event()
    finished = threading.Event()

    def ignores_cancel(job: JobContext) -> dict[str, Any]:
        job.count("sent", 3)
        release.wait(TIMEOUT)
        finished.set()
        return {"late": True}

    manager.register("stuck", ignores_cancel)
    job = manager.submit("stuck", "", {})
    wait_until(lambda: manager.get(job.id).state == "RUNNING")
    begun = time.monotonic()
    manager.shutdown(timeout=0.3)
    assert 0.25 <= time.monotonic() - begun < 3
    stuck = manager.get(job.id)
    assert stuck.state == "FAILED" and stuck.error == INTERRUPTED_BY_SHUTDOWN and stuck.counts == {"sent": 3}
    release.set()
    assert finished.wait(TIMEOUT)
    time.sleep(0.1)
    assert manager.get(job.id).state == "FAILED" and manager.get(job.id).result == {}


def test_user_cancel_before_shutdown_stays_cancelled(make_manager: Callable[..., JobManager]):
    manager = make_manager()
    started = threading.Event()

    def slow_to_stop(job: JobContext) -> None:
        started.set()
        while not job.cancelled:
            time.sleep(0.005)
        time.sleep(0.1)
        raise JobCancelled("stopped")

    manager.register("slow", slow_to_stop)
    job = manager.submit("slow", "", {})
    assert started.wait(TIMEOUT)
    manager.cancel(job.id)
    manager.shutdown(timeout=5)
    assert manager.get(job.id).state == "CANCELLED"


# ---------------------------------------------------------------------------------------------- concurrency


def test_many_jobs_run_on_bounded_workers(make_manager: Callable[..., JobManager]):
    manager = make_manager(workers=3)
    lock = threading.Lock()
    go = threading.Event()
    active = 0
    peak = 0

    def work(job: JobContext) -> dict[str, Any]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            go.wait(TIMEOUT)
            time.sleep(0.01)
            job.count("done")
            return {"n": job.parameters["n"]}
        finally:
            with lock:
                active -= 1

    manager.register("work", work)
    submitted: list[Job] = []
    submitters = [
        threading.Thread(target=lambda k=k: submitted.extend(manager.submit("work", "", {"n": k * 10 + i})
                                                             for i in range(10)))
        for k in range(4)
    ]  # fmt: skip
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    assert len({job.id for job in submitted}) == 40
    wait_until(lambda: peak == 3)  # every worker busy, the other jobs queued
    time.sleep(0.1)
    assert peak == 3 and sum(job.state == "PENDING" for job in manager.list(count=100)) == 37
    go.set()
    results = [manager.wait(job.id, TIMEOUT) for job in submitted]
    assert all(job.state == "SUCCEEDED" for job in results)
    assert sorted(job.result["n"] for job in results) == list(range(40))
    assert peak == 3
    assert manager.list(count=100, state="SUCCEEDED")[0].id == max(job.id for job in submitted)


def test_wait_returns_the_job_when_the_timeout_passes(manager: JobManager):
    started = threading.Event()
    manager.register("loop", cooperative(started))
    job = manager.submit("loop", "", {})
    begun = time.monotonic()
    assert manager.wait(job.id, 0.2).state == "RUNNING"
    assert 0.15 <= time.monotonic() - begun < 2
    manager.cancel(job.id)
    assert manager.wait(job.id, TIMEOUT).state == "CANCELLED"
