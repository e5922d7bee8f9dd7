"""/slicebox/api/boxes (partner nodes, authenticated) and /slicebox/api/transactions/<token> (box token only).

The transaction routes are called by the partner node, which holds no Jupyter credentials: they are
marked ``allow_unauthenticated`` for jupyter_server and check the box token themselves (401 for a
wrong, missing or revoked token), and skip the XSRF check (no cookie is involved: the secret is in
the path).  See ``slicebox_lab/box/__init__.py`` for the protocol and its decisions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.prometheus.log_functions import prometheus_log_method
from tornado import web

from ..box import connections, incoming, outgoing, service, transfer
from ..box.transfer import HASH_HEADER
from ..context import SliceboxContext
from ..dicomweb.multipart import related_boundary
from ..errors import InvalidInput, SliceboxError
from ..model import Source
from ..upload import Upload
from .base import API, SliceboxHandler, masked_uri
from .upload import StreamingHandler

try:
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # jupyter_server < 2.13 does not refuse unmarked handlers
    F = TypeVar("F", bound=Callable[..., Any])

    def allow_unauthenticated(method: F) -> F:  # type: ignore[no-redef,unused-ignore]
        setattr(method, "__allow_unauthenticated", True)
        return method


log = logging.getLogger(__name__)


class InvalidBoxToken(SliceboxError):
    """The path's token is not the token of a box made by createconnection on this node (or was revoked)."""

    status_code = 401


def _object_body(handler: SliceboxHandler, example: str) -> dict[str, Any]:
    body = handler.json_body()
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object {example}")
    return body


class _BoxHandler(SliceboxHandler):
    def window(self) -> float:
        return service.settings(self.context).online_window

    def page(self) -> tuple[int, int]:
        return self.int_argument("startindex", 0, minimum=0), min(self.int_argument("count", 20, minimum=0), 10000)


class BoxesHandler(_BoxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        start, count = self.page()
        boxes = await self.blocking(connections.list_boxes, self.context.index)
        self.write_json([box.to_json(self.window()) for box in boxes[start : start + count]])


class CreateConnectionHandler(_BoxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "defaultProfile"?, "sendAnonymousAsIs"?}`` → 201 with the box, its token and the URL to
        hand to the partner."""
        body = _object_body(self, '{"name": "university", "defaultProfile": {"options": []}}')
        box, token = await self.blocking(
            connections.create_poll_box,
            self.context.index,
            body.get("name"),
            body.get("defaultProfile"),
            body.get("sendAnonymousAsIs"),
        )
        base = f"{self.request.protocol}://{self.request.host}{self.base_url.rstrip('/')}"
        url = f"{base}{connections.TRANSACTIONS_PATH}{token}"
        self.write_json({**box.to_json(self.window()), "token": token, "base_url": url}, status=201)


class ConnectHandler(_BoxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "url", "defaultProfile"?, "sendAnonymousAsIs"?}`` → 201 (the same name and URL again: 200
        with that box)."""
        body = _object_body(self, '{"name": "hospital", "url": "https://.../slicebox/api/transactions/<token>"}')
        box, created = await self.blocking(
            connections.connect_push_box,
            self.context.index,
            body.get("name"),
            body.get("url", body.get("baseUrl")),
            body.get("defaultProfile"),
            body.get("sendAnonymousAsIs"),
        )
        service.wake_boxes(self.context)  # contact the partner now: "online" within a second of connecting
        self.write_json(box.to_json(self.window()), status=201 if created else 200)


class BoxHandler(_BoxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, box_id: str) -> None:
        box = await self.blocking(connections.get_box, self.context.index, int(box_id))
        self.write_json(box.to_json(self.window()))

    @web.authenticated
    @authorized
    async def delete(self, box_id: str) -> None:
        await self.blocking(outgoing.delete_box, self.context.index, int(box_id))
        self.set_status(204)
        self.finish()


class BoxSendHandler(_BoxHandler):
    @web.authenticated
    @authorized
    async def post(self, box_id: str) -> None:
        """``{"imageIds", "profile"?, "tagValues"?}`` → 201 with the transaction's job (kind ``box-send``)."""
        body = _object_body(self, '{"imageIds": [1, 2, 3]}')
        job = await self.blocking(
            service.submit_send,
            self.context,
            int(box_id),
            body.get("imageIds", body.get("image_ids")),
            body.get("profile"),
            body.get("tagValues"),
            owner=self.user_name(),
        )
        self.write_json(job, status=201)


class TransactionsHandler(_BoxHandler):
    @web.authenticated
    @authorized
    async def get(self, direction: str) -> None:
        start, count = self.page()
        listing = outgoing.list_outgoing if direction == "outgoing" else incoming.list_incoming
        self.write_json(await self.blocking(listing, self.context.index, start, count))


class TransactionHandler(_BoxHandler):
    @web.authenticated
    @authorized
    async def get(self, direction: str, transaction_id: str) -> None:
        getter = outgoing.get_outgoing if direction == "outgoing" else incoming.get_incoming
        self.write_json(await self.blocking(getter, self.context.index, int(transaction_id)))

    @web.authenticated
    @authorized
    async def delete(self, direction: str, transaction_id: str) -> None:
        deleter = outgoing.delete_outgoing if direction == "outgoing" else incoming.delete_incoming
        await self.blocking(deleter, self.context.index, int(transaction_id))
        self.set_status(204)
        self.finish()


class TransactionImagesHandler(_BoxHandler):
    @web.authenticated
    @authorized
    async def get(self, direction: str, transaction_id: str) -> None:
        """The images of the transaction with their state (outgoing) or the stored image (incoming)."""
        listing = outgoing.outgoing_images if direction == "outgoing" else incoming.incoming_images
        self.write_json(await self.blocking(listing, self.context.index, int(transaction_id)))


# ---------------------------------------------------------------------------------------------- token routes


class _TokenHandler(SliceboxHandler):
    """Authenticated by the box token in the path only."""

    def check_xsrf_cookie(self) -> None:
        """No cookie authenticates these requests, so there is no cross-site forgery to guard against."""

    def _request_summary(self) -> str:
        """tornado's names the URI, token and all (its logs of errors use this)."""
        return f"{self.request.method} {masked_uri(self.request.uri or '')} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """tornado's would also print the whole request, token and all."""
        if isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)  # one line with the summary above
        else:
            log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    def _log(self) -> None:
        """The request log line, with the token masked; successes at debug level only, formatted only then.

        jupyter_server's ``log_request`` names the path, which holds the secret token (a refused push is
        logged as a warning), and formatting its line cost 0.3 ms of the event loop per pushed image,
        though a success is logged at debug level.  Its request-duration metric is kept.
        """
        prometheus_log_method(self)
        status = self.get_status()
        level = logging.DEBUG if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if log.isEnabledFor(level):
            path = masked_uri(self.request.path)
            took = 1000.0 * self.request.request_time()
            log.log(level, "%d %s %s (%s) %.2fms", status, self.request.method, path, self.request.remote_ip, took)

    async def box(self, token: str) -> connections.Box:
        return await self.checked(await self.blocking(connections.box_for_token, self.context.index, token))

    async def checked(self, box: connections.Box | None) -> connections.Box:
        """The box the token named (401 for none), its partner's contact recorded."""
        if box is None:
            raise InvalidBoxToken("no box has this token (it may have been deleted)")
        contact = box.last_contact
        if contact is None or connections.now() - contact > timedelta(seconds=1):
            # once a second per box and server: the requests in flight with it all read the same stale
            # contact, and each recording it again was a write transaction of its own
            recorded: dict[tuple[int, str], float] = self.settings.setdefault("slicebox_box_contacts", {})
            clock, which = time.monotonic(), (box.id, box.name)
            if clock - recorded.get(which, -1e9) >= 1.0:
                recorded[which] = clock
                await self.blocking(connections.record_contact, self.context.index, box.id)
        return box

    def positive_argument(self, name: str) -> int:
        return self.int_argument(name, minimum=1)


