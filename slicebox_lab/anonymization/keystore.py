"""Anonymization keys: what each anonymization replaced, kept so that data coming back can be re-identified.

Pseudonyms and anonymous UIDs are one-way (HMAC of the node secret, see ``anonymization/keys.py``), so
the way back is a table: every anonymization records one key row per image (real and anonymous
PatientName, PatientID, Study/Series/SOP Instance UIDs, the profile's options) plus one row per
configured *key attribute* present in the real data (real and anonymized value, and the level it
belongs to).  The statements, and the records of the rows, are ``index/keys.py``.

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
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index import keys as rows
from slicebox_lab.index.keys import KEY_IDENTITY_ATTRIBUTES, AnonymizationKey, KeyValue
from slicebox_lab.index.query import row_id

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
    "match_values",
    "matches_a_key",
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


def match_values(ds: Dataset) -> dict[str, str] | None:
    """What a key would be matched by (:func:`reidentify`'s lookup) of an anonymous dataset, None for any other:
    whoever has the dataset parsed already (a worker that inspects an arriving file) hands these on, so that
    the node learns that no key matches — most anonymous data it receives — without parsing the file again."""
    if not is_anonymous(ds):
        return None
    return {keyword: value for keyword in rows.MATCH_KEYWORDS if (value := _value(ds, keyword)) is not None}


def matches_a_key(index: Index, values: dict[str, str]) -> bool:
    """Whether :func:`reidentify` would find a key for a dataset of these :func:`match_values`."""
    with index.reading() as conn:
        return rows.match_key(conn, values.get) is not None


# ---------------------------------------------------------------------------------------------
# recording


@dataclass(frozen=True)
class KeyRecord:
    """What one anonymization's key holds, computed from the real and the anonymized dataset (where the
    anonymization ran, a worker process maybe) and stored by :func:`store_key_record` (in the server)."""

    values: dict[str, Any]
    attribute_rows: list[dict[str, Any]]


def key_record(
    real: Dataset,
    anonymized: Dataset,
    profile: Profile,
    key_attributes: Sequence[KeyAttribute] = DEFAULT_KEY_ATTRIBUTES,
) -> KeyRecord:
    identity = {}
    for name in KEY_IDENTITY_ATTRIBUTES:
        identity[name] = _value(real, name) or ""
        identity[f"Anon{name}"] = _value(anonymized, name) or ""
    values = {
        "created": datetime.now(UTC),
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
    return KeyRecord(values, attribute_rows)


def store_key_record(index: Index, record: KeyRecord, image_id: int | None) -> AnonymizationKey:
    """Insert (or refresh) the key, with its key attributes, in one durable transaction."""
    return rows.store_key(index, {**record.values, "image_id": image_id}, record.attribute_rows)


def store_key_records(index: Index, records: Sequence[tuple[KeyRecord, int | None]]) -> None:
    """Insert (or refresh) the keys of many anonymizations (each with its image's id) in one durable
    transaction: a bulk job's chunk writes all its keys in a few statements."""
    rows.store_keys(
        index, [({**record.values, "image_id": image_id}, record.attribute_rows) for record, image_id in records]
    )


def record_key(
    index: Index,
    real: Dataset,
    anonymized: Dataset,
    image_id: int | None,
    profile: Profile,
    key_attributes: Sequence[KeyAttribute] = DEFAULT_KEY_ATTRIBUTES,
) -> AnonymizationKey:
    """Insert (or refresh) the key of one anonymization, with its key attributes, in one transaction."""
    return store_key_record(index, key_record(real, anonymized, profile, key_attributes), image_id)


# ---------------------------------------------------------------------------------------------
# reading and deleting


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
    if order_by and order_by not in rows.ORDER_KEYS:
        raise InvalidInput(f"cannot order keys by {order_by!r}; use one of {', '.join(rows.ORDER_KEYS)}")
    return rows.list_keys(index, start_index, count, order_by, ascending, filter)


def _key_id(value: Any) -> int:
    key_id = row_id(value, "key id")
    if key_id is None:
        raise NotFound(f"anonymization key {value} not found")
    return key_id


def get_key(index: Index, key_id: int) -> AnonymizationKey:
    key_id = _key_id(key_id)
    key = rows.key_by_id(index, key_id)
    if key is None:
        raise NotFound(f"anonymization key {key_id} not found")
    return key


def key_values(index: Index, key_id: int) -> list[KeyValue]:
    """The key attributes of one key (404 if the key does not exist)."""
    get_key(index, key_id)
    return rows.values_of_key(index, key_id)


def delete_key(index: Index, key_id: int) -> None:
    """Delete a key and its values; an unknown id is not an error (DELETE is idempotent)."""
    rows.delete_key(index, row_id(key_id, "key id") or 0)


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
    for keys, values in rows.key_batches(index, batch_size):
        for key in keys:
            head = [
                key.id,
                "" if key.imageId is None else key.imageId,
                key.created,
                key.profile,
                *(getattr(key, name) for a in KEY_IDENTITY_ATTRIBUTES for name in (a, f"Anon{a}")),
            ]
            entries: Sequence[KeyValue | None] = values.get(key.id) or [None]
            for value in entries:
                tail = (
                    ["", "", "", ""]
                    if value is None
                    else [value.tagPath, value.level, value.value, value.anonymizedValue]
                )
                writer.writerow([*head, *tail])
        yield take()


# ---------------------------------------------------------------------------------------------
# re-identification


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


def _uid_map(candidates: Iterable[tuple[str | None, str, str]]) -> dict[str, str]:
    """Anonymous UID → real UID from the store's candidates: identity UIDs, and key attributes that are UIDs."""
    mapping: dict[str, str] = {}
    for path, real, anon in candidates:
        if path is None or (real and _is_uid_keyword(path)):  # e.g. FrameOfReferenceUID
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
        found = rows.match_key(conn, lambda keyword: _value(ds, keyword))
        if found is None:
            return None
        key, level = found
        depth = LEVELS.index(level)
        values = rows.key_values_in(conn, key.id)
        uid_map = _uid_map(rows.uid_candidates(conn, _uid_values(ds)))
    # references first (they may include the root's own UIDs; those are then set from the key)
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            if isinstance(elem.value, (MultiValue, list)):
                elem.value = [uid_map.get(str(v), str(v)) for v in elem.value]
            else:
                elem.value = uid_map.get(str(elem.value), str(elem.value))
    for name in KEY_IDENTITY_ATTRIBUTES:
        if LEVELS.index(_IDENTITY_LEVEL[name]) <= depth:
            _set(ds, name, getattr(key, name))
    restored = {value.tagPath for value in values if LEVELS.index(value.level) <= depth}
    for flag in DEIDENTIFICATION_FLAGS:
        if flag not in restored and flag in ds:
            del ds[flag]
    for value in values:
        if value.tagPath in restored:
            _set(ds, value.tagPath, value.value)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return level
