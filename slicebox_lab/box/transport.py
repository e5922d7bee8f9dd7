"""How a node talks to its partner: a small protocol, its HTTP implementation, and an in-memory one for tests.

Only the node that holds the partner's URL (a PUSH box, made by ``connect``) ever calls out; the
polled node only answers.  Every call raises one of three errors, which decide what the caller does:
:class:`~slicebox_lab.box.transfer.PartnerUnavailable` (back off, retry the whole box later),
:class:`~slicebox_lab.box.transfer.HashMismatch` (send this image again) and
:class:`~slicebox_lab.box.transfer.ImageRefused` (this image will never be accepted).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import uuid
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

import urllib3

from slicebox_lab.errors import InvalidInput, NotFound, SliceboxError

from . import transfer
from .connections import Box, box_for_token, record_contact
from .transfer import HASH_HEADER, HashMismatch, ImageRefused, PartnerUnavailable

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext


class BoxTransport(Protocol):
    def push(self, transaction_id: int, sequence_number: int, total: int, data: bytes, digest: str) -> None:
        """Deliver one image; returns once the partner has it durable."""
        ...

    def push_many(self, transaction_id: int, total: int, images: list[tuple[int, bytes, str]]) -> list[PushOutcome]:
        """Deliver several images of one transaction ((sequence number, bytes, SHA-256) each) in one call; each
        image's outcome in order: None once the partner has it durable, else the error for that image alone
        (:class:`HashMismatch` or :class:`ImageRefused`).  :class:`BatchUnsupported`: the partner takes one
        image per call (:meth:`push`)."""
        ...

    def poll(self, n: int) -> list[dict[str, Any]]:
        """The partner's next outgoing images for us: ``[{"transaction_id", "outgoing_image_id", ...}]``."""
        ...

    def fetch(self, transaction_id: int, outgoing_image_id: int) -> tuple[bytes, str]:
        """(bytes, SHA-256 the partner announced) of one of its outgoing images."""
        ...

    def done(self, transaction_id: int, outgoing_image_id: int, digest: str) -> None: ...

    def done_many(self, confirmed: list[tuple[int, int, str]]) -> None:
        """Acknowledge several (transaction id, outgoing image id, SHA-256) in one call."""
        ...

    def failed(self, transaction_id: int, outgoing_image_id: int, message: str) -> None: ...

    def close(self) -> None: ...


