"""The two HTTP answers DICOMweb needs beyond :mod:`slicebox_lab.errors`: 406 and 415."""

from __future__ import annotations

from slicebox_lab.errors import SliceboxError

__all__ = ["NotAcceptable", "UnsupportedMediaType"]


class NotAcceptable(SliceboxError):
    """None of the media types (or transfer syntaxes) in the ``Accept`` header can be given."""

    status_code = 406


class UnsupportedMediaType(SliceboxError):
    """A STOW-RS body of a media type the node does not store."""

    status_code = 415
