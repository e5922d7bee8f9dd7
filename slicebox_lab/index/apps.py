"""Statements of apps (tables ``apps``, ``app_runs``, ``app_pending``): rows in, plain rows out.

The rules (what an app declares, when a series is stable, what a run records and how it is retried) live
in ``apps/``; JSON values are stored as the text ``apps/`` writes.  Datetimes come back aware.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from ._records import aware
from .database import inserted_id
from .repository import Index
from .schema import app_pending, app_runs, apps, images, jobs, series, series_series_types, series_types

__all__ = [
    "AppRow",
    "ImageFile",
    "RunRow",
    "app_by_id",
    "app_id_named",
    "apps_page",
    "clear_pending",
    "delete_app",
    "enabled_apps",
    "fail_orphaned_runs",
    "finish_run",
    "images_of_series",
    "insert_app",
    "insert_run",
    "last_run",
    "mark_pending",
    "pending",
    "run_by_id",
    "runs_page",
    "series_of_study",
    "series_type_names",
    "study_of_series",
    "succeeded_subjects",
    "update_app",
]


class AppRow(NamedTuple):
    id: int
    name: str
    version: str
    kind: str
    target: str
    code: str
    series_types: str
    rule: str
    level: str
    parameters: str
    enabled: bool
    rerun_on_growth: bool
    retries: int
    retry_seconds: float
    timeout_seconds: float | None
    created: datetime
    updated: datetime


class RunRow(NamedTuple):
    id: int
    job_id: int | None
    batch_id: int | None
    app_id: int | None
    app_name: str
    app_version: str
    level: str
    subject_id: int
    series_ids: str
    sop_instance_uids: str
    image_count: int
    parameters: str
    trigger: str
    attempt: int
    state: str
    started: datetime
    finished: datetime | None
    log: str
    notebook: str
    outputs: str
    result_values: str
    error: str


class ImageFile(NamedTuple):
    """An image of a series run on: what an app is handed (its file, through the storage key)."""

    id: int
    series_id: int
    SOPInstanceUID: str
    storage_key: str


_APP_COLUMNS = tuple(apps.c[name] for name in AppRow._fields)
_RUN_COLUMNS = tuple(app_runs.c[name] for name in RunRow._fields)
#: the columns a listing of runs leaves out (large: read with one run)
_LARGE = ("log", "notebook")


def _app(row: Any) -> AppRow:
    app = AppRow(*row)
    return app._replace(
        enabled=bool(app.enabled), rerun_on_growth=bool(app.rerun_on_growth), created=aware(app.created),
        updated=aware(app.updated),
    )  # fmt: skip


def _run(row: Any) -> RunRow:
    run = RunRow(*row)
    return run._replace(started=aware(run.started), finished=aware(run.finished))


# ---------------------------------------------------------------------------------------------- apps


def insert_app(conn: sa.Connection, values: Mapping[str, Any]) -> int:
    return inserted_id(conn, apps, **values)


def app_id_named(conn: sa.Connection, name: str) -> int | None:
    return conn.execute(sa.select(apps.c.id).where(apps.c.name == name)).scalar()


def app_by_id(conn: sa.Connection, app_id: int) -> AppRow | None:
    row = conn.execute(sa.select(*_APP_COLUMNS).where(apps.c.id == app_id)).first()
    return None if row is None else _app(row)


def apps_page(index: Index, start: int, count: int) -> list[AppRow]:
    with index.reading() as conn:
        rows = conn.execute(sa.select(*_APP_COLUMNS).order_by(apps.c.id).offset(start).limit(count)).all()
    return [_app(row) for row in rows]


def enabled_apps(index: Index) -> list[AppRow]:
    with index.reading() as conn:
        rows = conn.execute(sa.select(*_APP_COLUMNS).where(apps.c.enabled.is_(True)).order_by(apps.c.id)).all()
    return [_app(row) for row in rows]


def update_app(conn: sa.Connection, app_id: int, values: Mapping[str, Any]) -> None:
    conn.execute(apps.update().where(apps.c.id == app_id).values(**values))


def delete_app(index: Index, app_id: int) -> bool:
    with index.writing() as conn:
        return bool(conn.execute(apps.delete().where(apps.c.id == app_id)).rowcount)


# ---------------------------------------------------------------------------------------------- runs


def insert_run(index: Index, values: Mapping[str, Any]) -> int:
    with index.writing() as conn:
        return inserted_id(conn, app_runs, **values)


def finish_run(index: Index, run_id: int, values: Mapping[str, Any]) -> None:
    with index.writing() as conn:
        conn.execute(app_runs.update().where(app_runs.c.id == run_id).values(**values))


def run_by_id(index: Index, run_id: int) -> RunRow | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(*_RUN_COLUMNS).where(app_runs.c.id == run_id)).first()
    return None if row is None else _run(row)


def runs_page(
    index: Index,
    start: int,
    count: int,
    *,
    app_id: int | None = None,
    job_id: int | None = None,
    batch_id: int | None = None,
    subject_id: int | None = None,
    state: str | None = None,
) -> list[RunRow]:
    """Newest first, without their log and notebook (``""``)."""
    columns = [sa.literal("").label(c.name) if c.name in _LARGE else c for c in _RUN_COLUMNS]
    statement = sa.select(*columns).order_by(app_runs.c.id.desc()).offset(start).limit(count)
    for column, value in (
        (app_runs.c.app_id, app_id),
        (app_runs.c.job_id, job_id),
        (app_runs.c.batch_id, batch_id),
        (app_runs.c.subject_id, subject_id),
        (app_runs.c.state, state),
    ):
        if value is not None:
            statement = statement.where(column == value)
    with index.reading() as conn:
        return [_run(row) for row in conn.execute(statement).all()]


def last_run(index: Index, app_id: int, level: str, subject_id: int) -> tuple[str, int] | None:
    """(state, image count) of the app's latest run on the series (or study), None when it never ran."""
    with index.reading() as conn:
        row = conn.execute(
            sa.select(app_runs.c.state, app_runs.c.image_count)
            .where(app_runs.c.app_id == app_id, app_runs.c.level == level, app_runs.c.subject_id == subject_id)
            .order_by(app_runs.c.id.desc())
            .limit(1)
        ).first()
    return None if row is None else (str(row.state), int(row.image_count))


