"""Background jobs: long operations with progress, counts, cancel, and resume after a failure.

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

States: ``PENDING`` → ``RUNNING`` → ``SUCCEEDED`` | ``FAILED`` | ``CANCELLED`` (a pending job can be
cancelled directly).  An exception from the runner fails the job with its message; progress and
counts stay, so a client sees "failed after 312 of 1000 sent".  A failed or cancelled job can be
*resumed*: a new job of the same kind runs with the stored parameters plus ``resume_from`` (the
old job's id, progress and counts), so the runner can skip what was done.  Runners that want
cumulative counts over resumes add ``resume_from["counts"]`` themselves.

Persistence.  Jobs are rows of the ``jobs`` table, written through ``Index.writing()`` (the same
writer serialisation as the index).  Progress and count updates are kept in memory and written at
most every ``persist_interval`` seconds, and always with the final state, so a job reporting
10,000 steps does not commit 10,000 times; :meth:`JobManager.get` shows the live values of the
jobs running in this process.

Several servers, one database (e.g. one Jupyter server per user of a JupyterHub on one PostgreSQL
index).  Every manager has a server id, ``host:pid:random``, recorded on the jobs it accepts, and a
heartbeat thread that stamps ``heartbeat`` on its unfinished jobs every ``heartbeat_interval``
seconds.  A job left ``PENDING``/``RUNNING`` by a server that is gone (crash, kill, stop) is marked
``FAILED`` ("interrupted by a restart of the node"), ready to be resumed, by whichever manager
notices first: at its start and then at every heartbeat.  Gone means: a process of our host whose
pid is not alive and that missed a beat, or a heartbeat older than ``stale_after`` seconds (other
hosts, or a reused pid); a live server's jobs are never touched.  Listing shows the jobs of all
servers; a cancel of a job running on another server is stored (``cancel_requested``) and acted on
by that server at its next heartbeat.  Rows of :data:`DATABASE_SERVER` (box transactions) are nobody's to recover.
Heartbeats use each host's clock: ``stale_after`` must exceed the clock skew.  The manager also
registers its server in the ``servers`` table (beating with the jobs, removed at shutdown), so
:meth:`JobManager.live_servers` tells whether other servers use the database now.

Threads.  Jobs run on a bounded pool of daemon threads of their own (never the request pool), so
a runner that ignores cancellation cannot hold up the process's exit; :meth:`JobManager.shutdown`
asks running jobs to stop, waits up to a timeout and marks the ones still running ``FAILED``
("interrupted by shutdown").  This module is domain code: no tornado, no jupyter_server.
"""

from __future__ import annotations

import builtins
import json
import logging
import operator
import os
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .errors import Conflict, InvalidInput, NotFound, SliceboxError
from .index import Index
from .index.schema import jobs, servers

log = logging.getLogger(__name__)

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
STATES: tuple[str, ...] = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED_STATES: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED})
RESUMABLE_STATES: frozenset[str] = frozenset({FAILED, CANCELLED})

INTERRUPTED_BY_RESTART = "interrupted by a restart of the node"
#: the server of a job row whose state lives in the database (a box transaction's mirror): whichever
#: server serves the box continues it, so it is never recovered as interrupted
DATABASE_SERVER = "*"
INTERRUPTED_BY_SHUTDOWN = "interrupted by shutdown"

