"""Forwarding rules: images from a source go on to a box or a remote node once the source is quiet.

A rule is ``{"source": {"sourceType", "sourceName"}, "destination": {"type": "box"|"scu", "id"},
"keepImages", "quietSeconds"}``.  Every image the source delivers (``ImageAdded``) is queued for
the rule in the index (table ``forwarding_queue``), so a restart loses nothing.  Once no image has
been queued for the rule for ``quietSeconds`` (default 30, as Slicebox's 30 s poll), the queue is
sent as one *batch*: one box transaction (``box.submit_send``, the box's default profile, no tag
values) or one ``scu-send`` job (C-STORE).  Images arriving meanwhile form the next batch.

Delivery is confirmed when the box transaction is FINISHED (the partner has every image durable)
or the C-STORE job SUCCEEDED (per image: those not in its ``failed``); only then, with
``keepImages=false``, are the local images deleted (``context.delete_images``), never before.

Decisions (where Slicebox left a choice or had a known problem):

* A rule with the same source and destination as another is a 409 naming the existing rule
  (Slicebox returned the first rule unchanged even when keepImages differed, which hid the
  mistake); delete it and create it anew to change it.  Unknown box or remote node → 404.
  ``sourceType`` is one of ``model.SOURCE_TYPES`` (``watch`` is accepted for ``directory``) and
  ``sourceName`` the SCP's, watch's or box's name, or the user's name; the source need not have
  sent anything yet (as with tag filters), or is given by ``sourceId`` (``GET /sources``).
  ``keepImages`` defaults to true (nothing is deleted unless asked for).  A rule whose box or
  remote node is deleted stays; its sends fail and are given up as below.
* A batch holds at most :data:`MAX_BATCH` images: a source that never falls quiet is still
  forwarded, in batches of that size.
* Several rules on one source (two destinations): an image is deleted (any rule with
  ``keepImages=false``: delete wins, as in Slicebox) only once every rule that queued it has
  delivered it; if one destination gave up on it, it is kept.
* Failures: a batch whose send fails (job FAILED, peer refused, transaction FAILED, box or remote
  node deleted) is marked FAILED with the reason; its images that are not confirmed delivered and
  still exist are sent again in a new batch after a back-off (``retry_seconds`` × 2^(attempt-1),
  at most one hour), up to :data:`MAX_ATTEMPTS` attempts, then given up (state FAILED, the images
  are kept).  A partner that cannot be reached does not fail a box transaction (it waits), so a
  box batch simply stays SENDING until the partner is back.  A C-STORE job interrupted by a
  restart counts as a failed attempt.  A resent image replaces the same image at the destination.
* Images deleted before they were sent are skipped (state SKIPPED); the queue forgets a deleted
  image at once (foreign key).
* Deleting a rule deletes its queue and its batch history: nothing more is queued or sent for it
  and nothing more is deleted for it (a box transaction already under way still completes).
* Known window: an image is queued right after its ingest commits; a crash exactly in between
  leaves it unforwarded.  A crash between submitting a batch and recording its job sends it again
  after the restart (harmless: the destination stores it once).

States of a batch: QUEUED (waiting to be submitted, after ``notBefore``), SENDING, DELIVERED,
FAILED.  States of an image in a batch: PENDING, DELIVERED (kept: keepImages or waiting for another
rule), DELETED (deleted here after delivery), KEPT (delivered, but kept because another destination
gave up on it), RETRIED (not delivered, in a later batch), FAILED (given up), SKIPPED.
(:class:`BatchState`, :class:`ImageState`.)  The statements are ``index/forwarding.py``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, InvalidInput, NotFound, SliceboxError
from ..events import ImageAdded
from ..index import Index
from ..index import forwarding as rows
from ..index.query import row_id
from ..index.sources import SourceName, source_by_id
from ..index.unique import writing_unique
from ..model import SOURCE_TYPES, Source

if TYPE_CHECKING:
    from ..context import SliceboxContext

__all__ = [
    "DESTINATION_TYPES",
    "BatchState",
    "ImageState",
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "ForwardingRule",
    "ForwardingService",
    "create_rule",
    "delete_rule",
    "forwarding_service_factory",
    "get_rule",
    "list_batches",
    "list_rules",
]

log = logging.getLogger(__name__)

DESTINATION_TYPES: tuple[str, ...] = ("box", "scu")
DEFAULT_QUIET_SECONDS = 30.0
MAX_QUIET_SECONDS = 7 * 24 * 3600.0
#: the most images one batch sends
MAX_BATCH = 5000
#: attempts of one image before it is given up (kept here, batch FAILED)
MAX_ATTEMPTS = 10
MAX_RETRY_DELAY = 3600.0
NAME_ALIASES = {"watch": "directory"}


class BatchState(StrEnum):
    """States of a batch (the module docstring says when each is reached)."""

    QUEUED = "QUEUED"
    SENDING = "SENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class ImageState(StrEnum):
    """States of an image in a batch."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DELETED = "DELETED"
    KEPT = "KEPT"
    RETRIED = "RETRIED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their (UTC) offset."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    aware = _aware(value)
    return None if aware is None else aware.isoformat()


