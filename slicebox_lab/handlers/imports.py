"""/slicebox/api/import/sessions: named upload batches with counters (Slicebox §2.7)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from ..watch.imports import ImportSessions
from .base import API, SliceboxHandler


class _ImportHandler(SliceboxHandler):
    @property
    def sessions(self) -> ImportSessions:
        return ImportSessions(self.context)


class SessionsHandler(_ImportHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        start_index = self.int_argument("startindex", 0, minimum=0)
        count = self.int_argument("count", 20, minimum=0)
        self.write_json(await self.blocking(self.sessions.list, start_index, count))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name"}`` → 201, owned by the caller; the caller's session of that name if it exists."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('the body must be a JSON object {"name": ...}')
        name, *former = self.owner_names()
        session, _ = await self.blocking(self.sessions.create, body.get("name"), name, tuple(former))
        self.write_json(session, status=201)


class SessionHandler(_ImportHandler):
    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        self.write_json(await self.blocking(self.sessions.get, int(session_id)))

    @web.authenticated
    @authorized
    async def delete(self, session_id: str) -> None:
        """Delete the session (idempotent); its images stay."""
        await self.blocking(self.sessions.delete, int(session_id))
        self.set_status(204)
        self.finish()


class SessionImagesHandler(_ImportHandler):
    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        """The images last stored through this session that still exist."""
        self.write_json(await self.blocking(self.sessions.images, int(session_id)))

    @web.authenticated
    @authorized
    async def post(self, session_id: str) -> None:
        """One DICOM file (raw ``application/dicom`` body or multipart ``file``): 201 new, 200 already stored."""
        session_key = int(session_id)
        data, filename = self.uploaded_file()
        try:
            result = await self.blocking(self.sessions.add_image, session_key, data)
        except InvalidInput as error:
            if filename:  # Slicebox names the file of a refused multipart upload
                error.message = f"{filename}: {error.message}"
            raise
        self.write_json(result.image, status=201 if result.image_added else 200)


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/import/sessions", SessionsHandler),
    (rf"{API}/import/sessions/{_ID}", SessionHandler),
    (rf"{API}/import/sessions/{_ID}/images", SessionImagesHandler),
]
