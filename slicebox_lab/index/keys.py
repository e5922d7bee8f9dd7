"""Statements of the anonymization keys (tables ``anonymization_keys`` and ``anonymization_key_values``),
with the records of their rows.

What a key records, the CSV export and re-identification itself live in ``anonymization/keystore.py``;
it looks a received image up in one read transaction (:func:`match_key`, :func:`key_values_in`,
:func:`uid_candidates` on the connection of ``Index.reading``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa

from .query import escape_like
from .repository import Index
from .schema import KEY_IDENTITY_ATTRIBUTES, anonymization_key_values, anonymization_keys

__all__ = [
    "KEY_IDENTITY_ATTRIBUTES",
    "ORDER_KEYS",
    "AnonymizationKey",
    "KeyValue",
    "delete_key",
    "key_batches",
    "key_by_id",
    "key_values_in",
    "list_keys",
    "match_key",
    "store_key",
    "uid_candidates",
    "values_of_key",
    "store_keys",
]

T = TypeVar("T")


@dataclass(frozen=True)
class AnonymizationKey:
    """Real and anonymous identity of one anonymized image."""

    id: int
    created: str
    imageId: int | None
    profile: str
    PatientName: str
    AnonPatientName: str
    PatientID: str
    AnonPatientID: str
    StudyInstanceUID: str
    AnonStudyInstanceUID: str
    SeriesInstanceUID: str
    AnonSeriesInstanceUID: str
    SOPInstanceUID: str
    AnonSOPInstanceUID: str


@dataclass(frozen=True)
class KeyValue:
    """One key attribute of a key: where it is, its level, the real and the anonymized value."""

    id: int
    keyId: int
    tagPath: str
    level: str
    value: str
    anonymizedValue: str


def _key(row: Any) -> AnonymizationKey:
    created = row.created
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return AnonymizationKey(
        id=row.id,
        created=created.isoformat().replace("+00:00", "Z"),
        imageId=row.image_id,
        profile=row.profile,
        **{name: getattr(row, name) for a in KEY_IDENTITY_ATTRIBUTES for name in (a, f"Anon{a}")},
    )


def _key_value(row: Any) -> KeyValue:
    return KeyValue(row.id, row.key_id, row.tag_path, row.level, row.value, row.anonymized_value)


# ---------------------------------------------------------------------------------------------
# recording


# the statements of store_key, built once (building them per anonymized image cost more than running them)
_IDENTITY = (anonymization_keys.c.SOPInstanceUID == sa.bindparam("b_sop")) & (
    anonymization_keys.c.AnonSOPInstanceUID == sa.bindparam("b_anon_sop")
)
_KEY_BY_IDENTITY = sa.select(anonymization_keys).where(_IDENTITY)
_INSERT_KEY = anonymization_keys.insert().returning(anonymization_keys.c.id)
_UPDATE_KEY = anonymization_keys.update().where(anonymization_keys.c.id == sa.bindparam("b_id"))
_KEY_VALUES_OF = sa.select(
    anonymization_key_values.c.tag_path,
    anonymization_key_values.c.level,
    anonymization_key_values.c.value,
    anonymization_key_values.c.anonymized_value,
).where(anonymization_key_values.c.key_id == sa.bindparam("b_id"))
_DELETE_KEY_VALUES = anonymization_key_values.delete().where(anonymization_key_values.c.key_id == sa.bindparam("b_id"))
_INSERT_KEY_VALUES = anonymization_key_values.insert()


def store_key(index: Index, values: dict[str, Any], attribute_rows: list[dict[str, str]]) -> AnonymizationKey:
    """Insert (or refresh) a key (``values``: its columns) with its key attributes, in one transaction.

    The key is identified by (SOPInstanceUID, AnonSOPInstanceUID); an unchanged key is not written (a repeated
    download: the transaction then writes nothing, and its commit waits for no disk).  The check runs in the
    write transaction: a read transaction of its own before it cost a new key a third of its time.
    """
    ids = {"b_sop": values["SOPInstanceUID"], "b_anon_sop": values["AnonSOPInstanceUID"]}

    def write(conn: sa.Connection) -> AnonymizationKey:
        found = conn.execute(_KEY_BY_IDENTITY, ids).one_or_none()
        if found is None:
            key_id = int(conn.execute(_INSERT_KEY, values).scalar_one())
        elif _unchanged(conn, found, values, attribute_rows):
            return _key(found)
        else:  # the same image anonymized again, differently: the key is refreshed
            key_id = int(found.id)
            conn.execute(_UPDATE_KEY, {**values, "b_id": key_id})
            conn.execute(_DELETE_KEY_VALUES, {"b_id": key_id})
        if attribute_rows:
            conn.execute(_INSERT_KEY_VALUES, [{"key_id": key_id, **r} for r in attribute_rows])
        return _key(SimpleNamespace(id=key_id, **values))  # the row as written: no statement to read it back

    return _grouped_retrying(index, write)


def store_keys(index: Index, keys: Sequence[tuple[dict[str, Any], list[dict[str, str]]]]) -> None:
    """Insert (or refresh) many keys (each: its columns, its key attributes) in one durable transaction:
    a bulk job's chunk writes its keys in a few statements."""
    if keys:
        _grouped_retrying(index, lambda conn: _write_keys(conn, keys))


