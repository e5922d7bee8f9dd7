"""multipart/related, both ways: parsing a STOW-RS body (whole, or as it arrives: :class:`PartStream`), framing
WADO-RS parts one at a time.

Media types and ``Accept`` lists are parsed here too (RFC 7231 / RFC 2387), so the handlers only
pass header strings in and get decisions back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser

from slicebox_lab.errors import InvalidInput, SliceboxError

from .errors import UnsupportedMediaType

__all__ = ["MediaType", "Part", "PartStream", "PartWriter", "parse_accept", "parse_media_type", "parse_related"]


@dataclass(frozen=True)
class MediaType:
    """``type/subtype`` with its parameters (names lower-case, values unquoted)."""

    type: str
    parameters: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    def matches(self, wanted: str) -> bool:
        """Does this (possibly wildcard) range accept the concrete ``wanted`` type?"""
        if self.type in ("*/*", wanted):
            return True
        major, _, minor = self.type.partition("/")
        return minor == "*" and wanted.startswith(major + "/")


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside double quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> MediaType:
    pieces = _split_unquoted(text, ";")
    parameters: dict[str, str] = {}
    quality = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not name:
            continue
        if name == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
            continue
        parameters[name] = value
    return MediaType(pieces[0].strip().lower(), parameters, quality)


def parse_accept(header: str | None) -> list[MediaType]:
    """The media ranges of an ``Accept`` header, best first; no header means ``*/*``."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(item) for item in _split_unquoted(header, ",") if item.strip()]
    return sorted((r for r in ranges if r.quality > 0), key=lambda r: -r.quality)


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return parse_media_type(self.headers.get("content-type", "")).type


def related_boundary(content_type: str | None, wanted_type: str) -> str:
    """The boundary of a ``multipart/related; type=<wanted_type>`` body; 415 for another media type."""
    media = parse_media_type(content_type or "")
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'Content-Type must be multipart/related; type="{wanted_type}", not {media.type or "nothing"!r}'
        )
    kind = media.parameters.get("type", wanted_type).lower()
    if kind != wanted_type:
        raise UnsupportedMediaType(f'only multipart/related; type="{wanted_type}" is accepted, not type="{kind}"')
    boundary = media.parameters.get("boundary", "")
    if not boundary:
        raise InvalidInput("the multipart/related Content-Type has no boundary parameter")
    return boundary


def parse_related(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (RFC 2046 §5.1.1); :class:`InvalidInput` when malformed."""
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        start = 0
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise InvalidInput("the multipart body does not contain its boundary")
        start += 2
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body[position : position + 2] == b"--":
            break  # close delimiter
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise InvalidInput("the multipart body ends inside a boundary line")
        part_start = line_end + 2
        next_delimiter = body.find(b"\r\n" + delimiter, part_start)
        if next_delimiter < 0:
            raise InvalidInput("the multipart body has no closing boundary")
        if body.startswith(b"\r\n", part_start):  # a part without headers
            headers, content_start = {}, part_start + 2
        else:
            header_end = body.find(b"\r\n\r\n", part_start, next_delimiter + 2)
            if header_end < 0:
                raise InvalidInput("a part of the multipart body has no end of headers")
            headers, content_start = _headers(body[part_start:header_end]), header_end + 4
        parts.append(Part(headers, body[min(content_start, next_delimiter) : next_delimiter]))
        position = next_delimiter + 2 + len(delimiter)
    if not parts:
        raise InvalidInput("the multipart body has no parts")
    return parts


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


# ---------------------------------------------------------------------------------------------- writing


class PartWriter:
    """Frames parts of a multipart/related response one at a time (the bodies go out as they are read)."""

    def __init__(self, part_type: str) -> None:
        self.part_type = part_type
        self.boundary = uuid.uuid4().hex

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def part_header(self, content_location: str = "", length: int | None = None, part_type: str = "") -> bytes:
        lines = [f"--{self.boundary}", f"Content-Type: {part_type or self.part_type}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if content_location:
            lines.append(f"Content-Location: {content_location}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def part_end() -> bytes:
        return b"\r\n"

    def close(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("latin-1")


class PartStream:
    """A multipart body parsed as it arrives (python-multipart: a maintained streaming parser, not a hand-written
    one): each part's headers (names in lower case, values stripped) go to ``begin``, its bytes to ``data`` as
    they come, and its end to ``end``.  What those raise (a SliceboxError) passes through; anything else the
    parser raises is a malformed body (:class:`InvalidInput`)."""

    def __init__(
        self,
        boundary: str,
        begin: Callable[[dict[str, str]], None],
        data: Callable[[memoryview], None],
        end: Callable[[], None],
    ) -> None:
        self._begin, self._data, self._end = begin, data, end
        self._headers: dict[str, str] = {}
        self._field = self._value = b""
        self._ended = False
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_name,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self._begin({k: v.strip() for k, v in self._headers.items()}),
            "on_part_data": lambda chunk, start, stop: self._data(memoryview(chunk)[start:stop]),
            "on_part_end": self._end,
            "on_end": self._body_end,
        }
        self._parser = MultipartParser(boundary.encode("latin-1"), callbacks)

    def write(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except SliceboxError:
            raise
        except Exception as error:  # python-multipart's own errors
            raise InvalidInput(f"the multipart body is malformed: {error}") from error

    def finish(self) -> None:
        """The body is complete: :class:`InvalidInput` if it was cut short (no closing boundary)."""
        self._parser.finalize()
        if not self._ended:
            raise InvalidInput("the multipart body has no closing boundary: it was cut short")

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    # a header's name and value may each come in several pieces (a write ending inside them): kept until its end
    def _header_name(self, chunk: bytes, start: int, stop: int) -> None:
        self._field += chunk[start:stop]

    def _header_value(self, chunk: bytes, start: int, stop: int) -> None:
        self._value += chunk[start:stop]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def _body_end(self) -> None:
        self._ended = True
