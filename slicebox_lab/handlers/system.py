"""/slicebox/api: sources, system health and information, the DICOM dictionary, the log."""

from __future__ import annotations

import platform

import pydicom
import pynetdicom
from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import dicom
from .._version import __version__
from ..errors import InvalidInput
from .base import API, SliceboxHandler


class SourcesHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(await self.blocking(self.context.index.sources))


class HealthHandler(SliceboxHandler):
    """Liveness, and that the index answers (a load balancer's check)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.blocking(self.context.index.ping)
        self.write_json({"status": "ok"})


class InformationHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        counts = await self.blocking(self.context.index.counts)
        engine = self.context.index.engine
        self.write_json(
            {
                "version": __version__,
                "python": platform.python_version(),
                "pydicom": pydicom.__version__,
                "pynetdicom": pynetdicom.__version__,
                "database": engine.dialect.name,
                "counts": counts,
            }
        )


class KeywordsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, kind: str | None = None) -> None:
        # a scan of the whole data dictionary (~3 ms): off the loop like any other blocking work
        keywords = await self.blocking(dicom.keywords, self.get_argument("filter", ""), kind or "all")  # type: ignore[arg-type]
        self.write_json({"keywords": keywords})


class DictionaryLookupHandler(SliceboxHandler):
    """``vr``, ``vm`` and ``keyword`` take ``?tag=<int>``; ``tag`` takes ``?keyword=``."""

    @web.authenticated
    @authorized
    async def get(self, what: str) -> None:
        if what == "tag":
            keyword = self.get_argument("keyword", "")
            if not keyword:
                raise InvalidInput("query parameter keyword is required")
            self.write_json({"tag": dicom.tag(keyword)})
            return
        tag = self.int_argument("tag", minimum=0)
        if what == "vr":
            self.write_json({"vr": dicom.vr(tag)})
        elif what == "vm":
            self.write_json(dicom.vm(tag))
        else:
            self.write_json({"keyword": dicom.keyword(tag)})


class LogHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(
            await self.blocking(
                self.context.index.list_log,
                start_index=self.int_argument("startindex", 0, minimum=0),
                count=self.int_argument("count", 20, minimum=0),
                subject=self.get_argument("subject", None),
                entry_type=self.get_argument("type", None),
            )
        )

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        await self.blocking(self.context.index.delete_log, None)
        self.set_status(204)
        self.finish()


class LogEntryHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def delete(self, entry_id: str) -> None:
        await self.blocking(self.context.index.delete_log, int(entry_id))
        self.set_status(204)
        self.finish()


_D = rf"{API}/dicom/dictionary"

default_handlers = [
    (rf"{API}/sources", SourcesHandler),
    (rf"{API}/system/health", HealthHandler),
    (rf"{API}/system/information", InformationHandler),
    (rf"{_D}/keywords", KeywordsHandler),
    (rf"{_D}/keywords/(sequence|nonsequence)", KeywordsHandler),
    (rf"{_D}/(vr|vm|keyword|tag)", DictionaryLookupHandler),
    (rf"{API}/log", LogHandler),
    (rf"{API}/log/(\d+)", LogEntryHandler),
]
