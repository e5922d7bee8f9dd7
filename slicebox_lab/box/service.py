"""The box service: one thread that pushes to and polls every partner this node calls, with backoff.

Only boxes made by ``connect`` (send method PUSH: we hold the partner's URL) are served by the
loop; for each, every round (1) pushes our pending outgoing images, oldest transaction first, and
(2) polls the partner for its outgoing images for us, fetches, verifies, stores and acknowledges
them.  A round that moved images is followed at once by the next; an idle one waits
``poll_interval`` seconds (or until :meth:`BoxService.wake`, e.g. after a send).  A partner that
cannot be reached makes its box back off (interval × 2ⁿ, at most ``max_backoff``) and its open
transactions WAITING with the reason; other boxes go on.  All state lives in the database
(``index/boxes.py``), so the loop can be killed at any point.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.errors import InvalidInput, NotFound, ServiceUnavailable
from slicebox_lab.jobs import Job

from . import connections, incoming, outgoing, transfer
from .connections import Box, SendMethod
from .transfer import HashMismatch, ImageRefused, PartnerUnavailable
from .transport import BatchUnsupported, BoxTransport, HttpTransport, wire_encoding_for

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

log = logging.getLogger(__name__)

#: the most images one send takes
MAX_IMAGES = 100_000


@dataclass
class BoxSettings:
    """How the box service behaves (``SliceboxApp.box_poll_interval`` sets the interval)."""

    poll_interval: float = 5.0
    #: images taken per round and box (push) and asked for per poll
    batch_size: int = 50
    max_backoff: float = 60.0
    #: tries of one image whose hash keeps failing before it is given up
    max_attempts: int = 5
    request_timeout: float = 60.0
    #: requests of one box in flight at once (anonymizing here overlaps storing there)
    concurrency: int = 8
    #: images one push request carries (a partner that takes one per request gets one)
    images_per_push: int = 4
    #: images confirmed per commit (PUSH) or per acknowledgement request (POLL)
    settle_batch: int = 32
    #: images one box moves before the round goes on to its other direction and the other boxes
    images_per_round: int = 500
    #: Content-Encoding to partners: deflate, gzip, identity, or auto (identity to a partner on this
    #: machine's loopback, deflate to any other)
    compression: str = "auto"

    @property
    def online_window(self) -> float:
        """A box is online when it was heard from within this many seconds (a few poll intervals)."""
        return max(15.0, 3 * self.poll_interval)


_settings: weakref.WeakKeyDictionary[SliceboxContext, BoxSettings] = weakref.WeakKeyDictionary()
_services: weakref.WeakKeyDictionary[SliceboxContext, BoxService] = weakref.WeakKeyDictionary()


def configure_boxes(context: SliceboxContext, **values: Any) -> BoxSettings:
    """Set the node's box settings (before the services start)."""
    current = settings(context)
    for name, value in values.items():
        if not hasattr(current, name):
            raise InvalidInput(f"unknown box setting {name!r}")
        setattr(current, name, value)
    return current


def settings(context: SliceboxContext) -> BoxSettings:
    value = _settings.get(context)
    if value is None:
        value = _settings[context] = BoxSettings()
    return value


