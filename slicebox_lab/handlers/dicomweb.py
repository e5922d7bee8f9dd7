"""<base_url>slicebox/dicom-web/: QIDO-RS, WADO-RS and STOW-RS (PS3.18) over the node's index and storage.

Thin adapters over :mod:`slicebox_lab.dicomweb` (house rule 2): parse the request, call the
blocking domain functions through ``run_blocking``, stream the answer one part at a time.  The
same authentication and authorization as the REST API (token, cookie, JupyterHub; roles).
"""

from __future__ import annotations

import json
import re
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..dicomweb import multipart, qido, stow, wado
from ..dicomweb.errors import NotAcceptable
from ..errors import InvalidInput
from ..upload import Upload
from .base import SliceboxHandler
from .upload import FileParts, StreamingHandler

DICOMWEB = r"/slicebox/dicom-web"
DICOM_JSON = "application/dicom+json"
_CHUNK = 1 << 20


class DicomWebHandler(SliceboxHandler):
    """Shared by every DICOMweb route: the service root URL, the Accept list, the audit entry."""

    #: GETs that let data leave the node are recorded in the audit trail; searches are not
    audit_get = True

    def service_root(self) -> str:
        """Absolute URL of the DICOMweb service, ending in ``/`` (for RetrieveURL and BulkDataURI)."""
        base = self.settings.get("base_url", "/")
        return f"{self.request.protocol}://{self.request.host}{base.rstrip('/')}/slicebox/dicom-web/"

    def accept(self) -> list[multipart.MediaType]:
        return multipart.parse_accept(self.request.headers.get("Accept"))

    def arguments(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, values in self.request.query_arguments.items():
            try:
                out[name] = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError:
                raise InvalidInput(f"query parameter {name} is not UTF-8") from None
        return out

    def write_dicom_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(value), set_content_type=DICOM_JSON)

    def audit_entry(self) -> tuple[str, str, str] | None:
        """Stores, and reads of instances, are recorded (searches are not)."""
        method = self.request.method or ""
        if method not in ("GET", "POST") or (method == "GET" and not self.audit_get):
            return None
        return ("ingest" if method == "POST" else "export"), self.request.path, "-"


# ---------------------------------------------------------------------------------------------- QIDO-RS


class _Stow(StreamingHandler, DicomWebHandler):
    """STOW-RS: each part is stored while the rest of the body arrives (``handlers/upload.py``); the
    response dataset says how each went."""

    async def open_body(self) -> FileParts:
        boundary = multipart.related_boundary(self.request.headers.get("Content-Type"), "application/dicom")
        study = self.path_args[0] if self.path_args else None
        self._stow = stow.StowResponse(self.service_root())
        index = self.context.index

        def series_uids(series_id: int) -> tuple[str, str]:
            flat = index.get_flat_series(series_id)
            return flat.study.StudyInstanceUID, flat.series.SeriesInstanceUID

        def on_part(upload: Upload, headers: dict[str, str]) -> None:
            stow.store_part(upload, headers.get("content-type", ""), study, series_uids, self._stow)

        return FileParts(self.context, self.user_source(), on_part, boundary, fix_preamble=True)

    async def store(self, study: str | None) -> None:
        await self.body_complete()
        response = self._stow
        self.audit_detail = f"{len(response.stored)} stored, {len(response.failed)} failed"
        self.write_dicom_json(response.to_json(study), status=response.status)


class _SearchHandler(DicomWebHandler):
    audit_get = False
    level = "study"

    async def search(self, scope: dict[str, str]) -> None:
        if not any(m.matches(DICOM_JSON) or m.matches("application/json") for m in self.accept()):
            raise NotAcceptable("search results are application/dicom+json")
        result = await self.blocking(
            qido.search,
            self.context.index,
            self.context.storage,
            self.level,
            self.arguments(),
            self.service_root(),
            scope,
        )
        for warning in result.warnings:
            self.add_header("Warning", warning)
        self.write_dicom_json(result.items)


