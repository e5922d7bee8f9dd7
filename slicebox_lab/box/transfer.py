"""Both ends of one image transfer: making the bytes on the sender, verifying and storing on the receiver.

The sender anonymizes right before the bytes leave (``context.anonymized_bytes``, the one way to
anonymize: it records the key on the sender) and computes the SHA-256 of what it sends.  The
receiver checks the hash before anything is stored (:class:`HashMismatch` → the sender tries
again), stores through ``context.ingest`` with source ``box``/<box name>, and records
(sender's transaction, sequence number) → image, so a resend of an image already stored is
answered without storing it again.  On the wire the bytes are deflated (``Content-Encoding:
deflate``, zlib format), gzipped or, for compressed transfer syntaxes and loopback partners, sent as
they are; the hash is always that of the uncompressed DICOM file.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slicebox_lab import dicom
from slicebox_lab.anonymization import Profile, keystore
from slicebox_lab.dicom.tagpath import apply_tag_values, parse_tag_values
from slicebox_lab.dicomweb.multipart import PartStream
from slicebox_lab.errors import InvalidInput, NotFound, PeerFailure, ServiceUnavailable, SliceboxError
from slicebox_lab.index import Connection
from slicebox_lab.index import boxes as rows
from slicebox_lab.model import IngestResult, Source

from . import incoming, outgoing
from .connections import Box

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext
    from slicebox_lab.upload import Upload
    from slicebox_lab.workers.tasks import Anonymized, HeadInspected

#: header carrying the hex SHA-256 of the uncompressed DICOM bytes
HASH_HEADER = "X-Slicebox-SHA256"
#: largest decompressed image a receiver accepts (a zip bomb guard)
MAX_IMAGE_BYTES = 2 << 30


class HashMismatch(InvalidInput):
    """The bytes received are not the bytes sent (their SHA-256 differs): nothing was stored; send again."""


class PartnerUnavailable(PeerFailure):
    """The partner could not be reached or failed (connection, 5xx, refused token): retry the box later."""


class ImageRefused(PeerFailure):
    """The partner refused this image for good (not acceptable DICOM, unknown image): do not retry it."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compress(data: bytes, encoding: str = "deflate") -> bytes:
    """Standard deflate (zlib format) or gzip, level 1 with the run-length strategy (``Z_RLE``).

    Z_RLE skips LZ77's string matching: about twice as fast as plain level 1 on 16-bit pixel data
    (6.7 vs 14 ms for a 512² CT) and as small or nearly so; compressing was the sender's largest cost.
    Any inflater reads it.  ``identity`` returns the bytes as they are.
    """
    if encoding == "identity":
        return data
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits, 8, zlib.Z_RLE)
    return packer.compress(data) + packer.flush()


#: transfer syntaxes whose pixel data deflate cannot shrink (JPEG, JPEG 2000, RLE, deflated, ...)
_UNCOMPRESSED_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.98"}
)


def wire_encoding(data: bytes, preferred: str = "deflate") -> str:
    """``preferred``, or ``identity`` for an image whose transfer syntax is compressed already (read
    from the file meta group, without parsing the data set): deflating it again costs CPU for nothing."""
    if preferred == "identity":  # nothing to decide (a partner on this machine): no file meta to read
        return preferred
    syntax = dicom.transfer_syntax_of(data)
    if syntax is not None and syntax not in _UNCOMPRESSED_SYNTAXES:
        return "identity"
    return preferred


