"""/slicebox/api/directorywatches: folders whose DICOM files are imported as they arrive."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from ..watch import WatchService
from .base import API, SliceboxHandler


class _WatchHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @property
    def watches(self) -> WatchService:
        return self.service(WatchService)


class WatchesHandler(_WatchHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        start_index = self.int_argument("startindex", 0, minimum=0)
        count = self.int_argument("count", 20, minimum=0)
        self.write_json(await self.blocking(self.watches.list, start_index, count))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "path", "delete_on_import"?}`` → 201 (the existing watch for the same name and path)."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('the body must be a JSON object {"name": ..., "path": ..., "delete_on_import": false}')
        watch = await self.blocking(
            self.watches.add, body.get("name"), body.get("path"), body.get("delete_on_import", False)
        )
        self.write_json(watch, status=201)


class WatchHandler(_WatchHandler):
    @web.authenticated
    @authorized
    async def get(self, watch_id: str) -> None:
        self.write_json(await self.blocking(self.watches.get, int(watch_id)))

    @web.authenticated
    @authorized
    async def delete(self, watch_id: str) -> None:
        """Stop watching (idempotent); the imported images stay."""
        await self.blocking(self.watches.remove, int(watch_id))
        self.set_status(204)
        self.finish()


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/directorywatches", WatchesHandler),
    (rf"{API}/directorywatches/{_ID}", WatchHandler),
]
