"""Anonymization keys: what each anonymization replaced, kept so that data coming back can be re-identified.

Pseudonyms and anonymous UIDs are one-way (HMAC of the node secret, see ``keys.py``), so the way
back is a table: every anonymization records one key row per image (real and anonymous PatientName,
PatientID, Study/Series/SOP Instance UIDs, the profile's options) plus one row per configured *key
attribute* present in the real data (real and anonymized value, and the level it belongs to).

Re-identification (:func:`reidentify`) applies only to data flagged ``PatientIdentityRemoved=YES``
whose anonymous values match a key: the most specific match wins (image by AnonSOPInstanceUID,
else series, else study, else patient by AnonPatientID + AnonPatientName), and only the values of
that level and above are restored, so a segmentation made from anonymous data lands in the real
study without taking the real SOP Instance UID of an image it is not.  UIDs elsewhere in the
dataset (references to the anonymized study, series, images, frame of reference) that equal an
anonymous UID of any key are mapped back too.  Data that matches no key is left alone.

Decisions (Slicebox differs where noted):

* One key per (real SOP Instance UID, anonymous SOP Instance UID): anonymizing the same image again
  with the same options updates the key instead of adding another row (Slicebox added one per call).
* Keys outlive the image they were made from (Slicebox purged them with the image, so in-place
  anonymized data could never be re-identified); they are deleted only through the REST API.
* After a match, the de-identification flags (PatientIdentityRemoved, DeidentificationMethod, its
  code sequence, LongitudinalTemporalInformationModified) are removed unless the real data had them.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index.query import escape_like, row_id
from slicebox_lab.index.schema import KEY_IDENTITY_ATTRIBUTES, anonymization_key_values, anonymization_keys

from .profile import Profile

__all__ = [
    "DEFAULT_KEY_ATTRIBUTES",
    "LEVELS",
    "AnonymizationKey",
    "KeyAttribute",
    "KeyValue",
    "csv_lines",
    "delete_key",
    "get_key",
    "is_anonymous",
    "key_values",
    "list_keys",
    "parse_key_attributes",
    "record_key",
    "reidentify",
]

LEVELS: tuple[str, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_IDENTITY_LEVEL = {
    "PatientName": "PATIENT",
    "PatientID": "PATIENT",
    "StudyInstanceUID": "STUDY",
    "SeriesInstanceUID": "SERIES",
    "SOPInstanceUID": "IMAGE",
}
#: flags the anonymizer adds; removed on re-identification unless the real data had them
DEIDENTIFICATION_FLAGS: tuple[str, ...] = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)
MAX_COUNT = 10_000
CSV_HEADER = (
    "ID",
    "Image ID",
    "Created",
    "Profile",
    "Patient Name",
    "Anonymous Patient Name",
    "Patient ID",
    "Anonymous Patient ID",
    "Study Instance UID",
    "Anonymous Study Instance UID",
    "Series Instance UID",
    "Anonymous Series Instance UID",
    "SOP Instance UID",
    "Anonymous SOP Instance UID",
    "Tag Path",
    "Level",
    "Value",
    "Anonymized Value",
)


@dataclass(frozen=True)
class KeyAttribute:
    """An attribute (top level) whose real and anonymized values every key records, and its level."""

    keyword: str
    level: str


#: Slicebox's default key attributes, plus the dates, sex and flags the basic profile removes.
DEFAULT_KEY_ATTRIBUTES: tuple[KeyAttribute, ...] = (
    KeyAttribute("PatientBirthDate", "PATIENT"),
    KeyAttribute("PatientSex", "PATIENT"),
    KeyAttribute("AccessionNumber", "STUDY"),
    KeyAttribute("StudyID", "STUDY"),
    KeyAttribute("StudyDate", "STUDY"),
    KeyAttribute("StudyTime", "STUDY"),
    KeyAttribute("StudyDescription", "STUDY"),
    KeyAttribute("ReferringPhysicianName", "STUDY"),
    KeyAttribute("FrameOfReferenceUID", "SERIES"),
    KeyAttribute("SeriesDate", "SERIES"),
    KeyAttribute("SeriesTime", "SERIES"),
    KeyAttribute("SeriesDescription", "SERIES"),
    KeyAttribute("ProtocolName", "SERIES"),
    KeyAttribute("PatientIdentityRemoved", "IMAGE"),
    KeyAttribute("DeidentificationMethod", "IMAGE"),
)


def parse_key_attributes(values: Iterable[str]) -> tuple[KeyAttribute, ...]:
    """``"Keyword:LEVEL"`` strings (configuration) as key attributes; InvalidInput naming a bad one."""
    out: list[KeyAttribute] = []
    for value in values:
        keyword, _, level = str(value).partition(":")
        keyword, level = keyword.strip(), (level.strip().upper() or "IMAGE")
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise InvalidInput(f"key attribute {value!r}: {keyword!r} is not a DICOM keyword")
        if level not in LEVELS:
            raise InvalidInput(f"key attribute {value!r}: the level must be one of {', '.join(LEVELS)}")
        if keyword in _IDENTITY_LEVEL:
            continue  # always recorded
        if dictionary_VR(tag) == "SQ":
            raise InvalidInput(f"key attribute {value!r}: sequences cannot be key attributes")
        out.append(KeyAttribute(keyword, level))
    return tuple(out)


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


# ---------------------------------------------------------------------------------------------
# values


def _value(ds: Dataset, keyword: str) -> str | None:
    """The attribute's value as text ("\\"-joined if multi-valued), None if absent."""
    elem = ds.get(keyword)
    if elem is None:
        return None
    value = elem.value if hasattr(elem, "value") else elem
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def is_anonymous(ds: Dataset) -> bool:
    """PatientIdentityRemoved is YES (any case): the only data re-identification looks at."""
    return (_value(ds, "PatientIdentityRemoved") or "").upper() == "YES"


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


