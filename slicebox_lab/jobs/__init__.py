"""Background jobs: long operations with progress, counts, cancel, and resume after a failure.

Modules: ``job`` (the states, the :class:`Job` record, what a runner sees: :class:`JobContext`),
``manager`` (:class:`JobManager`: runs, records, cancels and resumes jobs; how to write a runner),
``servers`` (servers sharing one database: ids, heartbeats, when one is gone) and ``recovery`` (the
jobs of gone servers are marked FAILED, ready to be resumed).  The statements are in ``index/jobs.py``.
"""

from __future__ import annotations

from .job import (
    DATABASE_SERVER,
    FINISHED_STATES,
    INTERRUPTED_BY_RESTART,
    INTERRUPTED_BY_SHUTDOWN,
    RESUMABLE_STATES,
    UNFINISHED_STATES,
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobState,
    Runner,
    image_id_list,
)
from .manager import MAX_COUNT, JobManager
from .servers import server_id

__all__ = [
    "DATABASE_SERVER",
    "FINISHED_STATES",
    "INTERRUPTED_BY_RESTART",
    "INTERRUPTED_BY_SHUTDOWN",
    "MAX_COUNT",
    "RESUMABLE_STATES",
    "UNFINISHED_STATES",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobManager",
    "JobState",
    "Runner",
    "image_id_list",
    "server_id",
]
