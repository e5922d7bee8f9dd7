"""The pool: worker processes, each behind a pipe that the calling thread itself writes and reads.

A call takes an idle worker, sends it the function and its (small) arguments, and waits on the pipe
for the answer, in the calling thread: no scheduler thread, no result thread, no hand-over between
threads of the server process, which all contend for one GIL.  (pebble's ``ProcessPool``, the
well-kept library with the right failure semantics, crosses three threads of its own per task: under
load each crossing cost more than the task's own work, see bench/README.md.)  A worker that dies
(killed, out of memory, a crash in a codec) closes its pipe: the call waiting on it raises
:class:`WorkerFailed`, only that call, and a new worker takes its place.  Workers are forked by
``multiprocessing``'s forkserver (never ``fork`` from the threaded server), which preloads the task
module so a replacement starts in a fraction of a second; they ignore SIGINT (a ^C meant for the
server) and end when the server closes the pool or dies (at once: a worker whose pipe closes exits).
A call may carry open file descriptors (:meth:`WorkerPool.start_with_fds`): that is how a worker is
given a DICOM association to serve in threads of its own (``net/receivers.py``).  The one exception to
"the calling thread waits": :meth:`WorkerPool.submit`, for work started on the event loop whose answer is
taken later (an upload's header, inspected while its body arrives), where a thread of the pool waits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, ParamSpec, TypeVar

from ..errors import ServiceUnavailable, SliceboxError

__all__ = ["Call", "WorkerFailed", "WorkerPool", "default_workers"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: modules every worker needs: imported once in the forkserver, inherited by each worker it forks
_PRELOAD = ["slicebox_lab.workers.tasks"]


class WorkerFailed(ServiceUnavailable):
    """A worker process died (killed, out of memory, a crash in a codec) while doing this request's work.

    The request fails cleanly (nothing of it was stored) and may be retried: the pool has already
    replaced the worker."""


def default_workers() -> int:
    """One worker per core the server may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _serve(conn: Connection) -> None:
    """A worker's life: calls in, answers out, until the pipe closes or says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    link = socket.socket(fileno=os.dup(conn.fileno()))  # the same channel, for descriptors (SCM_RIGHTS)
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            # the server is gone: nothing this worker does can be answered or indexed any more, and a
            # file an association thread wrote from now on could land after the next start's reconcile
            os._exit(0)
        if call is None:
            return
        fn, args, kwargs, count = call
        try:
            if count:  # the descriptors follow the call
                kwargs = {**kwargs, "fds": socket.recv_fds(link, 1, count)[1]}
            answer: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except BaseException as error:  # the caller gets it, as if the call had run in its thread
            answer = (False, error)
        try:
            conn.send(answer)
        except Exception as error:  # an answer that does not pickle: say so instead
            conn.send((False, SliceboxError(f"a worker's answer could not be sent back: {error!r}")))


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start a worker without running the server's main script again in it.

    multiprocessing runs the parent's ``__main__`` file again in every child it starts (as
    ``__mp_main__``) when that file has no module name, which is the case of the ``jupyter-slicebox``
    console script: each worker then imported all of jupyter_server (1.5 s of CPU and ~60 MB).  The
    workers need nothing of it (their code is in ``tasks``, preloaded by the forkserver), so the path
    is hidden from multiprocessing while a worker starts."""
    main = sys.modules.get("__main__")
    hidden = getattr(main, "__file__", None) if main is not None and getattr(main, "__spec__", None) is None else None
    if hidden is not None:
        del main.__file__  # type: ignore[union-attr]
    try:
        yield
    finally:
        if hidden is not None:
            main.__file__ = hidden  # type: ignore[union-attr]


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.link = socket.socket(fileno=os.dup(conn.fileno()))  # the same channel, for descriptors

    def close(self) -> None:
        self.link.close()
        self.conn.close()


class Call(Generic[T]):
    """A call under way in a worker (or, without workers, one to make): :meth:`result` waits for it."""

    def __init__(self, pool: WorkerPool, worker: _Worker | None, what: str, local: Callable[[], T] | None) -> None:
        self._pool, self._worker, self._what, self._local = pool, worker, what, local

    def settle(self) -> None:
        """Wait for the call and forget its outcome (the caller failed for another reason meanwhile)."""
        if self._local is not None:
            self._local = None
            return
        try:
            self.result()
        except BaseException:  # noqa: S110 - the caller's own error is the one it reports
            pass

    def wait(self, timeout: float) -> bool:
        """Whether the answer is there (or the worker died) within ``timeout`` seconds; a call without
        workers is always ready (it runs in :meth:`result`)."""
        worker = self._worker
        if worker is None:
            return True
        try:
            return bool(worker.conn.poll(timeout))
        except (OSError, EOFError, ValueError):
            return True

    def terminate(self) -> None:
        """Kill the worker doing this call (a cancelled app run): :meth:`result` then raises
        :class:`WorkerFailed`, and the pool replaces the worker."""
        worker = self._worker
        if worker is not None and worker.process.is_alive():
            worker.process.kill()

    @property
    def pid(self) -> int | None:
        """The process id of the worker doing this call (None without workers)."""
        return None if self._worker is None else self._worker.process.pid

    def result(self) -> T:
        if self._local is not None:
            return self._local()
        worker, self._worker = self._worker, None
        if worker is None:
            raise SliceboxError("this call's result was already taken")
        return self._pool._finish(worker, self._what)


