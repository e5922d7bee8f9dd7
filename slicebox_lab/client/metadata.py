"""The metadata area of the client: browsing patients, studies, series and images as DataFrames.

Browsing filters by series tags and types given by name, so it builds on :class:`OrganizingMixin`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import pandas as pd

from ..model import Image, Patient, Series, Study, json_fields
from .base import _listify, frame
from .errors import NotFound
from .http import PAGE
from .organizing import OrganizingMixin

__all__ = ["FLAT_SERIES_COLUMNS", "MetadataMixin"]

#: columns of the REST JSON, in the order the DataFrames show them (id first): the records' fields
PATIENT_COLUMNS = json_fields(Patient)
STUDY_COLUMNS = json_fields(Study)
SERIES_COLUMNS = json_fields(Series)
IMAGE_COLUMNS = json_fields(Image)
FLAT_SERIES_COLUMNS = [
    "id",
    "series_id",
    "patient_id",
    "study_id",
    *PATIENT_COLUMNS[1:],
    *STUDY_COLUMNS[2:],
    *SERIES_COLUMNS[2:],
    "source",
    "tags",
    "series_types",
]
ATTRIBUTE_COLUMNS = [
    "tag",
    "name",
    "vr",
    "value",
    "depth",
    "path",
    "keyword",
    "tag_path",
    "name_path",
    "length",
    "values",
]


def _flatten_series(row: Mapping[str, Any]) -> dict[str, Any]:
    patient = row.get("patient") or {}
    study = row.get("study") or {}
    series = row.get("series") or {}
    out: dict[str, Any] = {
        "id": row.get("id", series.get("id")),
        "series_id": series.get("id", row.get("id")),
        "patient_id": patient.get("id"),
        "study_id": study.get("id"),
    }
    for part in (patient, study, series):
        for key, value in part.items():
            if key not in ("id", "patient_id", "study_id"):
                out[key] = value
    return out


class _Level(NamedTuple):
    """A level of the hierarchy as the client lists it: its route, its parent's id (the list route's query
    argument and the query property) and its columns."""

    name: str
    parent: str
    parent_property: str
    columns: list[str]


class _Page(NamedTuple):
    order_by: str | None
    ascending: bool
    limit: int | None
    offset: int


_PATIENTS = _Level("patients", "", "", PATIENT_COLUMNS)
_STUDIES = _Level("studies", "patientid", "patient_id", STUDY_COLUMNS)
_SERIES = _Level("series", "studyid", "study_id", SERIES_COLUMNS)
_IMAGES = _Level("images", "seriesid", "series_id", IMAGE_COLUMNS)


def _id(value: Any) -> int | None:
    return None if value is None else int(value)


class MetadataMixin(OrganizingMixin):
    """``metadata`` routes (and ``sources``): the patient → study → series → image hierarchy."""

    def sources(self) -> pd.DataFrame:
        return frame(self.get("sources"), ["source_id", "source_type", "source_name"])

    def _organizing(
        self,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
    ) -> dict[str, Any]:
        """The list routes' filter parameters from ids or names."""
        params: dict[str, Any] = {}
        if sources is not None:
            params["sources"] = [s if isinstance(s, str) and ":" in s else f"user:{int(s)}" for s in _listify(sources)]
        if types is not None:
            params["seriestypes"] = self._ids_of(types, self.series_types)
        if tags is not None:
            params["seriestags"] = self._ids_of(tags, self.series_tags)
            params["seriestagsmatch"] = tags_match
        return params

    @staticmethod
    def _ids_of(values: Any, listing: Callable[[], pd.DataFrame]) -> list[int]:
        """Ids from ids or names (names looked up in ``listing``; an unknown name → NotFound)."""
        wanted = _listify(values)
        names = [v for v in wanted if isinstance(v, str) and not v.isdigit()]
        by_name: dict[str, int] = {}
        if names:
            known = listing()
            by_name = {str(n): int(i) for n, i in zip(known.get("name", []), known.get("id", []), strict=False)}
        ids = []
        for value in wanted:
            if isinstance(value, str) and not value.isdigit():
                if value not in by_name:
                    raise NotFound(f"no series tag or type named {value!r}", 404)
                ids.append(by_name[value])
            else:
                ids.append(int(value))
        return ids

    def _query_body(
        self, attributes: Mapping[str, Any], order_by: str | None, ascending: bool, filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        properties = []
        for name, value in attributes.items():
            text = str(value)
            operator = "wildcard" if ("*" in text or "?" in text) else "="
            properties.append({"property_name": name, "operator": operator, "property_value": text})
        body: dict[str, Any] = {"query_properties": properties, "order": {"order_ascending": ascending}}
        if order_by:
            body["order"]["order_by"] = order_by
        f: dict[str, Any] = {}
        if "sources" in filters:
            f["sources"] = [int(str(s).rpartition(":")[2]) for s in filters["sources"]]
        if "seriestypes" in filters:
            f["series_types"] = filters["seriestypes"]
        if "seriestags" in filters:
            f["series_tags"] = filters["seriestags"]
            f["series_tags_match"] = filters.get("seriestagsmatch", "any")
        if f:
            body["filters"] = f
        return body

    def _level(
        self,
        level: _Level,
        parent_id: int | None,
        filter: str | None,
        page: _Page,
        organizing: Mapping[str, Any],
        attributes: Mapping[str, Any],
    ) -> pd.DataFrame:
        """The one listing of every level: a GET of the level's list, or a POSTed query when attribute values
        are asked for or the parent is left out (the list routes need one)."""
        order_by, ascending, limit, offset = page
        if attributes or (parent_id is None and level.parent) or (filter and level.name in ("studies", "series")):
            wanted = dict(attributes)
            if parent_id is not None:
                wanted[level.parent_property] = parent_id
            if filter:
                raise ValueError("filter= cannot be combined with attribute queries or a missing parent id")
            body = self._query_body(wanted, order_by, ascending, organizing)
            return frame(self.query_all(level.name, body, limit=limit, offset=offset), level.columns)
        params: dict[str, Any] = {**organizing, "orderby": order_by, "orderascending": ascending, "filter": filter}
        if level.parent:
            params[level.parent] = parent_id
        return frame(self.get_all(f"metadata/{level.name}", params, limit=limit, offset=offset), level.columns)

    def patients(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Patients; ``filter`` a substring of their text columns, keyword arguments attribute values
        (``PatientName="Doe*"``: DICOM wildcards)."""
        page = _Page(order_by, ascending, limit, offset)
        return self._level(
            _PATIENTS, None, filter, page, self._organizing(sources, types, tags, tags_match), attributes
        )

    def studies(
        self,
        patient_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Studies of a patient (every study when ``patient_id`` is None)."""
        page = _Page(order_by, ascending, limit, offset)
        return self._level(
            _STUDIES, _id(patient_id), None, page, self._organizing(sources, types, tags, tags_match), attributes
        )

    def series(
        self,
        study_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Series of a study (every series when ``study_id`` is None)."""
        page = _Page(order_by, ascending, limit, offset)
        return self._level(
            _SERIES, _id(study_id), None, page, self._organizing(sources, types, tags, tags_match), attributes
        )

    def images(
        self,
        series_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        **attributes: Any,
    ) -> pd.DataFrame:
        """Images of a series (every image when ``series_id`` is None)."""
        return self._level(_IMAGES, _id(series_id), None, _Page(order_by, ascending, limit, offset), {}, attributes)

    def flat_series(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        tags: Any = None,
        types: Any = None,
        sources: Any = None,
        tags_match: str = "any",
        details: bool = True,
        **attributes: Any,
    ) -> pd.DataFrame:
        """Series with their study and patient, one row each (``id`` = ``series_id``); with ``details``
        also ``source`` (``type:name``), ``tags`` and ``series_types`` (lists of names)."""
        organizing = self._organizing(sources, types, tags, tags_match)
        if attributes:
            if filter:
                raise ValueError("filter= cannot be combined with attribute queries")
            raw = self.query_all(
                "flatseries", self._query_body(attributes, order_by, ascending, organizing), limit=limit, offset=offset
            )
        else:
            params = {**organizing, "orderby": order_by, "orderascending": ascending, "filter": filter}
            raw = self.get_all("metadata/flatseries", params, limit=limit, offset=offset)
        rows = [_flatten_series(r) for r in raw]
        if details:
            self._add_details(rows)
        columns = (
            FLAT_SERIES_COLUMNS
            if details
            else [c for c in FLAT_SERIES_COLUMNS if c not in ("source", "tags", "series_types")]
        )
        return frame(rows, columns)

    def _add_details(self, rows: list[dict[str, Any]]) -> None:
        """source, tags and series types of flat series rows: one request per tag, one for types."""
        if not rows:
            return
        sources = {s["source_id"]: f"{s['source_type']}:{s['source_name']}" for s in self.get("sources")}
        ids = [int(r["series_id"]) for r in rows]
        wanted = set(ids)
        tag_names: dict[int, list[str]] = {i: [] for i in ids}
        used = [t for t in self.get_all("metadata/seriestags") if t.get("series_count")]
        if used and len(ids) <= max(20, len(used)):  # a page of series: ask each series
            per_series = self._map(lambda i: self.get(f"metadata/series/{i}/seriestags"), ids, False, "tags")
            for series_id, tags in zip(ids, per_series, strict=True):
                tag_names[series_id] = [str(t["name"]) for t in tags]
        else:  # many series: ask each tag which series carry it
            for tag in used:
                for r in self.get_all("metadata/flatseries", {"seriestags": tag["id"]}):
                    if int(r["id"]) in wanted:
                        tag_names[int(r["id"])].append(str(tag["name"]))
        type_names: dict[int, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), PAGE):
            for entry in self.post("seriestypes/series/query", json={"series_ids": ids[start : start + PAGE]}):
                type_names.setdefault(int(entry["series_id"]), []).append(str(entry["series_type"]["name"]))
        for r in rows:
            r["source"] = sources.get(r.get("source_id"), "")
            r["tags"] = sorted(tag_names[int(r["series_id"])])
            r["series_types"] = sorted(type_names.get(int(r["series_id"]), []))

    def patient(self, patient_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/patients/{int(patient_id)}"))

    def study(self, study_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/studies/{int(study_id)}"))

    def series_record(self, series_id: int) -> dict[str, Any]:
        """One flat series row (patient, study and series attributes) as a dict."""
        return _flatten_series(self.get(f"metadata/flatseries/{int(series_id)}"))

    def image(self, image_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/images/{int(image_id)}"))

    def image_ids(self, series_id: int) -> list[int]:
        return [int(r["id"]) for r in self.get_all("metadata/images", {"seriesid": int(series_id)})]

    def attributes(self, image_id: int) -> pd.DataFrame:
        """Every attribute before the pixel data (tag, name, vr, value, depth, path)."""
        rows = []
        for a in self.get(f"images/{int(image_id)}/attributes"):
            values = [str(v) for v in a.get("values") or []]
            rows.append({**a, "name": a.get("keyword", ""), "value": "\\".join(values), "path": a.get("tag_path", "")})
        return frame(rows, ATTRIBUTE_COLUMNS)

    def source_of(self, series_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/series/{int(series_id)}/source"))