def _grouped_retrying(index: Index, write: Callable[[sa.Connection], T]) -> T:
    """``write`` in a grouped durable transaction: the keys of every image anonymized at the same moment (a
    box's images in flight, a bulk job's chunks) and the ingests of that moment share one commit.  Once more
    if a concurrent anonymization of the same image inserted its key first: then it is updated."""
    for attempt in range(2):
        try:
            return index.grouped_writing(write)
        except sa.exc.IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


#: the identities of a batch of keys, found in one statement (then matched on both UIDs)
_KEYS_OF_SOPS = sa.select(
    anonymization_keys.c.id, anonymization_keys.c.SOPInstanceUID, anonymization_keys.c.AnonSOPInstanceUID
).where(anonymization_keys.c.SOPInstanceUID.in_(sa.bindparam("b_sops", expanding=True)))
_INSERT_KEYS = anonymization_keys.insert().returning(anonymization_keys.c.id, sort_by_parameter_order=True)


def _write_keys(
    conn: sa.Connection, keys: Sequence[tuple[dict[str, Any], list[dict[str, str]]]]
) -> dict[tuple[str, str], int]:
    """Insert or refresh ``keys`` on ``conn`` (one per identity, the last of the batch winning, as one
    :func:`store_key` after another would); the id of each identity's key."""
    by_identity: dict[tuple[str, str], int] = {}
    sops = sorted({values["SOPInstanceUID"] for values, _ in keys})
    for start in range(0, len(sops), 500):
        for row in conn.execute(_KEYS_OF_SOPS, {"b_sops": sops[start : start + 500]}):
            by_identity[(row.SOPInstanceUID, row.AnonSOPInstanceUID)] = row.id
    latest = {(values["SOPInstanceUID"], values["AnonSOPInstanceUID"]): (values, rows) for values, rows in keys}
    new = [(identity, key) for identity, key in latest.items() if identity not in by_identity]
    value_rows: list[dict[str, Any]] = []
    for identity, (values, attribute_rows) in latest.items():
        key_id = by_identity.get(identity)
        if key_id is not None:  # the same image anonymized again: the key is refreshed
            conn.execute(_UPDATE_KEY, {**values, "b_id": key_id})
            conn.execute(_DELETE_KEY_VALUES, {"b_id": key_id})
            value_rows.extend({"key_id": key_id, **r} for r in attribute_rows)
    key_ids = list(conn.execute(_INSERT_KEYS, [values for _, (values, _) in new]).scalars()) if new else []
    for key_id, (identity, (_, attribute_rows)) in zip(key_ids, new, strict=True):
        by_identity[identity] = key_id
        value_rows.extend({"key_id": key_id, **r} for r in attribute_rows)
    if value_rows:
        conn.execute(_INSERT_KEY_VALUES, value_rows)
    return by_identity


