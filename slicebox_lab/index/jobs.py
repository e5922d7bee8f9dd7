"""Statements of the jobs and of the servers sharing the database (tables ``jobs``, ``servers``).

The rules (states and their transitions, heartbeats, who is gone, recovery) live in ``jobs/``; the
states a statement looks for or writes are its arguments (``jobs.JobState``), so this module knows
rows, not rules.  Datetimes come back aware (SQLite hands back naive ones, which were written as UTC).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from ._records import aware
from .database import inserted_id
from .repository import Index
from .schema import jobs, servers

__all__ = [
    "JobRow",
    "beat",
    "cancels_requested",
    "fail_interrupted",
    "finish_job",
    "forget_server",
    "insert_job",
    "job_row",
    "list_jobs",
    "other_servers",
    "register_server",
    "request_cancel",
    "start_job",
    "store_progress",
    "unfinished_jobs_of_others",
    "unregister_server",
]


class JobRow(NamedTuple):
    """A row of ``jobs``; ``counts``, ``parameters`` and ``result`` as their stored JSON text."""

    id: int
    kind: str
    description: str
    state: str
    progress_done: int
    progress_total: int | None
    counts: str
    parameters: str
    result: str
    error: str
    owner: str
    created: datetime
    started: datetime | None
    finished: datetime | None
    server: str


_COLUMNS = tuple(jobs.c[name] for name in JobRow._fields)


def _row(row: Any) -> JobRow:
    """A row of :data:`_COLUMNS`."""
    job = JobRow(*row)
    return job._replace(created=aware(job.created), started=aware(job.started), finished=aware(job.finished))


# ---------------------------------------------------------------------------------------------- jobs


def insert_job(
    index: Index,
    *,
    kind: str,
    description: str,
    state: str,
    progress_total: int | None,
    parameters: str,
    owner: str,
    server: str,
    now: datetime,
) -> int:
    """A new job row (no progress, counts or result yet, beating since ``now``); its id."""
    values = {
        "kind": kind,
        "description": description,
        "state": state,
        "progress_done": 0,
        "progress_total": progress_total,
        "counts": "{}",
        "parameters": parameters,
        "result": "{}",
        "error": "",
        "owner": owner,
        "created": now,
        "server": server,
        "heartbeat": now,
    }
    with index.writing() as conn:
        return inserted_id(conn, jobs, **values)


def job_row(index: Index, job_id: int) -> JobRow | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_COLUMNS).where(jobs.c.id == job_id)).first()
    return None if row is None else _row(row)


def list_jobs(index: Index, start: int, limit: int, state: str | None, kind: str | None) -> list[JobRow]:
    """Newest first, optionally of one state and/or kind."""
    statement = sa.select(*_COLUMNS).order_by(jobs.c.id.desc()).offset(start).limit(limit)
    if state is not None:
        statement = statement.where(jobs.c.state == state)
    if kind is not None:
        statement = statement.where(jobs.c.kind == kind)
    with index.reading() as conn:
        return [_row(row) for row in conn.execute(statement).all()]


def start_job(index: Index, job_id: int, *, pending: str, running: str, now: datetime) -> bool:
    """``pending`` → ``running``, started and beating now; False if the job was not ``pending``."""
    with index.writing() as conn:
        started = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == pending)
            .values(state=running, started=now, heartbeat=now)
        ).rowcount
    return bool(started)


def store_progress(index: Index, job_id: int, *, running: str, done: int, total: int | None, counts: str) -> None:
    """The progress and counts (JSON) of a job still ``running``."""
    with index.writing() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == running)
            .values(progress_done=done, progress_total=total, counts=counts)
        )


def finish_job(
    index: Index,
    job_id: int,
    *,
    current: Collection[str],
    state: str,
    error: str,
    now: datetime,
    result: str | None = None,
    progress: tuple[int, int | None, str] | None = None,
) -> bool:
    """From one of ``current`` to the final ``state`` (with the result JSON and the (done, total, counts
    JSON) progress when given); False if the job was in none of ``current``."""
    values: dict[str, Any] = {"state": state, "error": error, "finished": now}
    if result is not None:
        values["result"] = result
    if progress is not None:
        values.update(progress_done=progress[0], progress_total=progress[1], counts=progress[2])
    with index.writing() as conn:
        changed = conn.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.state.in_(tuple(current))).values(**values)
        ).rowcount
    return bool(changed)


def request_cancel(index: Index, job_id: int, *, running: str) -> None:
    """Flag a ``running`` job for its server, which acts on it at its next heartbeat."""
    with index.writing() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.state == running).values(cancel_requested=True))


def cancels_requested(index: Index, server: str, *, running: str) -> list[int]:
    """The ``running`` jobs of ``server`` flagged for cancellation."""
    with index.reading() as conn:
        return [
            int(job_id)
            for job_id in conn.execute(
                sa.select(jobs.c.id).where(
                    jobs.c.server == server, jobs.c.state == running, jobs.c.cancel_requested.is_(True)
                )
            )
            .scalars()
            .all()
        ]


def unfinished_jobs_of_others(
    index: Index, exclude: Collection[str], *, unfinished: Collection[str]
) -> list[tuple[int, str, datetime | None]]:
    """(id, server, heartbeat) of the jobs in one of the ``unfinished`` states run by no server of ``exclude``."""
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.server, jobs.c.heartbeat).where(
                jobs.c.state.in_(tuple(unfinished)), jobs.c.server.not_in(tuple(exclude))
            )
        ).all()
    return [(int(job_id), server, None if beat is None else aware(beat)) for job_id, server, beat in rows]


def fail_interrupted(
    index: Index,
    job_id: int,
    server: str,
    heartbeat: datetime | None,
    *,
    unfinished: Collection[str],
    failed: str,
    error: str,
    now: datetime,
) -> int:
    """Mark the job ``failed`` unless it finished, moved, or beat since ``heartbeat`` was read; 1 or 0."""
    with index.writing() as conn:
        return int(
            conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.state.in_(tuple(unfinished)),
                    jobs.c.server == server,
                    jobs.c.heartbeat.is_not_distinct_from(heartbeat),  # not if it beat since we looked
                )
                .values(state=failed, error=error, finished=now)
            ).rowcount
        )


# ---------------------------------------------------------------------------------------------- servers


def register_server(index: Index, server: str, host: str, pid: int, now: datetime) -> None:
    with index.writing() as conn:
        conn.execute(servers.insert().values(server=server, host=host, pid=pid, started=now, heartbeat=now))


def unregister_server(index: Index, server: str) -> None:
    with index.writing() as conn:
        conn.execute(servers.delete().where(servers.c.server == server))


def beat(index: Index, server: str, now: datetime, unfinished: Collection[str] | None) -> bool:
    """Stamp the server, and its jobs in one of the ``unfinished`` states unless None, in one transaction;
    False if the server is not registered (any more)."""
    with index.writing() as conn:
        beaten = conn.execute(servers.update().where(servers.c.server == server).values(heartbeat=now)).rowcount
        if unfinished is not None:
            conn.execute(
                jobs.update().where(jobs.c.server == server, jobs.c.state.in_(tuple(unfinished))).values(heartbeat=now)
            )
    return bool(beaten)


def other_servers(index: Index, server: str) -> list[tuple[str, datetime | None]]:
    """(server, heartbeat) of every registered server but ``server``."""
    with index.reading() as conn:
        rows = conn.execute(sa.select(servers.c.server, servers.c.heartbeat).where(servers.c.server != server)).all()
    return [(other, None if beat is None else aware(beat)) for other, beat in rows]


def forget_server(index: Index, server: str, heartbeat: datetime | None) -> None:
    """Unregister ``server`` unless it beat since ``heartbeat`` was read."""
    with index.writing() as conn:
        conn.execute(servers.delete().where(servers.c.server == server, servers.c.heartbeat == heartbeat))