def succeeded_subjects(index: Index, batch_id: int, succeeded: str) -> set[int]:
    """The series (or studies) of a batch with a run in state ``succeeded``."""
    with index.reading() as conn:
        found = conn.execute(
            sa.select(app_runs.c.subject_id).where(app_runs.c.batch_id == batch_id, app_runs.c.state == succeeded)
        ).scalars()
        return {int(i) for i in found}


def fail_orphaned_runs(index: Index, running: str, finished: Collection[str], failed: str, error: str) -> int:
    """Runs still ``running`` whose job finished (a server that died mid-run): ``failed`` with ``error``."""
    with index.writing() as conn:
        orphans = sa.select(jobs.c.id).where(jobs.c.state.in_(tuple(finished)))
        return int(
            conn.execute(
                app_runs.update()
                .where(app_runs.c.state == running, app_runs.c.job_id.in_(orphans))
                .values(state=failed, error=error)
            ).rowcount
        )


# ---------------------------------------------------------------------------------------------- pending


def mark_pending(index: Index, keys: Collection[tuple[str, int]], now: datetime) -> None:
    """Series and studies that received an image (a row each, kept until they are stable)."""
    with index.writing() as conn:
        have = {
            (str(level), int(subject))
            for level, subject in conn.execute(sa.select(app_pending.c.level, app_pending.c.subject_id)).all()
        }
        new = [
            {"level": level, "subject_id": subject, "added": now}
            for level, subject in keys
            if (level, subject) not in have
        ]
        if new:
            conn.execute(app_pending.insert(), new)


def pending(index: Index) -> list[tuple[str, int, datetime]]:
    with index.reading() as conn:
        rows = conn.execute(sa.select(app_pending.c.level, app_pending.c.subject_id, app_pending.c.added)).all()
    return [(str(level), int(subject), aware(added)) for level, subject, added in rows]


def clear_pending(index: Index, level: str, subject_id: int) -> None:
    with index.writing() as conn:
        conn.execute(app_pending.delete().where(app_pending.c.level == level, app_pending.c.subject_id == subject_id))


# ---------------------------------------------------------------------------------------------- inputs


def images_of_series(index: Index, series_ids: Collection[int]) -> list[ImageFile]:
    """The images of the series, by series, then instance number, then id."""
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(images.c.id, images.c.series_id, images.c.SOPInstanceUID, images.c.storage_key)
            .where(images.c.series_id.in_(tuple(series_ids)))
            .order_by(images.c.series_id, images.c.id)
        ).all()
    return [ImageFile(int(r.id), int(r.series_id), str(r.SOPInstanceUID), str(r.storage_key)) for r in rows]


def study_of_series(index: Index, series_id: int) -> int | None:
    with index.reading() as conn:
        found = conn.execute(sa.select(series.c.study_id).where(series.c.id == series_id)).scalar()
    return None if found is None else int(found)


def series_of_study(index: Index, study_id: int) -> list[int]:
    with index.reading() as conn:
        found = conn.execute(sa.select(series.c.id).where(series.c.study_id == study_id).order_by(series.c.id))
        return [int(i) for i in found.scalars()]


def series_type_names(index: Index, series_id: int) -> set[str]:
    link = series_series_types
    with index.reading() as conn:
        found = conn.execute(
            sa.select(series_types.c.name)
            .join(link, link.c.series_type_id == series_types.c.id)
            .where(link.c.series_id == series_id)
        ).scalars()
        return {str(name) for name in found}
