"""POST /slicebox/api/anonymization/report: what a profile would do to a selection, before anything is sent.

A thin adapter over :func:`slicebox_lab.anonymization.report.review` and ``pixel_review``: the body
names the selection (``imageIds`` and/or ``seriesIds``) and the profile (``options`` and the rest), parsed
exactly as the other anonymization routes parse them. Headers are read, off the event loop, one file at
a time; then the pixels of the images that may carry burned-in text (at most
``MAX_PIXEL_REVIEW``), read by Tesseract as the anonymizer will read them, in the worker processes
(``SliceboxContext.read_pixels``), never in the server's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydicom
from jupyter_server.auth.decorator import authorized
from pydicom.dataset import Dataset
from tornado import web

from ..anonymization import Profile
from ..anonymization.pixels import header_burned_in_reason
from ..anonymization.report import MAX_PIXEL_REVIEW, Report, pixel_review, review
from ..errors import InvalidInput
from .anonymization import _ProfileHandler
from .base import API

#: the largest selection one report reads (headers only, but each one is a file read)
MAX_REPORT_IMAGES = 10_000


def _ids(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise InvalidInput(f'"{key}" must be a JSON array of integer ids, e.g. [1, 2, 3]')
    return value


class AnonymizationReportHandler(_ProfileHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """The review report (summary and one row per attribute path) of the selection under the profile."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('the body must be a JSON object like {"imageIds": [1, 2], "options": ["RETAIN_UIDS"]}')
        image_ids, series_ids = _ids(body, "imageIds"), _ids(body, "seriesIds")
        if not image_ids and not series_ids:
            raise InvalidInput('select images: {"imageIds": [...]} or {"seriesIds": [...]} (not empty)')
        profile = await self.profile()
        selection = await self.blocking(self._selection, image_ids, series_ids)
        report = await self.blocking(self._review, selection, profile)
        self.write_json(report.to_json())

    def _selection(self, image_ids: list[int], series_ids: list[int]) -> list[int]:
        """The image ids asked for, in order, without duplicates; unknown ids → 404, too many → 400."""
        index = self.context.index
        selected: dict[int, None] = {}
        for image_id in image_ids:
            selected[index.get_image(image_id).id] = None
        for series_id in series_ids:
            index.get_series(series_id)
            for image in index.images_of_series(series_id):
                selected[image.id] = None
            if len(selected) > MAX_REPORT_IMAGES:
                break
        if len(selected) > MAX_REPORT_IMAGES:
            raise InvalidInput(
                f"the selection holds more than {MAX_REPORT_IMAGES} images; "
                "review a smaller selection (a few series at a time)"
            )
        return list(selected)

    def _review(self, image_ids: list[int], profile: Profile) -> Report:
        profile = self.context.node_profile(profile)
        scanned: list[int] = []
        report = review(self._read_headers(image_ids, profile, scanned), profile)
        read = scanned[:MAX_PIXEL_REVIEW]
        pixels = pixel_review(self.context.read_pixels(read, profile), total=len(scanned))  # in the workers
        return report.with_pixels(pixels)

    def _read_headers(self, image_ids: list[int], profile: Profile, scanned: list[int]) -> Iterator[Dataset]:
        """The headers; the ids of the images whose pixels the anonymizer reads go to ``scanned``."""
        for image_id in image_ids:
            _, file = self.context.open_image(image_id)
            with file:
                header = pydicom.dcmread(file, stop_before_pixels=True)
            if "Rows" in header and (
                profile.scan_all
                or header_burned_in_reason(header, profile.secondary_capture_burned_in, profile.burned_in_modalities)
            ):
                scanned.append(image_id)
            yield header


default_handlers = [(rf"{API}/anonymization/report", AnonymizationReportHandler)]