def _unchanged(conn: sa.Connection, row: Any, values: dict[str, Any], attribute_rows: list[dict[str, str]]) -> bool:
    """Whether the stored key ``row`` already says exactly this (identity, image, profile, key attributes)."""
    if any(getattr(row, name) != value for name, value in values.items() if name != "created"):
        return False
    stored = conn.execute(_KEY_VALUES_OF, {"b_id": row.id}).all()
    wanted = {(r["tag_path"], r["level"], r["value"], r["anonymized_value"]) for r in attribute_rows}
    return {tuple(r) for r in stored} == wanted


# ---------------------------------------------------------------------------------------------
# reading and deleting

_ORDER_COLUMNS = {
    "id": anonymization_keys.c.id,
    "created": anonymization_keys.c.created,
    "imageId": anonymization_keys.c.image_id,
    **{name: anonymization_keys.c[name] for a in KEY_IDENTITY_ATTRIBUTES for name in (a, f"Anon{a}")},
}
#: what keys can be ordered by
ORDER_KEYS: tuple[str, ...] = tuple(_ORDER_COLUMNS)


def list_keys(
    index: Index, start_index: int, count: int, order_by: str | None, ascending: bool, filter: str | None
) -> list[AnonymizationKey]:
    """A page of keys; ``filter``: case-insensitive prefix of any real or anonymous name, ID or UID;
    ``order_by``: one of :data:`ORDER_KEYS`."""
    statement = sa.select(anonymization_keys)
    if filter:
        pattern = escape_like(filter.lower()) + "%"
        statement = statement.where(
            sa.or_(
                *(
                    sa.func.lower(anonymization_keys.c[name]).like(pattern, escape="\\")
                    for a in KEY_IDENTITY_ATTRIBUTES
                    for name in (a, f"Anon{a}")
                )
            )
        )
    if order_by:
        column = _ORDER_COLUMNS[order_by]
        statement = statement.order_by(column.asc() if ascending else column.desc(), anonymization_keys.c.id)
    else:
        statement = statement.order_by(anonymization_keys.c.id.asc() if ascending else anonymization_keys.c.id.desc())
    with index.reading() as conn:
        return [_key(row) for row in conn.execute(statement.offset(start_index).limit(count))]


def key_by_id(index: Index, key_id: int) -> AnonymizationKey | None:
    with index.reading() as conn:
        row = conn.execute(sa.select(anonymization_keys).where(anonymization_keys.c.id == key_id)).one_or_none()
    return None if row is None else _key(row)


def values_of_key(index: Index, key_id: int) -> list[KeyValue]:
    """The key attributes of one key, in id order."""
    statement = (
        sa.select(anonymization_key_values)
        .where(anonymization_key_values.c.key_id == key_id)
        .order_by(anonymization_key_values.c.id)
    )
    with index.reading() as conn:
        return [_key_value(row) for row in conn.execute(statement)]


def delete_key(index: Index, key_id: int) -> None:
    """Delete a key and its values (nothing if there is none with this id)."""
    with index.writing() as conn:
        conn.execute(anonymization_key_values.delete().where(anonymization_key_values.c.key_id == key_id))
        conn.execute(anonymization_keys.delete().where(anonymization_keys.c.id == key_id))


def key_batches(index: Index, batch_size: int) -> Iterator[tuple[list[AnonymizationKey], dict[int, list[KeyValue]]]]:
    """Every key with its values (in id order), in id-ordered batches (keyset paging): a large table
    is streamed, not loaded.  Each batch is read in its own transaction, closed before it is yielded."""
    last = 0
    while True:
        with index.reading() as conn:
            keys = conn.execute(
                sa.select(anonymization_keys)
                .where(anonymization_keys.c.id > last)
                .order_by(anonymization_keys.c.id)
                .limit(batch_size)
            ).all()
            if not keys:
                return
            values: dict[int, list[KeyValue]] = {}
            for row in conn.execute(
                sa.select(anonymization_key_values)
                .where(anonymization_key_values.c.key_id.in_([k.id for k in keys]))
                .order_by(anonymization_key_values.c.id)
            ):
                values.setdefault(row.key_id, []).append(_key_value(row))
        yield [_key(row) for row in keys], values
        last = keys[-1].id


