"""REST: list, get, cancel and resume jobs through a real Jupyter server."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from helpers import body_json, finished_job

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import PeerFailure
from slicebox_lab.jobs import JobContext, JobManager

TIMEOUT = 10.0


@pytest.fixture
def jobs(jp_serverapp: Any) -> JobManager:
    """The running server's job manager, with test runners registered."""
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    manager = context.jobs

    def send(job: JobContext) -> dict[str, Any]:
        images = job.parameters["images"]
        done = job.resume_from.get("progress_done", 0)
        for image in images[done:]:
            if image == job.parameters.get("drop_at") and not job.resume_from:
                raise PeerFailure("association aborted by the peer")
            job.count("sent")
            done += 1
            job.progress(done, len(images))
        return {"sent": done}

    def loop(job: JobContext) -> None:
        while True:
            job.check_cancelled()
            job.count("steps")
            time.sleep(0.005)

    manager.register("test_send", send)
    manager.register("test_loop", loop)
    return manager


async def test_list_and_get_jobs(api: Any, jobs: JobManager):
    assert body_json(await api("jobs")) == []
    ok = await asyncio.to_thread(jobs.submit, "test_send", "send 3", {"images": [1, 2, 3]}, "alice", 3)
    dropped = await asyncio.to_thread(jobs.submit, "test_send", "send 4", {"images": [1, 2, 3, 4], "drop_at": 3})

    job = await finished_job(api, ok.id)
    assert job["state"] == "SUCCEEDED" and job["counts"] == {"sent": 3} and job["result"] == {"sent": 3}
    assert (job["progress_done"], job["progress_total"], job["owner"]) == (3, 3, "alice")
    assert job["kind"] == "test_send" and job["description"] == "send 3" and job["error"] == ""
    assert job["created"] and job["started"] and job["finished"]
    failed = await finished_job(api, dropped.id)
    assert failed["state"] == "FAILED" and failed["error"] == "association aborted by the peer"
    assert failed["counts"] == {"sent": 2} and failed["progress_done"] == 2

    listed = body_json(await api("jobs"))
    assert [j["id"] for j in listed] == [dropped.id, ok.id]
    assert listed[1] == job
    assert [j["id"] for j in body_json(await api("jobs", params={"state": "FAILED"}))] == [dropped.id]
    assert [j["id"] for j in body_json(await api("jobs", params={"startindex": 1, "count": 5}))] == [ok.id]
    assert body_json(await api("jobs", params={"kind": "test_loop"})) == []
    assert len(body_json(await api("jobs", params={"kind": "test_send", "state": ""}))) == 2


async def test_cancel_and_resume(api: Any, jobs: JobManager):
    running = await asyncio.to_thread(jobs.submit, "test_loop", "loops", {})
    r = await api("jobs", running.id, "cancel", method="POST", body=b"")
    assert r.code == 200 and body_json(r)["id"] == running.id
    assert body_json(r)["state"] in ("PENDING", "RUNNING", "CANCELLED")
    cancelled = await finished_job(api, running.id)
    assert cancelled["state"] == "CANCELLED"
    r = await api("jobs", running.id, "cancel", method="POST", body=b"")
    assert r.code == 409 and body_json(r)["message"] == f"job {running.id} already finished (CANCELLED)"
    assert body_json(r)["reason"] == "Conflict"

    dropped = await asyncio.to_thread(jobs.submit, "test_send", "send", {"images": [1, 2, 3, 4], "drop_at": 2})
    assert (await finished_job(api, dropped.id))["state"] == "FAILED"
    r = await api("jobs", dropped.id, "resume", method="POST", body=b"")
    assert r.code == 201, r.body
    resumed = body_json(r)
    assert resumed["id"] != dropped.id and resumed["kind"] == "test_send"
    assert resumed["parameters"]["resume_from"] == {
        "job_id": dropped.id,
        "progress_done": 1,
        "progress_total": 4,
        "counts": {"sent": 1},
    }
    assert resumed["owner"]  # the user who resumed it
    done = await finished_job(api, resumed["id"])
    assert done["state"] == "SUCCEEDED" and done["counts"] == {"sent": 3} and done["progress_done"] == 4

    r = await api("jobs", done["id"], "resume", method="POST", body=b"")
    assert r.code == 409 and "only failed or cancelled" in body_json(r)["message"]
    r = await api("jobs", running.id, "resume", method="POST", body=b"")
    assert r.code == 201 and body_json(r)["parameters"]["resume_from"]["job_id"] == running.id
    await api("jobs", body_json(r)["id"], "cancel", method="POST", body=b"")
    assert (await finished_job(api, body_json(r)["id"]))["state"] == "CANCELLED"