class WorkerPool:
    """``workers`` processes (started on first use), or none: then calls run in the caller's thread."""

    def __init__(self, workers: int) -> None:
        self.workers = max(0, int(workers))
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._callers: ThreadPoolExecutor | None = None

    def start(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Call[T]:
        """Hand ``fn(*args)`` (a module-level function of plain, picklable arguments) to an idle worker
        (waiting for one) and return at once; ``.result()`` waits for the answer."""
        what = getattr(fn, "__name__", "a task")
        if self.workers == 0:
            return Call(self, None, what, lambda: fn(*args, **kwargs))
        return self._send(fn, args, kwargs, ())

    def start_with_fds(
        self, fds: Sequence[int], fn: Callable[..., T], *args: Any, load: Callable[[int | None], int] | None = None
    ) -> Call[T]:
        """As :meth:`start`, the worker's copies of the open file descriptors ``fds`` (sockets: an association
        a worker serves) passed to ``fn`` as ``fds=[...]``; needs workers.  ``load(pid)``: of the idle
        workers, the one with the least load takes the call (associations spread over the cores)."""
        if self.workers == 0:
            raise SliceboxError("file descriptors go to worker processes: this pool has none")
        return self._send(fn, args, {}, tuple(fds), load)

    def _send(
        self,
        fn: Callable[..., T],
        args: Any,
        kwargs: Any,
        fds: tuple[int, ...],
        load: Callable[[int | None], int] | None = None,
    ) -> Call[T]:
        what = getattr(fn, "__name__", "a task")
        # pickled before a worker is taken: a call that cannot be pickled fails here, holding no worker
        message = ForkingPickler.dumps((fn, args, kwargs, len(fds)))
        self._ensure_started()
        worker = self._idle.get()
        if load is not None:
            idle = [worker]
            while True:
                try:
                    idle.append(self._idle.get_nowait())
                except queue.Empty:
                    break
            worker = min(idle, key=lambda w: load(w.process.pid))
            for other in idle:
                if other is not worker:
                    self._idle.put(other)
        try:
            worker.conn.send_bytes(message)
            if fds:
                socket.send_fds(worker.link, [b"F"], list(fds))
        except (OSError, EOFError, ValueError):
            self._replace(worker)
            raise self._failed(worker, what) from None
        return Call(self, worker, what, None)

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)`` in a worker; blocking (call it off the event loop)."""
        return self.start(fn, *args, **kwargs).result()

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """``fn(*args)`` in a worker, its answer in a future; never blocks (the event loop may call it).

        For work whose answer is wanted later, if at all (the header of an upload still arriving): a thread
        of the pool's own waits for the worker, so a worker is never held by an answer nobody has taken yet.
        """
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the node is shutting down: its worker processes are stopped")
            if self._callers is None:
                self._callers = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="slicebox-worker-call")
            callers = self._callers

        def call() -> T:
            return self.run(fn, *args, **kwargs)

        return callers.submit(call)

    def _finish(self, worker: _Worker, what: str) -> Any:
        try:
            ok, value = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker)
            raise self._failed(worker, what) from None
        self._idle.put(worker)
        if ok:
            return value
        raise value

    def _failed(self, worker: _Worker, what: str) -> WorkerFailed:
        worker.process.join(1)
        code = worker.process.exitcode
        log.error("slicebox: a worker process died during %s (exit code %s); it was replaced", what, code)
        return WorkerFailed(
            f"a worker process died during {what} (exit code {code}); nothing of this request was stored, "
            "and it can be retried"
        )

    def start_workers(self) -> None:
        """Start the worker processes now rather than at the first call (the server does, as it starts)."""
        if self.workers:
            self._ensure_started()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the node is shutting down: its worker processes are stopped")
            if self._started:
                return
            self._started = True
            for _ in range(self.workers):
                self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs,), name="slicebox-worker", daemon=True)
        with _main_not_rerun():
            process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._all.add(worker)
        return worker

    def _replace(self, dead: _Worker) -> None:
        dead.close()
        with self._lock:
            self._all.discard(dead)
            if self._closed:
                return
            try:
                self._idle.put(self._spawn())
            except Exception:  # cannot start a process now: the next call waits for the others
                log.exception("slicebox: could not start a worker process to replace a dead one")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers: idle ones are told to stop, busy ones get ``timeout`` seconds, then terminated."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            callers, self._callers = self._callers, None
        if callers is not None:
            callers.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait().conn.send(None)
            except queue.Empty:
                break
            except (OSError, ValueError):
                continue
        for worker in workers:
            worker.process.join(timeout / max(1, len(workers)))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(1)
            worker.close()

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (tests kill one)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None and w.process.is_alive()]