class HttpTransport:
    """The partner's ``/slicebox/api/transactions/<token>`` routes over HTTP(S), deflate on the wire
    (``encoding="identity"``: uncompressed both ways).

    urllib3 rather than requests (which is built on it): the box sends one request per image, and
    requests' session layer (hooks, cookies, adapters, proxy lookup) cost the sender about half a
    millisecond of Python per image, a tenth of its work, for nothing a partner call uses.  One
    thread-safe pool serves every sending thread; ``connections`` is how many it keeps open.
    """

    def __init__(self, base_url: str, timeout: float = 60.0, encoding: str = "deflate", connections: int = 8) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = self.base_url.rsplit("/", 1)[-1]
        self.timeout = timeout
        self.encoding = encoding
        # connect fast or give up; reading may take longer (the partner stores before it answers)
        pool_timeout = urllib3.Timeout(connect=min(10.0, timeout), read=timeout)
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=max(1, connections), retries=False, timeout=pool_timeout)

    def _redacted(self, text: str) -> str:
        """``text`` without the token: a box's last_error is shown over REST, and the URL holds the token."""
        return text.replace(self._token, "<token>") if self._token else text

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        url = self.base_url + path + ("?" + urlencode(params) if params else "")
        try:
            response = self._pool.request(method, url, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            where, reason = self._redacted(self.base_url + path), self._redacted(str(e))
            raise PartnerUnavailable(
                f"the partner could not be reached at {where}: {type(e).__name__}: {reason}"
            ) from None
        if response.status < 300:
            return response
        message, reason = _error(response)
        if path == "/images" and response.status in (403, 404):
            # a node without the route answers its JSON 404, or jupyter_server's 403 (no XSRF token) first;
            # this node answers a refused token with 401 there
            raise BatchUnsupported(f"the partner takes one image per request ({response.status} for {path}): {message}")
        if response.status in (401, 403):
            raise PartnerUnavailable(f"the partner refused our token ({response.status}): {message}")
        if response.status == 404 and path == "/image":
            raise PartnerUnavailable(f"the partner has no box route at this URL (404): {message}")
        if path != "/outgoing/poll":
            raise _image_error(response.status, reason, message)
        raise PartnerUnavailable(f"the partner answered {response.status}: {message}")

    def _post_json(self, path: str, value: Any) -> None:
        self._call("POST", path, body=json.dumps(value).encode(), headers={"Content-Type": "application/json"})

    def push(self, transaction_id: int, sequence_number: int, total: int, data: bytes, digest: str) -> None:
        encoding = transfer.wire_encoding(data, self.encoding)
        headers = {"Content-Type": "application/dicom", "Content-Encoding": encoding, HASH_HEADER: digest}
        params = {"transactionid": transaction_id, "sequencenumber": sequence_number, "totalimagecount": total}
        self._call("POST", "/image", params, transfer.compress(data, encoding), headers)

    def push_many(self, transaction_id: int, total: int, images: list[tuple[int, bytes, str]]) -> list[PushOutcome]:
        boundary = uuid.uuid4().hex
        pieces: list[bytes] = []
        for number, data, digest in images:
            pieces.append(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n{transfer.SEQUENCE_HEADER}: {number}\r\n"
                f"{HASH_HEADER}: {digest}\r\n\r\n".encode("ascii")
            )
            pieces += [data, b"\r\n"]
        pieces.append(f"--{boundary}--\r\n".encode("ascii"))
        body = b"".join(pieces)
        # deflate unless every image is compressed already (or the partner is on this machine)
        encoding = self.encoding
        if all(transfer.wire_encoding(data, self.encoding) == "identity" for _, data, _ in images):
            encoding = "identity"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Encoding": encoding,
        }
        params = {"transactionid": transaction_id, "totalimagecount": total}
        response = self._call("POST", "/images", params, transfer.compress(body, encoding), headers)
        try:
            answers = json.loads(response.data)
            by_number = {int(a["sequence_number"]): a.get("error") for a in answers}
        except (ValueError, TypeError, KeyError):
            raise PartnerUnavailable("the partner's answer to a push of several images is not its list") from None
        return [_outcome(by_number, number) for number, _, _ in images]

    def poll(self, n: int) -> list[dict[str, Any]]:
        response = self._call("GET", "/outgoing/poll", {"n": n})
        try:
            value = json.loads(response.data)
        except ValueError:
            raise PartnerUnavailable("the partner's poll answer is not JSON") from None
        if not isinstance(value, list):
            raise PartnerUnavailable("the partner's poll answer is not a list")
        return value

    def fetch(self, transaction_id: int, outgoing_image_id: int) -> tuple[bytes, str]:
        params = {"transactionid": transaction_id, "imageid": outgoing_image_id}
        accept = "identity" if self.encoding == "identity" else "deflate, gzip"
        response = self._call("GET", "/outgoing", params, headers={"Accept-Encoding": accept})
        return response.data, response.headers.get(HASH_HEADER, "")  # urllib3 inflated the body

    def done(self, transaction_id: int, outgoing_image_id: int, digest: str) -> None:
        self._post_json("/outgoing/done", _done_bodies([(transaction_id, outgoing_image_id, digest)])[0])

    def done_many(self, confirmed: list[tuple[int, int, str]]) -> None:
        self._post_json("/outgoing/done", _done_bodies(confirmed))

    def failed(self, transaction_id: int, outgoing_image_id: int, message: str) -> None:
        body = {"transaction_id": transaction_id, "outgoing_image_id": outgoing_image_id, "message": message}
        self._post_json("/outgoing/failed", body)

    def close(self) -> None:
        self._pool.clear()


