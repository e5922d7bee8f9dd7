"""Several servers on one database: no server fails another's live jobs; the jobs of gone servers are recovered.

Each "server" is a JobManager on its own engine (as a separate process would have), on a SQLite
file and on PostgreSQL.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pg import index_engine, pg_engine, postgresql_url  # noqa: F401

from slicebox_lab.index import Index, create_engine
from slicebox_lab.index.schema import jobs
from slicebox_lab.jobs import DATABASE_SERVER, INTERRUPTED_BY_RESTART, JobContext, JobManager

TIMEOUT = 15.0


@pytest.fixture
def engine(index_engine: sa.Engine) -> sa.Engine:  # noqa: F811 - the imported fixture
    return index_engine


@pytest.fixture
def server(engine: sa.Engine) -> Iterator[Callable[..., JobManager]]:
    """Start a "server": a JobManager with its own engine on the shared database."""
    started: list[tuple[JobManager, sa.Engine]] = []

    def start(**kwargs: Any) -> JobManager:
        own = create_engine(engine.url.render_as_string(hide_password=False))
        manager = JobManager(Index(own), **kwargs)
        started.append((manager, own))
        return manager

    yield start
    for manager, own in started:
        manager.shutdown(timeout=5)
        own.dispose()


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def blocking(release: threading.Event) -> Callable[[JobContext], dict[str, Any]]:
    def run(job: JobContext) -> dict[str, Any]:
        while not release.wait(0.05):
            job.check_cancelled()
        return {"ok": True}

    return run


def insert_job(engine: sa.Engine, server: str, heartbeat: datetime | None, state: str = "RUNNING") -> int:
    """A job row as another server would have written it."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                jobs.insert()
                .values(
                    kind="wait", state=state, created=datetime.now(UTC), server=server, heartbeat=heartbeat
                )  # fmt: skip
                .returning(jobs.c.id)
            ).scalar_one()
        )


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_starting_server_leaves_the_running_jobs_of_another_alone(server: Callable[..., JobManager]) -> None:
    release = threading.Event()
    first = server()
    first.register("wait", blocking(release))
    try:
        job = first.submit("wait", "runs on the first server")
        wait_until(lambda: first.get(job.id).state == "RUNNING")
        second = server()  # starts while the first one's job runs
        assert second.server != first.server
        seen = second.get(job.id)
        assert seen.state == "RUNNING" and seen.server == first.server
        assert [j.id for j in second.list()] == [job.id]  # every server lists every job
        assert second.recover() == 0
    finally:
        release.set()
    assert first.wait(job.id, TIMEOUT).state == "SUCCEEDED"
    assert second.get(job.id).result == {"ok": True}


def test_jobs_of_a_dead_process_of_this_host_are_recovered(server: Callable[..., JobManager], engine: sa.Engine):
    now = datetime.now(UTC) - timedelta(seconds=20)  # beats missed, not yet stale (60 s)
    gone = insert_job(engine, f"{socket.gethostname()}:{dead_pid()}:0badc0de", now)
    pending = insert_job(engine, f"{socket.gethostname()}:{dead_pid()}:0badc0de", now, state="PENDING")
    legacy = insert_job(engine, "", None)  # written before jobs recorded their server
    alive_here = insert_job(engine, f"{socket.gethostname()}:1:00000001", now)  # pid 1 lives
    other_host = insert_job(engine, "elsewhere:4242:00000002", now)  # another host, not stale: alive
    # a dead pid whose server beat just now: maybe a container of another pid namespace, wait for missed beats
    just_beat = insert_job(engine, f"{socket.gethostname()}:{dead_pid()}:0badc0de", datetime.now(UTC))
    box = insert_job(engine, DATABASE_SERVER, None)  # a box transaction's mirror: any server continues it
    manager = server()  # recovers at its start
    for job_id in (gone, pending, legacy):
        job = manager.get(job_id)
        assert job.state == "FAILED" and job.error == INTERRUPTED_BY_RESTART and job.finished is not None
    for job_id in (alive_here, other_host, box, just_beat):
        assert manager.get(job_id).state == "RUNNING"


def test_a_server_that_stops_beating_is_recovered_by_a_live_one(
    server: Callable[..., JobManager], engine: sa.Engine
) -> None:
    watcher = server(heartbeat_interval=0.1, stale_after=1.0)
    silent = insert_job(engine, "elsewhere:4242:00000002", datetime.now(UTC))
    time.sleep(0.3)
    assert watcher.get(silent).state == "RUNNING"  # within stale_after
    wait_until(lambda: watcher.get(silent).state == "FAILED", timeout=5)  # no beat for 1 s: gone
    assert watcher.get(silent).error == INTERRUPTED_BY_RESTART


def test_heartbeats_keep_a_long_job_alive(server: Callable[..., JobManager], engine: sa.Engine) -> None:
    release = threading.Event()
    runner = server(heartbeat_interval=0.1, stale_after=0.6)
    runner.register("wait", blocking(release))
    watcher = server(heartbeat_interval=0.1, stale_after=0.6)
    try:
        job = runner.submit("wait", "longer than stale_after")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert watcher.recover() == 0
            assert watcher.get(job.id).state in ("PENDING", "RUNNING")
            time.sleep(0.1)
        with engine.connect() as conn:
            beat = conn.execute(sa.select(jobs.c.heartbeat).where(jobs.c.id == job.id)).scalar_one()
        beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
        assert datetime.now(UTC) - beat < timedelta(seconds=0.6)
    finally:
        release.set()
    assert runner.wait(job.id, TIMEOUT).state == "SUCCEEDED"


def test_a_cancel_on_another_server_reaches_the_running_job(server: Callable[..., JobManager]) -> None:
    release = threading.Event()
    runner = server(heartbeat_interval=0.1)
    runner.register("wait", blocking(release))
    other = server()
    try:
        job = runner.submit("wait", "cancelled from elsewhere")
        wait_until(lambda: runner.get(job.id).state == "RUNNING")
        assert other.cancel(job.id).state == "RUNNING"  # asked; the runner's server stops it
        assert runner.wait(job.id, TIMEOUT).state == "CANCELLED"
        assert other.get(job.id).state == "CANCELLED"
    finally:
        release.set()


def test_pending_job_of_another_server_is_cancelled_at_once(server: Callable[..., JobManager]) -> None:
    release = threading.Event()
    runner = server(workers=1)
    runner.register("wait", blocking(release))
    other = server()
    try:
        busy = runner.submit("wait", "takes the only worker")
        queued = runner.submit("wait", "waits in the queue")
        wait_until(lambda: runner.get(busy.id).state == "RUNNING")
        assert other.cancel(queued.id).state == "CANCELLED"
    finally:
        release.set()
    assert runner.wait(busy.id, TIMEOUT).state == "SUCCEEDED"
    assert runner.wait(queued.id, TIMEOUT).state == "CANCELLED"


def test_live_servers_are_registered_until_they_stop(server: Callable[..., JobManager]) -> None:
    first = server()
    second = server(heartbeat_interval=0.1)
    assert first.live_servers() == [second.server] and second.live_servers() == [first.server]
    first.shutdown(timeout=5)
    assert second.live_servers() == []
