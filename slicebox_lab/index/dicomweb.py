"""Statements of DICOMweb: the QIDO-RS search over the hierarchy and the instances WADO-RS serves.

What to match and return (DICOM keys and their VRs, includefield, the DICOM JSON) lives in
``dicomweb/qido.py`` and ``dicomweb/wado.py``; they hand over validated :class:`Match` records.
A search is the REST queries' level plan (``query.HierarchyPlan``: semi-joins up and down), one
statement for the page, then grouped counts and the representative instance of each result row, all
in one read transaction.  Levels are indexes into the hierarchy: 0 patient, 1 study, 2 series, 3 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa

from .query import HierarchyPlan, case_insensitive_match, escape_like
from .repository import Index
from .schema import images, patients, series, studies

__all__ = ["InstanceRow", "Match", "QidoPage", "instances", "is_integer", "qido_page"]

_PATIENT, _STUDY, _SERIES, _IMAGE = range(4)
_TABLES: tuple[sa.Table, ...] = (patients, studies, series, images)
_ESCAPE = "/"


@dataclass(frozen=True)
class Match:
    """One validated QIDO match on the column ``column`` (a DICOM keyword) of the table of ``level``.

    ``kind``: ``equals`` (one value), ``in`` (any of the values), ``range`` (a date range: (low, high),
    either may be "", an empty value never matches), ``wildcard`` (``*``/``?``, case-insensitive, as
    the node's C-FIND), ``name`` (fuzzy: any name component starting with the value, case-insensitive).
    """

    level: int
    column: str
    kind: Literal["equals", "in", "range", "wildcard", "name"]
    values: tuple[Any, ...]


def is_integer(level: int, column: str) -> bool:
    """Whether the column holds integers (its matches must be integers)."""
    return isinstance(_TABLES[level].c[column].type, sa.Integer)


def _clause(match: Match, dialect: str) -> sa.ColumnElement[bool]:
    column = _TABLES[match.level].c[match.column]
    if match.kind == "in":
        return column.in_(list(match.values))
    if match.kind == "range":
        low, high = match.values
        clauses = [column != ""]
        if low:
            clauses.append(column >= low)
        if high:
            clauses.append(column <= high)
        return sa.and_(*clauses)
    (value,) = match.values
    if match.kind == "wildcard":
        # case-insensitive, using the lower() indexes, as the REST queries (index/query.py)
        return case_insensitive_match(column, value, dialect)
    if match.kind == "name":
        start = escape_like(value) + "%"
        return sa.or_(*(column.ilike(p, escape=_ESCAPE) for p in (start, "%^" + start, "% " + start)))
    return column == value


class QidoPage(NamedTuple):
    """One page of a search: each row as ``{"id", <keyword>: value, ...}`` (``_study_uid``, ``_study_id``
    below studies; ``_series_uid``, ``_ts``, ``_key`` for instances), whether more rows matched, the
    counts and modalities of the page's rows, and each row's representative storage key."""

    rows: list[dict[str, Any]]
    more: bool
    aggregates: dict[str, dict[int, Any]]
    keys: dict[int, str]


def qido_page(
    index: Index,
    level: int,
    matches: Sequence[Match],
    columns: Sequence[tuple[int, str]],
    offset: int,
    limit: int,
) -> QidoPage:
    """The rows of ``level`` meeting every match, in id order, ``offset``/``limit``; ``columns``: the
    (level, keyword) of the indexed attributes to select, labelled with their keyword."""
    dialect = index.engine.dialect.name
    plan = HierarchyPlan(level, top=_PATIENT)
    for match in matches:
        plan.add(match.level, _clause(match, dialect))
    selected = [plan.own.c.id.label("id")]
    for table_level, keyword in columns:
        selected.append(_TABLES[table_level].c[keyword].label(keyword))
    if level >= _SERIES:
        selected += [studies.c.StudyInstanceUID.label("_study_uid"), studies.c.id.label("_study_id")]
    if level == _IMAGE:
        selected += [
            series.c.SeriesInstanceUID.label("_series_uid"),
            images.c.TransferSyntaxUID.label("_ts"),
            images.c.storage_key.label("_key"),
        ]
    statement = (
        sa.select(*selected)
        .select_from(plan.from_clause())
        .where(*plan.conditions())
        .order_by(plan.own.c.id)
        .offset(offset)
        .limit(limit + 1)
    )
    with index.reading() as conn:
        rows = [row._asdict() for row in conn.execute(statement)]
        more = len(rows) > limit
        if more:
            rows = rows[:limit]
        ids = [row["id"] for row in rows]
        aggregates = _aggregates(conn, level, ids) if ids else {}
        keys = _representatives(conn, level, rows) if ids else {}
    return QidoPage(rows, more, aggregates, keys)


def _aggregates(conn: sa.Connection, level: int, ids: list[int]) -> dict[str, dict[int, Any]]:
    """Counts and modalities of the page's rows, one grouped query each."""
    out: dict[str, dict[int, Any]] = {}
    if level == _STUDY:
        study_images = series.join(images, images.c.series_id == series.c.id)
        out["NumberOfStudyRelatedSeries"] = _counts(conn, series.c.study_id, ids)
        out["NumberOfStudyRelatedInstances"] = _counts(conn, series.c.study_id, ids, study_images)
        modalities: dict[int, list[str]] = {}
        statement = (
            sa.select(series.c.study_id, series.c.Modality)
            .where(series.c.study_id.in_(ids), series.c.Modality != "")
            .distinct()
            .order_by(series.c.study_id, series.c.Modality)
        )
        for study_id, modality in conn.execute(statement):
            modalities.setdefault(study_id, []).append(modality)
        out["ModalitiesInStudy"] = {k: "\\".join(v) for k, v in modalities.items()}
    elif level == _SERIES:
        out["NumberOfSeriesRelatedInstances"] = _counts(conn, images.c.series_id, ids)
    return out


def _counts(
    conn: sa.Connection, owner: sa.Column[int], ids: list[int], rows: sa.FromClause | None = None
) -> dict[int, int]:
    """How many rows (of ``owner``'s table, or of ``rows`` joined to it) each of ``ids`` owns: one grouped query."""
    statement = sa.select(owner, sa.func.count()).where(owner.in_(ids)).group_by(owner)
    if rows is not None:
        statement = statement.select_from(rows)
    return {int(key): int(count) for key, count in conn.execute(statement)}


def _representatives(conn: sa.Connection, level: int, rows: list[dict[str, Any]]) -> dict[int, str]:
    """Result id -> storage key of the instance whose header supplies the attributes not indexed."""
    ids = [row["id"] for row in rows]
    if level == _IMAGE:
        return {row["id"]: row["_key"] for row in rows}
    if level == _SERIES:
        first = sa.select(images.c.series_id, sa.func.min(images.c.id)).where(images.c.series_id.in_(ids))
        first = first.group_by(images.c.series_id)
    else:
        first = (
            sa.select(series.c.study_id, sa.func.min(images.c.id))
            .select_from(series.join(images, images.c.series_id == series.c.id))
            .where(series.c.study_id.in_(ids))
            .group_by(series.c.study_id)
        )
    owner = dict((image_id, owner_id) for owner_id, image_id in conn.execute(first))
    if not owner:
        return {}
    keys = conn.execute(sa.select(images.c.id, images.c.storage_key).where(images.c.id.in_(list(owner))))
    return {owner[image_id]: key for image_id, key in keys}


# ---------------------------------------------------------------------------------------------- WADO


class InstanceRow(NamedTuple):
    """One stored instance: its UIDs, where its bytes are, how they are encoded."""

    image_id: int
    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPInstanceUID: str
    SOPClassUID: str
    TransferSyntaxUID: str
    NumberOfFrames: int
    size: int
    storage_key: str


def instances(index: Index, study: str, series_uid: str | None = None, sop: str | None = None) -> list[InstanceRow]:
    """The instances of a study, series or one instance (by UIDs), in series then storage order."""
    statement = (
        sa.select(
            images.c.id,
            studies.c.StudyInstanceUID,
            series.c.SeriesInstanceUID,
            images.c.SOPInstanceUID,
            images.c.SOPClassUID,
            images.c.TransferSyntaxUID,
            images.c.NumberOfFrames,
            images.c.size,
            images.c.storage_key,
        )
        .select_from(
            images.join(series, images.c.series_id == series.c.id).join(studies, series.c.study_id == studies.c.id)
        )
        .where(studies.c.StudyInstanceUID == study)
        .order_by(series.c.id, images.c.id)
    )
    if series_uid is not None:
        statement = statement.where(series.c.SeriesInstanceUID == series_uid)
    if sop is not None:
        statement = statement.where(images.c.SOPInstanceUID == sop)
    with index.reading() as conn:
        return [InstanceRow(*row) for row in conn.execute(statement)]