# ---------------------------------------------------------------------------------------------
# re-identification


#: (keyword, key column, level) of the anonymous values a received image is matched on, most specific first
_MATCH_LEVELS = (
    ("SOPInstanceUID", "AnonSOPInstanceUID", "IMAGE"),
    ("SeriesInstanceUID", "AnonSeriesInstanceUID", "SERIES"),
    ("StudyInstanceUID", "AnonStudyInstanceUID", "STUDY"),
    ("PatientID", "AnonPatientID", "PATIENT"),
)
#: every keyword :func:`match_key` asks a dataset for
MATCH_KEYWORDS = (*(keyword for keyword, _, _ in _MATCH_LEVELS), "PatientName")


@functools.lru_cache(maxsize=16)
def _match_statement(present: tuple[int, ...]) -> sa.Executable:
    """The newest key of each level in ``present`` (indexes into ``_MATCH_LEVELS``), UNION ALL, built once
    per combination: building it per image cost more than running it."""
    k = anonymization_keys.c
    parts = []
    for i in present:
        column = k[_MATCH_LEVELS[i][1]]
        condition = column == sa.bindparam(f"v{i}")
        if _MATCH_LEVELS[i][2] == "PATIENT":
            condition = condition & (k.AnonPatientName == sa.bindparam("patient_name"))
        parts.append(
            sa.select(sa.literal(i).label("match_level"), anonymization_keys)
            .where(condition)
            .order_by(k.id.desc())
            .limit(1)
            .subquery()
            .select()
        )
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def match_key(conn: sa.Connection, value_of: Callable[[str], str | None]) -> tuple[AnonymizationKey, str] | None:
    """The most recent key matching a dataset's anonymous values at the most specific level, and that level.

    ``value_of(keyword)``: the dataset's value of a keyword as text, None if absent.  One statement (the
    newest match of each level, UNION ALL) instead of one per level: every anonymous image a box
    receives is looked up, and most match nothing."""
    params: dict[str, str] = {}
    for i, (keyword, _, _) in enumerate(_MATCH_LEVELS):
        value = value_of(keyword)
        if value:
            params[f"v{i}"] = value
    if not params:
        return None
    if "v3" in params:
        params["patient_name"] = value_of("PatientName") or ""
    present = tuple(i for i in range(len(_MATCH_LEVELS)) if f"v{i}" in params)
    rows = conn.execute(_match_statement(present), params).all()
    if not rows:
        return None
    best = min(rows, key=lambda row: row.match_level)  # the most specific level that matched
    return _key(best), _MATCH_LEVELS[best.match_level][2]


def key_values_in(conn: sa.Connection, key_id: int) -> list[KeyValue]:
    """The key attributes of one key, read in the caller's transaction."""
    rows = conn.execute(sa.select(anonymization_key_values).where(anonymization_key_values.c.key_id == key_id))
    return [_key_value(row) for row in rows]


def uid_candidates(conn: sa.Connection, uids: set[str]) -> list[tuple[str | None, str, str]]:
    """(tag path, real, anonymous) of every anonymous value among ``uids``: the identity UIDs of any key
    (tag path None), then key attributes, 500 UIDs at a time."""
    k = anonymization_keys.c
    found: list[tuple[str | None, str, str]] = []
    wanted = sorted(uids)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for real_column, anon_column in (
            (k.StudyInstanceUID, k.AnonStudyInstanceUID),
            (k.SeriesInstanceUID, k.AnonSeriesInstanceUID),
            (k.SOPInstanceUID, k.AnonSOPInstanceUID),
        ):
            for real, anon in conn.execute(sa.select(real_column, anon_column).where(anon_column.in_(chunk))):
                found.append((None, real, anon))
        v = anonymization_key_values.c
        statement = sa.select(v.tag_path, v.value, v.anonymized_value).where(v.anonymized_value.in_(chunk))
        for path, real, anon in conn.execute(statement):
            found.append((path, real, anon))
    return found