# ---------------------------------------------------------------------------------------------- records


class ForwardingRule(rows.RuleRow):
    """A rule as stored (fields: ``index/forwarding.py``), with its JSON."""

    def to_json(self, source_id: int | None = None, queued: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": {"sourceType": self.source_type, "sourceName": self.source_name, "sourceId": source_id},
            "destination": {"type": self.destination_type, "id": self.destination_id, "name": self.destination_name},
            "keepImages": self.keep_images,
            "quietSeconds": self.quiet_seconds,
            "created": _iso(self.created),
            "queuedImageCount": queued,
        }


def _rules_json(listed: list[rows.ListedRule]) -> list[dict[str, Any]]:
    return [ForwardingRule(*r.rule).to_json(r.source_id, r.queued) for r in listed]


# ---------------------------------------------------------------------------------------------- rules cache

_caches: weakref.WeakKeyDictionary[Index, dict[tuple[str, str], list[int]]] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _invalidate(index: Index) -> None:
    with _caches_lock:
        _caches.pop(index, None)


def _rules_of_source(index: Index, source: Source) -> list[int]:
    """Ids of the rules of ``source``; read once after each change (the ingest thread asks per image)."""
    with _caches_lock:
        found = _caches.get(index)
    if found is None:
        found = {}
        for rule_id, source_type, source_name in rows.rule_sources(index):
            found.setdefault((source_type, source_name), []).append(rule_id)
        with _caches_lock:
            _caches[index] = found
    return found.get((source.source_type, source.source_name), [])


# ---------------------------------------------------------------------------------------------- validation


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(
            'the body must be a JSON object like {"source": {"sourceType": "scp", "sourceName": "ct"}, '
            '"destination": {"type": "box", "id": 1}, "keepImages": true, "quietSeconds": 30}'
        )
    return body


def _source(body: Any, lookup: Callable[[int], SourceName | None]) -> tuple[str, str]:
    if not isinstance(body, Mapping):
        raise InvalidInput('"source" must be an object {"sourceType", "sourceName" | "sourceId"}')
    source_type = body.get("sourceType")
    if isinstance(source_type, str):
        source_type = NAME_ALIASES.get(source_type.lower(), source_type.lower())
    if source_type not in SOURCE_TYPES:
        raise InvalidInput(f'"sourceType" must be one of {", ".join(SOURCE_TYPES)}, not {body.get("sourceType")!r}')
    name = body.get("sourceName")
    if body.get("sourceId") is not None:
        key = row_id(body["sourceId"], "sourceId")
        row = None if key is None else lookup(key)
        if row is None:
            raise NotFound(
                f'source {body["sourceId"]} not found (give "sourceName" for a source that sent nothing yet)'
            )
        if row.source_type != source_type:
            raise InvalidInput(f"source {body['sourceId']} is of type {row.source_type!r}, not {source_type!r}")
        return str(source_type), str(row.source_name)
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput('give the source as "sourceName" (a non-empty string) or "sourceId" (an integer)')
    return str(source_type), name.strip()


def _destination(index: Index, body: Any) -> tuple[str, int, str]:
    from ..box import connections as box_connections
    from ..net import nodes

    if not isinstance(body, Mapping):
        raise InvalidInput('"destination" must be an object {"type": "box"|"scu", "id": <id>}')
    kind = body.get("type", body.get("destinationType"))
    key = body.get("id", body.get("destinationId"))
    if not isinstance(kind, str) or kind.lower() not in DESTINATION_TYPES:
        raise InvalidInput(f'destination "type" must be "box" or "scu", not {kind!r}')
    if key is None:
        raise InvalidInput('the destination needs "id": the id of the box or of the remote node (SCU)')
    if kind.lower() == "box":
        box = box_connections.get_box(index, key)
        return "box", box.id, box.name
    node = nodes.get_scu(index, key)
    return "scu", node.id, node.name


