"""/slicebox/api/images: upload, download, delete, attributes, PNG, export."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from ..exports import ZipStream, export_entries
from ..model import IngestResult
from .base import API, DICOM_TYPES, SliceboxHandler
from .upload import FileParts, StreamingHandler, form_boundary, stored


@web.stream_request_body
class ImagesHandler(StreamingHandler):
    """Uploads are stored while they arrive (``handlers/upload.py``): no body in memory."""

    async def open_body(self) -> FileParts:
        self._results: list[IngestResult] = []
        content_type = self.request.headers.get("Content-Type", "")
        kind, _, _ = content_type.partition(";")
        kind = kind.strip().lower()
        if kind == "multipart/form-data":
            boundary = form_boundary(content_type)
            return FileParts(self.context, self.user_source(), stored(self._results), boundary, field="file")
        if kind in DICOM_TYPES:
            return FileParts(self.context, self.user_source(), stored(self._results))
        raise InvalidInput(
            f"unsupported Content-Type {kind!r}: send application/dicom or multipart/form-data with a field 'file'"
        )

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Store one DICOM file: raw ``application/dicom`` body or multipart field ``file``."""
        await self.body_complete()
        if not self._results:
            raise InvalidInput("the multipart upload has no field named 'file'")
        result = self._results[0]
        self.write_json(result.image, status=201 if result.image_added else 200)


class ImageHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, image_id: str) -> None:
        """The stored file, streamed."""
        image, stream = await self.blocking(self.context.open_image, int(image_id))
        self.set_header("Content-Type", "application/dicom")
        self.set_header("Content-Length", str(image.size))
        self.set_header("Content-Disposition", f'attachment; filename="{image.id}.dcm"')
        await self.write_stream(stream)
        await self.finish(set_content_type="application/dicom")

    @web.authenticated
    @authorized
    async def delete(self, image_id: str) -> None:
        await self.blocking(self.context.delete_images, [int(image_id)])
        self.set_status(204)
        self.finish()


class DeleteImagesHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Bulk delete; unknown ids are ignored (idempotent, as Slicebox)."""
        ids = self.id_list_body()
        await self.blocking(self.context.delete_images, ids)
        self.set_status(204)
        self.finish()


class AttributesHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, image_id: str) -> None:
        self.write_json(await self.blocking(self.context.attributes, int(image_id)))


class ImageInformationHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, image_id: str) -> None:
        self.write_json(await self.blocking(self.context.image_information, int(image_id)))


class PngHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, image_id: str) -> None:
        png = await self.blocking(
            self.context.png,
            int(image_id),
            self.int_argument("framenumber", 1, minimum=1),
            self.float_argument("windowmin"),
            self.float_argument("windowmax"),
            self.int_argument("imageheight", 0, minimum=0),
        )
        self.set_header("Cache-Control", "private, max-age=3600")
        await self.finish(png, set_content_type="image/png")


class ExportHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Register a selection; the zip is then fetched with GET ?id= (a link a browser can follow)."""
        ids = self.id_list_body()
        if not ids:
            self.set_status(204)
            self.finish()
            return
        self.write_json({"id": self.context.exports.add(ids)}, status=201)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Stream the zip of an export set, one file at a time."""
        ids = self.context.exports.get(self.int_argument("id"))
        entries = await self.blocking(lambda: list(export_entries(self.context.index, ids)))
        if not entries:
            raise InvalidInput("none of the images of this export set exist any more")
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", 'attachment; filename="slicebox-export.zip"')
        zip_stream = ZipStream()
        for path, image in entries:
            _, stream = await self.blocking(self.context.open_image, image.id)
            try:
                pieces = zip_stream.add(path, stream)
                while True:
                    chunk = await self.blocking(next, pieces, None)
                    if chunk is None:
                        break
                    self.write(chunk)
                    await self.flush()
            finally:
                stream.close()
        for chunk in zip_stream.finish():
            self.write(chunk)
        await self.finish(set_content_type="application/zip")


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/images", ImagesHandler),
    (rf"{API}/images/delete", DeleteImagesHandler),
    (rf"{API}/images/export", ExportHandler),
    (rf"{API}/images/{_ID}", ImageHandler),
    (rf"{API}/images/{_ID}/attributes", AttributesHandler),
    (rf"{API}/images/{_ID}/imageinformation", ImageInformationHandler),
    (rf"{API}/images/{_ID}/png", PngHandler),
]
