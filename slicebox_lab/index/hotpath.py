"""The ingest's two statements of the common case, run on the driver's cursor: the hot path of every image.

Executing a statement through SQLAlchemy costs ~70 µs of Python (execution context, events, result
proxy), and an ingest ran five of them: find patient, study and series, find and insert the image.
Under one GIL that was the largest share of the server's work per image after the request itself.  In
the common case (the patient, study and series exist with the same values, the image is new) this
module runs one joined lookup of the three parents and one insert of the image, straight on the
DBAPI cursor of the same connection and transaction, with the SQL and its parameter order compiled
once per dialect by SQLAlchemy.  Anything else (a new parent, a changed value, an image sent again)
returns None and the caller goes the general way (``repository.Index.ingest``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..model import PATIENT_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES
from .schema import images, patients, series, studies

__all__ = ["HotPath", "Parents"]


class _Compiled:
    """A statement as the driver takes it: SQL text and the order (or names) of its parameters."""

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        positional = getattr(compiled, "positional", False)  # SQLCompiler's; the Compiled base type lacks it
        self.order: tuple[str, ...] | None = tuple(getattr(compiled, "positiontup", None) or ()) if positional else None

    def params(self, values: Mapping[str, Any]) -> Any:
        return tuple(values[name] for name in self.order) if self.order is not None else dict(values)


class Parents(NamedTuple):
    """The parents of an image found in one lookup, and what of each differs from the stored values."""

    patient_id: int
    study_id: int
    series_id: int
    patient_changes: dict[str, Any]
    study_changes: dict[str, Any]
    series_changes: dict[str, Any]


class HotPath:
    """The compiled parent lookup and image insert of one dialect."""

    def __init__(self, dialect: sa.Dialect, image_columns: Sequence[str]) -> None:
        level = {"PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"}
        lookup = (
            sa.select(
                patients.c.id,
                *(patients.c[name] for name in PATIENT_ATTRIBUTES),
                studies.c.id,
                *(studies.c[name] for name in STUDY_ATTRIBUTES),
                series.c.id,
                *(series.c[name] for name in SERIES_ATTRIBUTES),
                series.c.source_id,
            )
            .select_from(
                patients.join(studies, studies.c.patient_id == patients.c.id).join(
                    series, series.c.study_id == studies.c.id
                )
            )
            .where(
                patients.c.PatientName == sa.bindparam("PatientName"),
                patients.c.PatientID == sa.bindparam("PatientID"),
                studies.c.StudyInstanceUID == sa.bindparam("StudyInstanceUID"),
                series.c.SeriesInstanceUID == sa.bindparam("SeriesInstanceUID"),
            )
        )
        assert level <= {*PATIENT_ATTRIBUTES, *STUDY_ATTRIBUTES, *SERIES_ATTRIBUTES}
        self._lookup = _Compiled(lookup, dialect)
        insert = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(images)
        columns = (*image_columns, "series_id", "created", "updated")
        statement = (
            insert.values({name: sa.bindparam(name) for name in columns})
            .on_conflict_do_nothing(index_elements=["series_id", "SOPInstanceUID"])
            .returning(images.c.id)
        )
        self._insert = _Compiled(statement, dialect)
        processor = images.c.created.type.dialect_impl(dialect).bind_processor(dialect)
        self._timestamp: Callable[[datetime], Any] = processor if processor is not None else (lambda value: value)

    def parents(
        self,
        connection: sa.Connection,
        patient: Mapping[str, str],
        study: Mapping[str, str],
        the_series: Mapping[str, str],
        source_id: int,
    ) -> Parents | None:
        """The ids of the patient, study and series when all three exist, with the values of each that
        differ from the stored ones (the caller updates those); None when one of them is new."""
        cursor = _cursor(connection)
        keys = {
            "PatientName": patient["PatientName"],
            "PatientID": patient["PatientID"],
            "StudyInstanceUID": study["StudyInstanceUID"],
            "SeriesInstanceUID": the_series["SeriesInstanceUID"],
        }
        try:
            cursor.execute(self._lookup.sql, self._lookup.params(keys))
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        levels: tuple[tuple[Mapping[str, str], tuple[str, ...], dict[str, Any]], ...] = (
            (patient, PATIENT_ATTRIBUTES, {}),
            (study, STUDY_ATTRIBUTES, {}),
            (the_series, SERIES_ATTRIBUTES, {"source_id": source_id}),
        )
        ids: list[int] = []
        changes: list[dict[str, Any]] = []
        at = 0
        for values, names, extra in levels:
            ids.append(int(row[at]))
            wanted = {**{name: values[name] for name in names}, **extra}
            stored = row[at + 1 : at + 1 + len(wanted)]
            changes.append(
                {name: value for (name, value), old in zip(wanted.items(), stored, strict=True) if old != value}
            )
            at += 1 + len(wanted)
        return Parents(ids[0], ids[1], ids[2], changes[0], changes[1], changes[2])

    def insert_image(self, connection: sa.Connection, values: Mapping[str, Any], now: datetime) -> int | None:
        """The new image's id, or None when the series already has an image of that SOPInstanceUID."""
        stamp = self._timestamp(now)
        params = self._insert.params({**values, "created": stamp, "updated": stamp})
        cursor = _cursor(connection)
        try:
            cursor.execute(self._insert.sql, params)
            row = cursor.fetchone()
        except connection.dialect.dbapi.IntegrityError as error:  # type: ignore[union-attr]
            # as SQLAlchemy would raise it (the caller turns a taken storage key into a Conflict)
            raise sa.exc.IntegrityError(self._insert.sql, params, error) from error
        finally:
            cursor.close()
        return None if row is None else int(row[0])


def _cursor(connection: sa.Connection) -> Any:
    driver = connection.connection.driver_connection
    assert driver is not None
    return driver.cursor()
