"""Query/Retrieve over the index: a C-FIND, C-GET or C-MOVE identifier as index queries.

Matching (PS3.4 C.2.2.2), on the indexed attributes of the query level and the levels above it:

* universal: an empty value (or only ``*``) matches everything;
* single value: UIDs exactly, other values case-insensitively;
* wildcards ``*`` and ``?``;
* ranges on dates (``StudyDate``, ``SeriesDate``, ``PatientBirthDate``): ``A-B``, ``A-``, ``-B``;
* lists (``A\\B``): any of the values (UID lists included).

Keys the index does not hold are returned (empty, or at IMAGE level from the stored file's
header) but not matched: an SCP may treat an optional key as universal.  What the index can
match is sent to it as :class:`~slicebox_lab.index.Query` properties; ranges and lists are
checked on the rows it returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from slicebox_lab import dicom
from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import MAX_COUNT, Query, QueryProperty
from slicebox_lab.model import (
    IMAGE_ATTRIBUTES,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    Image,
)

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = ["LEVELS", "BadIdentifier", "Finder"]

LEVELS: tuple[str, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT, STUDY, SERIES, IMAGE = range(4)
_LEVEL_ATTRIBUTES = (PATIENT_ATTRIBUTES, STUDY_ATTRIBUTES, SERIES_ATTRIBUTES, IMAGE_ATTRIBUTES)
_KEYWORD_LEVEL = {name: level for level, names in enumerate(_LEVEL_ATTRIBUTES) for name in names}
#: the unique key of each level; a retrieve must name it
UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
DATE_KEYWORDS = frozenset({"StudyDate", "SeriesDate", "PatientBirthDate"})
#: keys the SCP fills itself, never matched
_OWN_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"})

Predicate = Callable[[str], bool]


class BadIdentifier(InvalidInput):
    """An identifier the SCP cannot answer (no or unknown level, a retrieve without its key)."""


def _texts(value: Any) -> list[str]:
    """The non-empty values of an identifier element, as text."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    out = []
    for item in items:
        text = item.decode("ascii", "replace") if isinstance(item, (bytes, bytearray)) else str(item)
        text = text.strip(" \x00")
        if text:
            out.append(text)
    return out


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _matcher(keyword: str, pattern: str) -> Predicate:
    """One value of a key as a test on the indexed text."""
    if keyword in DATE_KEYWORDS and "-" in pattern:
        low, _, high = (part.strip() for part in pattern.partition("-"))
        return lambda value: bool(value) and (not low or value >= low) and (not high or value <= high)
    if keyword.endswith("UID"):
        return lambda value: value == pattern
    regex = _wildcard_regex(pattern)
    return lambda value: regex.fullmatch(value) is not None


def _any_of(tests: list[Predicate]) -> Predicate:
    return lambda value: any(test(value) for test in tests)