#: largest page of :meth:`JobManager.list`
MAX_COUNT = 10000
#: ids are INTEGER columns: a larger number cannot be a job
_MAX_ID = 2**31 - 1
_RESUME_SUFFIX = re.compile(r" \(resume of job \d+\)$")


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled` in a job that was asked to stop."""


@dataclass(frozen=True)
class Job:
    """One job as stored (``slicebox_lab.model.to_json`` gives its REST form)."""

    id: int
    kind: str
    description: str
    state: str
    progress_done: int
    progress_total: int | None
    counts: dict[str, int]
    parameters: dict[str, Any]
    result: dict[str, Any]
    error: str
    owner: str
    created: str
    started: str | None
    finished: str | None
    #: the server process that accepted the job (``host:pid:random``; "" for jobs of older versions)
    server: str = ""

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


class JobContext:
    """What a running job sees: its parameters, progress and count reporting, cancellation."""

    def __init__(
        self,
        job_id: int,
        parameters: dict[str, Any],
        total: int | None,
        persist: Callable[[JobContext], None],
        persist_interval: float,
    ) -> None:
        self.job_id = job_id
        self.parameters = parameters
        self._persist = persist
        self._interval = persist_interval
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._user_cancelled = False
        self._done = 0
        self._total = total
        self._counts: dict[str, int] = {}
        self._last_persist = time.monotonic()
        self._dirty = False

    @property
    def resume_from(self) -> dict[str, Any]:
        """``{"job_id", "progress_done", "progress_total", "counts"}`` of the run this one resumes, or {}."""
        value = self.parameters.get("resume_from")
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ reporting

    def progress(self, done: int, total: int | None = None) -> None:
        """``done`` steps of ``total`` (``None``: total unchanged); persisted at most every ~0.5 s."""
        done = _non_negative(done, "progress done")
        if total is not None:
            total = _non_negative(total, "progress total")
        with self._lock:
            self._done = done
            if total is not None:
                self._total = total
            self._dirty = True
        self._maybe_persist()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (``sent``, ``failed``, ...)."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("a job counter needs a non-empty name")
        n = _integer(n, "a job count")
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n
            self._dirty = True
        self._maybe_persist()

    def snapshot(self) -> tuple[int, int | None, dict[str, int]]:
        """(progress done, progress total, counts) as reported so far."""
        with self._lock:
            return self._done, self._total, dict(self._counts)

    def _maybe_persist(self) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._dirty or now - self._last_persist < self._interval:
                return
            self._last_persist = now
            self._dirty = False
        try:
            self._persist(self)
        except Exception:  # progress is informative: a failed write must not fail the job
            log.warning("job %d: could not store its progress", self.job_id, exc_info=True)

    # ------------------------------------------------------------------ cancellation

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (cancel, or the node shutting down)."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was asked to stop."""
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def _request_cancel(self, by_user: bool) -> None:
        with self._lock:
            if by_user:
                self._user_cancelled = True
        self._cancel.set()


#: what runs a job of one kind: gets the job's context, returns its result (or None)
Runner = Callable[[JobContext], dict[str, Any] | None]


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
        self._heartbeat_interval = heartbeat_interval
        self._stale_after = stale_after
        #: who runs the jobs this manager accepts; unique even for two managers in one process
        self.server = server_id()
        self._stopping = threading.Event()
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: jobs of this process not yet finished: queued or running
        self._contexts: dict[int, JobContext] = {}
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._closing = False
        self._register()
        self.recover()
        self._threads = [
            threading.Thread(target=self._work, name=f"slicebox-job-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self._heartbeat_thread = threading.Thread(target=self._heartbeats, name="slicebox-job-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    # ------------------------------------------------------------------ registration and submission

    def register(self, kind: str, runner: Runner) -> None:
        """The runner of jobs of ``kind`` (registering again replaces it)."""
        if not isinstance(kind, str) or not kind:
            raise InvalidInput("a job kind must be a non-empty string")
        with self._lock:
            self._runners[kind] = runner

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
        params_json = _dumps(params, "job parameters")
        if total is not None:
            total = _non_negative(total, "progress total")
        values = {
            "kind": kind,
            "description": _text(description),
            "state": PENDING,
            "progress_done": 0,
            "progress_total": total,
            "counts": "{}",
            "parameters": params_json,
            "result": "{}",
            "error": "",
            "owner": _text(owner),
            "created": _now(),
            "server": self.server,
            "heartbeat": _now(),
        }
        with self._index.writing() as conn:
            job_id = int(conn.execute(jobs.insert().values(values).returning(jobs.c.id)).scalar_one())
        context = JobContext(job_id, json.loads(params_json), total, self._store_progress, self._persist_interval)
        with self._lock:
            if self._closing:  # shutdown began while we inserted: do not leave it pending
                closing = True
            else:
                closing = False
                self._contexts[job_id] = context
                self._queue.put(job_id)
        if closing:
            self._finish_if(job_id, (PENDING,), FAILED, error=INTERRUPTED_BY_SHUTDOWN)
        return self.get(job_id)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: int) -> Job:
        key = _job_key(job_id)
        with self._index.reading() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == key)).first()
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
        start = _non_negative(start_index, "startindex")
        limit = min(_non_negative(count, "count"), MAX_COUNT)
        statement = sa.select(jobs).order_by(jobs.c.id.desc()).offset(start).limit(limit)
        if state is not None:
            if state not in STATES:
                raise InvalidInput(f"unknown job state {state!r}: use one of {', '.join(STATES)}")
            statement = statement.where(jobs.c.state == state)
        if kind is not None:
            statement = statement.where(jobs.c.kind == _text(kind))
        with self._index.reading() as conn:
            rows = conn.execute(statement).all()
        return [self._record(row) for row in rows]

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

    # ------------------------------------------------------------------ cancel and resume

    def cancel(self, job_id: int) -> Job:
        """Cancel: a pending job at once, a running one at its next check; finished → Conflict."""
        key = _job_key(job_id)
        with self._lock:
            context = self._contexts.get(key)
        if context is not None:
            context._request_cancel(by_user=True)
        if self._finish_if(key, (PENDING,), CANCELLED):
            with self._lock:
                self._contexts.pop(key, None)
            return self.get(key)
        if context is None:  # running on another server (or finished): that server acts on the flag
            with self._index.writing() as conn:
                conn.execute(
                    jobs.update().where(jobs.c.id == key, jobs.c.state == RUNNING).values(cancel_requested=True)
                )
        job = self.get(key)
        # CANCELLED with our flag set: the job stopped at once (after our request), not before it
        if job.is_finished and not (context is not None and job.state == CANCELLED):
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
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = dict(self._contexts)
            self._contexts.clear()
        for key, context in left.items():
            self._finish_if(key, (PENDING, RUNNING), FAILED, context=context, error=INTERRUPTED_BY_SHUTDOWN)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("jobs did not stop within %.1f s (threads %s): marked as interrupted", timeout, stuck)
        self._heartbeat_thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        try:
            with self._index.writing() as conn:
                conn.execute(servers.delete().where(servers.c.server == self.server))
        except Exception:  # the database is gone: the others will find our heartbeat stale
            log.warning("jobs: could not unregister this server", exc_info=True)

    # ------------------------------------------------------------------ servers sharing the database

    def _heartbeats(self) -> None:
        """Stamp our unfinished jobs, pass on cancels asked elsewhere, recover the jobs of gone servers."""
        while not self._stopping.wait(self._heartbeat_interval):
            try:
                self.heartbeat()
                self.recover()
            except Exception:  # the database may be down for a while: try again at the next beat
                log.warning("jobs: heartbeat failed", exc_info=True)

    def heartbeat(self) -> None:
        """Stamp this server and its jobs as alive and act on cancels stored by other servers."""
        with self._lock:
            busy = bool(self._contexts)
        with self._index.writing() as conn:
            beaten = conn.execute(
                servers.update().where(servers.c.server == self.server).values(heartbeat=_now())
            ).rowcount
            if busy:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.server == self.server, jobs.c.state.in_((PENDING, RUNNING)))
                    .values(heartbeat=_now())
                )
        if not beaten:  # removed by a server that took us for gone (a long pause): register again
            self._register()
        if not busy:
            return
        with self._index.reading() as conn:
            asked = (
                conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.server == self.server, jobs.c.state == RUNNING, jobs.c.cancel_requested.is_(True)
                    )
                )
                .scalars()
                .all()
            )
        for job_id in asked:
            with self._lock:
                context = self._contexts.get(job_id)
            if context is not None:
                context._request_cancel(by_user=True)

    def _register(self) -> None:
        host, pid = _host_and_pid(self.server)
        now = _now()
        with self._index.writing() as conn:
            conn.execute(servers.insert().values(server=self.server, host=host, pid=pid or 0, started=now,
                                                 heartbeat=now))  # fmt: skip

    def live_servers(self) -> builtins.list[str]:
        """The other servers using this database now (registered and not gone), by id."""
        with self._index.reading() as conn:
            rows = conn.execute(
                sa.select(servers.c.server, servers.c.heartbeat).where(servers.c.server != self.server)
            ).all()
        now = _now()
        return sorted(server for server, beat in rows if not self._gone(server, beat, now))

    def settled_live_servers(self) -> builtins.list[str]:
        """:meth:`live_servers`, once servers of this host whose process is dead have missed their beats.

        Right after a crash the dead server's last beat is still fresh, so it would count as live for
        up to two heartbeat intervals; the crash repair waits that out rather than leave the dead
        server's half-written files for ever.
        """
        deadline = time.monotonic() + 2 * self._heartbeat_interval + 1
        while True:
            live = self.live_servers()
            doubtful = [s for s in live if _host_and_pid(s)[0] == socket.gethostname() and not _alive(s)]
            if not doubtful or time.monotonic() > deadline:
                return live
            time.sleep(0.25)

    def recover(self) -> int:
        """Mark FAILED the unfinished jobs whose server is gone (module docstring); how many."""
        self._forget_gone_servers()
        with self._index.reading() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.server, jobs.c.heartbeat).where(
                    jobs.c.state.in_((PENDING, RUNNING)), jobs.c.server.not_in((self.server, DATABASE_SERVER))
                )
            ).all()
        now = _now()
        count = 0
        for job_id, server, beat in rows:
            if not self._gone(server, beat, now):
                continue
            with self._index.writing() as conn:
                count += conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.state.in_((PENDING, RUNNING)),
                        jobs.c.server == server,
                        jobs.c.heartbeat.is_not_distinct_from(beat),  # not if it beat since we looked
                    )
                    .values(state=FAILED, error=INTERRUPTED_BY_RESTART, finished=now)
                ).rowcount
        if count:
            log.warning("%d jobs were interrupted by a restart of their node: marked as failed", count)
        return count

    def _forget_gone_servers(self) -> None:
        with self._index.reading() as conn:
            rows = conn.execute(
                sa.select(servers.c.server, servers.c.heartbeat).where(servers.c.server != self.server)
            ).all()
        now = _now()
        for server, beat in rows:
            if self._gone(server, beat, now):
                with self._index.writing() as conn:
                    conn.execute(servers.delete().where(servers.c.server == server, servers.c.heartbeat == beat))

    def _gone(self, server: str, beat: datetime | None, now: datetime) -> bool:
        if beat is None:
            return True
        age = now - _aware(beat)
        if age > timedelta(seconds=self._stale_after):
            return True
        # a dead pid of our host counts only once a beat or two were missed: containers sharing a
        # host name (host networking) have pid namespaces of their own
        host, pid = _host_and_pid(server)
        missed = age > timedelta(seconds=2 * self._heartbeat_interval)
        return missed and host == socket.gethostname() and pid is not None and not _pid_alive(pid)

    # ------------------------------------------------------------------ running

    def _work(self) -> None:
        while True:
            key = self._queue.get()
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
        with self._index.writing() as conn:
            started = conn.execute(
                jobs.update()
                .where(jobs.c.id == key, jobs.c.state == PENDING)
                .values(state=RUNNING, started=_now(), heartbeat=_now())
            ).rowcount
        if not started:
            return  # cancelled between the queue and here
        row = self.get(key)
        with self._lock:
            runner = self._runners.get(row.kind)
        state, error, result = SUCCEEDED, "", {}
        try:
            if runner is None:
                raise Conflict(f"no runner for jobs of kind {row.kind!r}")
            returned = runner(context)
            if returned is not None and not isinstance(returned, Mapping):
                raise TypeError(f"the runner returned {type(returned).__name__}, not a dict")
            _dumps(dict(returned or {}), "the job result")
            result = dict(returned or {})
        except JobCancelled:
            if context._user_cancelled:
                state = CANCELLED
            else:
                state, error = FAILED, INTERRUPTED_BY_SHUTDOWN
        except SliceboxError as e:
            state, error = FAILED, e.message
            log.info("job %d (%s) failed: %s", key, row.kind, e.message)
        except Exception as e:
            state, error = FAILED, f"{type(e).__name__}: {e}"
            log.warning("job %d (%s) failed", key, row.kind, exc_info=True)
        with self._lock:  # finished: a cancel from now on is a conflict, get shows the stored values
            if self._contexts.get(key) is context:
                del self._contexts[key]
        self._finish_if(key, (RUNNING,), state, context=context, error=error, result=result)

    # ------------------------------------------------------------------ persistence

    def _store_progress(self, context: JobContext) -> None:
        done, total, counts = context.snapshot()
        with self._index.writing() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == context.job_id, jobs.c.state == RUNNING)
                .values(progress_done=done, progress_total=total, counts=json.dumps(counts))
            )

    def _finish_if(
        self,
        key: int,
        current: tuple[str, ...],
        state: str,
        context: JobContext | None = None,
        error: str = "",
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move the job from one of ``current`` to the final ``state``; False if it was not in one."""
        values: dict[str, Any] = {"state": state, "error": error, "finished": _now()}
        if result is not None:
            values["result"] = json.dumps(dict(result))
        if context is not None:
            done, total, counts = context.snapshot()
            values.update(progress_done=done, progress_total=total, counts=json.dumps(counts))
        with self._index.writing() as conn:
            changed = conn.execute(
                jobs.update().where(jobs.c.id == key, jobs.c.state.in_(current)).values(**values)
            ).rowcount
        with self._changed:
            self._changed.notify_all()
        return bool(changed)

    def _record(self, row: Any) -> Job:
        m = row._mapping
        done, total, counts = m["progress_done"], m["progress_total"], _loads(m["counts"])
        if m["state"] == RUNNING:
            with self._lock:
                context = self._contexts.get(m["id"])
            if context is not None:  # running here: show the live values, not the throttled ones
                done, total, counts = context.snapshot()
        return Job(
            id=int(m["id"]),
            kind=m["kind"],
            description=m["description"],
            state=m["state"],
            progress_done=int(done),
            progress_total=None if total is None else int(total),
            counts={str(k): int(v) for k, v in counts.items()},
            parameters=_loads(m["parameters"]),
            result=_loads(m["result"]),
            error=m["error"],
            owner=m["owner"],
            created=_iso(m["created"]),
            started=None if m["started"] is None else _iso(m["started"]),
            finished=None if m["finished"] is None else _iso(m["finished"]),
            server=m["server"],
        )


# ---------------------------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def server_id() -> str:
    """``host:pid:random``: names this server process among all that share the database."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _host_and_pid(server: str) -> tuple[str, int | None]:
    """The host and pid of a server id (None for a malformed or empty one)."""
    parts = server.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return server, None
    return parts[0], int(parts[1])


def _alive(server: str) -> bool:
    """Whether the process of a server id of this host exists."""
    pid = _host_and_pid(server)[1]
    return pid is not None and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 delivers nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    except OSError:
        return False
    return True


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes, which were written as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _iso(value: datetime) -> str:
    """UTC ISO-8601; SQLite hands back naive datetimes, which were written as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC).isoformat()
    return value.astimezone(UTC).isoformat()


def image_id_list(value: Any, name: str, maximum: int) -> builtins.list[int]:
    """A job's list of image ids: non-empty, integers, at most ``maximum``, duplicates dropped (order kept)."""
    if (
        not isinstance(value, builtins.list)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    ):
        raise InvalidInput(f'{name} must be a non-empty JSON array of integer image ids, e.g. {{"{name}": [1, 2]}}')
    if len(value) > maximum:
        raise InvalidInput(f"one job takes at most {maximum} images")
    return builtins.list(dict.fromkeys(value))


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be an integer")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidInput(f"{what} must be an integer") from None


def _non_negative(value: Any, what: str) -> int:
    number = _integer(value, what)
    if number < 0:
        raise InvalidInput(f"{what} must be non-negative")
    if number > _MAX_ID:
        raise InvalidInput(f"{what} must be at most {_MAX_ID}")
    return number


def _job_key(value: Any) -> int:
    number = _integer(value, "job id")
    if not 0 < number <= _MAX_ID:
        raise NotFound(f"job {value} not found")
    return number


def _text(value: Any) -> str:
    return str(value).replace("\x00", "")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} must be JSON-serialisable: {e}") from None


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