# the statements of record_key, built once (building them per anonymized image cost more than running them)
_IDENTITY = (anonymization_keys.c.SOPInstanceUID == sa.bindparam("b_sop")) & (
    anonymization_keys.c.AnonSOPInstanceUID == sa.bindparam("b_anon_sop")
)
_KEY_BY_IDENTITY = sa.select(anonymization_keys).where(_IDENTITY)
_KEY_ID_BY_IDENTITY = sa.select(anonymization_keys.c.id).where(_IDENTITY)
_KEY_BY_ID = sa.select(anonymization_keys).where(anonymization_keys.c.id == sa.bindparam("b_id"))
_INSERT_KEY = anonymization_keys.insert()
_UPDATE_KEY = anonymization_keys.update().where(anonymization_keys.c.id == sa.bindparam("b_id"))
_KEY_VALUES_OF = sa.select(
    anonymization_key_values.c.tag_path,
    anonymization_key_values.c.level,
    anonymization_key_values.c.value,
    anonymization_key_values.c.anonymized_value,
).where(anonymization_key_values.c.key_id == sa.bindparam("b_id"))
_DELETE_KEY_VALUES = anonymization_key_values.delete().where(anonymization_key_values.c.key_id == sa.bindparam("b_id"))
_INSERT_KEY_VALUES = anonymization_key_values.insert()


def record_key(
    index: Index,
    real: Dataset,
    anonymized: Dataset,
    image_id: int | None,
    profile: Profile,
    key_attributes: Sequence[KeyAttribute] = DEFAULT_KEY_ATTRIBUTES,
) -> AnonymizationKey:
    """Insert (or refresh) the key of one anonymization, with its key attributes, in one transaction."""
    identity = {}
    for name in KEY_IDENTITY_ATTRIBUTES:
        identity[name] = _value(real, name) or ""
        identity[f"Anon{name}"] = _value(anonymized, name) or ""
    values = {
        "created": datetime.now(UTC),
        "image_id": image_id,
        "profile": " ".join(option.name for option in profile.ordered_options),
        **identity,
    }
    attribute_rows = []
    for attribute in key_attributes:
        real_value = _value(real, attribute.keyword)
        if real_value is None:
            continue
        attribute_rows.append(
            {
                "tag_path": attribute.keyword,
                "level": attribute.level,
                "value": real_value,
                "anonymized_value": _value(anonymized, attribute.keyword) or "",
            }
        )
    ids = {"b_sop": identity["SOPInstanceUID"], "b_anon_sop": identity["AnonSOPInstanceUID"]}
    unchanged = _unchanged_key(index, ids, values, attribute_rows)
    if unchanged is not None:  # the same anonymization again (a repeated download): no write at all
        return unchanged

    def write(conn: sa.Connection) -> Any:
        key_id = conn.execute(_KEY_ID_BY_IDENTITY, ids).scalar()
        if key_id is None:
            inserted = conn.execute(_INSERT_KEY, values).inserted_primary_key
            assert inserted is not None
            key_id = inserted[0]
        else:
            conn.execute(_UPDATE_KEY, {**values, "b_id": key_id})
            conn.execute(_DELETE_KEY_VALUES, {"b_id": key_id})
        if attribute_rows:
            conn.execute(_INSERT_KEY_VALUES, [{"key_id": key_id, **r} for r in attribute_rows])
        return conn.execute(_KEY_BY_ID, {"b_id": key_id}).one()

    for attempt in range(2):
        try:
            # the key of every image anonymized at the same moment (a box's images in flight, a bulk
            # job's threads) and the ingests of that moment share one durable commit
            return _key(index.grouped_writing(write))
        except sa.exc.IntegrityError:
            if attempt:  # a concurrent anonymization of the same image inserted first: update it
                raise
    raise AssertionError("unreachable")


