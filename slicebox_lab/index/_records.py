"""Rows to records: the selected columns of each level, in the order of the record's fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from slicebox_lab.index.schema import images, log, patients, series, sources, studies
from slicebox_lab.model import FlatSeries, Image, LogEntry, Patient, Series, Source, Study


def _columns(table: sa.Table, record: type[Any]) -> tuple[sa.Column[Any], ...]:
    return tuple(table.c[f.name] for f in dataclasses.fields(record))


PATIENT_COLUMNS = _columns(patients, Patient)
STUDY_COLUMNS = _columns(studies, Study)
SERIES_COLUMNS = _columns(series, Series)
IMAGE_COLUMNS = _columns(images, Image)
LOG_COLUMNS = _columns(log, LogEntry)
SOURCE_COLUMNS = (sources.c.source_type, sources.c.source_name, sources.c.id)
FLAT_SERIES_COLUMNS = PATIENT_COLUMNS + STUDY_COLUMNS + SERIES_COLUMNS

_IMAGE_CREATED = [c.name for c in IMAGE_COLUMNS].index("created")
_LOG_CREATED = [c.name for c in LOG_COLUMNS].index("created")
_P, _S = len(PATIENT_COLUMNS), len(PATIENT_COLUMNS) + len(STUDY_COLUMNS)


def iso(value: datetime) -> str:
    """An instant as ISO-8601 in UTC; SQLite hands back naive datetimes, which we wrote as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC).isoformat()
    return value.astimezone(UTC).isoformat()


def patient(row: Sequence[Any]) -> Patient:
    return Patient(*row)


def study(row: Sequence[Any]) -> Study:
    return Study(*row)


def series_record(row: Sequence[Any]) -> Series:
    return Series(*row)


def image(row: Sequence[Any]) -> Image:
    values = list(row)
    values[_IMAGE_CREATED] = iso(values[_IMAGE_CREATED])
    return Image(*values)


def log_entry(row: Sequence[Any]) -> LogEntry:
    values = list(row)
    values[_LOG_CREATED] = iso(values[_LOG_CREATED])
    return LogEntry(*values)


def source(row: Sequence[Any]) -> Source:
    return Source(source_type=row[0], source_name=row[1], source_id=row[2])


def flat_series(row: Sequence[Any]) -> FlatSeries:
    the_series = Series(*row[_S:])
    return FlatSeries(id=the_series.id, patient=Patient(*row[:_P]), study=Study(*row[_P:_S]), series=the_series)