def wire_encoding_for(base_url: str, setting: str = "auto") -> str:
    """The ``Content-Encoding`` to use with a partner: ``setting`` (deflate, gzip, identity), or for
    ``auto`` identity when the partner is on this machine (loopback: no wire to save, compressing
    only costs CPU both sides) and deflate otherwise."""
    if setting != "auto":
        return setting
    host = (urlsplit(base_url).hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return "identity" if loopback else "deflate"


def _error(response: urllib3.BaseHTTPResponse) -> tuple[str, str]:
    """(message, reason) of a node's JSON error answer; the start of the text of any other."""
    text = response.data[:2000].decode("utf-8", "replace")
    try:
        body = json.loads(response.data)
    except ValueError:
        return text[:500], ""
    if not isinstance(body, dict):
        return text[:500], ""
    return str(body.get("message", text[:500])), str(body.get("reason", ""))


#: an image's outcome in a push of several: None (the partner has it durable) or what went wrong with it
PushOutcome = HashMismatch | ImageRefused | PartnerUnavailable | None


class BatchUnsupported(PartnerUnavailable):
    """The partner has no route for several images per request (a node older than it): push one at a time."""


def _outcome(by_number: dict[int, Any], number: int) -> PushOutcome:
    """One image's outcome from a several-image push's answer (an image the answer does not list failed)."""
    if number not in by_number:
        return PartnerUnavailable(f"the partner's answer does not list image {number}")
    error = by_number[number]
    if error is None:
        return None
    return _image_error(int(error.get("status", 500)), str(error.get("reason", "")), str(error.get("message", "")))


def _image_error(status: int, reason: str, message: str) -> HashMismatch | ImageRefused | PartnerUnavailable:
    """What the partner's error answer about one image means for it: send it again (the hash), never (refused as
    not acceptable), or later (anything else: the box backs off)."""
    if reason == "HashMismatch":
        return HashMismatch(message)
    if status in (400, 404, 409, 422):
        return ImageRefused(f"{status}: {message}")
    return PartnerUnavailable(f"the partner answered {status}: {message}")


def _received(
    partner: SliceboxContext, box: Box, transaction_id: int, number: int, total: int, data: bytes, digest: str
) -> PushOutcome:
    """``receive_image`` on the partner, its outcome as the HTTP transport would see it (``_image_error``)."""
    try:
        transfer.receive_image(partner, box, transaction_id, number, total, data, digest)
    except SliceboxError as e:
        return _image_error(e.status_code, type(e).__name__, e.message)
    return None


def _done_bodies(confirmed: list[tuple[int, int, str]]) -> list[dict[str, Any]]:
    return [{"transaction_id": t, "outgoing_image_id": o, "sha256": d} for t, o, d in confirmed]


class InMemoryTransport:
    """Calls the partner node's domain functions directly, through the same compression and checks.

    For unit tests: ``corrupt_next`` flips one byte of the next payloads on the wire,
    ``fail_next`` makes the next calls fail as an unreachable partner would; ``calls`` counts calls.
    """

    def __init__(self, partner: SliceboxContext, token: str, encoding: str = "deflate") -> None:
        self.partner = partner
        self.token = token
        self.encoding = encoding
        self.corrupt_next = 0
        self.fail_next = 0
        #: False: the partner takes one image per call (as a node older than push_many)
        self.batches = True
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _box(self, name: str) -> Box:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.fail_next > 0:
                self.fail_next -= 1
                raise PartnerUnavailable("the partner could not be reached (test transport)")
        box = box_for_token(self.partner.index, self.token)
        if box is None:
            raise PartnerUnavailable("the partner refused our token (401)")
        record_contact(self.partner.index, box.id)
        return box

    def _wire(self, data: bytes) -> bytes:
        """Compress, maybe corrupt one byte, decompress: what arrives at the other end."""
        encoding = transfer.wire_encoding(data, self.encoding)
        packed = transfer.compress(data, encoding)
        with self._lock:
            corrupt = self.corrupt_next > 0
            if corrupt:
                self.corrupt_next -= 1
        unpacked = transfer.decompress(packed, encoding)
        if corrupt:
            raw = bytearray(unpacked)
            raw[len(raw) // 2] ^= 0xFF
            unpacked = bytes(raw)
        return unpacked

    def push(self, transaction_id: int, sequence_number: int, total: int, data: bytes, digest: str) -> None:
        box = self._box("push")
        outcome = _received(self.partner, box, transaction_id, sequence_number, total, self._wire(data), digest)
        if outcome is not None:
            raise outcome

    def push_many(self, transaction_id: int, total: int, images: list[tuple[int, bytes, str]]) -> list[PushOutcome]:
        if not self.batches:
            raise BatchUnsupported("the partner takes one image per call (test transport)")
        box = self._box("push_many")
        return [
            _received(self.partner, box, transaction_id, number, total, self._wire(data), digest)
            for number, data, digest in images
        ]

    def poll(self, n: int) -> list[dict[str, Any]]:
        return transfer.serve_poll(self.partner, self._box("poll"), n)

    def fetch(self, transaction_id: int, outgoing_image_id: int) -> tuple[bytes, str]:
        box = self._box("fetch")
        try:
            data = transfer.serve_image(self.partner, box, transaction_id, outgoing_image_id)
        except (NotFound, InvalidInput) as e:
            raise ImageRefused(e.message) from None
        except SliceboxError as e:
            if e.status_code < 500:
                raise ImageRefused(e.message) from None
            raise PartnerUnavailable(e.message) from None
        return self._wire(data), transfer.sha256(data)

    def done(self, transaction_id: int, outgoing_image_id: int, digest: str) -> None:
        body = {"transaction_id": transaction_id, "outgoing_image_id": outgoing_image_id, "sha256": digest}
        transfer.serve_done(self.partner, self._box("done"), body)

    def done_many(self, confirmed: list[tuple[int, int, str]]) -> None:
        transfer.serve_done(self.partner, self._box("done"), _done_bodies(confirmed))

    def failed(self, transaction_id: int, outgoing_image_id: int, message: str) -> None:
        body = {"transaction_id": transaction_id, "outgoing_image_id": outgoing_image_id, "message": message}
        transfer.serve_failed(self.partner, self._box("failed"), body)

    def close(self) -> None:
        pass