@web.stream_request_body
class TransactionImageHandler(StreamingHandler, _TokenHandler):
    """A pushed image is inflated, hashed and written into storage as it arrives (``handlers/upload.py``,
    ``box.transfer.IncomingImage``): no body in memory, the flush starts the moment the body ends."""

    max_body = transfer.MAX_IMAGE_BYTES

    async def authorize_body(self) -> None:
        """The box token in the path: checked when the body is opened."""

    async def open_body(self) -> transfer.IncomingImage:
        # the box and the file its image goes to in one trip off the event loop (opening a file blocks)
        box, upload = await self.blocking(_box_and_upload, self.context, self.path_args[0])
        self._box = await self.checked(box)
        assert upload is not None
        try:
            encoding = self.request.headers.get("Content-Encoding", "")
            return transfer.IncomingImage(upload, encoding, self.context.inspect_head)
        except BaseException:
            await self.blocking(upload.discard)
            raise

    @allow_unauthenticated
    async def post(self, token: str) -> None:
        """The partner pushes one image: deflated or gzipped DICOM, its SHA-256 in ``X-Slicebox-SHA256``."""
        transaction_id = self.positive_argument("transactionid")
        sequence_number = self.positive_argument("sequencenumber")
        total = self.positive_argument("totalimagecount")
        digest = self.request.headers.get(HASH_HEADER, "")

        def receive(image: transfer.IncomingImage) -> transfer.Received:
            """Once the body is in, in the same trip off the event loop: it stores or discards the image."""
            return transfer.receive_image(
                self.context, self._box, transaction_id, sequence_number, total, image, digest
            )

        received = await self.body_complete(then=receive)
        assert received is not None
        self.write_json(received.to_json())


