"""Recovery of the jobs of servers that are gone.

A job left ``PENDING``/``RUNNING`` by a server that is gone (crash, kill, stop; see ``servers.py``)
is marked ``FAILED`` ("interrupted by a restart of the node"), ready to be resumed, by whichever
manager notices first: at its start and then at every heartbeat.  A live server's jobs are never
touched, nor rows of :data:`DATABASE_SERVER` (box transactions), which are nobody's to recover.
"""

from __future__ import annotations

import logging

from ..index import Index
from ..index import jobs as rows
from .job import DATABASE_SERVER, INTERRUPTED_BY_RESTART, UNFINISHED_STATES, JobState
from .servers import Liveness, forget_gone_servers, now

log = logging.getLogger(__name__)


def recover(index: Index, server: str, liveness: Liveness) -> int:
    """Mark FAILED the unfinished jobs whose server is gone (not ``server``'s); how many."""
    forget_gone_servers(index, server, liveness)
    found = rows.unfinished_jobs_of_others(index, (server, DATABASE_SERVER), unfinished=UNFINISHED_STATES)
    stamp = now()
    count = 0
    for job_id, other, beat in found:
        if not liveness.gone(other, beat, stamp):
            continue
        count += rows.fail_interrupted(
            index,
            job_id,
            other,
            beat,
            unfinished=UNFINISHED_STATES,
            failed=JobState.FAILED,
            error=INTERRUPTED_BY_RESTART,
            now=stamp,
        )
    if count:
        log.warning("%d jobs were interrupted by a restart of their node: marked as failed", count)
    return count
