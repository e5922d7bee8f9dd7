"""Tag filters per source: blacklists and whitelists of tag paths, applied to every image a source delivers.

A filter is a name, a type (``BLACKLIST`` or ``WHITELIST``) and tag paths (``dicom/tagpath.py``:
``PatientAddress``, ``(0019,1010)``, ``ReferencedStudySequence[*].ReferencedSOPInstanceUID``;
paths are rooted, ``[*]`` matches every item, a path naming a sequence names it whole).  An
association attaches a filter to a source (type + name, e.g. ``scp`` / ``ct-scanner``).  At ingest
all the filters attached to the source are combined (Slicebox §7.5): every element a blacklist path
names is removed (a private creator takes its block along), then, if any whitelist is attached,
only what the union of the whitelist paths leads to or into is kept (an attached whitelist without
paths keeps only the attributes below).

Attributes no filter can remove (a whitelist always keeps them, a blacklist naming one is refused):

* file meta information (group 0002): it describes the encoding and is rewritten by the node;
  Slicebox's whitelist dropped it, which broke later validation (e.g. box sends);
* ``SpecificCharacterSet``: without it every text value is decoded wrongly;
* identity the index and every peer need: ``PatientName``, ``PatientID``, ``StudyInstanceUID``,
  ``SeriesInstanceUID``, ``SOPInstanceUID``, ``SOPClassUID`` (Slicebox indexed the emptied values,
  merging unrelated images into one empty patient/study/series);
* the de-identification marker (``PatientIdentityRemoved``, ``DeidentificationMethod``,
  ``DeidentificationMethodCodeSequence``): Slicebox's whitelist dropped it, so anonymous data coming
  back through a whitelisted source was never re-identified;
* the image pixel description (``Rows``, ``Columns``, ``BitsAllocated``, ``PhotometricInterpretation``,
  ...) whenever the pixel data is kept: pixel data without it cannot be decoded.  A whitelist that
  does not list ``PixelData`` drops the pixels (and their description, unless listed).

Other decisions: filter names are unique (409; Slicebox allowed duplicates); a tag path is stored in
one canonical spelling (keywords where the dictionary has one) and is unique per filter (409); a
source can have a filter attached once (409).  Attached filters are read from the index once and
cached per index; every change made here clears the cache, so changes apply to the next image
without a restart.  Filters run right after parsing, before re-identification (as in Slicebox).
The statements are ``index/filters.py``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from ..dicom.tagpath import TagPath, TagPathSet
from ..errors import Conflict, InvalidInput, NotFound
from ..index import Index
from ..index import filters as rows
from ..index.query import row_id
from ..index.sources import SourceName, source_by_id
from ..index.unique import writing_unique
from ..model import SOURCE_TYPES, Source

__all__ = [
    "ALWAYS_KEPT",
    "FILTER_TYPES",
    "PIXEL_DESCRIPTION",
    "FilterTagPath",
    "SourceFilter",
    "TagFilter",
    "TagFilterInfo",
    "add_tag_path",
    "create_association",
    "create_filter",
    "delete_association",
    "delete_filter",
    "delete_tag_path",
    "filter_for_source",
    "forget_source",
    "get_filter",
    "list_associations",
    "list_filters",
    "list_tag_paths",
]

FILTER_TYPES: tuple[str, ...] = ("WHITELIST", "BLACKLIST")
MAX_NAME_LENGTH = 200
MAX_TAG_PATHS = 10_000

#: top-level attributes no filter removes (see the module docstring for why)
ALWAYS_KEPT: tuple[str, ...] = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
#: the pixel data elements; a whitelist keeps :data:`PIXEL_DESCRIPTION` when it keeps one of them
PIXEL_DATA: tuple[str, ...] = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: what is needed to decode kept pixel data (Image Pixel module); a blacklist cannot name these either
PIXEL_DESCRIPTION: tuple[str, ...] = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    return frozenset(int(tag_for_keyword(k) or 0) for k in keywords)


_ALWAYS_TAGS = _tags(ALWAYS_KEPT)
_PIXEL_DATA_TAGS = _tags(PIXEL_DATA)
_PIXEL_TAGS = _tags(PIXEL_DESCRIPTION)


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class FilterTagPath:
    id: int
    filter_id: int
    tag_path: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tagFilterId": self.filter_id, "tagPath": self.tag_path}


@dataclass(frozen=True)
class TagFilterInfo:
    """A filter as stored: name, type and its tag paths."""

    id: int
    name: str
    type: str
    tag_paths: tuple[FilterTagPath, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "tagPaths": [{"id": p.id, "tagPath": p.tag_path} for p in self.tag_paths],
        }


class SourceFilter(rows.AssociationRow):
    """A filter attached to a source; ``source_id`` is the index's id of the source (None: nothing received yet)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sourceType": self.source_type,
            "sourceName": self.source_name,
            "sourceId": self.source_id,
            "filterId": self.filter_id,
            "filterName": self.filter_name,
        }


