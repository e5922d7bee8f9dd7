"""The job manager: runs, records, cancels and resumes the jobs of this server.

Every long operation of the node (a C-STORE send, a C-MOVE, an export, a re-index, ...) runs as a
job, so clients follow it the same way (``GET /slicebox/api/jobs/{id}``) and can cancel it.  A
*runner* is registered per job kind; it gets a :class:`JobContext` and returns a result dict::

    def send(job: JobContext) -> dict:
        done = job.resume_from.get("progress_done", 0)   # what a failed earlier run already did
        for image_id in image_ids[done:]:
            job.check_cancelled()                          # raises JobCancelled when cancelled
            c_store(image_id)
            job.count("sent")
            done += 1
            job.progress(done, len(image_ids))
        return {"sent": done}

    manager.register("c_store", send)
    job = manager.submit("c_store", "send 3 series to PACS", {"node": 2, "series": [4, 5, 6]})

An exception from the runner fails the job with its message; progress and counts stay, so a client
sees "failed after 312 of 1000 sent".  A failed or cancelled job can be *resumed*: a new job of the
same kind runs with the stored parameters plus ``resume_from`` (the old job's id, progress and
counts), so the runner can skip what was done.  Runners that want cumulative counts over resumes add
``resume_from["counts"]`` themselves.

Persistence.  Jobs are rows of the ``jobs`` table (statements in ``index/jobs.py``), written through
``Index.writing()`` (the same writer serialisation as the index).  Progress and count updates are
kept in memory and written at most every ``persist_interval`` seconds, and always with the final
state, so a job reporting 10,000 steps does not commit 10,000 times; :meth:`JobManager.get` shows the
live values of the jobs running in this process.

Several servers, one database (``servers.py``, ``recovery.py``).  A heartbeat thread stamps
``heartbeat`` on this server's unfinished jobs every ``heartbeat_interval`` seconds and recovers the
jobs of gone servers.  Listing shows the jobs of all servers; a cancel of a job running on another
server is stored (``cancel_requested``) and acted on by that server at its next heartbeat.

Lanes.  A kind may run in a lane of its own (``register(kind, runner, lane="apps", threads=1)``): its
jobs wait for that lane's threads only, so long app runs never hold up a C-STORE send or a
re-classification, which share the default lane.

Threads.  Jobs run on a bounded pool of daemon threads of their own (never the request pool), so
a runner that ignores cancellation cannot hold up the process's exit; :meth:`JobManager.shutdown`
asks running jobs to stop, waits up to a timeout and marks the ones still running ``FAILED``
("interrupted by shutdown").  This module is domain code: no tornado, no jupyter_server.
"""

from __future__ import annotations

import builtins
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound, SliceboxError
from ..index import Index
from ..index import jobs as rows
from . import servers
from .job import (
    INTERRUPTED_BY_SHUTDOWN,
    RESUMABLE_STATES,
    UNFINISHED_STATES,
    Job,
    JobCancelled,
    JobContext,
    JobState,
    Runner,
    clean_text,
    dumps,
    job_key,
    loads,
    non_negative,
)
from .recovery import recover
from .servers import Liveness, now

log = logging.getLogger(__name__)

#: largest page of :meth:`JobManager.list`
MAX_COUNT = 10000
_RESUME_SUFFIX = re.compile(r" \(resume of job \d+\)$")


