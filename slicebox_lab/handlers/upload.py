"""Request bodies stored as they arrive: a raw DICOM body, a multipart/form-data upload, a STOW-RS body.

Tornado would otherwise hold the whole body in memory (grown 64 KiB at a time, copied again at the
end) before the handler sees a byte: a 2 GB STOW-RS request needs 2 GB of memory, and the event loop
spends a millisecond per 0.5 MB image copying.  With ``stream_request_body`` the handler authenticates
and authorizes in ``prepare`` (before a byte reaches the disk), then hands the chunks, in order and a
megabyte at a time, to a thread that splits multipart bodies (python-multipart: a maintained streaming
parser, not a hand-written one) and writes each file into storage while hashing it
(:class:`~slicebox_lab.context.Upload`).  A body cut short leaves nothing behind.  A whole-body upload's
first 16 KiB go to a worker at once (``BodySink.early``): its header is validated while the rest arrives, so
that when the last byte is in only the flush and the index commit remain.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from jupyter_core.utils import ensure_async
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from python_multipart.multipart import parse_options_header
from tornado import web

from ..context import SliceboxContext
from ..dicomweb.multipart import PartStream
from ..errors import InvalidInput
from ..model import IngestResult, Source
from ..upload import Upload
from ..workers.tasks import HeadInspected
from .base import SliceboxHandler

__all__ = ["BodySink", "FileParts", "StreamingHandler", "form_boundary", "stored"]

#: the largest request body a streaming handler accepts (the DICOM files of a STOW-RS study)
MAX_BODY = 64 << 30
#: chunks are handed to the writer thread once this much waits (fewer trips off the loop)
BATCH_BYTES = 1 << 20
#: a body's first bytes go to its sink (``BodySink.early``) once this much has arrived, if more is to come
EARLY_BYTES = 16 << 10
#: bytes of a multipart field other than a file that are kept (and then ignored)
_SMALL_FIELD = 64 << 10
_PREAMBLE = bytes(128) + b"DICM"

T = TypeVar("T")


class BodySink(Protocol):
    """Where a streamed body goes (a domain object: ``FileParts`` here, ``box.transfer.IncomingImage``);
    every method runs off the event loop, one call at a time."""

    def feed(self, pieces: list[bytes]) -> None: ...

    def early(self, head: bytes) -> None:
        """The body's first bytes, while the rest arrives, on the event loop (must not block): a sink may
        start work that needs only them."""
        ...

    def finish(self) -> None:
        """The body is complete: store what is still open."""
        ...

    def discard(self) -> None:
        """The body was cut short or refused: forget every file not yet stored."""
        ...


class _FileWriter:
    """One file of a body: its bytes go to an :class:`Upload`; a part that starts with a file meta
    group but no preamble (what pydicom's ``dcmwrite`` of a read dataset gives) gets one."""

    def __init__(self, context: SliceboxContext, source: Source, fix_preamble: bool) -> None:
        self.upload: Upload = context.upload(source)
        self._head = b"" if fix_preamble else None

    def write(self, data: bytes | memoryview) -> None:
        if self._head is None:
            self.upload.write(data)
            return
        self._head += bytes(data)
        if len(self._head) >= 132:
            self._release()

    def _release(self) -> None:
        head, self._head = self._head or b"", None
        if head[128:132] != b"DICM" and head[:2] == b"\x02\x00" and head[4:6].isalpha():
            self.upload.write(_PREAMBLE)
        self.upload.write(head)

    def close(self) -> Upload:
        if self._head is not None:
            self._release()
        return self.upload


class FileParts(BodySink):
    """The files of a body: the whole body (``application/dicom``) or the parts of a multipart one.

    ``on_file(upload, headers)`` runs as each file ends (in the writer thread: it may store it);
    ``field`` names the multipart/form-data field that holds the file (others are ignored)."""

    def __init__(
        self,
        context: SliceboxContext,
        source: Source,
        on_file: Callable[[Upload, dict[str, str]], None],
        boundary: str | None = None,
        field: str | None = None,
        fix_preamble: bool = False,
    ) -> None:
        self._context, self._source, self._on_file = context, source, on_file
        self._field, self._fix = field, fix_preamble
        self._open: _FileWriter | None = None
        self._skipped = 0
        self._files = 0
        self._lock = threading.Lock()
        self._early: Future[HeadInspected | None] | None = None
        #: a whole-body file is opened with its first bytes, in the writer thread (never on the event loop)
        self._whole = boundary is None
        self._headers: dict[str, str] = {}
        self._parts = (
            None if boundary is None else PartStream(boundary, self._part_begin, self._part_data, self._part_end)
        )

    @property
    def files(self) -> int:
        return self._files

    # ------------------------------------------------------------ the parts

    def _part_begin(self, headers: dict[str, str]) -> None:
        self._headers = headers
        if self._field is not None:
            _, options = parse_options_header(self._headers.get("content-disposition", ""))
            name = options.get(b"name", b"").decode("latin-1")
            if name != self._field:
                return  # another form field: skipped
        self._open = _FileWriter(self._context, self._source, self._fix)

    def _part_data(self, data: memoryview) -> None:
        if self._open is not None:
            self._open.write(data)
        else:
            self._skipped += len(data)
            if self._skipped > _SMALL_FIELD:
                raise InvalidInput(f"a multipart field other than {self._field!r} holds more than 64 KiB")

    def _part_end(self) -> None:
        writer, self._open = self._open, None
        if writer is not None:
            self._files += 1
            self._on_file(writer.close(), self._headers)

    # ------------------------------------------------------------ BodySink

    def early(self, head: bytes) -> None:
        """A whole-body file's header is inspected by a worker while the rest arrives (``Upload.store`` then
        only waits for the disk); a multipart body's first bytes are not a file's."""
        if self._whole and not self._fix and self._open is None:
            self._early = self._context.inspect_head(head)

    def feed(self, pieces: list[bytes]) -> None:
        with self._lock:
            for piece in pieces:
                if self._parts is not None:
                    self._parts.write(piece)
                elif self._whole:
                    self._whole_file().write(piece)

    def _whole_file(self) -> _FileWriter:
        if self._open is None:
            self._open = _FileWriter(self._context, self._source, self._fix)
            self._open.upload.inspect_early(self._early)
        return self._open

    def finish(self) -> None:
        with self._lock:
            if self._parts is None:
                if self._whole:
                    writer, self._open, self._whole = self._whole_file(), None, False
                    self._files += 1
                    self._on_file(writer.close(), {})
                return
            self._parts.finish()

    def discard(self) -> None:
        with self._lock:
            writer, self._open, self._whole = self._open, None, False
        if writer is not None:
            writer.upload.discard()


class StreamingHandler(SliceboxHandler):
    """A handler whose body is stored while it arrives; subclasses build the sink in :meth:`open_body`.

    Use with ``@web.stream_request_body``.  Authentication and authorization happen in ``prepare``
    (the route's decorators run only once the body is in), so no stranger writes to the disk."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._sink: BodySink | None = None
        self._failure: BaseException | None = None
        self._completed = False
        self._early_given = False

    #: the largest body this handler takes
    max_body = MAX_BODY

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self._finished or self.request.method not in ("POST", "PUT"):
            return
        await self.authorize_body()
        self.request.connection.set_max_body_size(self.max_body)  # type: ignore[union-attr]
        self._sink = await self.open_body()

    async def authorize_body(self) -> None:
        """What the route's ``@web.authenticated`` and ``@authorized`` would check, before the body comes."""
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "authentication is required to upload")
        action = HTTP_METHOD_TO_AUTH_ACTION[self.request.method or "POST"]
        if not await ensure_async(self.authorizer.is_authorized(self, user, action, self.auth_resource)):
            raise web.HTTPError(403, f"User is not authorized to {action} on resource: {self.auth_resource}.")

    async def open_body(self) -> BodySink:
        raise NotImplementedError

    async def data_received(self, chunk: bytes) -> None:
        if self._failure is not None or self._sink is None:
            return  # the body is refused already: the rest is read and dropped
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if not self._early_given and self._pending_bytes >= EARLY_BYTES:
            self._early_given = True
            declared = self.request.headers.get("Content-Length", "")
            if not (declared.isdigit() and int(declared) <= self._pending_bytes):  # more is to come
                self._sink.early(b"".join(self._pending))
        if self._pending_bytes >= BATCH_BYTES:
            await self._drain()

    async def _drain(self) -> None:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        if pieces and self._sink is not None and self._failure is None:
            try:
                await self.blocking(self._sink.feed, pieces)
            except BaseException as error:
                self._failure = error

    async def body_complete(self, then: Callable[[Any], T] | None = None) -> T | None:
        """In the route's method: feed what is left and close the body, in one trip off the event loop (a
        body under ``BATCH_BYTES``, most single images, makes no other); raises what went wrong on the way.

        ``then(sink)`` runs in the same trip once the body is complete, and takes the sink over (it stores or
        discards what it holds); its answer is returned.  Each trip costs the event loop a hand-over."""
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        if self._failure is None and self._sink is not None:
            sink = self._sink
            try:
                answer = await self.blocking(_feed_and_finish, sink, pieces, then)
            except _Taken as taken:  # ``then`` had the sink: nothing is left to discard here
                self._sink, self._completed = None, True
                raise taken.error from None
            except BaseException as error:
                self._failure = error
            else:
                self._completed = True
                if then is not None:
                    self._sink = None
                return answer
        if self._failure is not None:
            failure, self._failure = self._failure, None
            await self._discard()
            raise failure
        self._completed = True
        return None

    async def _discard(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            await self.blocking(sink.discard)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self._completed and self._sink is not None:  # the body was cut short
            sink, self._sink = self._sink, None
            self._failure = InvalidInput("the request body was cut short")
            asyncio.ensure_future(self.blocking(sink.discard))

    def on_finish(self) -> None:
        super().on_finish()
        if not self._completed and self._sink is not None:  # refused before the body was complete
            sink, self._sink = self._sink, None
            asyncio.ensure_future(self.blocking(sink.discard))


class _Taken(Exception):
    """What ``then`` raised, once it had taken the sink over."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _feed_and_finish(sink: BodySink, pieces: list[bytes], then: Callable[[Any], T] | None = None) -> T | None:
    if pieces:
        sink.feed(pieces)
    sink.finish()
    if then is None:
        return None
    try:
        return then(sink)
    except Exception as error:
        raise _Taken(error) from error


def form_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type; 400 when it has none."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary", b"").decode("latin-1")
    if not boundary:
        raise InvalidInput("the multipart/form-data Content-Type has no boundary parameter")
    return boundary


def stored(results: list[IngestResult]) -> Callable[[Upload, dict[str, str]], None]:
    """An ``on_file`` that stores each file as it ends (overlapping the rest of the body) into ``results``."""

    def on_file(upload: Upload, headers: dict[str, str]) -> None:
        results.append(upload.store())

    return on_file