async def test_pending_job_cancels_at_once(api: Any, jobs: JobManager):
    release = threading.Event()
    jobs.register("test_block", lambda job: {"released": release.wait(TIMEOUT)})
    try:
        blockers = [await asyncio.to_thread(jobs.submit, "test_block", "", {}) for _ in range(2)]
        pending = await asyncio.to_thread(jobs.submit, "test_block", "", {})  # both workers are busy
        r = await api("jobs", pending.id, "cancel", method="POST", body=b"")
        assert r.code == 200 and body_json(r)["state"] == "CANCELLED" and body_json(r)["started"] is None
    finally:
        release.set()
    for blocker in blockers:
        assert (await finished_job(api, blocker.id))["state"] == "SUCCEEDED"


async def test_unknown_jobs_and_bad_input(api: Any, jobs: JobManager):
    for parts in (("jobs", 999), ("jobs", 99999999999999999999)):
        r = await api(*parts)
        assert r.code == 404 and body_json(r)["reason"] == "NotFound"
    for action in ("cancel", "resume"):
        r = await api("jobs", 999, action, method="POST", body=b"")
        assert r.code == 404 and body_json(r)["message"] == "job 999 not found"
    for params in ({"state": "DONE"}, {"startindex": -1}, {"count": "x"}, {"count": -5}):
        r = await api("jobs", params=params)
        assert r.code == 400, params
        assert body_json(r)["message"]
    assert (await api("jobs", "abc")).code == 404


async def test_a_long_poll_answers_as_soon_as_the_job_finishes(api: Any, jobs: JobManager):
    """``GET /jobs/{id}?wait=S``: held back until the job finishes (not S seconds), or answered as it is after S."""
    release = threading.Event()

    def held(job: JobContext) -> dict[str, Any]:
        release.wait(TIMEOUT)
        return {"released": True}

    jobs.register("test_held", held)
    job = await asyncio.to_thread(jobs.submit, "test_held", "held", {})
    started = time.monotonic()
    still = body_json(await api("jobs", job.id, params={"wait": "0.3"}))
    assert still["state"] in ("PENDING", "RUNNING") and 0.25 < time.monotonic() - started < 5

    waiting = asyncio.ensure_future(api("jobs", job.id, params={"wait": "30"}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    released = time.monotonic()
    release.set()
    done = body_json(await asyncio.wait_for(waiting, TIMEOUT))
    assert done["state"] == "SUCCEEDED" and done["result"] == {"released": True}
    assert time.monotonic() - released < 5  # at once, not after the 30 s
    assert body_json(await api("jobs", job.id, params={"wait": "30"}))["state"] == "SUCCEEDED"  # finished: at once
    assert not jobs._finish_callbacks  # nobody left waiting


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "nan"])
async def test_a_long_poll_refuses_a_wait_it_cannot_keep(api: Any, jobs: JobManager, wait: str):
    job = await asyncio.to_thread(jobs.submit, "test_send", "send 1", {"images": [1]})
    r = await api("jobs", job.id, params={"wait": wait})
    assert r.code == 400 and "wait" in body_json(r)["message"]
