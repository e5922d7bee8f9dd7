"""/slicebox/api/metadata: browse and query patient → study → series → image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from ..index import Index, Query, QueryProperty, query
from ..model import SOURCE_TYPES
from .base import API, SliceboxHandler


class _ListHandler(SliceboxHandler):
    def paging(self) -> dict[str, Any]:
        """``startindex``/``count``, and ``afterid`` (keyset: the rows after that id, in id order)."""
        after = self.get_argument("afterid", "")
        return {
            "start_index": self.int_argument("startindex", 0, minimum=0),
            "count": self.int_argument("count", 20, minimum=0),
            "after_id": self.int_argument("afterid", minimum=0) if after else None,
        }

    def ordering(self) -> dict[str, Any]:
        return {
            "order_by": self.get_argument("orderby", None) or None,
            "order_ascending": self.bool_argument("orderascending", True),
        }

    def sources(self) -> list[int]:
        """``sources=user:1,box:2`` (Slicebox's form) → source ids."""
        raw = self.get_argument("sources", "")
        ids: list[int] = []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            source_type, _, source_id = part.partition(":")
            if source_type not in SOURCE_TYPES or not source_id.isdigit():
                raise InvalidInput(
                    "sources must be a comma separated list of sourceType:sourceId elements, e.g. box:23,box:12,user:2"
                )
            ids.append(int(source_id))
        return ids

    def organizing(self) -> dict[str, Any]:
        """``seriestypes=2,5``, ``seriestags=1,3`` and ``seriestagsmatch=any|all`` (default any)."""
        values: dict[str, Any] = {}
        for name, key in (("seriestypes", "series_types"), ("seriestags", "series_tags")):
            parts = [p.strip() for p in self.get_argument(name, "").split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise InvalidInput(
                    "Series types and series tags parameters must be formatted as a comma separated "
                    "list of ids, e.g. 2,5,11"
                )
            values[key] = [int(p) for p in parts]
        values["series_tags_match"] = self.get_argument("seriestagsmatch", "any") or "any"
        return values


def _listing(index: Index, listing: Callable[..., list[Any]], *args: Any, **kwargs: Any) -> list[Any]:
    """One of index/query.py's listings on a read connection (they take the series tag and type filters)."""
    with index.reading() as conn:
        return listing(conn, *args, **kwargs)


class _LevelListHandler(_ListHandler):
    """GET one level's list: its parent's id, ``filter`` where the level has text to search, the sources and
    series types and tags where it holds series, paging and order -- read in that order, as errors name them."""

    #: the index/query.py function that lists the level
    listing: ClassVar[Callable[..., list[Any]]]
    #: the query argument with the parent's id ("": the level is listed whole)
    parent = ""
    filtered = False
    organized = True

    @web.authenticated
    @authorized
    async def get(self) -> None:
        args = [self.int_argument(self.parent)] if self.parent else []
        options: dict[str, Any] = {}
        if self.filtered:
            options["filter"] = self.get_argument("filter", "")
        if self.organized:
            options.update(sources=self.sources(), **self.organizing())
        options.update(self.paging())
        options.update(self.ordering())
        self.write_json(await self.blocking(_listing, self.context.index, type(self).listing, *args, **options))


class PatientsHandler(_LevelListHandler):
    listing = query.list_patients
    filtered = True


class StudiesHandler(_LevelListHandler):
    listing = query.list_studies
    parent = "patientid"


class SeriesListHandler(_LevelListHandler):
    listing = query.list_series
    parent = "studyid"


class ImagesListHandler(_LevelListHandler):
    listing = query.list_images
    parent = "seriesid"
    filtered = True
    organized = False


class FlatSeriesListHandler(_LevelListHandler):
    listing = query.list_flat_series
    filtered = True


_GETTERS = {
    "patients": "get_patient",
    "studies": "get_study",
    "series": "get_series",
    "images": "get_image",
    "flatseries": "get_flat_series",
}
_QUERIES = {
    "patients": "query_patients",
    "studies": "query_studies",
    "series": "query_series",
    "images": "query_images",
    "flatseries": "query_flat_series",
}


class ItemHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, level: str, item_id: str) -> None:
        getter = getattr(self.context.index, _GETTERS[level])
        self.write_json(await self.blocking(getter, int(item_id)))


class QueryHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, level: str) -> None:
        query = query_from_json(self.json_body())
        run = getattr(self.context.index, _QUERIES[level])
        self.write_json(await self.blocking(run, query))


class ImagesBelowHandler(SliceboxHandler):
    """All images of a patient or study (unknown id → [])."""

    @web.authenticated
    @authorized
    async def get(self, level: str, item_id: str) -> None:
        run = self.context.index.images_of_patient if level == "patients" else self.context.index.images_of_study
        self.write_json(await self.blocking(run, int(item_id)))


class SeriesSourceHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, series_id: str) -> None:
        self.write_json(await self.blocking(self.context.index.series_source, int(series_id)))


def query_from_json(body: Any) -> Query:
    """Parse a query body: ``{"start_index", "count", "order": {"order_by", "order_ascending"},
    "query_properties": [{"property_name", "operator", "property_value"}],
    "filters": {"sources": [ids], "series_types": [ids], "series_tags": [ids], "series_tags_match": "any"|"all"}}``."""
    if not isinstance(body, dict):
        raise InvalidInput("a query must be a JSON object")
    order = body.get("order") or {}
    filters = body.get("filters") or {}
    properties = body.get("query_properties") or []
    if not isinstance(order, dict) or not isinstance(filters, dict) or not isinstance(properties, list):
        raise InvalidInput("order and filters must be objects, query_properties a list")
    try:
        query_properties = [
            QueryProperty(
                property_name=str(p["property_name"]),
                operator=str(p.get("operator", "=")),
                property_value=str(p["property_value"]),
            )
            for p in properties
        ]
        start_index = int(body.get("start_index", 0))
        count = int(body.get("count", 20))
        after_id = None if body.get("after_id") is None else int(body["after_id"])
        sources = [int(s) for s in filters.get("sources", [])]
        series_types = _ids(filters.get("series_types") or filters.get("seriesTypeIds") or [], "series_types")
        series_tags = _ids(filters.get("series_tags") or filters.get("seriesTagIds") or [], "series_tags")
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"malformed query: {e}") from None
    order_by = order.get("order_by")
    return Query(
        start_index=start_index,
        count=count,
        order_by=str(order_by) if order_by else None,
        order_ascending=bool(order.get("order_ascending", True)),
        query_properties=query_properties,
        sources=sources,
        series_types=series_types,
        series_tags=series_tags,
        series_tags_match=str(filters.get("series_tags_match", "any")),
        after_id=after_id,
    )


def _ids(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidInput(f"filters.{name} must be a list of integer ids, e.g. [2, 5]")
    return value


_M = rf"{API}/metadata"
_LEVEL = r"(patients|studies|series|images|flatseries)"

default_handlers = [
    (rf"{_M}/patients", PatientsHandler),
    (rf"{_M}/studies", StudiesHandler),
    (rf"{_M}/series", SeriesListHandler),
    (rf"{_M}/images", ImagesListHandler),
    (rf"{_M}/flatseries", FlatSeriesListHandler),
    (rf"{_M}/{_LEVEL}/query", QueryHandler),
    (rf"{_M}/{_LEVEL}/(\d+)", ItemHandler),
    (rf"{_M}/(patients|studies)/(\d+)/images", ImagesBelowHandler),
    (rf"{_M}/series/(\d+)/source", SeriesSourceHandler),
]
