"""Rows to records: the selected columns of each level, in the order of the record's fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

import sqlalchemy as sa

from slicebox_lab.index.schema import images, log, patients, series, sources, studies
from slicebox_lab.model import FlatSeries, Image, LogEntry, Patient, Series, Source, Study

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def columns_of(table: sa.Table, record: type[Any]) -> tuple[sa.Column[Any], ...]:
    """The columns of ``table`` named as the fields of the dataclass ``record``, in their order."""
    return tuple(table.c[f.name] for f in dataclasses.fields(record))


def record_of(record: type[R], row: Sequence[Any]) -> R:
    """``record`` from a row of its :func:`columns_of`: instants as ISO-8601 text (as the API shows them),
    flags as bools; every store of a small table reads its rows this way."""
    values = [
        iso(value) if isinstance(value, datetime) else bool(value) if field.type in ("bool", bool) else value
        for field, value in zip(dataclasses.fields(record), row, strict=True)
    ]
    return record(*values)


PATIENT_COLUMNS = columns_of(patients, Patient)
STUDY_COLUMNS = columns_of(studies, Study)
SERIES_COLUMNS = columns_of(series, Series)
IMAGE_COLUMNS = columns_of(images, Image)
LOG_COLUMNS = columns_of(log, LogEntry)
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


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """An instant with its zone; SQLite hands back naive datetimes, which we wrote as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


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