class Finder:
    """The rows of the index an identifier asks for, and the C-FIND answers built from them."""

    def __init__(self, context: SliceboxContext, identifier: Dataset, retrieve_ae_title: str = "") -> None:
        self.context = context
        self.identifier = identifier
        self.retrieve_ae_title = retrieve_ae_title
        level = " ".join(_texts(identifier.get("QueryRetrieveLevel"))).upper()
        if level not in LEVELS:
            raise BadIdentifier(f"QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE, not {level!r}")
        self.level = LEVELS.index(level)
        self.properties: list[QueryProperty] = []
        self.predicates: list[tuple[str, Predicate]] = []
        self.given: set[str] = set()
        self.header_keys = False
        for element in identifier:
            keyword = element.keyword
            key_level = _KEYWORD_LEVEL.get(keyword)
            if key_level is None:
                if keyword not in _OWN_KEYS:
                    self.header_keys = True
                continue
            if key_level > self.level or element.VR == "SQ":
                continue
            values = _texts(element.value)
            if keyword == "ImageType" and values:
                values = ["\\".join(values)]
            if not values or all(v.strip("*") == "" for v in values):
                continue  # universal matching
            self.given.add(keyword)
            if len(values) > 1:
                self.predicates.append((keyword, _any_of([_matcher(keyword, v) for v in values])))
            elif keyword in DATE_KEYWORDS and "-" in values[0]:
                self.predicates.append((keyword, _matcher(keyword, values[0])))
            elif keyword.endswith("UID"):
                self.properties.append(QueryProperty(keyword, "=", values[0]))
            else:
                self.properties.append(QueryProperty(keyword, "wildcard", values[0]))
        self._patients: dict[int, Any] = {}
        self._studies: dict[int, Any] = {}
        self._series: dict[int, Any] = {}

    # ------------------------------------------------------------------ rows

    def _rows(self) -> Iterator[tuple[Any, dict[str, str]]]:
        """(record, indexed values of it and its parents) of every matching row, by id."""
        index = self.context.index
        query = (index.query_patients, index.query_studies, index.query_series, index.query_images)[self.level]
        start = 0
        while True:
            q = Query(start_index=start, count=MAX_COUNT, query_properties=list(self.properties))
            rows: list[Any] = list(query(q))
            for record in rows:
                try:
                    values = self._values(record)
                except NotFound:  # deleted while we read
                    continue
                if all(test(values.get(keyword, "")) for keyword, test in self.predicates):
                    yield record, values
            if len(rows) < MAX_COUNT:
                return
            start += len(rows)

    def _values(self, record: Any) -> dict[str, str]:
        index = self.context.index
        level = self.level
        values = {name: str(getattr(record, name)) for name in _LEVEL_ATTRIBUTES[level]}
        parent = record
        if level >= IMAGE:
            parent = _cached(self._series, parent.series_id, index.get_series)
            values.update({name: str(getattr(parent, name)) for name in SERIES_ATTRIBUTES})
        if level >= SERIES:
            parent = _cached(self._studies, parent.study_id, index.get_study)
            values.update({name: str(getattr(parent, name)) for name in STUDY_ATTRIBUTES})
        if level >= STUDY:
            parent = _cached(self._patients, parent.patient_id, index.get_patient)
            values.update({name: str(getattr(parent, name)) for name in PATIENT_ATTRIBUTES})
        return values

    # ------------------------------------------------------------------ C-FIND

    def answers(self) -> Iterator[Dataset]:
        """One C-FIND answer per matching row: every requested key, filled where we know it."""
        for record, values in self._rows():
            header = self._header(record) if self.header_keys and self.level == IMAGE else None
            yield self._answer(values, header)

    def _header(self, image: Image) -> Dataset | None:
        try:
            return dicom.parse_part10(self.context.image_bytes(image.id)).dataset
        except Exception:
            return None

    def _answer(self, values: dict[str, str], header: Dataset | None) -> Dataset:
        answer = Dataset()
        for element in self.identifier:
            keyword = element.keyword
            if keyword in _OWN_KEYS:
                continue
            vr = element.VR if " or " not in element.VR else "UN"
            if vr == "SQ":
                answer.add_new(element.tag, "SQ", [])
            elif keyword in values:
                text = values[keyword]
                value: Any = (text.split("\\") if keyword == "ImageType" else text) if text else None
                answer.add_new(element.tag, vr, value)
            elif header is not None and element.tag in header:
                answer[element.tag] = header[element.tag]
            else:
                answer.add_new(element.tag, vr, None)
        answer.QueryRetrieveLevel = LEVELS[self.level]
        if self.retrieve_ae_title:
            answer.RetrieveAETitle = self.retrieve_ae_title
        if any(not text.isascii() for text in values.values()):
            answer.SpecificCharacterSet = "ISO_IR 192"
        return answer

    # ------------------------------------------------------------------ C-GET / C-MOVE

    def images(self) -> list[Image]:
        """The images a retrieve asks for; the level's unique key must be given."""
        unique = UNIQUE_KEYS[self.level]
        if unique not in self.given:
            raise BadIdentifier(f"a retrieve at level {LEVELS[self.level]} needs {unique}")
        index = self.context.index
        found: list[Image] = []
        for record, _ in self._rows():
            if self.level == IMAGE:
                found.append(record)
            elif self.level == SERIES:
                found.extend(index.images_of_series(record.id))
            elif self.level == STUDY:
                found.extend(index.images_of_study(record.id))
            else:
                found.extend(index.images_of_patient(record.id))
        return found


def _cached(cache: dict[int, Any], key: int, load: Callable[[int], Any]) -> Any:
    value = cache.get(key)
    if value is None:
        value = cache[key] = load(key)
    return value