def _keep_images(body: Mapping[str, Any]) -> bool:
    value = body.get("keepImages", True)
    if not isinstance(value, bool):
        raise InvalidInput(f'"keepImages" must be true or false, not {value!r}')
    return value


def _quiet_seconds(body: Mapping[str, Any]) -> float:
    value = body.get("quietSeconds", DEFAULT_QUIET_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_QUIET_SECONDS:
        raise InvalidInput(f'"quietSeconds" must be a number of seconds from 0 to {int(MAX_QUIET_SECONDS)}')
    return float(value)


# ---------------------------------------------------------------------------------------------- rules


def list_rules(index: Index, start_index: int = 0, count: int = 20) -> list[dict[str, Any]]:
    return _rules_json(rows.rules_page(index, start_index, count))


def get_rule(index: Index, rule_id: Any) -> dict[str, Any]:
    key = row_id(rule_id, "rule id")
    found = None if key is None else rows.rule(index, key)
    if found is None:
        raise NotFound(f"forwarding rule {rule_id} not found")
    return _rules_json([found])[0]


def create_rule(index: Index, body: Any) -> dict[str, Any]:
    """Validate and store a rule; same source and destination as an existing rule → Conflict."""
    body = _object(body)
    keep, quiet = _keep_images(body), _quiet_seconds(body)
    destination_type, destination_id, destination_name = _destination(index, body.get("destination"))
    with writing_unique(index, "a forwarding rule with this source and destination already exists") as conn:
        source_type, source_name = _source(body.get("source"), lambda key: source_by_id(conn, key))
        existing = rows.rule_id_for(conn, source_type, source_name, destination_type, destination_id)
        if existing is not None:
            raise Conflict(
                f"forwarding rule {existing} already forwards {source_type} {source_name!r} to "
                f"{destination_type} {destination_name!r}: delete it to change it"
            )
        rule_id = rows.insert_rule(
            conn, source_type, source_name, destination_type, destination_id, destination_name, keep, quiet, _now()
        )
        inserted = rows.rule_by_id(conn, rule_id)
        assert inserted is not None
        created = _rules_json(rows.listed_rules(conn, [inserted]))[0]
    _invalidate(index)
    return created


def delete_rule(index: Index, rule_id: Any) -> None:
    """Delete a rule with its queue and batches (the next image of its source is not queued)."""
    key = row_id(rule_id, "rule id")
    if key is None or not rows.delete_rule(index, key):
        raise NotFound(f"forwarding rule {rule_id} not found")
    _invalidate(index)


def _batch_json(row: rows.BatchRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "ruleId": row.rule_id,
        "state": row.state,
        "attempt": row.attempt,
        "imageCount": row.image_count,
        "images": dict(row.images),
        "jobId": row.job_id,
        "transactionId": row.transaction_id,
        "reason": row.reason,
        "notBefore": _iso(row.not_before),
        "created": _iso(row.created),
        "updated": _iso(row.updated),
    }


def list_batches(index: Index, rule_id: Any, start_index: int = 0, count: int = 20) -> list[dict[str, Any]]:
    """The rule's batches, newest first, with the number of images in each image state."""
    key = row_id(rule_id, "rule id")
    found = None if key is None else rows.rule_batches(index, key, start_index, count)
    if found is None:
        raise NotFound(f"forwarding rule {rule_id} not found")
    return [_batch_json(r) for r in found]


# ---------------------------------------------------------------------------------------------- service


@dataclass(frozen=True)
class _Outcome:
    """What became of a SENDING batch: None while still under way."""

    delivered: frozenset[int]
    reason: str


class ForwardingService:
    """Queues images on ingest and, on a worker thread, batches, sends, confirms and deletes."""

    name = "forwarding"

    def __init__(
        self,
        context: SliceboxContext,
        tick: float = 1.0,
        retry_seconds: float = 30.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._context_ref = weakref.ref(context)
        self._index = context.index
        self.tick = tick
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._run_lock = threading.Lock()

    @property
    def _context(self) -> SliceboxContext:
        context = self._context_ref()
        if context is None:
            raise SliceboxError("the node of this forwarding service is gone")
        return context

    # ------------------------------------------------------------------ service

    def start(self) -> None:
        """Subscribe to new images and start the worker (it first finishes what a restart interrupted)."""
        if self._thread is not None:
            return
        _invalidate(self._index)
        self._unsubscribe = self._context.events.subscribe(ImageAdded, self.on_image_added)
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="slicebox-forwarding", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("forwarding: a round failed; trying again")
            self._wake.wait(self.tick)
            self._wake.clear()

    # ------------------------------------------------------------------ ingest

    def on_image_added(self, event: ImageAdded) -> None:
        """On the ingest thread: queue the image for each rule of its source (durably, so a restart keeps it)."""
        rule_ids = _rules_of_source(self._index, event.source)
        if not rule_ids:
            return
        stamp = self.clock()
        for rule_id in rule_ids:
            rows.queue_image(self._index, rule_id, event.image.id, stamp)

    # ------------------------------------------------------------------ one round

    def run_once(self) -> None:
        """Batch the queues of quiet sources, submit due batches, settle finished ones, delete what may go."""
        if not self._context.leader.is_leader():  # another server sharing the database forwards
            return
        with self._run_lock:
            self._make_batches()
            self._submit_due()
            self._check_sending()
            self._delete_delivered()

    def _make_batches(self) -> None:
        now = self.clock()
        for rule_id, last, count, quiet in rows.waiting_queues(self._index):
            last_added = _aware(last)
            assert last_added is not None
            if count < MAX_BATCH and now - last_added < timedelta(seconds=quiet):
                continue
            with self._index.writing() as conn:
                ids = rows.queued_images(conn, rule_id, MAX_BATCH)
                if not ids:
                    continue
                rows.insert_batch(
                    conn, rule_id, ids, BatchState.QUEUED, ImageState.PENDING, 1, not_before=None, created=self.clock()
                )
                rows.unqueue(conn, rule_id, ids)

    def _submit_due(self) -> None:
        for batch_id, attempt, destination_type, destination_id in rows.due_batches(
            self._index, BatchState.QUEUED, self.clock()
        ):
            with self._index.writing() as conn:
                ids = rows.batch_images(conn, batch_id, ImageState.PENDING)
                existing = rows.existing_images(conn, ids)
                rows.set_image_states(conn, batch_id, [i for i in ids if i not in existing], ImageState.SKIPPED)
            send = [i for i in ids if i in existing]
            if not send:
                self._settle(batch_id, BatchState.DELIVERED, "every image was deleted before it could be sent")
                continue
            try:
                job_id, transaction_id = self._send(destination_type, destination_id, send)
            except SliceboxError as error:
                self._failed(batch_id, attempt, frozenset(), f"could not be sent: {error}")
                continue
            with self._index.writing() as conn:
                rows.set_batch_sending(conn, batch_id, BatchState.SENDING, job_id, transaction_id, self.clock())

    def _send(self, destination_type: str, destination_id: int, ids: list[int]) -> tuple[int, int | None]:
        """Submit the send; (job id, box transaction id or None)."""
        if destination_type == "box":
            from .. import box

            job = box.submit_send(self._context, destination_id, ids)
            return job.id, int(job.parameters["transaction_id"])
        from ..net import scu_jobs

        job = scu_jobs.submit_send(self._context, destination_id, ids)
        return job.id, None

    def _outcome(self, job_id: int | None, transaction_id: int | None, ids: list[int]) -> _Outcome | None:
        from ..jobs import JobState

        if transaction_id is not None:
            from ..box import outgoing as box_outgoing

            try:
                transaction = box_outgoing.get_outgoing(self._index, transaction_id)
            except NotFound:
                return _Outcome(frozenset(), f"box transaction {transaction_id} was deleted")
            if transaction["status"] == box_outgoing.TransactionStatus.FINISHED:
                return _Outcome(frozenset(ids), "")
            if transaction["status"] != box_outgoing.TransactionStatus.FAILED:
                return None
            sent = frozenset(
                int(i["image_id"])
                for i in box_outgoing.outgoing_images(self._index, transaction_id)
                if i["state"] == box_outgoing.ImageState.SENT
            )
            return _Outcome(sent, f"box transaction {transaction_id} failed: {transaction.get('reason', '')}")
        if job_id is None:
            return _Outcome(frozenset(), "no send was recorded")
        try:
            job = self._context.jobs.get(job_id)
        except NotFound:
            return _Outcome(frozenset(), f"job {job_id} was deleted")
        if job.state == JobState.SUCCEEDED:
            failed = {int(k): str(v) for k, v in dict(job.result.get("failed") or {}).items()}
            if not failed:
                return _Outcome(frozenset(ids), "")
            first = next(iter(failed.values()))
            reason = f"{len(failed)} of {len(ids)} images were refused by the remote node: {first}"
            return _Outcome(frozenset(i for i in ids if i not in failed), reason)
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            return _Outcome(frozenset(), f"job {job_id} {job.state.lower()}: {job.error}")
        return None

    def _check_sending(self) -> None:
        for batch_id, attempt, job_id, transaction_id in rows.batches_in_state(self._index, BatchState.SENDING):
            with self._index.reading() as conn:
                ids = rows.batch_images(conn, batch_id, ImageState.PENDING)
            outcome = self._outcome(job_id, transaction_id, ids)
            if outcome is None:
                continue
            if not outcome.reason:
                with self._index.writing() as conn:
                    rows.set_image_states(conn, batch_id, ids, ImageState.DELIVERED)
                self._settle(batch_id, BatchState.DELIVERED, "")
            else:
                self._failed(batch_id, attempt, outcome.delivered, outcome.reason)

    def _settle(self, batch_id: int, state: BatchState, reason: str) -> None:
        with self._index.writing() as conn:
            rows.set_batch_state(conn, batch_id, state, reason, self.clock())

    def _failed(self, batch_id: int, attempt: int, delivered: frozenset[int], reason: str) -> None:
        """FAILED with ``reason``: delivered images count as delivered, the others are retried or given up."""
        with self._index.writing() as conn:
            rule_id = rows.batch_rule(conn, batch_id)
            ids = rows.batch_images(conn, batch_id, ImageState.PENDING)
            rows.set_image_states(conn, batch_id, [i for i in ids if i in delivered], ImageState.DELIVERED)
            rest = [i for i in ids if i not in delivered]
            existing = rows.existing_images(conn, rest)
            rows.set_image_states(conn, batch_id, [i for i in rest if i not in existing], ImageState.SKIPPED)
            again = [i for i in rest if i in existing]
            if again and attempt < MAX_ATTEMPTS:
                delay = min(self.retry_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY)
                not_before = self.clock() + timedelta(seconds=delay)
                retry = rows.insert_batch(
                    conn, rule_id, again, BatchState.QUEUED, ImageState.PENDING, attempt + 1, not_before, self.clock()
                )
                rows.set_image_states(conn, batch_id, again, ImageState.RETRIED)
                reason = f"{reason}; {len(again)} images are sent again in batch {retry} in {delay:g} s"
            elif again:
                rows.set_image_states(conn, batch_id, again, ImageState.FAILED)
                reason = f"{reason}; given up after {attempt} attempts: {len(again)} images are kept here"
            rows.set_batch_state(conn, batch_id, BatchState.FAILED, reason, self.clock())
        log.warning("forwarding batch %d failed: %s", batch_id, reason)
        self._context.index.add_log("WARN", "Forwarding", f"batch {batch_id} of rule {rule_id}: {reason}")

    def _delete_delivered(self) -> None:
        """Delete images delivered for a keepImages=false rule once no rule still has them to send."""
        with self._index.reading() as conn:
            candidates = rows.delivered_images_of_deleting_rules(conn, ImageState.DELIVERED)
            if not candidates:
                return
            waiting = rows.queued_among(conn, candidates)
            states = rows.image_states(conn, candidates, (ImageState.PENDING, ImageState.FAILED))
        deletable: list[int] = []
        kept: list[int] = []
        for image_id in candidates:
            if ImageState.FAILED in states.get(image_id, set()):
                kept.append(image_id)
            elif image_id not in waiting and ImageState.PENDING not in states.get(image_id, set()):
                deletable.append(image_id)
        if deletable:
            self._context.delete_images(deletable)
        with self._index.writing() as conn:
            for ids, state in ((deletable, ImageState.DELETED), (kept, ImageState.KEPT)):
                rows.set_delivered_images(conn, ids, ImageState.DELIVERED, state)
        if deletable:
            self._context.index.add_log(
                "INFO", "Forwarding", f"{len(deletable)} forwarded images deleted here after their delivery"
            )


def forwarding_service_factory(context: SliceboxContext) -> ForwardingService:
    """The factory ``services.service_factories`` lists (the C-STORE job it submits is registered by the app)."""
    return ForwardingService(context)