# ------------------------------------------------------------------ applying


@dataclass(frozen=True)
class TagFilter:
    """The filters attached to one source, combined: blacklist paths, then whitelist paths (None: no whitelist)."""

    blacklist: TagPathSet
    whitelist: TagPathSet | None

    def apply(self, ds: Dataset) -> bool:
        """Filter ``ds`` in place (file meta untouched); whether anything was removed."""
        removed = self.blacklist.remove_from(ds) if self.blacklist else 0
        if self.whitelist is not None:
            always = set(_ALWAYS_TAGS)
            if any(self.whitelist.names_whole(tag) for tag in _PIXEL_DATA_TAGS):
                always |= _PIXEL_TAGS
            removed += self.whitelist.keep_only(ds, always)
        return removed > 0


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.filters: dict[tuple[str, str], TagFilter] | None = None


_caches: weakref.WeakKeyDictionary[Index, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache(index: Index) -> _Cache:
    with _caches_lock:
        cache = _caches.get(index)
        if cache is None:
            cache = _caches[index] = _Cache()
        return cache


def _invalidate(index: Index) -> None:
    cache = _cache(index)
    with cache.lock:
        cache.generation += 1
        cache.filters = None


def filter_for_source(index: Index, source: Source) -> TagFilter | None:
    """The combined filter of ``source`` (None: no filter attached, the common case); cached per index.

    Blocking (one read of the filter tables after a change, then none): call it off the event loop.
    """
    cache = _cache(index)
    with cache.lock:
        filters, generation = cache.filters, cache.generation
    if filters is None:
        filters = _load(index)
        with cache.lock:
            if cache.generation == generation:  # no change while we read
                cache.filters = filters
    return filters.get((source.source_type, source.source_name))


def _load(index: Index) -> dict[tuple[str, str], TagFilter]:
    black: dict[tuple[str, str], list[TagPath]] = {}
    white: dict[tuple[str, str], list[TagPath]] = {}
    for source_type, source_name, filter_type, text, _ in rows.paths_by_source(index):
        key = (source_type, source_name)
        black.setdefault(key, [])
        if filter_type == "WHITELIST":
            paths = white.setdefault(key, [])
            if text is not None:
                paths.append(TagPath.parse(text))
        elif text is not None:
            black[key].append(TagPath.parse(text))
    return {
        key: TagFilter(TagPathSet(paths), TagPathSet(white[key]) if key in white else None)
        for key, paths in black.items()
    }


# ------------------------------------------------------------------ validation


def _parse_path(text: Any, filter_type: str) -> str:
    path = TagPath.parse(text)
    if any(tag.group == 0x0002 for tag in (*(s.tag for s in path.steps), path.tag)):
        raise InvalidInput(
            f"tag path {path.text!r}: file meta information (group 0002) is not filtered: it is always kept"
        )
    if filter_type == "BLACKLIST" and not path.steps and int(path.tag) in _ALWAYS_TAGS | _PIXEL_TAGS:
        raise InvalidInput(
            f"tag path {path.text!r}: a blacklist cannot remove {keyword_for_tag(path.tag)}: the node needs it "
            "to index, decode or re-identify the image (see the list of attributes no filter removes)"
        )
    return path.canonical


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput('"name" must be a non-empty string')
    if len(value.strip()) > MAX_NAME_LENGTH:
        raise InvalidInput(f'"name" must be at most {MAX_NAME_LENGTH} characters')
    return value.strip()


def _filter_type(body: Mapping[str, Any]) -> str:
    value = body.get("type", body.get("tagFilterType"))
    if not isinstance(value, str) or value.upper() not in FILTER_TYPES:
        raise InvalidInput(f'"type" must be WHITELIST or BLACKLIST, not {value!r}')
    return value.upper()


def _object(body: Any, example: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(f"the body must be a JSON object like {example}")
    return body


def _id(value: Any, what: str) -> int:
    """An id from a URL or body; 0 (no row has it) when out of range, so the lookup answers 404."""
    return row_id(value, what) or 0


def _unique_paths(texts: Iterable[Any], filter_type: str) -> list[str]:
    out: list[str] = []
    for text in texts:
        path = _parse_path(text, filter_type)
        if path in out:
            raise Conflict(f"tag path {path!r} is listed twice")
        out.append(path)
    return out


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ filters


def _info(row: rows.FilterRow) -> TagFilterInfo:
    return TagFilterInfo(row.id, row.name, row.filter_type, tuple(FilterTagPath(*p) for p in row.tag_paths))


def _found(row: rows.FilterRow | None, filter_id: Any) -> TagFilterInfo:
    if row is None:
        raise NotFound(f"tag filter {filter_id} not found")
    return _info(row)


def list_filters(index: Index) -> list[TagFilterInfo]:
    with index.reading() as conn:
        return [_info(row) for row in rows.filters(conn)]


def get_filter(index: Index, filter_id: Any) -> TagFilterInfo:
    with index.reading() as conn:
        return _found(rows.filter_by_id(conn, _id(filter_id, "filter id")), filter_id)


def create_filter(index: Index, body: Any) -> TagFilterInfo:
    """``{"name", "type": "WHITELIST"|"BLACKLIST", "tagPaths"?: [...]}`` → the new filter."""
    body = _object(body, '{"name": "no addresses", "type": "BLACKLIST", "tagPaths": ["PatientAddress"]}')
    name = _name(body.get("name"))
    filter_type = _filter_type(body)
    texts = body.get("tagPaths", [])
    if not isinstance(texts, list) or len(texts) > MAX_TAG_PATHS:
        raise InvalidInput(f'"tagPaths" must be a JSON array of at most {MAX_TAG_PATHS} tag path strings')
    paths = _unique_paths(texts, filter_type)
    with writing_unique(index, f"a tag filter named {name!r} already exists") as conn:
        if rows.filter_id_named(conn, name) is not None:
            raise Conflict(f"a tag filter named {name!r} already exists")
        filter_id = rows.insert_filter(conn, name, filter_type, paths, _now())
        created = _found(rows.filter_by_id(conn, filter_id), filter_id)
    _invalidate(index)
    return created


def delete_filter(index: Index, filter_id: Any) -> None:
    """Delete a filter with its tag paths and the associations that attach it."""
    key = _id(filter_id, "filter id")
    with index.writing() as conn:
        if not rows.delete_filter(conn, key):
            raise NotFound(f"tag filter {filter_id} not found")
    _invalidate(index)


def list_tag_paths(index: Index, filter_id: Any) -> list[FilterTagPath]:
    return list(get_filter(index, filter_id).tag_paths)


def add_tag_path(index: Index, filter_id: Any, body: Any) -> FilterTagPath:
    """``{"tagPath": "..."}`` → the tag path added to the filter."""
    body = _object(body, '{"tagPath": "ReferencedStudySequence[*].ReferencedSOPInstanceUID"}')
    if "tagPath" not in body:
        raise InvalidInput('the body needs "tagPath", e.g. {"tagPath": "PatientAddress"}')
    with writing_unique(index, f"tag filter {filter_id} already has this tag path") as conn:
        found = _found(rows.filter_by_id(conn, _id(filter_id, "filter id")), filter_id)
        path = _parse_path(body["tagPath"], found.type)
        if any(p.tag_path == path for p in found.tag_paths):
            raise Conflict(f"tag filter {found.id} already has the tag path {path!r}")
        path_id = rows.insert_tag_path(conn, found.id, path)
    _invalidate(index)
    return FilterTagPath(int(path_id), found.id, path)


def delete_tag_path(index: Index, filter_id: Any, path_id: Any) -> None:
    with index.writing() as conn:
        found = _found(rows.filter_by_id(conn, _id(filter_id, "filter id")), filter_id)
        if not rows.delete_tag_path(conn, found.id, _id(path_id, "tag path id")):
            raise NotFound(f"tag path {path_id} of tag filter {found.id} not found")
    _invalidate(index)


# ------------------------------------------------------------------ associations


def list_associations(index: Index) -> list[SourceFilter]:
    with index.reading() as conn:
        return [SourceFilter(*row) for row in rows.associations(conn)]


def _source_of(body: Mapping[str, Any], lookup: Callable[[int], SourceName | None]) -> tuple[str, str]:
    source_type = body.get("sourceType")
    if not isinstance(source_type, str) or source_type not in SOURCE_TYPES:
        raise InvalidInput(f'"sourceType" must be one of {", ".join(SOURCE_TYPES)}, not {source_type!r}')
    name = body.get("sourceName")
    if body.get("sourceId") is not None:
        source_id = body["sourceId"]
        row = lookup(_id(source_id, "sourceId"))
        if row is None:
            raise NotFound(f'source {source_id} not found (give "sourceName" for a source that sent nothing yet)')
        if row.source_type != source_type:
            raise InvalidInput(f"source {source_id} is of type {row.source_type!r}, not {source_type!r}")
        if name is not None and name != row.source_name:
            raise InvalidInput(f"source {source_id} is named {row.source_name!r}, not {name!r}")
        return source_type, str(row.source_name)
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput('give the source as "sourceName" (a non-empty string) or "sourceId" (an integer)')
    return source_type, name.strip()


def create_association(index: Index, body: Any) -> SourceFilter:
    """``{"sourceType", "sourceName" | "sourceId", "filterId"}`` → the filter attached to the source."""
    body = _object(body, '{"sourceType": "scp", "sourceName": "ct-scanner", "filterId": 1}')
    if "filterId" not in body:
        raise InvalidInput('the body needs "filterId"')
    with writing_unique(index, "this tag filter is already attached to this source") as conn:
        source_type, source_name = _source_of(body, lambda key: source_by_id(conn, key))
        found = _found(rows.filter_by_id(conn, _id(body["filterId"], "filter id")), body["filterId"])
        if rows.association_id_for(conn, source_type, source_name, found.id) is not None:
            raise Conflict(f"tag filter {found.id} is already attached to {source_type} {source_name!r}")
        association_id = rows.insert_association(conn, source_type, source_name, found.id, _now())
        created = SourceFilter(*rows.associations(conn, association_id)[0])
    _invalidate(index)
    return created


def delete_association(index: Index, association_id: Any) -> None:
    if not rows.delete_association(index, _id(association_id, "association id")):
        raise NotFound(f"tag filter association {association_id} not found")
    _invalidate(index)


def forget_source(index: Index, source_type: str, source_name: str) -> int:
    """Detach every filter from a source that is removed (an SCP, a watch, a box); how many were attached."""
    removed = rows.detach_source(index, source_type, source_name)
    _invalidate(index)
    return removed