@web.stream_request_body
class StudiesHandler(_Stow, _SearchHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """QIDO-RS: search for studies."""
        await self.search({})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """STOW-RS: store instances of any studies."""
        await self.store(None)


class AllSeriesHandler(_SearchHandler):
    level = "series"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.search({})


class AllInstancesHandler(_SearchHandler):
    level = "instance"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.search({})


class StudySeriesHandler(_SearchHandler):
    level = "series"

    @web.authenticated
    @authorized
    async def get(self, study: str) -> None:
        await self.search({"StudyInstanceUID": study})


class StudyInstancesHandler(_SearchHandler):
    level = "instance"

    @web.authenticated
    @authorized
    async def get(self, study: str) -> None:
        await self.search({"StudyInstanceUID": study})


class SeriesInstancesHandler(_SearchHandler):
    level = "instance"

    @web.authenticated
    @authorized
    async def get(self, study: str, series: str) -> None:
        await self.search({"StudyInstanceUID": study, "SeriesInstanceUID": series})


# ---------------------------------------------------------------------------------------------- STOW-RS


# ---------------------------------------------------------------------------------------------- WADO-RS


class _RetrieveHandler(DicomWebHandler):
    async def retrieve(self, study: str, series: str | None = None, sop: str | None = None) -> None:
        """The instances as multipart/related; type="application/dicom", one part at a time."""
        instances = await self.blocking(wado.locate, self.context.index, study, series, sop)
        syntaxes = wado.choose_transfer_syntaxes(self.accept(), instances)
        writer = multipart.PartWriter("application/dicom")
        storage = self.context.storage
        root = self.service_root()
        self.set_header("Content-Type", writer.content_type)
        for instance, syntax in zip(instances, syntaxes, strict=True):
            part_type = "application/dicom" + (f"; transfer-syntax={syntax}" if syntax else "")
            if syntax is not None:
                data = await self.blocking(wado.transcoded, storage, instance, syntax)
                self.write(writer.part_header(instance.url(root), len(data), part_type))
                self.write(data)
            else:
                stream = await self.blocking(storage.open, instance.storage_key)
                ts = f"; transfer-syntax={instance.TransferSyntaxUID}" if instance.TransferSyntaxUID else ""
                self.write(writer.part_header(instance.url(root), instance.size, "application/dicom" + ts))
                await self.write_stream(stream, _CHUNK)
            self.write(writer.part_end())
            await self.flush()
        self.write(writer.close())
        await self.finish(set_content_type=writer.content_type)

    async def metadata(self, study: str, series: str | None = None, sop: str | None = None) -> None:
        """DICOM JSON of each instance, streamed as one JSON array."""
        if not any(m.matches(DICOM_JSON) or m.matches("application/json") for m in self.accept()):
            raise NotAcceptable("metadata is application/dicom+json")
        instances = await self.blocking(wado.locate, self.context.index, study, series, sop)
        root = self.service_root()
        self.set_header("Content-Type", DICOM_JSON)
        cache = self.settings.get("slicebox_dicomweb_metadata")
        if cache is None:
            cache = self.settings["slicebox_dicomweb_metadata"] = wado.MetadataCache()
        # a few instances per thread hop: one hop per instance cost more than reading a small header
        chunk = 64
        for start in range(0, len(instances), chunk):
            text = await self.blocking(cache.texts, self.context.storage, instances[start : start + chunk], root)
            self.write(("[" if start == 0 else ",") + text)
            await self.flush()
        self.write("[]" if not instances else "]")
        await self.finish(set_content_type=DICOM_JSON)


@web.stream_request_body
class StudyHandler(_Stow, _RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str) -> None:
        await self.retrieve(study)

    @web.authenticated
    @authorized
    async def post(self, study: str) -> None:
        """STOW-RS: store instances of this study (others fail with 0xA900)."""
        await self.store(study)


class SeriesHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str) -> None:
        await self.retrieve(study, series)


class InstanceHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str, sop: str) -> None:
        await self.retrieve(study, series, sop)


class StudyMetadataHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str) -> None:
        await self.metadata(study)


class SeriesMetadataHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str) -> None:
        await self.metadata(study, series)


class InstanceMetadataHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str, sop: str) -> None:
        await self.metadata(study, series, sop)


def _octet_accepted(accept: list[multipart.MediaType]) -> bool:
    for media in accept:
        if media.type in ("*/*", "multipart/*", "application/octet-stream"):
            return True
        if media.type == "multipart/related":
            kind = media.parameters.get("type", "application/octet-stream").lower()
            if kind in ("application/octet-stream", "*/*", "application/*"):
                return True
    return False


class FramesHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str, sop: str, frames: str) -> None:
        """Native pixel bytes of each asked frame, one multipart/related part each."""
        numbers = wado.frame_numbers(frames)
        if not _octet_accepted(self.accept()):
            raise NotAcceptable('frames are multipart/related; type="application/octet-stream"')
        instance = (await self.blocking(wado.locate, self.context.index, study, series, sop))[0]
        source = await self.blocking(wado.open_frames, self.context.storage, instance, numbers)
        writer = multipart.PartWriter("application/octet-stream")
        self.set_header("Content-Type", writer.content_type)
        url = instance.url(self.service_root())
        for number in numbers:
            data = await self.blocking(source.frame, number)
            self.write(writer.part_header(f"{url}/frames/{number}", len(data)))
            self.write(data)
            self.write(writer.part_end())
            await self.flush()
        self.write(writer.close())
        await self.finish(set_content_type=writer.content_type)


class BulkDataHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str, sop: str, path: str) -> None:
        """The value of one binary element (BulkDataURI of the metadata)."""
        if not _octet_accepted(self.accept()):
            raise NotAcceptable('bulk data is multipart/related; type="application/octet-stream"')
        instance = (await self.blocking(wado.locate, self.context.index, study, series, sop))[0]
        data = await self.blocking(wado.bulk_data, self.context.storage, instance, path)
        writer = multipart.PartWriter("application/octet-stream")
        self.set_header("Content-Type", writer.content_type)
        self.write(writer.part_header(f"{instance.url(self.service_root())}/bulkdata/{path}", len(data)))
        self.write(data)
        self.write(writer.part_end())
        self.write(writer.close())
        await self.finish(set_content_type=writer.content_type)


class RenderedHandler(_RetrieveHandler):
    @web.authenticated
    @authorized
    async def get(self, study: str, series: str, sop: str, frame: str | None = None) -> None:
        """One frame (the first, for /rendered) as PNG or JPEG, by the node's one renderer."""
        kind = wado.rendered_type(self.accept())
        window = wado.window_of(self.get_argument("window", None))
        quality = self.int_argument("quality", 90, minimum=1)
        if quality > 100:
            raise InvalidInput("quality is 1..100")
        number = int(frame) if frame is not None else 1
        if number < 1:
            raise InvalidInput("frame numbers start at 1")
        instance = (await self.blocking(wado.locate, self.context.index, study, series, sop))[0]
        context = self.context

        def dataset() -> Any:
            return context.dataset(instance.image_id)

        data = await self.blocking(wado.render, dataset, number, kind, window, quality)
        await self.finish(data, set_content_type=kind)


_UID = r"([^/]+)"
_STUDY = rf"{DICOMWEB}/studies/{_UID}"
_SERIES = rf"{_STUDY}/series/{_UID}"
_INSTANCE = rf"{_SERIES}/instances/{_UID}"

default_handlers = [
    (rf"{DICOMWEB}/studies", StudiesHandler),
    (rf"{DICOMWEB}/series", AllSeriesHandler),
    (rf"{DICOMWEB}/instances", AllInstancesHandler),
    (_STUDY, StudyHandler),
    (rf"{_STUDY}/metadata", StudyMetadataHandler),
    (rf"{_STUDY}/series", StudySeriesHandler),
    (rf"{_STUDY}/instances", StudyInstancesHandler),
    (_SERIES, SeriesHandler),
    (rf"{_SERIES}/metadata", SeriesMetadataHandler),
    (rf"{_SERIES}/instances", SeriesInstancesHandler),
    (_INSTANCE, InstanceHandler),
    (rf"{_INSTANCE}/metadata", InstanceMetadataHandler),
    (rf"{_INSTANCE}/frames/([^/]+)", FramesHandler),
    (rf"{_INSTANCE}/rendered", RenderedHandler),
    (rf"{_INSTANCE}/frames/(\d+)/rendered", RenderedHandler),
    (rf"{_INSTANCE}/bulkdata/(.+)", BulkDataHandler),
]

#: every DICOMweb route pattern, for tests that walk the route table
ROUTES = [re.compile(pattern) for pattern, _ in default_handlers]
