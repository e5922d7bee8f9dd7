"""One job: its states, its record, and what its runner sees (:class:`JobContext`).

States: ``PENDING`` → ``RUNNING`` → ``SUCCEEDED`` | ``FAILED`` | ``CANCELLED`` (a pending job can be
cancelled directly); ``manager.py`` moves jobs between them.  Also here: the checks of what a job is
given (ids, counts, JSON), shared by the manager and by the runners (``image_id_list``).
"""

from __future__ import annotations

import builtins
import json
import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, NotFound, SliceboxError
from ..model import FINISHED_STATES, JobState

log = logging.getLogger(__name__)


#: the states of a job that was queued or is running (on some server)
UNFINISHED_STATES: tuple[JobState, ...] = (JobState.PENDING, JobState.RUNNING)
RESUMABLE_STATES: frozenset[JobState] = frozenset({JobState.FAILED, JobState.CANCELLED})

INTERRUPTED_BY_RESTART = "interrupted by a restart of the node"
#: the server of a job row whose state lives in the database (a box transaction's mirror): whichever
#: server serves the box continues it, so it is never recovered as interrupted
DATABASE_SERVER = "*"
INTERRUPTED_BY_SHUTDOWN = "interrupted by shutdown"

#: ids are INTEGER columns: a larger number cannot be a job
_MAX_ID = 2**31 - 1


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled` in a job that was asked to stop."""


class JobFailed(SliceboxError):
    """A runner's failure that keeps a result (what was tried, its log): the job is FAILED with both."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = dict(result or {})


@dataclass(frozen=True)
class Job:
    """One job as stored (``slicebox_lab.model.to_json`` gives its REST form)."""

    id: int
    kind: str
    description: str
    state: JobState
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
        done = non_negative(done, "progress done")
        if total is not None:
            total = non_negative(total, "progress total")
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


# ---------------------------------------------------------------------------------------------- checks


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


def non_negative(value: Any, what: str) -> int:
    number = _integer(value, what)
    if number < 0:
        raise InvalidInput(f"{what} must be non-negative")
    if number > _MAX_ID:
        raise InvalidInput(f"{what} must be at most {_MAX_ID}")
    return number


def job_key(value: Any) -> int:
    number = _integer(value, "job id")
    if not 0 < number <= _MAX_ID:
        raise NotFound(f"job {value} not found")
    return number


def clean_text(value: Any) -> str:
    """The text without NUL characters (which PostgreSQL refuses)."""
    return str(value).replace("\x00", "")


def dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} must be JSON-serialisable: {e}") from None


def loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
