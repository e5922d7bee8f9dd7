"""Listing and querying the hierarchy: filters, paging, ordering, source constraints.

Every value a client sends is bound as an SQL parameter; names (``order_by``, property names) are
only ever looked up among the columns of the tables, never pasted into SQL.  Bad input raises
:class:`~slicebox_lab.errors.InvalidInput` with a message fit for the client.

Rules shared by every list and query:

* ``start_index``/``count`` page the result (``OFFSET``/``LIMIT``); ``count`` is capped at
  :data:`MAX_COUNT` so one request cannot pull the whole index into memory.  ``after_id`` pages by
  keyset instead (rows after that id in id order, the next page starting at the last id seen): an
  index range however deep the page, where an offset walks past every row before it.
* Default order is ``id`` ascending; any ``order_by`` is followed by ``id`` ascending, so paging
  is stable when values tie.
* A level may be constrained by columns of the levels above it (a semi-join up, one row each) and, in
  queries, below it: a patient qualifies when *one* of its series (with its study and, for image
  queries, one of its images) meets all the lower-level properties together (a semi-join, so
  results are distinct without ``DISTINCT``).
* ``sources`` are ``sources.id`` values: a series qualifies when its ``source_id`` (the source of
  its latest ingest) is one of them; patients and studies when they hold a qualifying series.
* ``series_types`` and ``series_tags`` are ids (slicebox_lab/organize): a series qualifies when it
  has one of the types, and one of the tags (``series_tags_match="any"``) or all of them
  (``"all"``).  Sources, types, tags and the other filters combine with AND.

Operators: ``"="`` exact (case-sensitive); ``"like"`` case-insensitive substring, the user's ``%``
and ``_`` taken literally; ``"wildcard"`` DICOM matching as in C-FIND: ``*`` any run, ``?`` one
character, case-insensitive, an empty value matches everything.  SQLite folds case for ASCII
letters only.  A wildcard is ``lower(column) LIKE lower(pattern)``: with a literal prefix it reads
a range of the ``lower()`` indexes of PatientName and PatientID (schema.py) -- on PostgreSQL by the
planner's own LIKE prefix rule (``text_pattern_ops``), on SQLite, whose LIKE optimisation never
applies to an expression, through an explicit ``lower(column) >= prefix AND < prefix+1`` range.

The functions take an open :class:`~sqlalchemy.Connection`; :class:`~slicebox_lab.index.Index`
exposes each of them as a method.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar, Unpack

import sqlalchemy as sa

from slicebox_lab import errors
from slicebox_lab.index import _records
from slicebox_lab.index.schema import images, patients, series, series_series_tags, series_series_types, studies
from slicebox_lab.model import (
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    FlatSeries,
    Image,
    Patient,
    Series,
    Study,
)

#: The most rows one list or query returns; larger counts are silently capped.
MAX_COUNT = 10_000
#: Largest accepted ``start_index`` (beyond any real index, below every backend's OFFSET limit).
MAX_START_INDEX = 2**62
OPERATORS = ("=", "like", "wildcard")
#: how a list of series tags constrains a series: one of them, or every one
TAG_MATCHES = ("any", "all")

_ESCAPE = "/"
_HIERARCHY: tuple[sa.Table, ...] = (patients, studies, series, images)
_PATIENT, _STUDY, _SERIES, _IMAGE = range(4)
#: column of table i that refers to table i - 1
_PARENT_KEY = {_STUDY: "patient_id", _SERIES: "study_id", _IMAGE: "series_id"}
#: never listed, ordered or queried by clients
_PRIVATE_COLUMNS = frozenset({"storage_key"})

PATIENT_FILTER_COLUMNS = PATIENT_ATTRIBUTES
IMAGE_FILTER_COLUMNS = ("SOPInstanceUID", "ImageType", "InstanceNumber")
#: as Slicebox: the descriptive text of each level (UIDs left out: every UID contains "1.2")
FLAT_SERIES_FILTER_COLUMNS: tuple[tuple[int, str], ...] = tuple(
    (level, name)
    for level, names in ((_PATIENT, PATIENT_ATTRIBUTES), (_STUDY, STUDY_ATTRIBUTES), (_SERIES, SERIES_ATTRIBUTES))
    for name in names
    if not name.endswith("UID")
)

R = TypeVar("R")


@dataclass
class QueryProperty:
    """One condition: ``property_name`` (a DICOM keyword or column), ``operator``, ``property_value``."""

    property_name: str
    operator: str
    property_value: str


@dataclass
class Query:
    """A paged, ordered query; properties are AND-ed; ``sources`` are source row ids (OR-ed).

    ``series_types`` (OR-ed) and ``series_tags`` (any or all, ``series_tags_match``) are ids.
    """

    start_index: int = 0
    count: int = 20
    order_by: str | None = None
    order_ascending: bool = True
    query_properties: list[QueryProperty] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    series_types: list[int] = field(default_factory=list)
    series_tags: list[int] = field(default_factory=list)
    series_tags_match: str = "any"
    #: keyset paging: only rows with a larger id (a smaller one when ordered by id descending)
    after_id: int | None = None


# ---------------------------------------------------------------------------------------------
# validation


def _page(start_index: Any, count: Any) -> tuple[int, int]:
    if not _is_int(start_index):
        raise errors.InvalidInput("startindex must be an integer")
    if not _is_int(count):
        raise errors.InvalidInput("count must be an integer")
    if start_index < 0:
        raise errors.InvalidInput("startindex must be non-negative")
    if count < 0:
        raise errors.InvalidInput("count must be non-negative")
    if start_index > MAX_START_INDEX:
        raise errors.InvalidInput(f"startindex must be at most {MAX_START_INDEX}")
    return int(start_index), min(int(count), MAX_COUNT)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_value(value: Any, what: str) -> str:
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str):
        raise errors.InvalidInput(f"{what} must be a string")
    if "\x00" in value:
        raise errors.InvalidInput(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidInput(f"{what} is not valid text") from None
    return value


#: ids are INTEGER columns; a larger number would be a database error, not "no such row"
MAX_ID = 2**31 - 1


def row_id(value: Any, what: str) -> int | None:
    """``value`` as an id; None when no row can have it (out of the column's range)."""
    if isinstance(value, bool):
        raise errors.InvalidInput(f"{what} must be an integer")
    try:
        number = operator.index(value)  # int, numpy integers; not str, float
    except TypeError:
        raise errors.InvalidInput(f"{what} must be an integer") from None
    return number if 0 < number <= MAX_ID else None


def found(value: Any, what: str, lookup: Callable[[int], R | None]) -> R:
    """The row ``lookup`` finds for ``value``, a client's id of a ``what``: NotFound when there is none (and
    InvalidInput when ``value`` is no id), as every "get by id" of a service answers."""
    key = row_id(value, f"{what} id")
    row = None if key is None else lookup(key)
    if row is None:
        raise errors.NotFound(f"{what} {value} not found")
    return row


def _source_ids(values: Sequence[Any]) -> list[int]:
    if isinstance(values, (str, bytes)) or not all(_is_int(v) for v in values):
        raise errors.InvalidInput("sources must be a list of source ids (integers)")
    return sorted({int(v) for v in values})


def _organizing_ids(values: Sequence[Any], what: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not all(_is_int(v) for v in values):
        raise errors.InvalidInput(f"{what} must be a list of ids (integers)")
    return sorted({int(v) for v in values})


# ---------------------------------------------------------------------------------------------
# conditions


def escape_like(value: str) -> str:
    return value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


def wildcard_pattern(value: str) -> str:
    """A DICOM wildcard value (``*``, ``?``) as a LIKE pattern with everything else literal."""
    return escape_like(value).replace("*", "%").replace("?", "_")


def _as_text(column: sa.ColumnElement[Any], name: str, operator: str) -> sa.ColumnElement[Any]:
    if isinstance(column.type, sa.String):
        return column
    if isinstance(column.type, sa.Integer):
        return sa.cast(column, sa.String)
    raise errors.InvalidInput(f"Operator {operator} is not supported for property {name}")


def _equals(column: sa.ColumnElement[Any], name: str, value: str) -> sa.ColumnElement[bool]:
    if isinstance(column.type, sa.Integer):
        try:
            number = int(value.strip())
        except ValueError:
            raise errors.InvalidInput(f"Property {name} takes an integer value") from None
        limit = 2**63 if isinstance(column.type, sa.BigInteger) else 2**31
        return column == number if -limit <= number < limit else sa.false()
    if isinstance(column.type, sa.DateTime):
        try:
            instant = datetime.fromisoformat(value.strip())
        except ValueError:
            raise errors.InvalidInput(f"Property {name} takes an ISO-8601 date and time") from None
        # stored in UTC (SQLite without the offset): compare in UTC, a naive value taken as UTC
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        return column == instant.astimezone(UTC)
    return column == value


def condition(
    column: sa.ColumnElement[Any], name: str, operator: str, value: Any, dialect: str = ""
) -> sa.ColumnElement[bool]:
    """``column <operator> value`` with the value bound as a parameter; ``dialect`` the database's name."""
    text = _text_value(value, f"The value of property {name}")
    if operator == "=":
        return _equals(column, name, text)
    if operator == "like":
        pattern = "%" + escape_like(text) + "%"
        return _as_text(column, name, operator).ilike(pattern, escape=_ESCAPE)
    if operator == "wildcard":
        target = _as_text(column, name, operator)
        if text == "" or text.strip("*") == "":
            return sa.true()  # universal matching
        return case_insensitive_match(target, text, dialect)
    raise errors.InvalidInput(f"Unknown operator {operator!r}: use one of {', '.join(OPERATORS)}")


def _ascii_lower(text: str) -> str:
    """SQLite's ``lower()``: ASCII letters only."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _literal_prefix(value: str) -> str:
    """The characters a DICOM wildcard value starts with before its first ``*`` or ``?``."""
    end = min((i for i in (value.find("*"), value.find("?")) if i >= 0), default=len(value))
    return value[:end]


def case_insensitive_match(column: sa.ColumnElement[Any], value: str, dialect: str = "") -> sa.ColumnElement[bool]:
    """``column`` matches the DICOM wildcard ``value`` (``*``, ``?``) whatever the case, index-friendly.

    ``lower(column) LIKE lower(pattern)`` (PostgreSQL turns a literal prefix into a range of a
    ``lower(column) text_pattern_ops`` index); on SQLite (``dialect="sqlite"``) with the range of the
    prefix spelled out, which an index on ``lower(column)`` serves.
    """
    target = sa.func.lower(column)
    clause = target.like(sa.func.lower(sa.literal(wildcard_pattern(value), sa.String())), escape=_ESCAPE)
    prefix = _ascii_lower(_literal_prefix(value))
    if dialect != "sqlite" or not prefix:
        return clause
    bounds = [target >= prefix]
    if ord(prefix[-1]) < 0x10FFFF:
        bounds.append(target < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return sa.and_(*bounds, clause)


def _substring_filter(columns: Sequence[sa.ColumnElement[Any]], text: str) -> sa.ColumnElement[bool]:
    pattern = "%" + escape_like(text) + "%"
    return sa.or_(*(c.ilike(pattern, escape=_ESCAPE) for c in columns))


# ---------------------------------------------------------------------------------------------
# statements


class _Plan:
    """A select over one level, with semi-joins up and down added as conditions need them.

    A condition on a level above is ``parent_key IN (SELECT id FROM parent [JOIN ...] WHERE ...)``
    rather than a join: without statistics (SQLite) a join ordered by this level's id makes the
    planner walk this level's whole table in id order, testing each row's parents; the semi-join
    makes it read the parents' index first, then this level's rows by their parent key.  Joins up
    remain for the columns of flat series and for an ``order_by`` above.
    """

    def __init__(self, level: int, *, top: int | None = None, dialect: str = "") -> None:
        self.level = level
        self.dialect = dialect
        self.own = _HIERARCHY[level]
        self.top = level if top is None else top  # the highest table joined in
        self.where: list[sa.ColumnElement[bool]] = []
        self.above: dict[int, list[sa.ColumnElement[bool]]] = {}
        self.below: dict[int, list[sa.ColumnElement[bool]]] = {}

    def resolve(self, name: Any, lowest: int) -> tuple[int, sa.Column[Any]]:
        """The column ``name`` among this level, the levels above it and those down to ``lowest``.

        ``id`` is this level's id; a name in more than one table is taken from the nearest.
        """
        if not isinstance(name, str) or name in _PRIVATE_COLUMNS:
            raise errors.InvalidInput(f"Property {name} does not exist")
        if name == "id":
            return self.level, self.own.c.id
        order = list(range(self.level, -1, -1)) + list(range(self.level + 1, lowest + 1))
        for index in order:
            table = _HIERARCHY[index]
            if name in table.c:
                return index, table.c[name]
        raise errors.InvalidInput(f"Property {name} does not exist")

    def add(self, index: int, clause: sa.ColumnElement[bool]) -> None:
        if index > self.level:
            self.below.setdefault(index, []).append(clause)
        elif index < self.level:
            self.above.setdefault(index, []).append(clause)
        else:
            self.where.append(clause)

    def add_sources(self, ids: Sequence[Any]) -> None:
        wanted = _source_ids(ids)
        if wanted:
            valid = [i for i in wanted if 0 < i <= MAX_ID]
            self.add(_SERIES, series.c.source_id.in_(valid) if valid else sa.false())

    def add_organizing(self, series_types: Sequence[Any], series_tags: Sequence[Any], tags_match: Any) -> None:
        """Series of one of ``series_types``, with any (or all) of ``series_tags``; empty: no constraint."""
        if tags_match not in TAG_MATCHES:
            raise errors.InvalidInput(f"series tags match must be one of {', '.join(TAG_MATCHES)}, not {tags_match!r}")
        types = _organizing_ids(series_types, "series types")
        if types:
            valid = [i for i in types if 0 < i <= MAX_ID]
            typed = sa.select(series_series_types.c.series_id).where(series_series_types.c.series_type_id.in_(valid))
            self.add(_SERIES, series.c.id.in_(typed) if valid else sa.false())
        tags = _organizing_ids(series_tags, "series tags")
        if tags:
            valid = [i for i in tags if 0 < i <= MAX_ID]
            link = series_series_tags
            tagged = sa.select(link.c.series_id).where(link.c.series_tag_id.in_(valid))
            if tags_match == "all":
                if len(valid) < len(tags):  # an id no tag can have: no series has all of them
                    self.add(_SERIES, sa.false())
                    return
                tagged = tagged.group_by(link.c.series_id).having(sa.func.count() == len(valid))
            self.add(_SERIES, series.c.id.in_(tagged) if valid else sa.false())

    def from_clause(self) -> sa.FromClause:
        joined: sa.FromClause = self.own
        for index in range(self.level, self.top, -1):
            child, parent = _HIERARCHY[index], _HIERARCHY[index - 1]
            joined = joined.join(parent, child.c[_PARENT_KEY[index]] == parent.c.id)
        return joined

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        clauses = list(self.where)
        if self.above:
            parent = _HIERARCHY[self.level - 1]
            upward: sa.FromClause = parent
            for index in range(self.level - 2, min(self.above) - 1, -1):
                child, table = _HIERARCHY[index + 1], _HIERARCHY[index]
                upward = upward.join(table, child.c[_PARENT_KEY[index + 1]] == table.c.id)
            inner_above = [clause for index in sorted(self.above) for clause in self.above[index]]
            owners = sa.select(parent.c.id).select_from(upward).where(*inner_above)
            clauses.append(self.own.c[_PARENT_KEY[self.level]].in_(owners))
        if self.below:
            first = _HIERARCHY[self.level + 1]
            chain: sa.FromClause = first
            for index in range(self.level + 2, max(self.below) + 1):
                chain = chain.join(
                    _HIERARCHY[index], _HIERARCHY[index].c[_PARENT_KEY[index]] == _HIERARCHY[index - 1].c.id
                )
            inner = [clause for index in sorted(self.below) for clause in self.below[index]]
            members = sa.select(first.c[_PARENT_KEY[self.level + 1]]).select_from(chain).where(*inner)
            clauses.append(self.own.c.id.in_(members))
        return clauses

    def select(
        self,
        columns: Sequence[sa.ColumnElement[Any]],
        *,
        order_levels: int,
        start_index: Any = 0,
        count: Any = 20,
        order_by: str | None = None,
        order_ascending: bool = True,
        after_id: Any = None,
    ) -> sa.Select[Any]:
        """The paged statement; ``order_by`` may name a column of this level or ``order_levels`` above.

        ``after_id`` (keyset paging) needs the id order: rows after it in that order.
        """
        start, limit = _page(start_index, count)
        if not isinstance(order_ascending, bool):
            raise errors.InvalidInput("orderascending must be true or false")
        if after_id is not None:
            if order_by not in (None, "id"):
                raise errors.InvalidInput("afterid pages in id order: leave orderby empty or set it to id")
            if not _is_int(after_id) or after_id < 0:
                raise errors.InvalidInput("afterid must be a non-negative integer")
            bound = min(int(after_id), MAX_ID + 1)
            self.where.append(self.own.c.id > bound if order_ascending else self.own.c.id < bound)
            order_by = "id"  # orderascending=false: the page before after_id, newest first
        ordering: list[sa.ColumnElement[Any]] = []
        by_id = False
        if order_by is not None:
            index, column = self.resolve(order_by, self.level)
            if index < self.level - order_levels:
                raise errors.InvalidInput(f"Property {order_by} does not exist")
            self.top = min(self.top, index)
            ordering.append(column.asc() if order_ascending else column.desc())
            by_id = column is self.own.c.id
        if not by_id:  # ties broken by id: stable pages
            ordering.append(self.own.c.id.asc())
        return (
            sa.select(*columns)
            .select_from(self.from_clause())
            .where(*self.conditions())
            .order_by(*ordering)
            .offset(start)
            .limit(limit)
        )


#: the level plan, for other searches over the hierarchy (DICOMweb QIDO)
HierarchyPlan = _Plan


def _run(conn: sa.Connection, statement: sa.Select[Any], record: Callable[[Any], R]) -> list[R]:
    return [record(row) for row in conn.execute(statement)]


def _apply_properties(plan: _Plan, properties: Sequence[Any], lowest: int) -> None:
    for prop in properties:
        if not isinstance(prop, QueryProperty):
            raise errors.InvalidInput("query properties must have property_name, operator, property_value")
        index, column = plan.resolve(prop.property_name, lowest)
        plan.add(index, condition(column, prop.property_name, prop.operator, prop.property_value, plan.dialect))


def _query(
    conn: sa.Connection,
    level: int,
    q: Query,
    columns: Sequence[sa.ColumnElement[Any]],
    record: Callable[[Any], R],
    *,
    flat: bool = False,
) -> list[R]:
    if not isinstance(q, Query):
        raise errors.InvalidInput("a query is needed")
    plan = _Plan(level, top=_PATIENT if flat else None, dialect=conn.dialect.name)
    lowest = _IMAGE if level == _IMAGE else _SERIES
    _apply_properties(plan, q.query_properties, lowest)
    plan.add_sources(q.sources)
    plan.add_organizing(q.series_types, q.series_tags, q.series_tags_match)
    statement = plan.select(
        columns,
        start_index=q.start_index,
        count=q.count,
        order_by=q.order_by,
        order_ascending=q.order_ascending,
        order_levels=level,
        after_id=q.after_id,
    )
    return _run(conn, statement, record)


# ---------------------------------------------------------------------------------------------
# queries


def query_patients(conn: sa.Connection, q: Query) -> list[Patient]:
    return _query(conn, _PATIENT, q, _records.PATIENT_COLUMNS, _records.patient)


def query_studies(conn: sa.Connection, q: Query) -> list[Study]:
    return _query(conn, _STUDY, q, _records.STUDY_COLUMNS, _records.study)


def query_series(conn: sa.Connection, q: Query) -> list[Series]:
    return _query(conn, _SERIES, q, _records.SERIES_COLUMNS, _records.series_record)


def query_images(conn: sa.Connection, q: Query) -> list[Image]:
    return _query(conn, _IMAGE, q, _records.IMAGE_COLUMNS, _records.image)


def query_flat_series(conn: sa.Connection, q: Query) -> list[FlatSeries]:
    return _query(conn, _SERIES, q, _records.FLAT_SERIES_COLUMNS, _records.flat_series, flat=True)


# ---------------------------------------------------------------------------------------------
# lists (the browsing GETs)


class Paging(TypedDict, total=False):
    """The paging and order every list takes (see the module docstring); absent: the first 20 rows by id."""

    start_index: int
    count: int
    order_by: str | None
    order_ascending: bool
    after_id: int | None


class Browsing(Paging, total=False):
    """Paging plus what the levels holding series are filtered by: sources and series types and tags."""

    sources: Sequence[int]
    series_types: Sequence[int]
    series_tags: Sequence[int]
    series_tags_match: str


#: how the id of each level's parent is called in messages
_PARENT_NAME = {_STUDY: "patient id", _SERIES: "study id", _IMAGE: "series id"}
#: the columns a level's ``filter`` text is looked for in (flat series: FLAT_SERIES_FILTER_COLUMNS)
_FILTER_COLUMNS = {_PATIENT: PATIENT_FILTER_COLUMNS, _IMAGE: IMAGE_FILTER_COLUMNS}
#: a level listed whole, not below one parent
_TOP = object()


def _filter_text(value: Any) -> str:
    if value is None:
        return ""
    return _text_value(value, "filter")


def _list(
    conn: sa.Connection,
    level: int,
    columns: Sequence[sa.ColumnElement[Any]],
    record: Callable[[Any], R],
    parent_id: Any = _TOP,
    filter: Any = "",
    flat: bool = False,
    sources: Sequence[int] = (),
    series_types: Sequence[int] = (),
    series_tags: Sequence[int] = (),
    series_tags_match: str = "any",
    **paging: Unpack[Paging],
) -> list[R]:
    """The one list of every level: below ``parent_id``, ``filter`` a substring of the level's text columns
    (of every level for ``flat`` series), the sources, series types and tags, then paged and ordered."""
    plan = _Plan(level, top=_PATIENT if flat else None)
    if parent_id is not _TOP:
        parent = row_id(parent_id, _PARENT_NAME[level])
        plan.add(level, plan.own.c[_PARENT_KEY[level]] == parent if parent is not None else sa.false())
    text = _filter_text(filter)
    if text and flat:
        joined = [_HIERARCHY[index].c[name] for index, name in FLAT_SERIES_FILTER_COLUMNS]
        plan.where.append(_substring_filter(joined, text))  # one clause over the joined levels
    elif text:
        plan.add(level, _substring_filter([plan.own.c[name] for name in _FILTER_COLUMNS[level]], text))
    plan.add_sources(sources)
    plan.add_organizing(series_types, series_tags, series_tags_match)
    return _run(conn, plan.select(columns, order_levels=_SERIES if flat else 0, **paging), record)


def list_patients(conn: sa.Connection, *, filter: str = "", **options: Unpack[Browsing]) -> list[Patient]:
    """Patients, ``filter`` a case-insensitive substring of name, ID, birth date or sex."""
    return _list(conn, _PATIENT, _records.PATIENT_COLUMNS, _records.patient, filter=filter, **options)


def list_studies(conn: sa.Connection, patient_id: int, **options: Unpack[Browsing]) -> list[Study]:
    """The studies of one patient."""
    return _list(conn, _STUDY, _records.STUDY_COLUMNS, _records.study, patient_id, **options)


def list_series(conn: sa.Connection, study_id: int, **options: Unpack[Browsing]) -> list[Series]:
    """The series of one study."""
    return _list(conn, _SERIES, _records.SERIES_COLUMNS, _records.series_record, study_id, **options)


def list_images(conn: sa.Connection, series_id: int, *, filter: str = "", **options: Unpack[Paging]) -> list[Image]:
    """The images of one series, ``filter`` a substring of SOPInstanceUID, ImageType or InstanceNumber."""
    return _list(conn, _IMAGE, _records.IMAGE_COLUMNS, _records.image, series_id, filter, **options)


def list_flat_series(conn: sa.Connection, *, filter: str = "", **options: Unpack[Browsing]) -> list[FlatSeries]:
    """Series with their study and patient; ``order_by`` any of their columns, ``id`` = series id."""
    return _list(conn, _SERIES, _records.FLAT_SERIES_COLUMNS, _records.flat_series, filter=filter, flat=True, **options)
