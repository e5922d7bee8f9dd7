"""/slicebox/api/anonymization and /slicebox/api/images/{id}/anonymize[d]: de-identify stored images.

Thin adapters over ``SliceboxContext.anonymized_bytes`` / ``anonymize_in_place`` (the one way to
anonymize).  The body names the options of the basic profile: ``{"options": ["RETAIN_UIDS"]}``;
an empty body or ``{}`` is the basic profile alone.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..anonymization import Option, Profile
from ..errors import InvalidInput
from .base import API, SliceboxHandler


def _option_json(option: Option) -> dict[str, str]:
    return {"name": option.name, "title": option.title, "description": option.description, "code": option.code}


class AnonymizationOptionsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every option that can be added to the basic profile."""
        self.write_json([_option_json(option) for option in Option])


class _ProfileHandler(SliceboxHandler):
    async def profile(self) -> Profile:
        """The profile the body asks for (empty body or ``{}``: the basic profile)."""
        body = self.json_body() if self.request.body.strip() else {}
        if not isinstance(body, dict):
            raise InvalidInput('the body must be a JSON object like {"options": ["RETAIN_UIDS"]}')
        names = body.get("options", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidInput('"options" must be a JSON array of option names')
        unknown = [name for name in names if name not in Option.__members__]
        if unknown:
            known = ", ".join(Option.__members__)
            raise InvalidInput(f"unknown anonymization option(s) {', '.join(unknown)}; known options: {known}")
        try:
            return await self.blocking(Profile, frozenset(Option[name] for name in names))
        except ValueError as e:
            raise InvalidInput(str(e)) from None


class AnonymizedImageHandler(_ProfileHandler):
    @web.authenticated
    @authorized
    async def post(self, image_id: str) -> None:
        """The image de-identified, as a Part-10 file; nothing stored changes."""
        profile = await self.profile()
        data = await self.blocking(self.context.anonymized_bytes, int(image_id), profile)
        self.set_header("Content-Disposition", f'attachment; filename="{int(image_id)}-anonymized.dcm"')
        await self.finish(data, set_content_type="application/dicom")


class AnonymizeImageHandler(_ProfileHandler):
    @web.authenticated
    @authorized
    async def put(self, image_id: str) -> None:
        """Replace the stored image by its de-identified version; answers the new image."""
        profile = await self.profile()
        result = await self.blocking(self.context.anonymize_in_place, int(image_id), profile)
        self.write_json(result.image)


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/anonymization/options", AnonymizationOptionsHandler),
    (rf"{API}/images/{_ID}/anonymized", AnonymizedImageHandler),
    (rf"{API}/images/{_ID}/anonymize", AnonymizeImageHandler),
]