def _unchanged_key(
    index: Index, ids: dict[str, str], values: dict[str, Any], attribute_rows: list[dict[str, str]]
) -> AnonymizationKey | None:
    """The stored key if it already says exactly this (identity, image, profile, key attributes)."""
    with index.reading() as conn:
        row = conn.execute(_KEY_BY_IDENTITY, ids).one_or_none()
        if row is None or any(getattr(row, name) != value for name, value in values.items() if name != "created"):
            return None
        stored = conn.execute(_KEY_VALUES_OF, {"b_id": row.id}).all()
    wanted = {(r["tag_path"], r["level"], r["value"], r["anonymized_value"]) for r in attribute_rows}
    return _key(row) if {tuple(r) for r in stored} == wanted else None


# ---------------------------------------------------------------------------------------------
# reading and deleting

_ORDER_COLUMNS = {
    "id": anonymization_keys.c.id,
    "created": anonymization_keys.c.created,
    "imageId": anonymization_keys.c.image_id,
    **{name: anonymization_keys.c[name] for a in KEY_IDENTITY_ATTRIBUTES for name in (a, f"Anon{a}")},
}


def list_keys(
    index: Index,
    start_index: int = 0,
    count: int = 20,
    order_by: str | None = None,
    ascending: bool = True,
    filter: str | None = None,
) -> list[AnonymizationKey]:
    """A page of keys; ``filter``: case-insensitive prefix of any real or anonymous name, ID or UID."""
    if start_index < 0 or not 0 <= count <= MAX_COUNT:
        raise InvalidInput(f"startindex must be ≥ 0 and count between 0 and {MAX_COUNT}")
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
        column = _ORDER_COLUMNS.get(order_by)
        if column is None:
            raise InvalidInput(f"cannot order keys by {order_by!r}; use one of {', '.join(_ORDER_COLUMNS)}")
        statement = statement.order_by(column.asc() if ascending else column.desc(), anonymization_keys.c.id)
    else:
        statement = statement.order_by(anonymization_keys.c.id.asc() if ascending else anonymization_keys.c.id.desc())
    with index.reading() as conn:
        return [_key(row) for row in conn.execute(statement.offset(start_index).limit(count))]


def _key_id(value: Any) -> int:
    key_id = row_id(value, "key id")
    if key_id is None:
        raise NotFound(f"anonymization key {value} not found")
    return key_id


def get_key(index: Index, key_id: int) -> AnonymizationKey:
    key_id = _key_id(key_id)
    with index.reading() as conn:
        row = conn.execute(sa.select(anonymization_keys).where(anonymization_keys.c.id == key_id)).one_or_none()
    if row is None:
        raise NotFound(f"anonymization key {key_id} not found")
    return _key(row)


def key_values(index: Index, key_id: int) -> list[KeyValue]:
    """The key attributes of one key (404 if the key does not exist)."""
    get_key(index, key_id)
    statement = (
        sa.select(anonymization_key_values)
        .where(anonymization_key_values.c.key_id == key_id)
        .order_by(anonymization_key_values.c.id)
    )
    with index.reading() as conn:
        return [_key_value(row) for row in conn.execute(statement)]


def delete_key(index: Index, key_id: int) -> None:
    """Delete a key and its values; an unknown id is not an error (DELETE is idempotent)."""
    key_id = row_id(key_id, "key id") or 0
    with index.writing() as conn:
        conn.execute(anonymization_key_values.delete().where(anonymization_key_values.c.key_id == key_id))
        conn.execute(anonymization_keys.delete().where(anonymization_keys.c.id == key_id))