def backoff_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: interval, 2×, 4×, ... at most ``cap``."""
    if failures <= 0:
        return 0.0
    return float(min(cap, interval * 2 ** min(failures - 1, 30)))


# ---------------------------------------------------------------------------------------------- sending


def submit_send(
    context: SliceboxContext,
    box_id: Any,
    image_ids: Any,
    profile_json: Any = None,
    tag_values: Any = None,
    owner: str = "",
) -> Job:
    """Queue images for a box as one outgoing transaction; returns its job (kind ``box-send``).

    ``profile_json``: ``Profile.from_json`` body (None: the box's default profile).  ``tag_values``:
    ``{"<PatientID>": [{"tagPath", "value"}]}`` written after the profile into the images of that
    (stored, real) patient, or one list for every image.  Unknown box or image → NotFound.
    """
    box = connections.get_box(context.index, box_id)
    ids = _image_ids(image_ids)
    profile = connections.profile_json(box.default_profile if profile_json is None else profile_json)
    per_patient, for_all = _tag_values(tag_values)
    patient_of_series: dict[int, str] = {}
    images: list[tuple[int, list[Any]]] = []
    found = context.index.images_with_sources(ids)  # one read for the whole send, not one per image
    for image_id in ids:
        if image_id not in found:
            raise NotFound(f"image {image_id} not found")
        image = found[image_id][0]
        values = for_all
        if per_patient:
            if image.series_id not in patient_of_series:
                patient = context.index.get_flat_series(image.series_id).patient
                patient_of_series[image.series_id] = patient.PatientID
            values = per_patient.get(patient_of_series[image.series_id], [])
        images.append((image.id, values))
    description = f"send {len(images)} images to box {box.name}"
    _, job_id = outgoing.create_outgoing(context.index, box, profile, images, description, owner=owner)
    wake_boxes(context)
    return context.jobs.get(job_id)


def wake_boxes(context: SliceboxContext) -> None:
    """Start a round now rather than after the poll interval (a send, a new connection)."""
    service = _services.get(context)
    if service is not None:
        service.wake()


def _image_ids(value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    ):
        raise InvalidInput('imageIds must be a non-empty JSON array of integer image ids, e.g. {"imageIds": [1, 2]}')
    if len(value) > MAX_IMAGES:
        raise InvalidInput(f"one send takes at most {MAX_IMAGES} images")
    return list(dict.fromkeys(value))


def _tag_values(value: Any) -> tuple[dict[str, list[Any]], list[Any]]:
    """(per PatientID, for every image), each entry validated by ``parse_tag_values``."""
    if value is None:
        return {}, []
    if isinstance(value, list):
        parse_tag_values(value)
        return {}, list(value)
    if isinstance(value, dict):
        for patient_id, entries in value.items():
            parse_tag_values(entries, f"tagValues[{patient_id!r}]")
        return {str(k): list(v or []) for k, v in value.items()}, []
    raise InvalidInput('tagValues must be {"<PatientID>": [{"tagPath": ..., "value": ...}]} or one such list')


# ---------------------------------------------------------------------------------------------- the loop


class BoxService:
    """Pushes to and polls every PUSH box; see the module docstring."""

    name = "boxes"

    def __init__(
        self,
        context: SliceboxContext,
        box_settings: BoxSettings | None = None,
        transport_factory: Callable[[Box], BoxTransport] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.settings = box_settings or settings(context)
        self._factory = transport_factory or self._http
        self._clock = clock
        self._transports: dict[int, tuple[str, BoxTransport]] = {}
        #: box id → (consecutive failures, clock time of the next try)
        self._backoff: dict[int, tuple[int, float]] = {}
        #: (box id, transaction, outgoing image) → failed fetches of an image whose hash did not match
        self._fetch_attempts: dict[tuple[int, int, int], int] = {}
        self._contact: dict[int, float] = {}
        #: boxes whose partner takes one image per push request (a node older than several-image pushes)
        self._one_per_push: set[int] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _http(self, box: Box) -> BoxTransport:
        encoding = wire_encoding_for(box.base_url, self.settings.compression)
        return HttpTransport(
            box.base_url, self.settings.request_timeout, encoding, connections=self.settings.concurrency
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        reopened = outgoing.reopen_jobs(self.context.index)
        if reopened:
            log.info("boxes: %d unfinished transactions continue after the restart", reopened)
        _services[self.context] = self
        self._thread = threading.Thread(target=self._loop, name="slicebox-boxes", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for _, transport in self._transports.values():
            transport.close()
        self._transports.clear()
        if _services.get(self.context) is self:
            del _services[self.context]

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("boxes: a round failed")
                busy = False
            if busy:
                continue
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        wait = self.settings.poll_interval
        now = self._clock()
        for _, due in self._backoff.values():
            wait = min(wait, max(0.01, due - now))
        return wait

    # ------------------------------------------------------------------ one round

    def run_once(self) -> bool:
        """Serve every PUSH box that is due once; True if any image moved."""
        if not self.context.leader.is_leader():  # another server sharing the database serves the boxes
            return False
        busy = False
        boxes = connections.list_boxes(self.context.index)
        for gone in set(self._transports) - {box.id for box in boxes}:
            self._transports.pop(gone)[1].close()
            self._backoff.pop(gone, None)
        for box in boxes:
            if self._stop.is_set():
                break
            if box.send_method != SendMethod.PUSH or not self._due(box.id):
                continue
            try:
                transport = self._transport(box)
                moved = self._push(box, transport)
                moved = self._pull(box, transport) or moved
            except PartnerUnavailable as e:
                self._failed(box, e.message)
                continue
            self._succeeded(box)
            busy = busy or moved
        return busy

    def _due(self, box_id: int) -> bool:
        failures, due = self._backoff.get(box_id, (0, 0.0))
        return failures == 0 or self._clock() >= due

    def _transport(self, box: Box) -> BoxTransport:
        known = self._transports.get(box.id)
        if known is not None and known[0] == box.base_url:
            return known[1]
        if known is not None:
            known[1].close()
        transport = self._factory(box)
        self._transports[box.id] = (box.base_url, transport)
        return transport

    def _failed(self, box: Box, reason: str) -> None:
        failures = self._backoff.get(box.id, (0, 0.0))[0] + 1
        delay = backoff_delay(failures, self.settings.poll_interval, self.settings.max_backoff)
        self._backoff[box.id] = (failures, self._clock() + delay)
        if failures == 1 or failures % 10 == 0:
            log.warning("boxes: %s: %s; retrying in %.1f s", box.name, reason, delay)
        self._contact.pop(box.id, None)
        connections.record_contact(self.context.index, box.id, error=reason)
        outgoing.set_waiting(self.context.index, box.id, f"{reason}; retrying")

    def _succeeded(self, box: Box) -> None:
        self._backoff.pop(box.id, None)
        now = self._clock()
        if now - self._contact.get(box.id, -1e9) >= 1.0:
            self._contact[box.id] = now
            connections.record_contact(self.context.index, box.id)

    def _pipeline(
        self,
        next_batch: Callable[[int], list[Any]],
        key: Callable[[Any], Any],
        work: Callable[[list[Any]], list[Any]],
        settle: Callable[[list[Any]], None],
        per_call: int = 1,
        together: Callable[[Any], Any] = lambda item: None,
    ) -> bool:
        """Keep ``concurrency`` calls of one box in flight until no image is pending (or ``images_per_round``).

        ``next_batch(extra)`` lists pending items (``extra`` more than usual: those in flight are listed again
        and skipped); ``work(items)`` moves up to ``per_call`` of them (consecutive ones of the same
        ``together``: one transaction) and returns what to settle (an item whose outcome it recorded itself
        is not in it); ``settle(results)`` records results in groups of ``settle_batch`` (one commit or one
        acknowledgement for many images), and always before the next listing, so that a listing never shows
        a settled image again.  No barrier between calls: a new one starts as soon as one finishes.  The
        first PartnerUnavailable stops new starts and is raised once those in flight have settled.  True if
        any image was taken.
        """
        pool = self._executor()
        in_flight: dict[Future[list[Any]], list[Any]] = {}
        seen: set[Any] = set()
        queue: deque[Any] = deque()
        results: list[Any] = []
        failure: PartnerUnavailable | None = None
        exhausted, taken, unsettled = False, 0, 0
        try:
            while True:
                active = failure is None and not self._stop.is_set()
                if active and not queue and not exhausted and taken < self.settings.images_per_round:
                    settle(results)
                    results = []
                    flying = sum(len(items) for items in in_flight.values())
                    fresh = [x for x in next_batch(flying + unsettled) if key(x) not in seen]
                    exhausted = not fresh
                    queue.extend(fresh[: self.settings.batch_size])
                while active and queue and len(in_flight) < max(1, self.settings.concurrency):
                    items = [queue.popleft()]
                    while queue and len(items) < per_call and together(queue[0]) == together(items[0]):
                        items.append(queue.popleft())
                    seen.update(key(item) for item in items)
                    taken += len(items)
                    in_flight[pool.submit(work, items)] = items
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    items = in_flight.pop(future)
                    try:
                        settled = future.result()
                    except PartnerUnavailable as e:
                        failure = failure or e
                        continue
                    results.extend(settled)
                    unsettled += len(items) - len(settled)
                if len(results) >= self.settings.settle_batch:
                    settle(results)
                    results = []
        finally:
            settle(results)
        if failure is not None:
            raise failure
        return taken > 0

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = max(1, self.settings.concurrency)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="slicebox-box")
        return self._pool

    def _push(self, box: Box, transport: BoxTransport) -> bool:
        index = self.context.index
        per_call = 1 if box.id in self._one_per_push else max(1, self.settings.images_per_push)
        return self._pipeline(
            lambda extra: outgoing.pending_items(index, box.id, self.settings.batch_size + extra),
            lambda item: item.outgoing_image_id,
            lambda items: self._push_some(box, transport, items),
            lambda confirmed: outgoing.mark_sent_many(index, confirmed),
            per_call=per_call,
            together=lambda item: item.transaction_id,
        )

    def _push_some(
        self, box: Box, transport: BoxTransport, items: list[outgoing.OutgoingItem]
    ) -> list[tuple[int, int, str]]:
        """Anonymize and deliver images of one transaction, several in one request where the partner takes
        them; (transaction, outgoing image, SHA-256) of each the partner has durable (marked sent by the
        caller, in groups); an image whose outcome is recorded here (refused, failed) is not listed."""
        ready = self._outgoing(box, items)
        if len(ready) > 1 and box.id not in self._one_per_push:
            try:
                outcomes = transport.push_many(
                    ready[0][0].transaction_id,
                    ready[0][0].total_image_count,
                    [(item.sequence_number, data, digest) for item, data, digest in ready],
                )
            except BatchUnsupported:
                log.info("boxes: %s takes one image per request", box.name)
                self._one_per_push.add(box.id)
            else:
                answered: list[HashMismatch | ImageRefused | None] = []
                for outcome in outcomes:
                    if isinstance(outcome, PartnerUnavailable):  # the box backs off; what was stored is answered
                        raise outcome  # from its receipt when it goes again
                    answered.append(outcome)
                return [
                    settled
                    for (item, _, digest), outcome in zip(ready, answered, strict=True)
                    if (settled := self._settled(box, item, digest, outcome)) is not None
                ]
        pushed = (self._push_one(box, transport, item, data, digest) for item, data, digest in ready)
        return [settled for settled in pushed if settled is not None]

    def _outgoing(self, box: Box, items: list[outgoing.OutgoingItem]) -> list[tuple[outgoing.OutgoingItem, bytes, str]]:
        """The images that can leave, with their bytes as they leave and SHA-256.  The others are recorded as failed
        (deleted since, not safely de-identified), or as an attempt when the node could not do it now."""
        try:
            made = transfer.outgoing_many(self.context, items, box.send_anonymous_as_is)
        except Exception as e:  # the worker's call or the keys' transaction failed: every image with it
            made = [e] * len(items)
        ready, index = [], self.context.index
        for item, answer in zip(items, made, strict=True):
            if not isinstance(answer, Exception):
                ready.append((item, *answer))
                continue
            ids, reason = (item.transaction_id, item.outgoing_image_id), _reason(answer)
            again = isinstance(answer, ServiceUnavailable)  # a worker that died, a node stopping: an attempt
            if not again or outgoing.record_attempt(index, *ids, reason) >= self.settings.max_attempts:
                outgoing.mark_failed(index, *ids, reason)
        return ready

    def _push_one(
        self, box: Box, transport: BoxTransport, item: outgoing.OutgoingItem, data: bytes, digest: str
    ) -> tuple[int, int, str] | None:
        """Deliver one image alone; (transaction, outgoing image, SHA-256) once the partner has it durable."""
        try:
            transport.push(item.transaction_id, item.sequence_number, item.total_image_count, data, digest)
        except (HashMismatch, ImageRefused) as e:
            return self._settled(box, item, digest, e)
        return self._settled(box, item, digest, None)

    def _settled(
        self, box: Box, item: outgoing.OutgoingItem, digest: str, outcome: HashMismatch | ImageRefused | None
    ) -> tuple[int, int, str] | None:
        """What to mark sent for an image the partner answered, or None once its failure is recorded."""
        index = self.context.index
        if outcome is None:
            return item.transaction_id, item.outgoing_image_id, digest
        if isinstance(outcome, HashMismatch):
            attempts = outgoing.record_attempt(index, item.transaction_id, item.outgoing_image_id, outcome.message)
            if attempts >= self.settings.max_attempts:
                outgoing.mark_failed(index, item.transaction_id, item.outgoing_image_id, outcome.message)
        else:
            outgoing.mark_failed(index, item.transaction_id, item.outgoing_image_id, f"{box.name}: {outcome.message}")
        return None

    def _pull(self, box: Box, transport: BoxTransport) -> bool:
        def next_batch(extra: int) -> list[tuple[int, int, int, int]]:
            items = []
            for entry in transport.poll(min(1000, self.settings.batch_size + extra)):
                try:
                    tid, oid = int(entry["transaction_id"]), int(entry["outgoing_image_id"])
                    items.append((tid, oid, int(entry["sequence_number"]), int(entry["total_image_count"])))
                except (KeyError, TypeError, ValueError):
                    raise PartnerUnavailable(f"the partner's poll answer is malformed: {entry!r}") from None
            return items

        def acknowledge(confirmed: list[tuple[int, int, str]]) -> None:
            if confirmed:
                transport.done_many(confirmed)

        return self._pipeline(
            next_batch,
            lambda item: (item[0], item[1]),
            lambda items: [done for item in items if (done := self._pull_one(box, transport, *item)) is not None],
            acknowledge,
        )

    def _pull_one(
        self, box: Box, transport: BoxTransport, tid: int, oid: int, seq: int, total: int
    ) -> tuple[int, int, str] | None:
        """Fetch, verify and store one image; (transaction, outgoing image, SHA-256) to acknowledge once
        it is durable here (the caller acknowledges in groups), None when there is nothing to acknowledge."""
        digest = ""
        key = (box.id, tid, oid)
        if incoming.received_image(self.context.index, box.id, tid, seq) is None:
            try:
                data, digest = transport.fetch(tid, oid)
            except ImageRefused:
                return None  # the partner gave the image up (and says why in its transaction)
            try:
                transfer.receive_image(self.context, box, tid, seq, total, data, digest)
            except HashMismatch as e:
                with self._lock:
                    attempts = self._fetch_attempts[key] = self._fetch_attempts.get(key, 0) + 1
                if attempts >= self.settings.max_attempts:
                    transport.failed(tid, oid, e.message)
                    with self._lock:
                        self._fetch_attempts.pop(key, None)
                return None
            except InvalidInput as e:  # not acceptable DICOM: it will never be
                transport.failed(tid, oid, e.message)
                return None
        with self._lock:
            self._fetch_attempts.pop(key, None)
        return tid, oid, digest


def _reason(error: BaseException) -> str:
    return getattr(error, "message", None) or f"{type(error).__name__}: {error}"


def box_service_factory(context: SliceboxContext) -> BoxService:
    """The node's box service (``services.service_factories``)."""
    return BoxService(context)