class JobManager:
    """Runs, records, cancels and resumes jobs; thread-safe, blocking (call it off the event loop)."""

    def __init__(
        self,
        index: Index,
        workers: int = 2,
        persist_interval: float = 0.5,
        heartbeat_interval: float = 5.0,
        stale_after: float = 60.0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInput("a job manager needs at least one worker")
        if not 0 < heartbeat_interval < stale_after:
            raise InvalidInput("a job manager's heartbeat interval must be positive and below stale_after")
        self._index = index
        self._persist_interval = persist_interval
        self._liveness = Liveness(heartbeat_interval, stale_after)
        #: who runs the jobs this manager accepts; unique even for two managers in one process
        self.server = servers.server_id()
        self._stopping = threading.Event()
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: jobs of this process not yet finished: queued or running
        self._contexts: dict[int, JobContext] = {}
        #: what to call when a job finishes here (a long poll waiting for it: :meth:`when_finished`)
        self._finish_callbacks: dict[int, builtins.list[Callable[[], None]]] = {}
        #: the queue of each lane (the default lane: ""), and the lane of each kind not in the default one
        self._queues: dict[str, queue.SimpleQueue[int | None]] = {}
        self._lanes: dict[str, str] = {}
        self._threads: builtins.list[threading.Thread] = []
        self._closing = False
        servers.register(self._index, self.server)
        self.recover()
        self._add_lane("", workers)
        self._heartbeat_thread = threading.Thread(target=self._heartbeats, name="slicebox-job-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    # ------------------------------------------------------------------ registration and submission

    def register(self, kind: str, runner: Runner, lane: str = "", threads: int = 1) -> None:
        """The runner of jobs of ``kind`` (registering again replaces it); ``lane``: run them on that lane's
        ``threads`` threads (made on first use) instead of the default lane's."""
        if not isinstance(kind, str) or not kind:
            raise InvalidInput("a job kind must be a non-empty string")
        with self._lock:
            self._runners[kind] = runner
            self._lanes[kind] = lane
            new_lane = lane not in self._queues
        if new_lane:
            self._add_lane(lane, threads)

    def _add_lane(self, lane: str, threads: int) -> None:
        with self._lock:
            if lane in self._queues:
                return
            lane_queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
            self._queues[lane] = lane_queue
            started = [
                threading.Thread(
                    target=self._work, args=(lane_queue,), name=f"slicebox-job{'-' + lane if lane else ''}-{n}",
                    daemon=True,
                )
                for n in range(max(1, threads))
            ]  # fmt: skip
            self._threads.extend(started)
        for thread in started:
            thread.start()

    def kinds(self) -> builtins.list[str]:
        with self._lock:
            return sorted(self._runners)

    def submit(
        self,
        kind: str,
        description: str,
        parameters: Mapping[str, Any] | None = None,
        owner: str = "",
        total: int | None = None,
    ) -> Job:
        """Record a new ``PENDING`` job and queue it; returns at once."""
        with self._lock:
            if self._closing:
                raise Conflict("the node is shutting down: no new jobs are accepted")
            if kind not in self._runners:
                raise InvalidInput(f"unknown job kind {kind!r}: use one of {', '.join(sorted(self._runners))}")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, Mapping):
            raise InvalidInput("job parameters must be a JSON object")
        params = dict(parameters)
        params_json = dumps(params, "job parameters")
        if total is not None:
            total = non_negative(total, "progress total")
        job_id = rows.insert_job(
            self._index,
            kind=kind,
            description=clean_text(description),
            state=JobState.PENDING,
            progress_total=total,
            parameters=params_json,
            owner=clean_text(owner),
            server=self.server,
            now=now(),
        )
        context = JobContext(job_id, json.loads(params_json), total, self._store_progress, self._persist_interval)
        with self._lock:
            if self._closing:  # shutdown began while we inserted: do not leave it pending
                closing = True
            else:
                closing = False
                self._contexts[job_id] = context
                self._queues[self._lanes.get(kind, "")].put(job_id)
        if closing:
            self._finish_if(job_id, (JobState.PENDING,), JobState.FAILED, error=INTERRUPTED_BY_SHUTDOWN)
        return self.get(job_id)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: int) -> Job:
        key = job_key(job_id)
        row = rows.job_row(self._index, key)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return self._record(row)

    def list(
        self,
        start_index: int = 0,
        count: int = 20,
        state: str | None = None,
        kind: str | None = None,
    ) -> builtins.list[Job]:
        """Jobs, newest first, optionally of one state and/or kind."""
        start = non_negative(start_index, "startindex")
        limit = min(non_negative(count, "count"), MAX_COUNT)
        of_state = None if state is None else _state(state)
        of_kind = None if kind is None else clean_text(kind)
        return [self._record(row) for row in rows.list_jobs(self._index, start, limit, of_state, of_kind)]

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """The job once finished, or as it is when ``timeout`` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.is_finished:
                return job
            remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if remaining <= 0:
                return job
            with self._changed:
                # woken by any job finishing here; the short wait also covers other writers
                self._changed.wait(remaining)

    def when_finished(self, job_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Have ``callback`` called (in the thread that finishes the job) once job ``job_id`` finishes on this
        server; returns what forgets it.  A job that another server finishes calls nobody here: a waiter reads
        the job again when its own time is up."""
        key = job_key(job_id)
        with self._lock:
            self._finish_callbacks.setdefault(key, []).append(callback)

        def forget() -> None:
            with self._lock:
                callbacks = self._finish_callbacks.get(key, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._finish_callbacks.pop(key, None)

        return forget

    # ------------------------------------------------------------------ cancel and resume

    def cancel(self, job_id: int) -> Job:
        """Cancel: a pending job at once, a running one at its next check; finished → Conflict."""
        key = job_key(job_id)
        with self._lock:
            context = self._contexts.get(key)
        if context is not None:
            context._request_cancel(by_user=True)
        if self._finish_if(key, (JobState.PENDING,), JobState.CANCELLED):
            with self._lock:
                self._contexts.pop(key, None)
            return self.get(key)
        if context is None:  # running on another server (or finished): that server acts on the flag
            rows.request_cancel(self._index, key, running=JobState.RUNNING)
        job = self.get(key)
        # CANCELLED with our flag set: the job stopped at once (after our request), not before it
        if job.is_finished and not (context is not None and job.state == JobState.CANCELLED):
            raise Conflict(f"job {key} already finished ({job.state})")
        return job

    def resume(self, job_id: int, owner: str | None = None) -> Job:
        """A new job of the same kind with the stored parameters and ``resume_from``; FAILED/CANCELLED only."""
        old = self.get(job_id)
        if old.state not in RESUMABLE_STATES:
            raise Conflict(f"job {old.id} is {old.state}: only failed or cancelled jobs can be resumed")
        with self._lock:
            known = old.kind in self._runners
        if not known:
            raise Conflict(f"job {old.id} cannot be resumed: this node has no runner for jobs of kind {old.kind!r}")
        parameters = dict(old.parameters)
        parameters["resume_from"] = {
            "job_id": old.id,
            "progress_done": old.progress_done,
            "progress_total": old.progress_total,
            "counts": dict(old.counts),
        }
        description = f"{_RESUME_SUFFIX.sub('', old.description)} (resume of job {old.id})"
        return self.submit(
            old.kind,
            description,
            parameters,
            owner=old.owner if owner is None else owner,
            total=old.progress_total,
        )

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop: queued jobs and jobs still running after ``timeout`` seconds are marked FAILED."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            contexts = dict(self._contexts)
        self._stopping.set()
        for context in contexts.values():
            context._request_cancel(by_user=False)
        # jobs still in the queue never start: the workers skip them once closing
        with self._lock:
            lanes = builtins.list(self._queues.values())
        for lane_queue in lanes:
            for _ in self._threads:  # one stop for each thread, whichever lane it serves
                lane_queue.put(None)
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = dict(self._contexts)
            self._contexts.clear()
        for key, context in left.items():
            self._finish_if(key, UNFINISHED_STATES, JobState.FAILED, context=context, error=INTERRUPTED_BY_SHUTDOWN)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("jobs did not stop within %.1f s (threads %s): marked as interrupted", timeout, stuck)
        self._heartbeat_thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        try:
            rows.unregister_server(self._index, self.server)
        except Exception:  # the database is gone: the others will find our heartbeat stale
            log.warning("jobs: could not unregister this server", exc_info=True)

    # ------------------------------------------------------------------ servers sharing the database

    def _heartbeats(self) -> None:
        """Stamp our unfinished jobs, pass on cancels asked elsewhere, recover the jobs of gone servers."""
        while not self._stopping.wait(self._liveness.heartbeat_interval):
            try:
                self.heartbeat()
                self.recover()
            except Exception:  # the database may be down for a while: try again at the next beat
                log.warning("jobs: heartbeat failed", exc_info=True)

    def heartbeat(self) -> None:
        """Stamp this server and its jobs as alive and act on cancels stored by other servers."""
        with self._lock:
            busy = bool(self._contexts)
        beaten = rows.beat(self._index, self.server, now(), UNFINISHED_STATES if busy else None)
        if not beaten:  # removed by a server that took us for gone (a long pause): register again
            servers.register(self._index, self.server)
        if not busy:
            return
        asked = rows.cancels_requested(self._index, self.server, running=JobState.RUNNING)
        for job_id in asked:
            with self._lock:
                context = self._contexts.get(job_id)
            if context is not None:
                context._request_cancel(by_user=True)

    def live_servers(self) -> builtins.list[str]:
        """The other servers using this database now (registered and not gone), by id."""
        return servers.live_servers(self._index, self.server, self._liveness)

    def settled_live_servers(self) -> builtins.list[str]:
        """:meth:`live_servers`, once servers of this host whose process is dead have missed their beats
        (``servers.settled_live_servers``)."""
        return servers.settled_live_servers(self._index, self.server, self._liveness)

    def recover(self) -> int:
        """Mark FAILED the unfinished jobs whose server is gone (``recovery.py``); how many."""
        return recover(self._index, self.server, self._liveness)

    # ------------------------------------------------------------------ running

    def _work(self, lane_queue: queue.SimpleQueue[int | None]) -> None:
        while True:
            key = lane_queue.get()
            if key is None:
                return
            with self._lock:
                context = self._contexts.get(key)
                closing = self._closing
            if context is None or closing:
                continue  # cancelled while pending, or shutting down (shutdown marks it)
            try:
                self._run(key, context)
            except Exception:  # the bookkeeping itself failed (database gone): keep the worker
                log.exception("job %d: could not be run or recorded", key)
            finally:
                with self._changed:
                    if self._contexts.get(key) is context:
                        del self._contexts[key]
                    self._changed.notify_all()

    def _run(self, key: int, context: JobContext) -> None:
        started = rows.start_job(self._index, key, pending=JobState.PENDING, running=JobState.RUNNING, now=now())
        if not started:
            return  # cancelled between the queue and here
        row = self.get(key)
        with self._lock:
            runner = self._runners.get(row.kind)
        state, error, result = JobState.SUCCEEDED, "", {}
        try:
            if runner is None:
                raise Conflict(f"no runner for jobs of kind {row.kind!r}")
            returned = runner(context)
            if returned is not None and not isinstance(returned, Mapping):
                raise TypeError(f"the runner returned {type(returned).__name__}, not a dict")
            dumps(dict(returned or {}), "the job result")
            result = dict(returned or {})
        except JobCancelled:
            if context._user_cancelled:
                state = JobState.CANCELLED
            else:
                state, error = JobState.FAILED, INTERRUPTED_BY_SHUTDOWN
        except SliceboxError as e:
            state, error = JobState.FAILED, e.message
            result = dict(getattr(e, "result", None) or {})
            log.info("job %d (%s) failed: %s", key, row.kind, e.message)
        except Exception as e:
            state, error = JobState.FAILED, f"{type(e).__name__}: {e}"
            log.warning("job %d (%s) failed", key, row.kind, exc_info=True)
        with self._lock:  # finished: a cancel from now on is a conflict, get shows the stored values
            if self._contexts.get(key) is context:
                del self._contexts[key]
        self._finish_if(key, (JobState.RUNNING,), state, context=context, error=error, result=result)

    # ------------------------------------------------------------------ persistence

    def _store_progress(self, context: JobContext) -> None:
        done, total, counts = context.snapshot()
        rows.store_progress(
            self._index, context.job_id, running=JobState.RUNNING, done=done, total=total, counts=json.dumps(counts)
        )

    def _finish_if(
        self,
        key: int,
        current: tuple[JobState, ...],
        state: JobState,
        context: JobContext | None = None,
        error: str = "",
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move the job from one of ``current`` to the final ``state``; False if it was not in one."""
        progress = None
        if context is not None:
            done, total, counts = context.snapshot()
            progress = (done, total, json.dumps(counts))
        changed = rows.finish_job(
            self._index,
            key,
            current=current,
            state=state,
            error=error,
            now=now(),
            result=None if result is None else json.dumps(dict(result)),
            progress=progress,
        )
        with self._changed:
            self._changed.notify_all()
            callbacks = self._finish_callbacks.pop(key, []) if changed else []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a waiter's failure is not the job's
                log.exception("job %d: a callback waiting for it failed", key)
        return changed

    def _record(self, row: rows.JobRow) -> Job:
        done, total, counts = row.progress_done, row.progress_total, loads(row.counts)
        if row.state == JobState.RUNNING:
            with self._lock:
                context = self._contexts.get(row.id)
            if context is not None:  # running here: show the live values, not the throttled ones
                done, total, counts = context.snapshot()
        return Job(
            id=row.id,
            kind=row.kind,
            description=row.description,
            state=JobState(row.state),
            progress_done=int(done),
            progress_total=None if total is None else int(total),
            counts={str(k): int(v) for k, v in counts.items()},
            parameters=loads(row.parameters),
            result=loads(row.result),
            error=row.error,
            owner=row.owner,
            created=_iso(row.created),
            started=None if row.started is None else _iso(row.started),
            finished=None if row.finished is None else _iso(row.finished),
            server=row.server,
        )


def _iso(value: datetime) -> str:
    """UTC ISO-8601."""
    return value.astimezone(UTC).isoformat()


def _state(value: Any) -> JobState:
    try:
        return JobState(value)
    except ValueError:
        raise InvalidInput(f"unknown job state {value!r}: use one of {', '.join(JobState)}") from None
