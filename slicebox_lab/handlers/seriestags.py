"""/slicebox/api/metadata/seriestags and /metadata/series/{id}/seriestags: free-form labels on series."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..organize import tags
from .base import API, SliceboxHandler


class SeriesTagsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """All tags (paged; ``orderby`` id or name; ``filter`` a substring of the name)."""
        found = await self.blocking(
            tags.list_tags,
            self.context.index,
            start_index=self.int_argument("startindex", 0, minimum=0),
            count=self.int_argument("count", 20, minimum=0),
            order_by=self.get_argument("orderby", None) or None,
            order_ascending=self.bool_argument("orderascending", True),
            filter=self.get_argument("filter", ""),
        )
        self.write_json([t.to_json() for t in found])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name"}`` → 201 with the tag; a taken name → 409."""
        created = await self.blocking(tags.create_tag, self.context.index, self.json_body())
        self.write_json(created.to_json(), status=201)


class SeriesTagHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, tag_id: str) -> None:
        self.write_json((await self.blocking(tags.get_tag, self.context.index, int(tag_id))).to_json())

    @web.authenticated
    @authorized
    async def put(self, tag_id: str) -> None:
        """Rename: ``{"name"}``."""
        renamed = await self.blocking(tags.rename_tag, self.context.index, int(tag_id), self.json_body())
        self.write_json(renamed.to_json())

    @web.authenticated
    @authorized
    async def delete(self, tag_id: str) -> None:
        await self.blocking(tags.delete_tag, self.context.index, int(tag_id))
        self.set_status(204)
        await self.finish()


class TagSelectionHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, tag_id: str) -> None:
        """Bulk tagging: ``[series ids]`` or ``{"series_ids": [...]}``, all or none (unknown → 404)."""
        added = await self.blocking(tags.add_series_to_tag, self.context.index, int(tag_id), self.json_body())
        self.write_json(added)


class TagSelectionRemoveHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, tag_id: str) -> None:
        """Bulk untagging: ``[series ids]`` or ``{"series_ids": [...]}``; the tag stays."""
        removed = await self.blocking(tags.remove_series_from_tag, self.context.index, int(tag_id), self.json_body())
        self.write_json(removed)


class SeriesSeriesTagsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, series_id: str) -> None:
        found = await self.blocking(tags.tags_of_series, self.context.index, int(series_id))
        self.write_json([t.to_json() for t in found])

    @web.authenticated
    @authorized
    async def post(self, series_id: str) -> None:
        """``{"name"}`` (created if new) or ``{"id"}`` → 201 with the tag."""
        tag = await self.blocking(tags.tag_series, self.context.index, int(series_id), self.json_body())
        self.write_json(tag.to_json(), status=201)


class SeriesSeriesTagHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def delete(self, series_id: str, tag_id: str) -> None:
        await self.blocking(tags.untag_series, self.context.index, int(series_id), int(tag_id))
        self.set_status(204)
        await self.finish()


_M = rf"{API}/metadata"
_ID = r"(\d+)"

default_handlers = [
    (rf"{_M}/seriestags", SeriesTagsHandler),
    (rf"{_M}/seriestags/{_ID}", SeriesTagHandler),
    (rf"{_M}/seriestags/{_ID}/series", TagSelectionHandler),
    (rf"{_M}/seriestags/{_ID}/series/remove", TagSelectionRemoveHandler),
    (rf"{_M}/series/{_ID}/seriestags", SeriesSeriesTagsHandler),
    (rf"{_M}/series/{_ID}/seriestags/{_ID}", SeriesSeriesTagHandler),
]
