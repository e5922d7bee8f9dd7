"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances in the index.

Matching happens in SQL on the indexed attributes (``model.*_ATTRIBUTES``): single values, ``*``/``?``
wildcards (case-insensitive, as the node's C-FIND), UID lists, date ranges; attributes of lower
levels constrain a higher one through a semi-join (``ModalitiesInStudy=CT`` on studies).  Counts and
modalities are SQL aggregates over the page only.  The statements are ``index/dicomweb.py``; this
module validates the keys and hands it :class:`~slicebox_lab.index.dicomweb.Match` records.
Attributes the index does not hold (``StudyTime``, ``SeriesNumber``, ``Rows`` ...) are returned from
the header of one instance per result row (the instance itself, or the first of the series or
study), never matched: matching on them is ignored with a ``Warning`` (PS3.18 §8.3.4.3, "ignored,
not supported").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom

from slicebox_lab.errors import InvalidInput
from slicebox_lab.index import Index
from slicebox_lab.index import dicomweb as rows
from slicebox_lab.index.dicomweb import Match
from slicebox_lab.model import IMAGE_ATTRIBUTES, PATIENT_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES
from slicebox_lab.storage import StorageArea

from .dicomjson import element_json, keyword_of, tag_of, tag_text, value_json, vr_of

__all__ = ["LEVELS", "MAX_RESULTS", "QidoResult", "search"]

LEVELS = ("study", "series", "instance")
#: levels of the hierarchy (the store's: index/dicomweb.py)
_PATIENT, _STUDY, _SERIES, _IMAGE = range(4)
_LEVEL_INDEX = {"study": _STUDY, "series": _SERIES, "instance": _IMAGE}
#: the most results one search returns (PS3.18 lets the server cap them, with a Warning)
MAX_RESULTS = 1000
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^[0-9]{8}$")
_RESERVED = frozenset({"limit", "offset", "includefield", "fuzzymatching", "emptyvaluematching"})

#: keyword -> level of the table holding it (the column has the keyword's name)
INDEXED: dict[str, int] = {
    **{k: _PATIENT for k in PATIENT_ATTRIBUTES},
    **{k: _STUDY for k in STUDY_ATTRIBUTES},
    **{k: _SERIES for k in SERIES_ATTRIBUTES},
    **{k: _IMAGE for k in IMAGE_ATTRIBUTES},
    "NumberOfFrames": _IMAGE,
}
#: attributes computed here: keyword -> level they belong to
_COMPUTED = {
    "ModalitiesInStudy": _STUDY,
    "NumberOfStudyRelatedSeries": _STUDY,
    "NumberOfStudyRelatedInstances": _STUDY,
    "NumberOfSeriesRelatedInstances": _SERIES,
    "RetrieveURL": _PATIENT,  # every level
    "InstanceAvailability": _PATIENT,
    "AvailableTransferSyntaxUID": _IMAGE,
}

#: PS3.18 Table 10.6.3-3/4/5: what every result of a level carries
_DEFAULTS: dict[int, tuple[str, ...]] = {
    _STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
        "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    _SERIES: (
        "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber",
        "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    ),
    _IMAGE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber",
        "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}  # fmt: skip
#: ``includefield=all`` adds these beyond the defaults (indexed ones, and common header attributes)
_ALL: dict[int, tuple[str, ...]] = {
    _STUDY: ("StudyDescription", "PatientAge", "PatientSize", "PatientWeight", "InstitutionName"),
    _SERIES: (
        "SeriesDate", "SeriesTime", "ProtocolName", "BodyPartExamined", "Manufacturer", "StationName",
        "FrameOfReferenceUID", "ManufacturerModelName", "Laterality",
    ),
    _IMAGE: (
        "ImageType", "AvailableTransferSyntaxUID", "ContentDate", "ContentTime", "AcquisitionDate",
        "SamplesPerPixel", "PhotometricInterpretation", "BitsStored", "ImagePositionPatient",
        "ImageOrientationPatient", "SliceLocation", "PixelSpacing", "SliceThickness",
    ),
}  # fmt: skip


@dataclass
class QidoResult:
    """The DICOM JSON of each match, and Warning texts (ignored keys, capped results)."""

    items: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Search:
    level: int
    limit: int
    offset: int
    fuzzy: bool
    #: (keyword or tag text, value) to match
    matches: list[tuple[str, str]]
    #: attributes to return beyond the defaults (keywords of indexed/computed ones, tags of others)
    include: set[str]
    include_all: bool
    warnings: list[str]
    limit_given: bool = False


def _bool(name: str, values: Sequence[str]) -> bool:
    value = values[-1].strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false, not {value!r}")


def _int(name: str, values: Sequence[str]) -> int:
    try:
        value = int(values[-1].strip())
    except ValueError:
        raise InvalidInput(f"{name} must be a non-negative integer, not {values[-1]!r}") from None
    if value < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, not {value}")
    return value


def _name_of(text: str) -> str:
    """A keyword for a tag we know by keyword (so ``00100010`` and ``PatientName`` are one)."""
    if "." in text:
        raise InvalidInput(f"matching on sequence attributes ({text}) is not supported")
    tag = tag_of(text)
    keyword = keyword_of(tag)
    return keyword if keyword in INDEXED or keyword in _COMPUTED else tag_text(tag)


def parse(level: str, arguments: Mapping[str, Sequence[str]]) -> _Search:
    """Query parameters to a search; :class:`InvalidInput` names the bad one."""
    if level not in _LEVEL_INDEX:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
    search = _Search(_LEVEL_INDEX[level], MAX_RESULTS, 0, False, [], set(), False, [])
    limit_given = False
    for name, values in arguments.items():
        if not values:
            continue
        key = name.strip()
        lower = key.lower()
        if lower == "limit":
            search.limit = _int("limit", values)
            limit_given = True
        elif lower == "offset":
            search.offset = _int("offset", values)
        elif lower == "fuzzymatching":
            search.fuzzy = _bool("fuzzymatching", values)
        elif lower == "emptyvaluematching":
            _bool("emptyvaluematching", values)
        elif lower == "includefield":
            for value in values:
                for item in value.split(","):
                    item = item.strip()
                    if not item:
                        continue
                    if item.lower() == "all":
                        search.include_all = True
                    else:
                        search.include.add(_name_of(item))
        elif key in ("_", "callback"):
            continue
        else:
            attribute = _name_of(key)
            if len(values) > 1:
                raise InvalidInput(f"{key} is given {len(values)} times; give one value (UID lists: comma separated)")
            search.matches.append((attribute, values[0]))
    if search.limit > MAX_RESULTS:
        search.warnings.append(f'299 slicebox "limit {search.limit} capped at {MAX_RESULTS}"')
        search.limit = MAX_RESULTS
    search.limit_given = limit_given
    return search


# ---------------------------------------------------------------------------------------------- matching


def _uid_list(name: str, value: str) -> list[str]:
    uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
    for uid in uids:
        if len(uid) > 64 or not _UID.match(uid):
            raise InvalidInput(f"{name}: {uid!r} is not a UID")
    return uids


def _date_match(level: int, name: str, value: str) -> Match:
    low, dash, high = value.partition("-")
    for part in (low, high):
        if part and not _DATE.match(part):
            raise InvalidInput(f"{name}: {value!r} is not a date or date range (YYYYMMDD, YYYYMMDD-YYYYMMDD)")
    if not dash:
        return Match(level, name, "equals", (low,))
    if not low and not high:
        raise InvalidInput(f"{name}: {value!r} is not a date range")
    return Match(level, name, "range", (low, high))


def _match(level: int, keyword: str, value: str, fuzzy: bool) -> Match | None:
    """The indexed ``keyword`` of ``level`` matching the DICOM key ``value``; None for universal matching.

    Wildcards are case-insensitive and use the ``lower()`` indexes, as the REST queries (index/query.py).
    """
    if "\x00" in value:
        raise InvalidInput(f"{keyword}: the value must not contain NUL characters")
    if value == "" or value.strip("*") == "":
        return None
    vr = vr_of(tag_of(keyword))
    if vr == "UI":
        return Match(level, keyword, "in", tuple(_uid_list(keyword, value)))
    if vr == "DA":
        return _date_match(level, keyword, value)
    if rows.is_integer(level, keyword):
        try:
            return Match(level, keyword, "equals", (int(value),))
        except ValueError:
            raise InvalidInput(f"{keyword} takes an integer, not {value!r}") from None
    if "*" in value or "?" in value:
        return Match(level, keyword, "wildcard", (value,))
    if vr == "PN" and fuzzy:  # any name component starting with the value, case-insensitive
        return Match(level, keyword, "name", (value,))
    if vr == "CS" and "\\" in value:
        return Match(level, keyword, "in", tuple(v for v in value.split("\\") if v))
    return Match(level, keyword, "equals", (value,))


# ---------------------------------------------------------------------------------------------- search


def search(
    index: Index,
    storage: StorageArea,
    level: str,
    arguments: Mapping[str, Sequence[str]],
    root: str,
    scope: Mapping[str, str] | None = None,
) -> QidoResult:
    """Search ``level`` (study, series, instance); ``scope`` fixes StudyInstanceUID/SeriesInstanceUID.

    ``root`` is the absolute URL of the DICOMweb service (ending in ``/``) for RetrieveURL.
    """
    query = parse(level, arguments)
    matches: list[Match] = []
    returned: list[str] = []
    for keyword, value in [*query.matches, *(scope or {}).items()]:
        if keyword in INDEXED:
            table_level = INDEXED[keyword]
            match = _match(table_level, keyword, value, query.fuzzy)
            if match is not None:
                matches.append(match)
            if table_level <= query.level:
                returned.append(keyword)
        elif keyword == "ModalitiesInStudy":
            match = _match(_SERIES, "Modality", value, query.fuzzy)
            if match is not None:
                matches.append(match)
            returned.append(keyword)
        else:
            query.warnings.append(
                f'299 slicebox "{keyword_of(tag_of(keyword))} is not indexed: matching on it ignored"'
            )
            returned.append(keyword)
    columns = [(table_level, keyword) for keyword, table_level in INDEXED.items() if table_level <= query.level]
    page = rows.qido_page(index, query.level, matches, columns, query.offset, query.limit)
    if page.more and not query.limit_given:
        query.warnings.append(f'299 slicebox "more than {query.limit} matches: use limit and offset to page"')
    wanted = _wanted(query, returned, scope)
    from_files = [k for k in wanted if k not in INDEXED and k not in _COMPUTED]
    headers = _read_headers(storage, page.keys, [tag_of(k) for k in from_files]) if from_files else {}
    items = [_item(query.level, row, wanted, page.aggregates, headers.get(row["id"], {}), root) for row in page.rows]
    return QidoResult(items, query.warnings)


def _wanted(query: _Search, returned: list[str], scope: Mapping[str, str] | None) -> list[str]:
    """Attribute names of each result: the defaults of its level and the ones above when unscoped."""
    levels = [query.level]
    if query.level == _IMAGE and not (scope and "SeriesInstanceUID" in scope):
        levels.insert(0, _SERIES)
    if query.level >= _SERIES and not (scope and "StudyInstanceUID" in scope):
        levels.insert(0, _STUDY)
    names: list[str] = []
    for level in levels:
        names += _DEFAULTS[level]
        if query.include_all:
            names += _ALL[level]
            names += [k for k, v in INDEXED.items() if v == level or (level == _STUDY and v == _PATIENT)]
    # the UIDs of the levels above, so each result can be placed (PS3.18 Table 10.6.3-5 note)
    if query.level >= _SERIES:
        names.append("StudyInstanceUID")
    if query.level == _IMAGE:
        names.append("SeriesInstanceUID")
    names += returned
    names += sorted(query.include)
    out: list[str] = []
    for name in names:
        if name in _COMPUTED and _COMPUTED[name] > query.level:
            continue
        if name in INDEXED and INDEXED[name] > query.level:
            continue
        if name not in out:
            out.append(name)
    return out


def _read_headers(storage: StorageArea, keys: Mapping[int, str], tags: list[int]) -> dict[int, dict[int, Any]]:
    """The asked elements (as DICOM JSON) of each representative file; a file that fails gives none."""
    wanted = sorted(set(tags) | {0x00080005})
    out: dict[int, dict[int, Any]] = {}
    for result_id, key in keys.items():
        try:
            with storage.open(key) as stream:
                ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=wanted)
        except Exception:  # noqa: S112 - a vanished or unreadable file: its attributes stay empty
            continue
        elements: dict[int, Any] = {}
        for tag in tags:
            if tag in ds:
                elements[tag] = element_json(ds[tag], None, tag_text(tag))
        out[result_id] = elements
    return out


def _item(
    level: int,
    row: Mapping[str, Any],
    wanted: list[str],
    aggregates: Mapping[str, Mapping[int, Any]],
    header: Mapping[int, Any],
    root: str,
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name in wanted:
        if name in INDEXED:
            tag = tag_of(name)
            item[tag_text(tag)] = value_json(vr_of(tag), row[name])
        elif name in aggregates:
            tag = tag_of(name)
            default: Any = "" if name == "ModalitiesInStudy" else 0
            item[tag_text(tag)] = value_json(vr_of(tag), aggregates[name].get(row["id"], default))
        elif name == "RetrieveURL":
            item["00081190"] = {"vr": "UR", "Value": [_retrieve_url(level, row, root)]}
        elif name == "InstanceAvailability":
            item["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        elif name == "AvailableTransferSyntaxUID":
            item["00083002"] = value_json("UI", row.get("_ts", ""))
        elif name in _COMPUTED:
            continue
        else:
            tag = tag_of(name)
            item[tag_text(tag)] = header.get(tag) or {"vr": vr_of(tag)}
    return dict(sorted(item.items()))


def _retrieve_url(level: int, row: Mapping[str, Any], root: str) -> str:
    if level == _STUDY:
        return f"{root}studies/{row['StudyInstanceUID']}"
    if level == _SERIES:
        return f"{root}studies/{row['_study_uid']}/series/{row['SeriesInstanceUID']}"
    return f"{root}studies/{row['_study_uid']}/series/{row['_series_uid']}/instances/{row['SOPInstanceUID']}"