def decompress(data: bytes, encoding: str) -> bytes:
    """The body as sent before ``Content-Encoding`` (deflate, gzip or none); InvalidInput if it is not."""
    encoding = (encoding or "identity").strip().lower()
    try:
        if encoding in ("", "identity"):
            return data
        if encoding == "deflate":
            inflater = zlib.decompressobj()
            out = inflater.decompress(data, MAX_IMAGE_BYTES)
        elif encoding in ("gzip", "x-gzip"):
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(data, MAX_IMAGE_BYTES)
        else:
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use deflate or gzip")
    except zlib.error as e:
        raise HashMismatch(f"the body could not be decompressed ({e}): send it again") from None
    if inflater.unconsumed_tail:
        raise InvalidInput(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    return out


#: the file's first bytes a worker is given to inspect its header early (a compressed body's inflated apart; a
#: header is a few KiB: a longer one is inspected whole once the file is in)
_EARLY_HEAD = 16 << 10


class _Body:
    """A request body as it was sent (``Content-Encoding`` deflate, gzip or none), inflated piece by piece and
    counted against the largest image a receiver accepts."""

    def __init__(self, encoding: str) -> None:
        encoding = (encoding or "identity").strip().lower()
        if encoding in ("", "identity"):
            self.wbits: int | None = None
        elif encoding == "deflate":
            self.wbits = zlib.MAX_WBITS
        elif encoding in ("gzip", "x-gzip"):
            self.wbits = 16 + zlib.MAX_WBITS
        else:
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use deflate or gzip")
        self._inflater: Any = None if self.wbits is None else zlib.decompressobj(self.wbits)
        self._size = 0

    def inflated(self, pieces: list[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            data = piece
            if self._inflater is not None:
                try:
                    data = self._inflater.decompress(piece, MAX_IMAGE_BYTES - self._size + 1)
                except zlib.error as e:
                    raise HashMismatch(f"the body could not be decompressed ({e}): send it again") from None
                if self._inflater.unconsumed_tail:
                    raise InvalidInput(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
            self.count(len(data))
            yield data

    def count(self, size: int) -> None:
        self._size += size
        if self._size > MAX_IMAGE_BYTES:
            raise InvalidInput(f"the image is larger than {MAX_IMAGE_BYTES} bytes")

    def finish(self) -> None:
        if self._inflater is not None and not self._inflater.eof:
            raise HashMismatch("the compressed body ends before its stream does: send it again")


class IncomingImage:
    """A pushed image as its body arrives: inflated (deflate, gzip or none), hashed (SHA-256 of the DICOM
    bytes, what the sender sent along) and written into an upload of the node (``context.Upload``), so no
    body is held in memory; :meth:`receive` then checks the hash and stores it with its receipt.

    ``inspect_head`` (``context.inspect_head``): the file's header is inspected from the body's first bytes
    while the rest arrives, as an upload's is (``handlers/upload.py``), so that storing it waits only for the
    disk and a worker need not read the whole file back."""

    def __init__(
        self,
        upload: Upload,
        encoding: str,
        inspect_head: Callable[[bytes], Future[HeadInspected | None] | None] | None = None,
    ) -> None:
        self._body = _Body(encoding)
        self.upload = upload
        self._inspect_head = inspect_head
        self._hash = hashlib.sha256()

    def early(self, head: bytes) -> None:
        """The body's first bytes, on the event loop: the file's first bytes (a compressed body's inflated
        apart, at most 16 KiB of them: some 50 µs) go to a worker, which inspects its header."""
        if self._inspect_head is None:
            return
        start = head
        if self._body.wbits is not None:
            try:
                start = zlib.decompressobj(self._body.wbits).decompress(head, _EARLY_HEAD)
            except zlib.error:
                return  # the whole body tells (a hash mismatch): the file is inspected whole if it is stored
        self.upload.inspect_early(self._inspect_head(start))

    def feed(self, pieces: list[bytes]) -> None:
        for data in self._body.inflated(pieces):
            self._hash.update(data)
            self.upload.write(data)

    def write(self, data: bytes | memoryview) -> None:
        """Bytes of the file itself (a part of a several-image body, inflated already), counted and hashed."""
        self._body.count(len(data))
        self._hash.update(data)
        self.upload.write(data)

    def finish(self) -> None:
        self._body.finish()

    def discard(self) -> None:
        self.upload.discard()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def outgoing_bytes(context: SliceboxContext, item: outgoing.OutgoingItem, send_anonymous_as_is: bool = False) -> bytes:
    """The image as it leaves: anonymized with the transaction's profile and tag values, never stored.

    Every image is anonymized, flagged PatientIdentityRemoved=YES or not: nothing identifying leaves
    the node unless an option says so, and a wrongly flagged image would otherwise leak.  With the
    box option ``send_anonymous_as_is`` an image flagged anonymous (e.g. results computed on data
    received through the box) leaves as it is, only the tag values written, as Slicebox did: the
    node that de-identified it can then re-identify it when it comes back (new pseudonyms could not).
    """
    values = parse_tag_values(item.tag_values)
    if send_anonymous_as_is:
        data = context.image_bytes(item.image_id)
        dataset = dicom.parse_part10(data).dataset
        if keystore.is_anonymous(dataset):
            if not values:
                return data
            apply_tag_values(dataset, values)
            return dicom.write_part10(dataset)
    return context.anonymized_bytes(item.image_id, Profile.from_json(item.profile), values)


def outgoing_many(
    context: SliceboxContext, items: Sequence[outgoing.OutgoingItem], send_anonymous_as_is: bool = False
) -> list[tuple[bytes, str] | Exception]:
    """Each image as it leaves (:func:`outgoing_bytes`) with its SHA-256, or why it cannot leave.  The images of one
    push (one transaction, one profile) are de-identified in one worker's call, which hashes them as it writes, and
    their keys recorded in one durable transaction: per image, one pipe round trip and one commit fewer in the
    sending server, whose one GIL caps a push."""
    if send_anonymous_as_is or any(item.profile != items[0].profile for item in items):
        return [_outgoing_alone(context, item, send_anonymous_as_is) for item in items]
    found = context.index.images_with_sources([item.image_id for item in items])
    present = [item for item in items if item.image_id in found]
    wanted = [(found[item.image_id][0], parse_tag_values(item.tag_values)) for item in present]
    answers = context.anonymized_files(wanted, Profile.from_json(items[0].profile), sha256=True) if wanted else []
    made = {item.outgoing_image_id: _spooled(context, answer) for item, answer in zip(present, answers, strict=True)}
    return [made.get(item.outgoing_image_id) or NotFound(f"image {item.image_id} not found") for item in items]


def _spooled(context: SliceboxContext, answer: Anonymized | Exception) -> tuple[bytes, str] | Exception:
    """A de-identified copy's bytes and SHA-256, its spool file released; or why there is none."""
    if isinstance(answer, Exception):
        return answer
    try:
        return context.take(answer), answer.sha256
    except OSError as error:
        return error


def _outgoing_alone(
    context: SliceboxContext, item: outgoing.OutgoingItem, send_anonymous_as_is: bool
) -> tuple[bytes, str] | Exception:
    try:
        data = outgoing_bytes(context, item, send_anonymous_as_is)
    except Exception as error:
        return error
    return data, sha256(data)


@dataclass(frozen=True)
class Received:
    image_id: int
    added: bool
    duplicate: bool
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "added": self.added, "duplicate": self.duplicate, "status": self.status}


def receive_image(
    context: SliceboxContext,
    box: Box,
    transaction_id: int,
    sequence_number: int,
    total: int,
    data: bytes | IncomingImage,
    expected_sha256: str,
) -> Received:
    """Verify, store once, record; returns only when the image is durable (the sender may then forget it).

    ``data``: the DICOM bytes, or an :class:`IncomingImage` streamed into storage as it arrived."""
    if isinstance(data, bytes):
        image = IncomingImage(context.upload(Source("box", box.name)), "identity")
        image.feed([data])
    else:
        image = data
    try:
        if not isinstance(expected_sha256, str) or len(expected_sha256) != 64:
            raise InvalidInput(f"the {HASH_HEADER} header must be the hex SHA-256 of the DICOM bytes")
        digest = image.hexdigest()
        if digest != expected_sha256.lower():
            raise HashMismatch(
                f"SHA-256 of the received image {digest} differs from the one sent {expected_sha256}: send it again"
            )
        for name, value in (("transactionid", transaction_id), ("sequencenumber", sequence_number)):
            if value < 1:
                raise InvalidInput(f"{name} must be a positive integer")
        if total < sequence_number:
            raise InvalidInput("totalimagecount must be at least sequencenumber")
    except BaseException:
        image.discard()
        raise
    statuses: list[str] = []

    def receipt(conn: Connection, result: IngestResult) -> None:
        """Written in the image's own transaction: stored means receipted (a resend is then answered
        from the receipt), and there is no second commit to wait for."""
        this = incoming.Receipt(
            box, transaction_id, sequence_number, total, result.image.id, result.image_added, digest
        )
        statuses.append(incoming.write_receipt(conn, this, new_only=True))

    # a resend is rare (a sender restarted with images in flight): it is found by its receipt, which
    # rolls back the new copy, rather than by a lookup before every image
    try:
        result = image.upload.store(also=receipt)
    except incoming.AlreadyReceived as before:
        return Received(before.image_id, False, True, before.status)
    except rows.DuplicateReceipt:  # a concurrent resend came first (its receipt is unique)
        known = incoming.received_image(context.index, box.id, transaction_id, sequence_number)
        if known is None:
            raise PartnerBusy("a resend of this image is being stored at this moment: send it again") from None
        again = incoming.Receipt(box, transaction_id, sequence_number, total, known, False, digest)
        status = incoming.record_received(context.index, again)
        return Received(known, False, True, status)
    return Received(result.image.id, result.image_added, False, statuses[-1])


class PartnerBusy(ServiceUnavailable):
    """The same image arrived twice at once; the second is refused for now (the sender retries it)."""


#: part headers of a push of several images (``multipart/related; type="application/dicom"``)
SEQUENCE_HEADER = "X-Slicebox-Sequence-Number"
#: the most images one push request carries
MAX_IMAGES_PER_PUSH = 64


class IncomingImages:
    """Several pushed images of one transaction in one body, as it arrives (``multipart/related``; the whole
    body deflated, gzipped or not): each part is hashed and written into an upload as it comes, and stored
    with its receipt as it ends (:func:`receive_image`), so a request's handling is paid once for them all.

    Each part carries its sequence number (``X-Slicebox-Sequence-Number``) and the SHA-256 of its bytes
    (``X-Slicebox-SHA256``).  A part that fails (its hash, not DICOM) fails alone: :attr:`outcomes` holds,
    in order, each part's :class:`Received` answer or its error."""

    def __init__(
        self, context: SliceboxContext, box: Box, transaction_id: int, total: int, boundary: str, encoding: str
    ) -> None:
        self._body = _Body(encoding)
        self._context, self._box = context, box
        self._transaction_id, self._total = transaction_id, total
        self._part: IncomingImage | None = None
        self._headers: dict[str, str] = {}
        self._failed: SliceboxError | None = None
        self._inspected = False
        #: (sequence number, answer or error) of each part, in order
        self.outcomes: list[tuple[int, Received | SliceboxError]] = []
        self._parts = PartStream(boundary, self._part_begin, self._part_data, self._part_end)

    def early(self, head: bytes) -> None:
        """(Several files: their headers are inspected as each part is stored.)"""

    def feed(self, pieces: list[bytes]) -> None:
        for data in self._body.inflated(pieces):
            self._parts.write(data)

    def finish(self) -> None:
        self._body.finish()
        self._parts.finish()

    def discard(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.discard()

    # ------------------------------------------------------------ the parts

    def _part_begin(self, headers: dict[str, str]) -> None:
        if len(self.outcomes) >= MAX_IMAGES_PER_PUSH:
            raise InvalidInput(f"one push carries at most {MAX_IMAGES_PER_PUSH} images")
        self._headers, self._failed, self._inspected = headers, None, False
        self._part = IncomingImage(self._context.upload(Source("box", self._box.name)), "identity")

    def _part_data(self, data: memoryview) -> None:
        part = self._part
        if part is not None and self._failed is None:
            try:
                part.write(data)
            except SliceboxError as error:  # too large: this part fails, the others go on
                self._failed = error
                return
            if not self._inspected and len(part.upload.head) >= _EARLY_HEAD:
                # its header goes to a worker now: the part is stored on that answer, not read back whole
                self._inspected = True
                part.upload.inspect_early(self._context.inspect_head(part.upload.head))

    def _part_end(self) -> None:
        part, self._part = self._part, None
        if part is None:
            return
        headers = self._headers
        number = headers.get(SEQUENCE_HEADER.lower(), "")
        sequence_number = int(number) if number.isdigit() else 0
        if self._failed is None and sequence_number < 1:
            self._failed = InvalidInput(f"each part needs its {SEQUENCE_HEADER}, a positive integer")
        if self._failed is not None:
            part.discard()
            self.outcomes.append((sequence_number, self._failed))
            return
        try:
            received: Received | SliceboxError = receive_image(
                self._context,
                self._box,
                self._transaction_id,
                sequence_number,
                self._total,
                part,
                headers.get(HASH_HEADER.lower(), ""),
            )
        except SliceboxError as error:  # receive_image stored it or discarded it: nothing is left to do
            received = error
        self.outcomes.append((sequence_number, received))

    def to_json(self) -> list[dict[str, Any]]:
        """Each part's answer: ``{"sequence_number", "image_id", "added", "duplicate", "status"}``, or
        ``{"sequence_number", "error": {"status", "reason", "message"}}``."""
        answers: list[dict[str, Any]] = []
        for number, outcome in self.outcomes:
            if isinstance(outcome, Received):
                answers.append({"sequence_number": number, **outcome.to_json()})
            else:
                error = {"status": outcome.status_code, "reason": type(outcome).__name__, "message": outcome.message}
                answers.append({"sequence_number": number, "error": error})
        return answers


# ---------------------------------------------------------------------------------------------- the polled side


def serve_poll(context: SliceboxContext, box: Box, n: int) -> list[dict[str, Any]]:
    """The next images the partner should fetch (oldest transaction first), as it sees them."""
    if n < 1:
        raise InvalidInput("n must be a positive integer")
    return [item.to_json() for item in outgoing.pending_items(context.index, box.id, min(n, 1000))]


def serve_image(context: SliceboxContext, box: Box, transaction_id: Any, outgoing_image_id: Any) -> bytes:
    """The anonymized bytes of one outgoing image; an image that cannot be made fails (and says why)."""
    item = outgoing.outgoing_item(context.index, box.id, transaction_id, outgoing_image_id)
    try:
        return outgoing_bytes(context, item, box.send_anonymous_as_is)
    except PeerFailure:
        raise
    except Exception as e:  # the image was deleted, or cannot be de-identified safely
        reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        outgoing.mark_failed(context.index, item.transaction_id, item.outgoing_image_id, reason)
        raise


#: most acknowledgements in one ``outgoing/done`` request
MAX_DONE = 1000


def serve_image_for_wire(
    context: SliceboxContext, box: Box, transaction_id: Any, outgoing_image_id: Any, accept_encoding: str
) -> tuple[bytes, str, str]:
    """(body, SHA-256 of the DICOM bytes, Content-Encoding) of one outgoing image, made in one go off the
    event loop: deflate or gzip if the partner accepts it, none for compressed transfer syntaxes."""
    data = serve_image(context, box, transaction_id, outgoing_image_id)
    digest = sha256(data)
    accepted = accept_encoding.lower()
    encoding = "identity"
    if wire_encoding(data) != "identity":
        encoding = "deflate" if "deflate" in accepted else "gzip" if "gzip" in accepted else "identity"
    return compress(data, encoding), digest, encoding


def serve_done(context: SliceboxContext, box: Box, body: Any) -> None:
    """The partner has the images durable: ``{"transaction_id", "outgoing_image_id", "sha256"?}`` or a
    list of them (acknowledged in one commit); any unknown image → NotFound and none is marked."""
    bodies = body if isinstance(body, list) else [body]
    if not bodies or len(bodies) > MAX_DONE:
        raise InvalidInput(f"acknowledge 1 to {MAX_DONE} images per request")
    for entry in bodies:
        if not isinstance(entry, dict):
            raise InvalidInput('each acknowledgement must be {"transaction_id": ..., "outgoing_image_id": ...}')
    # every image checked in one query (a polling partner acknowledges dozens at a time)
    pairs = outgoing.check_outgoing(
        context.index, box.id, [(e.get("transaction_id"), e.get("outgoing_image_id")) for e in bodies]
    )
    digests = [e.get("sha256", "") if isinstance(e.get("sha256", ""), str) else "" for e in bodies]
    outgoing.mark_sent_many(context.index, [(t, o, d) for (t, o), d in zip(pairs, digests, strict=True)])


def serve_failed(context: SliceboxContext, box: Box, body: Any) -> None:
    """The partner gives up on the image: ``{"transaction_id", "outgoing_image_id", "message"}``."""
    item = _item_of(context, box, body)
    message = str(body.get("message") or "refused by the partner")
    outgoing.mark_failed(context.index, item.transaction_id, item.outgoing_image_id, f"{box.name}: {message}")


def _item_of(context: SliceboxContext, box: Box, body: Any) -> outgoing.OutgoingItem:
    if not isinstance(body, dict):
        raise InvalidInput('the body must be {"transaction_id": ..., "outgoing_image_id": ...}')
    return outgoing.outgoing_item(context.index, box.id, body.get("transaction_id"), body.get("outgoing_image_id"))