def csv_lines(index: Index, batch_size: int = 1000) -> Iterator[str]:
    """The whole key table as ``;``-separated CSV, one line per key value (keys without values: one line).

    Read in id-ordered batches (keyset paging), so a large table is streamed, not loaded.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_HEADER)
    yield take()
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
            values: dict[int, list[Any]] = {}
            for row in conn.execute(
                sa.select(anonymization_key_values)
                .where(anonymization_key_values.c.key_id.in_([k.id for k in keys]))
                .order_by(anonymization_key_values.c.id)
            ):
                values.setdefault(row.key_id, []).append(row)
        for row in keys:
            key = _key(row)
            head = [
                key.id,
                "" if key.imageId is None else key.imageId,
                key.created,
                key.profile,
                *(getattr(key, name) for a in KEY_IDENTITY_ATTRIBUTES for name in (a, f"Anon{a}")),
            ]
            for value in values.get(key.id) or [None]:
                tail = (
                    ["", "", "", ""]
                    if value is None
                    else [value.tag_path, value.level, value.value, value.anonymized_value]
                )
                writer.writerow([*head, *tail])
        yield take()
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


def _match(conn: sa.Connection, ds: Dataset) -> tuple[Any, str] | None:
    """The most recent key matching ``ds``'s anonymous values at the most specific level, and that level.

    One statement (the newest match of each level, UNION ALL) instead of one per level: every
    anonymous image a box receives is looked up, and most match nothing."""
    params: dict[str, str] = {}
    for i, (keyword, _, _) in enumerate(_MATCH_LEVELS):
        value = _value(ds, keyword)
        if value:
            params[f"v{i}"] = value
    if not params:
        return None
    if "v3" in params:
        params["patient_name"] = _value(ds, "PatientName") or ""
    present = tuple(i for i in range(len(_MATCH_LEVELS)) if f"v{i}" in params)
    rows = conn.execute(_match_statement(present), params).all()
    if not rows:
        return None
    best = min(rows, key=lambda row: row.match_level)  # the most specific level that matched
    return best, _MATCH_LEVELS[best.match_level][2]


def _uid_values(ds: Dataset) -> set[str]:
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, (MultiValue, list)) else [elem.value]
            found.update(str(v) for v in values if v)
    return found


def _is_uid_keyword(keyword: str) -> bool:
    tag = tag_for_keyword(keyword)
    return tag is not None and dictionary_VR(tag) == "UI"


def _uid_map(conn: sa.Connection, uids: set[str]) -> dict[str, str]:
    """Anonymous UID → real UID for every anonymous UID of any key among ``uids``."""
    if not uids:
        return {}
    k = anonymization_keys.c
    mapping: dict[str, str] = {}
    wanted = sorted(uids)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for real_column, anon_column in (
            (k.StudyInstanceUID, k.AnonStudyInstanceUID),
            (k.SeriesInstanceUID, k.AnonSeriesInstanceUID),
            (k.SOPInstanceUID, k.AnonSOPInstanceUID),
        ):
            for real, anon in conn.execute(sa.select(real_column, anon_column).where(anon_column.in_(chunk))):
                mapping.setdefault(anon, real)
        v = anonymization_key_values.c
        statement = sa.select(v.tag_path, v.value, v.anonymized_value).where(v.anonymized_value.in_(chunk))
        for path, real, anon in conn.execute(statement):
            if real and _is_uid_keyword(path):  # e.g. FrameOfReferenceUID
                mapping.setdefault(anon, real)
    return {anon: real for anon, real in mapping.items() if anon != real}


def _set(ds: Dataset, keyword: str, value: str) -> None:
    """Write a restored value (multi-valued text split at "\\"), inserting the attribute if absent."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return
    vr = dictionary_VR(tag)
    parts = value.split("\\") if value and vr not in ("LT", "ST", "UT", "UR") else [value]
    ds[tag] = DataElement(tag, vr, parts[0] if len(parts) == 1 else parts)


def reidentify(index: Index, ds: Dataset) -> str | None:
    """Restore ``ds`` (modified in place) from the key its anonymous values match; the level, or None.

    Only data flagged PatientIdentityRemoved=YES is looked at; nothing else is ever changed.
    """
    if not is_anonymous(ds):
        return None
    with index.reading() as conn:
        found = _match(conn, ds)
        if found is None:
            return None
        row, level = found
        depth = LEVELS.index(level)
        values = conn.execute(
            sa.select(anonymization_key_values).where(anonymization_key_values.c.key_id == row.id)
        ).all()
        uid_map = _uid_map(conn, _uid_values(ds))
    # references first (they may include the root's own UIDs; those are then set from the key)
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            if isinstance(elem.value, (MultiValue, list)):
                elem.value = [uid_map.get(str(v), str(v)) for v in elem.value]
            else:
                elem.value = uid_map.get(str(elem.value), str(elem.value))
    for name in KEY_IDENTITY_ATTRIBUTES:
        if LEVELS.index(_IDENTITY_LEVEL[name]) <= depth:
            _set(ds, name, getattr(row, name))
    restored = {value.tag_path for value in values if LEVELS.index(value.level) <= depth}
    for flag in DEIDENTIFICATION_FLAGS:
        if flag not in restored and flag in ds:
            del ds[flag]
    for value in values:
        if value.tag_path in restored:
            _set(ds, value.tag_path, value.value)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return level