@web.stream_request_body
class TransactionPushHandler(StreamingHandler, _TokenHandler):
    """Several pushed images of one transaction in one request (``box.transfer.IncomingImages``): each part is
    stored with its receipt as it ends, and the answer lists each part's outcome; the request's own handling
    (parsing, routing, the token's box) is paid once for them all."""

    max_body = transfer.MAX_IMAGE_BYTES

    async def authorize_body(self) -> None:
        """The box token in the path: checked when the body is opened."""

    async def open_body(self) -> transfer.IncomingImages:
        self._box = await self.box(self.path_args[0])  # the token first: a stranger learns nothing else
        transaction_id = self.positive_argument("transactionid")
        total = self.positive_argument("totalimagecount")
        boundary = related_boundary(self.request.headers.get("Content-Type"), "application/dicom")
        encoding = self.request.headers.get("Content-Encoding", "")
        return transfer.IncomingImages(self.context, self._box, transaction_id, total, boundary, encoding)

    @allow_unauthenticated
    async def post(self, token: str) -> None:
        """The partner pushes several images: ``multipart/related; type="application/dicom"``, each part with
        its ``X-Slicebox-Sequence-Number`` and ``X-Slicebox-SHA256`` → 200 with each part's outcome, in order."""
        images = await self.body_complete(then=transfer.IncomingImages.to_json)
        assert images is not None
        self.write_json(images)


def _box_and_upload(context: SliceboxContext, token: str) -> tuple[connections.Box | None, Upload | None]:
    """The box of ``token`` and a new upload from it (None, None for an unknown token)."""
    box = connections.box_for_token(context.index, token)
    return box, None if box is None else context.upload(Source("box", box.name))


class TransactionPollHandler(_TokenHandler):
    @allow_unauthenticated
    async def get(self, token: str) -> None:
        """The next images queued here for the partner (200 with an empty list when none)."""
        box = await self.box(token)
        n = self.int_argument("n", 1, minimum=1)
        self.write_json(await self.blocking(transfer.serve_poll, self.context, box, n))


class TransactionOutgoingHandler(_TokenHandler):
    @allow_unauthenticated
    async def get(self, token: str) -> None:
        """One queued image, anonymized now, deflated when the partner accepts it, its SHA-256 in a header."""
        box = await self.box(token)
        transaction_id = self.positive_argument("transactionid")
        image_id = self.positive_argument("imageid")
        accepted = self.request.headers.get("Accept-Encoding", "")
        data, digest, encoding = await self.blocking(
            transfer.serve_image_for_wire, self.context, box, transaction_id, image_id, accepted
        )
        self.set_header("Content-Type", "application/dicom")
        self.set_header(HASH_HEADER, digest)
        if encoding != "identity":
            self.set_header("Content-Encoding", encoding)
        self.finish(data)


class TransactionDoneHandler(_TokenHandler):
    @allow_unauthenticated
    async def post(self, token: str) -> None:
        """``{"transaction_id", "outgoing_image_id", "sha256"?}``: the partner has the image durable → 204."""
        box = await self.box(token)
        await self.blocking(transfer.serve_done, self.context, box, self.json_body())
        self.set_status(204)
        self.finish()


class TransactionFailedHandler(_TokenHandler):
    @allow_unauthenticated
    async def post(self, token: str) -> None:
        """``{"transaction_id", "outgoing_image_id", "message"}``: the partner gives the image up → 204."""
        box = await self.box(token)
        await self.blocking(transfer.serve_failed, self.context, box, self.json_body())
        self.set_status(204)
        self.finish()


class TransactionStatusHandler(_TokenHandler):
    @allow_unauthenticated
    async def get(self, token: str) -> None:
        """``{"status", "received_image_count", "total_image_count"}`` of what we received in that transaction."""
        box = await self.box(token)
        transaction_id = self.positive_argument("transactionid")
        self.write_json(await self.blocking(incoming.incoming_status, self.context.index, box.id, transaction_id))


_TOKEN = r"([^/]*)"
_DIRECTION = r"(outgoing|incoming)"

default_handlers = [
    (rf"{API}/boxes", BoxesHandler),
    (rf"{API}/boxes/createconnection", CreateConnectionHandler),
    (rf"{API}/boxes/connect", ConnectHandler),
    (rf"{API}/boxes/(\d+)", BoxHandler),
    (rf"{API}/boxes/(\d+)/send", BoxSendHandler),
    (rf"{API}/boxes/{_DIRECTION}/transactions", TransactionsHandler),
    (rf"{API}/boxes/{_DIRECTION}/transactions/(\d+)", TransactionHandler),
    (rf"{API}/boxes/{_DIRECTION}/transactions/(\d+)/images", TransactionImagesHandler),
    (rf"{API}/transactions/{_TOKEN}/image", TransactionImageHandler),
    (rf"{API}/transactions/{_TOKEN}/images", TransactionPushHandler),
    (rf"{API}/transactions/{_TOKEN}/outgoing/poll", TransactionPollHandler),
    (rf"{API}/transactions/{_TOKEN}/outgoing", TransactionOutgoingHandler),
    (rf"{API}/transactions/{_TOKEN}/outgoing/done", TransactionDoneHandler),
    (rf"{API}/transactions/{_TOKEN}/outgoing/failed", TransactionFailedHandler),
    (rf"{API}/transactions/{_TOKEN}/status", TransactionStatusHandler),
]
