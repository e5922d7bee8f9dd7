"""/slicebox/api/anonymization and /slicebox/api/images/{id}/anonymize[d]: de-identify stored images.

Thin adapters over ``SliceboxContext.anonymized_bytes`` / ``anonymize_in_place`` (the one way to
anonymize).  The body names the options of the basic profile: ``{"options": ["RETAIN_UIDS"]}``;
an empty body or ``{}`` is the basic profile alone.  Images that may carry text in their pixels are
read and refused (422) or masked as ``"burnedInText"`` says (``anonymization/pixeltext.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..anonymization import Option, Profile, keystore
from ..anonymization import jobs as anonymization_jobs
from ..dicom.tagpath import TagValue, parse_tag_values
from ..errors import InvalidInput
from .base import API, SliceboxHandler

if TYPE_CHECKING:
    from ..context import SliceboxContext
    from ..workers.tasks import Anonymized


def _option_json(option: Option) -> dict[str, str]:
    return {"name": option.name, "title": option.title, "description": option.description, "code": option.code}


class AnonymizationOptionsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every option that can be added to the basic profile."""
        self.write_json([_option_json(option) for option in Option])


class _ProfileHandler(SliceboxHandler):
    def profile_body(self) -> Any:
        """The JSON body; an empty body is ``{}`` (the basic profile, no tag values)."""
        return self.json_body() if self.request.body.strip() else {}

    async def profile(self) -> Profile:
        """The profile the body asks for (empty body or ``{}``: the basic profile; see ``Profile.from_json``)."""
        return await self.blocking(Profile.from_json, self.profile_body())

    def tag_values(self) -> tuple[TagValue, ...]:
        """``"tagValues": [{"tagPath": "PatientName", "value": "anon 001"}]`` of the body, written after the profile."""
        body = self.profile_body()
        return parse_tag_values(body.get("tagValues") if isinstance(body, dict) else None)


class AnonymizedImageHandler(_ProfileHandler):
    @web.authenticated
    @authorized
    async def post(self, image_id: str) -> None:
        """The image de-identified, as a Part-10 file; nothing stored changes."""
        context = self.context
        data, result = await self.blocking(
            _anonymized_copy, context, int(image_id), self.profile_body(), self.tag_values()
        )
        self.set_header("Content-Type", "application/dicom")
        self.set_header("Content-Length", str(result.size))
        self.set_header("Content-Disposition", f'attachment; filename="{int(image_id)}-anonymized.dcm"')
        if data is not None:
            self.write(data)
        else:
            try:
                await self.write_stream(await self.blocking(open, result.path, "rb"))
            finally:
                await self.blocking(context.release, result)
        await self.finish(set_content_type="application/dicom")


#: an anonymized copy up to this size is answered in one piece (it sits in the spool, in RAM where Linux has
#: /dev/shm): one trip off the event loop per download instead of five (profile, copy, open, read, release)
_WHOLE = 16 << 20


def _anonymized_copy(
    context: SliceboxContext, image_id: int, body: Any, tag_values: tuple[TagValue, ...]
) -> tuple[bytes | None, Anonymized]:
    """The de-identified copy of the image and, up to ``_WHOLE`` bytes, its content (the spool file then
    released); a larger one is left in the spool to stream."""
    result = context.anonymized_copy(image_id, Profile.from_json(body), tag_values)
    return (None if result.size > _WHOLE else context.take(result)), result


class AnonymizeImageHandler(_ProfileHandler):
    @web.authenticated
    @authorized
    async def put(self, image_id: str) -> None:
        """Replace the stored image by its de-identified version; answers the new image."""
        profile = await self.profile()
        result = await self.blocking(self.context.anonymize_in_place, int(image_id), profile, self.tag_values())
        self.write_json(result.image)


class BulkAnonymizeHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"imageIds": [...], "options": [...], "imageTagValues"?: [...]}`` → 201 with the ``anonymize`` job."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('the body must be a JSON object like {"imageIds": [1, 2], "options": []}')
        profile_json = {k: v for k, v in body.items() if k not in ("imageIds", "imageTagValues")}
        job = await self.blocking(
            anonymization_jobs.submit_anonymize,
            self.context,
            body.get("imageIds"),
            profile_json,
            body.get("imageTagValues"),
            owner=self.user_name(),
        )
        self.write_json(job, status=201)


class ModifyImageHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def put(self, image_id: str) -> None:
        """``[{"tagPath", "value"}]`` (or ``{"tagValues": [...]}``) → 200 with the modified image (a new id)."""
        body = self.json_body()
        values = parse_tag_values(body.get("tagValues") if isinstance(body, dict) else body)
        result = await self.blocking(self.context.modify, int(image_id), values)
        self.write_json(result.image)


class KeysHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """A page of anonymization keys (``startindex``, ``count``, ``orderby``, ``orderascending``, ``filter``)."""
        keys = await self.blocking(
            keystore.list_keys,
            self.context.index,
            self.int_argument("startindex", 0, minimum=0),
            self.int_argument("count", 20, minimum=0),
            self.get_argument("orderby", None) or None,
            self.bool_argument("orderascending", True),
            self.get_argument("filter", None) or None,
        )
        self.write_json(keys)


class KeyHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, key_id: str) -> None:
        self.write_json(await self.blocking(keystore.get_key, self.context.index, int(key_id)))

    @web.authenticated
    @authorized
    async def delete(self, key_id: str) -> None:
        """Forget a key: data coming back that only it matched is then stored as it arrives."""
        await self.blocking(keystore.delete_key, self.context.index, int(key_id))
        self.set_status(204)
        await self.finish()


class KeyValuesHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, key_id: str) -> None:
        """The key attributes of one key (real and anonymized values, level)."""
        self.write_json(await self.blocking(keystore.key_values, self.context.index, int(key_id)))


class KeysCsvHandler(SliceboxHandler):
    #: its own resource, so an Authorizer can keep the real identities to administrators
    auth_resource = "slicebox-admin-all"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every key and key value as ``;``-separated CSV, streamed."""
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="slicebox-anonymization-keys.csv"')
        lines = keystore.csv_lines(self.context.index)
        while True:
            chunk = await self.blocking(next, lines, None)
            if chunk is None:
                break
            self.write(chunk.encode("utf-8"))
            await self.flush()
        await self.finish()


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/anonymization/options", AnonymizationOptionsHandler),
    (rf"{API}/images/{_ID}/anonymized", AnonymizedImageHandler),
    (rf"{API}/images/{_ID}/anonymize", AnonymizeImageHandler),
    (rf"{API}/images/{_ID}/modify", ModifyImageHandler),
    (rf"{API}/anonymization/anonymize", BulkAnonymizeHandler),
    (rf"{API}/anonymization/keys", KeysHandler),
    (rf"{API}/anonymization/keys/export/csv", KeysCsvHandler),
    (rf"{API}/anonymization/keys/{_ID}", KeyHandler),
    (rf"{API}/anonymization/keys/{_ID}/keyvalues", KeyValuesHandler),
]
