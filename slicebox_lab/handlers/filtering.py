"""/slicebox/api/filtering: tag filters (blacklists, whitelists of tag paths) and their attachment to sources.

Thin adapters over :mod:`slicebox_lab.routing.filtering`, which validates every body and applies the
filters at ingest; a change here applies to the next image a source delivers.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..routing import filtering
from .base import API, SliceboxHandler


class FiltersHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every tag filter with its tag paths."""
        found = await self.blocking(filtering.list_filters, self.context.index)
        self.write_json([f.to_json() for f in found])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "type": "WHITELIST"|"BLACKLIST", "tagPaths"?: [...]}`` → 201 with the filter."""
        created = await self.blocking(filtering.create_filter, self.context.index, self.json_body())
        self.write_json(created.to_json(), status=201)


class FilterHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, filter_id: str) -> None:
        found = await self.blocking(filtering.get_filter, self.context.index, int(filter_id))
        self.write_json(found.to_json())

    @web.authenticated
    @authorized
    async def delete(self, filter_id: str) -> None:
        """Delete the filter, its tag paths and its attachments to sources."""
        await self.blocking(filtering.delete_filter, self.context.index, int(filter_id))
        self.set_status(204)
        await self.finish()


class FilterTagPathsHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, filter_id: str) -> None:
        found = await self.blocking(filtering.list_tag_paths, self.context.index, int(filter_id))
        self.write_json([p.to_json() for p in found])

    @web.authenticated
    @authorized
    async def post(self, filter_id: str) -> None:
        """``{"tagPath": "..."}`` → 201 with the tag path added."""
        added = await self.blocking(filtering.add_tag_path, self.context.index, int(filter_id), self.json_body())
        self.write_json(added.to_json(), status=201)


class FilterTagPathHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def delete(self, filter_id: str, path_id: str) -> None:
        await self.blocking(filtering.delete_tag_path, self.context.index, int(filter_id), int(path_id))
        self.set_status(204)
        await self.finish()


class AssociationsHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every attachment of a filter to a source."""
        found = await self.blocking(filtering.list_associations, self.context.index)
        self.write_json([a.to_json() for a in found])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"sourceType", "sourceName" | "sourceId", "filterId"}`` → 201 with the attachment."""
        created = await self.blocking(filtering.create_association, self.context.index, self.json_body())
        self.write_json(created.to_json(), status=201)


class AssociationHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def delete(self, association_id: str) -> None:
        await self.blocking(filtering.delete_association, self.context.index, int(association_id))
        self.set_status(204)
        await self.finish()


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/filtering/filters", FiltersHandler),
    (rf"{API}/filtering/filters/{_ID}", FilterHandler),
    (rf"{API}/filtering/filters/{_ID}/tagpaths", FilterTagPathsHandler),
    (rf"{API}/filtering/filters/{_ID}/tagpaths/{_ID}", FilterTagPathHandler),
    (rf"{API}/filtering/associations", AssociationsHandler),
    (rf"{API}/filtering/associations/{_ID}", AssociationHandler),
]
