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
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import Conflict, InvalidInput, NotFound, SliceboxError
from ..events import ImageAdded
from ..index import Index
from ..index.query import row_id
from ..index.schema import (
    forwarding_batch_images,
    forwarding_batches,
    forwarding_queue,
    forwarding_rules,
    images,
    sources,
)
from ..model import SOURCE_TYPES, Source

if TYPE_CHECKING:
    from ..context import SliceboxContext

__all__ = [
    "DESTINATION_TYPES",
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

QUEUED, SENDING, DELIVERED, FAILED = "QUEUED", "SENDING", "DELIVERED", "FAILED"
PENDING, DELETED, KEPT, RETRIED, SKIPPED = "PENDING", "DELETED", "KEPT", "RETRIED", "SKIPPED"


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


@dataclass(frozen=True)
class ForwardingRule:
    id: int
    source_type: str
    source_name: str
    destination_type: str
    destination_id: int
    destination_name: str
    keep_images: bool
    quiet_seconds: float
    created: datetime

    def json(self, source_id: int | None = None, queued: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": {"sourceType": self.source_type, "sourceName": self.source_name, "sourceId": source_id},
            "destination": {"type": self.destination_type, "id": self.destination_id, "name": self.destination_name},
            "keepImages": self.keep_images,
            "quietSeconds": self.quiet_seconds,
            "created": _iso(self.created),
            "queuedImageCount": queued,
        }


def _rule(row: Any) -> ForwardingRule:
    return ForwardingRule(
        int(row.id),
        row.source_type,
        row.source_name,
        row.destination_type,
        int(row.destination_id),
        row.destination_name,
        bool(row.keep_images),
        float(row.quiet_seconds),
        row.created,
    )


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
        with index.reading() as conn:
            rows = conn.execute(
                sa.select(forwarding_rules.c.id, forwarding_rules.c.source_type, forwarding_rules.c.source_name)
            ).all()
        for rule_id, source_type, source_name in rows:
            found.setdefault((source_type, source_name), []).append(int(rule_id))
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


def _source(conn: sa.Connection, body: Any) -> tuple[str, str]:
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
        row = None
        if key is not None:
            row = conn.execute(
                sa.select(sources.c.source_type, sources.c.source_name).where(sources.c.id == key)
            ).first()
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
    from ..box import store as box_store
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
        box = box_store.get_box(index, key)
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


def _source_ids(conn: sa.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(sa.select(sources.c.id, sources.c.source_type, sources.c.source_name)).all()
    return {(r.source_type, r.source_name): int(r.id) for r in rows}


def _queued(conn: sa.Connection) -> dict[int, int]:
    q = forwarding_queue
    rows = conn.execute(sa.select(q.c.rule_id, sa.func.count()).group_by(q.c.rule_id)).all()
    return {int(r[0]): int(r[1]) for r in rows}


def _rules_json(conn: sa.Connection, rules: list[ForwardingRule]) -> list[dict[str, Any]]:
    ids, queued = _source_ids(conn), _queued(conn)
    return [r.json(ids.get((r.source_type, r.source_name)), queued.get(r.id, 0)) for r in rules]


def list_rules(index: Index, start_index: int = 0, count: int = 20) -> list[dict[str, Any]]:
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(forwarding_rules).order_by(forwarding_rules.c.id).offset(start_index).limit(count)
        ).all()
        return _rules_json(conn, [_rule(r) for r in rows])


def _get(conn: sa.Connection, rule_id: Any) -> ForwardingRule:
    key = row_id(rule_id, "rule id")
    row = None if key is None else conn.execute(sa.select(forwarding_rules).where(forwarding_rules.c.id == key)).first()
    if row is None:
        raise NotFound(f"forwarding rule {rule_id} not found")
    return _rule(row)


def get_rule(index: Index, rule_id: Any) -> dict[str, Any]:
    with index.reading() as conn:
        return _rules_json(conn, [_get(conn, rule_id)])[0]


def create_rule(index: Index, body: Any) -> dict[str, Any]:
    """Validate and store a rule; same source and destination as an existing rule → Conflict."""
    body = _object(body)
    keep, quiet = _keep_images(body), _quiet_seconds(body)
    destination_type, destination_id, destination_name = _destination(index, body.get("destination"))
    r = forwarding_rules
    try:
        with index.writing() as conn:
            source_type, source_name = _source(conn, body.get("source"))
            existing = conn.execute(
                sa.select(r.c.id).where(
                    r.c.source_type == source_type,
                    r.c.source_name == source_name,
                    r.c.destination_type == destination_type,
                    r.c.destination_id == destination_id,
                )
            ).scalar()
            if existing is not None:
                raise Conflict(
                    f"forwarding rule {existing} already forwards {source_type} {source_name!r} to "
                    f"{destination_type} {destination_name!r}: delete it to change it"
                )
            rule_id = conn.execute(
                r.insert()
                .values(
                    source_type=source_type,
                    source_name=source_name,
                    destination_type=destination_type,
                    destination_id=destination_id,
                    destination_name=destination_name,
                    keep_images=keep,
                    quiet_seconds=quiet,
                    created=_now(),
                )
                .returning(r.c.id)
            ).scalar_one()
            created = _rules_json(conn, [_get(conn, rule_id)])[0]
    except sa.exc.IntegrityError:
        raise Conflict("a forwarding rule with this source and destination already exists") from None
    _invalidate(index)
    return created


def delete_rule(index: Index, rule_id: Any) -> None:
    """Delete a rule with its queue and batches (the next image of its source is not queued)."""
    key = row_id(rule_id, "rule id")
    with index.writing() as conn:
        if key is None or conn.execute(forwarding_rules.delete().where(forwarding_rules.c.id == key)).rowcount == 0:
            raise NotFound(f"forwarding rule {rule_id} not found")
        # the cascades, spelled out for engines without foreign keys enforced
        batch_ids = sa.select(forwarding_batches.c.id).where(forwarding_batches.c.rule_id == key)
        conn.execute(forwarding_batch_images.delete().where(forwarding_batch_images.c.batch_id.in_(batch_ids)))
        conn.execute(forwarding_batches.delete().where(forwarding_batches.c.rule_id == key))
        conn.execute(forwarding_queue.delete().where(forwarding_queue.c.rule_id == key))
    _invalidate(index)


def _batch_json(row: Any, counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "ruleId": int(row.rule_id),
        "state": row.state,
        "attempt": int(row.attempt),
        "imageCount": int(row.image_count),
        "images": dict(counts),
        "jobId": row.job_id,
        "transactionId": row.transaction_id,
        "reason": row.reason,
        "notBefore": _iso(row.not_before),
        "created": _iso(row.created),
        "updated": _iso(row.updated),
    }


def list_batches(index: Index, rule_id: Any, start_index: int = 0, count: int = 20) -> list[dict[str, Any]]:
    """The rule's batches, newest first, with the number of images in each image state."""
    b, i = forwarding_batches, forwarding_batch_images
    with index.reading() as conn:
        rule = _get(conn, rule_id)
        rows = conn.execute(
            sa.select(b).where(b.c.rule_id == rule.id).order_by(b.c.id.desc()).offset(start_index).limit(count)
        ).all()
        counts: dict[int, dict[str, int]] = {int(r.id): {} for r in rows}
        if counts:
            for batch_id, state, n in conn.execute(
                sa.select(i.c.batch_id, i.c.state, sa.func.count())
                .where(i.c.batch_id.in_(list(counts)))
                .group_by(i.c.batch_id, i.c.state)
            ):
                counts[int(batch_id)][str(state)] = int(n)
        return [_batch_json(r, counts[int(r.id)]) for r in rows]


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
        q = forwarding_queue
        for rule_id in rule_ids:
            try:
                with self._index.writing() as conn:
                    bumped = conn.execute(
                        q.update().where(q.c.rule_id == rule_id, q.c.image_id == event.image.id).values(added=stamp)
                    ).rowcount
                    if not bumped:
                        conn.execute(q.insert().values(rule_id=rule_id, image_id=event.image.id, added=stamp))
            except sa.exc.IntegrityError:
                pass  # the rule or the image was deleted meanwhile, or a concurrent overwrite queued it

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
        q, r = forwarding_queue, forwarding_rules
        now = self.clock()
        with self._index.reading() as conn:
            waiting = conn.execute(
                sa.select(q.c.rule_id, sa.func.max(q.c.added), sa.func.count(), r.c.quiet_seconds)
                .join(r, r.c.id == q.c.rule_id)
                .group_by(q.c.rule_id, r.c.quiet_seconds)
            ).all()
        for rule_id, last, count, quiet in waiting:
            last_added = _aware(last)
            assert last_added is not None
            if count < MAX_BATCH and now - last_added < timedelta(seconds=float(quiet)):
                continue
            with self._index.writing() as conn:
                ids = [
                    int(i)
                    for i in conn.execute(
                        sa.select(q.c.image_id)
                        .where(q.c.rule_id == rule_id)
                        .order_by(q.c.added, q.c.image_id)
                        .limit(MAX_BATCH)
                    ).scalars()
                ]
                if not ids:
                    continue
                self._insert_batch(conn, int(rule_id), ids, attempt=1, not_before=None)
                conn.execute(q.delete().where(q.c.rule_id == rule_id, q.c.image_id.in_(ids)))

    def _insert_batch(
        self, conn: sa.Connection, rule_id: int, ids: list[int], attempt: int, not_before: datetime | None
    ) -> int:
        stamp = self.clock()
        batch_id = int(
            conn.execute(
                forwarding_batches.insert()
                .values(
                    rule_id=rule_id,
                    state=QUEUED,
                    attempt=attempt,
                    image_count=len(ids),
                    reason="",
                    not_before=not_before,
                    created=stamp,
                    updated=stamp,
                )
                .returning(forwarding_batches.c.id)
            ).scalar_one()
        )
        conn.execute(
            forwarding_batch_images.insert(),
            [{"batch_id": batch_id, "image_id": i, "state": PENDING} for i in ids],
        )
        return batch_id

    def _batch_images(self, conn: sa.Connection, batch_id: int, state: str = PENDING) -> list[int]:
        i = forwarding_batch_images
        statement = sa.select(i.c.image_id).where(i.c.batch_id == batch_id, i.c.state == state).order_by(i.c.image_id)
        return [int(x) for x in conn.execute(statement).scalars()]

    def _set_images(self, conn: sa.Connection, batch_id: int, ids: Any, state: str) -> None:
        i = forwarding_batch_images
        ids = list(ids)
        for start in range(0, len(ids), 500):
            conn.execute(
                i.update()
                .where(i.c.batch_id == batch_id, i.c.image_id.in_(ids[start : start + 500]))
                .values(state=state)
            )

    def _existing(self, conn: sa.Connection, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            found.update(
                int(x)
                for x in conn.execute(sa.select(images.c.id).where(images.c.id.in_(ids[start : start + 500]))).scalars()
            )
        return found

    def _submit_due(self) -> None:
        b, r = forwarding_batches, forwarding_rules
        now = self.clock()
        with self._index.reading() as conn:
            due = conn.execute(
                sa.select(b.c.id, b.c.attempt, r.c.destination_type, r.c.destination_id)
                .join(r, r.c.id == b.c.rule_id)
                .where(b.c.state == QUEUED, sa.or_(b.c.not_before.is_(None), b.c.not_before <= now))
                .order_by(b.c.id)
            ).all()
        for batch_id, attempt, destination_type, destination_id in due:
            with self._index.writing() as conn:
                ids = self._batch_images(conn, batch_id)
                existing = self._existing(conn, ids)
                self._set_images(conn, batch_id, [i for i in ids if i not in existing], SKIPPED)
            send = [i for i in ids if i in existing]
            if not send:
                self._settle(batch_id, DELIVERED, "every image was deleted before it could be sent")
                continue
            try:
                job_id, transaction_id = self._send(destination_type, destination_id, send)
            except SliceboxError as error:
                self._failed(batch_id, int(attempt), frozenset(), f"could not be sent: {error}")
                continue
            with self._index.writing() as conn:
                conn.execute(
                    b.update()
                    .where(b.c.id == batch_id)
                    .values(state=SENDING, job_id=job_id, transaction_id=transaction_id, updated=self.clock())
                )

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
        from ..jobs import CANCELLED, SUCCEEDED
        from ..jobs import FAILED as JOB_FAILED

        if transaction_id is not None:
            from ..box import store as box_store

            try:
                transaction = box_store.get_outgoing(self._index, transaction_id)
            except NotFound:
                return _Outcome(frozenset(), f"box transaction {transaction_id} was deleted")
            if transaction["status"] == box_store.FINISHED:
                return _Outcome(frozenset(ids), "")
            if transaction["status"] != box_store.FAILED:
                return None
            sent = frozenset(
                int(i["image_id"])
                for i in box_store.outgoing_images(self._index, transaction_id)
                if i["state"] == box_store.SENT
            )
            return _Outcome(sent, f"box transaction {transaction_id} failed: {transaction.get('reason', '')}")
        if job_id is None:
            return _Outcome(frozenset(), "no send was recorded")
        try:
            job = self._context.jobs.get(job_id)
        except NotFound:
            return _Outcome(frozenset(), f"job {job_id} was deleted")
        if job.state == SUCCEEDED:
            failed = {int(k): str(v) for k, v in dict(job.result.get("failed") or {}).items()}
            if not failed:
                return _Outcome(frozenset(ids), "")
            first = next(iter(failed.values()))
            reason = f"{len(failed)} of {len(ids)} images were refused by the remote node: {first}"
            return _Outcome(frozenset(i for i in ids if i not in failed), reason)
        if job.state in (JOB_FAILED, CANCELLED):
            return _Outcome(frozenset(), f"job {job_id} {job.state.lower()}: {job.error}")
        return None

    def _check_sending(self) -> None:
        b = forwarding_batches
        with self._index.reading() as conn:
            sending = conn.execute(
                sa.select(b.c.id, b.c.attempt, b.c.job_id, b.c.transaction_id).where(b.c.state == SENDING)
            ).all()
        for batch_id, attempt, job_id, transaction_id in sending:
            with self._index.reading() as conn:
                ids = self._batch_images(conn, batch_id)
            outcome = self._outcome(job_id, transaction_id, ids)
            if outcome is None:
                continue
            if not outcome.reason:
                with self._index.writing() as conn:
                    self._set_images(conn, batch_id, ids, DELIVERED)
                self._settle(batch_id, DELIVERED, "")
            else:
                self._failed(batch_id, int(attempt), outcome.delivered, outcome.reason)

    def _settle(self, batch_id: int, state: str, reason: str) -> None:
        b = forwarding_batches
        with self._index.writing() as conn:
            conn.execute(b.update().where(b.c.id == batch_id).values(state=state, reason=reason, updated=self.clock()))

    def _failed(self, batch_id: int, attempt: int, delivered: frozenset[int], reason: str) -> None:
        """FAILED with ``reason``: delivered images count as delivered, the others are retried or given up."""
        b = forwarding_batches
        with self._index.writing() as conn:
            rule_id = int(conn.execute(sa.select(b.c.rule_id).where(b.c.id == batch_id)).scalar_one())
            ids = self._batch_images(conn, batch_id)
            self._set_images(conn, batch_id, [i for i in ids if i in delivered], DELIVERED)
            rest = [i for i in ids if i not in delivered]
            existing = self._existing(conn, rest)
            self._set_images(conn, batch_id, [i for i in rest if i not in existing], SKIPPED)
            again = [i for i in rest if i in existing]
            if again and attempt < MAX_ATTEMPTS:
                delay = min(self.retry_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY)
                retry = self._insert_batch(
                    conn, rule_id, again, attempt + 1, not_before=self.clock() + timedelta(seconds=delay)
                )
                self._set_images(conn, batch_id, again, RETRIED)
                reason = f"{reason}; {len(again)} images are sent again in batch {retry} in {delay:g} s"
            elif again:
                self._set_images(conn, batch_id, again, FAILED)
                reason = f"{reason}; given up after {attempt} attempts: {len(again)} images are kept here"
            conn.execute(b.update().where(b.c.id == batch_id).values(state=FAILED, reason=reason, updated=self.clock()))
        log.warning("forwarding batch %d failed: %s", batch_id, reason)
        self._context.index.add_log("WARN", "Forwarding", f"batch {batch_id} of rule {rule_id}: {reason}")

    def _delete_delivered(self) -> None:
        """Delete images delivered for a keepImages=false rule once no rule still has them to send."""
        i, b, r, q = forwarding_batch_images, forwarding_batches, forwarding_rules, forwarding_queue
        candidates_query = (
            sa.select(i.c.image_id)
            .join(b, b.c.id == i.c.batch_id)
            .join(r, r.c.id == b.c.rule_id)
            .where(i.c.state == DELIVERED, ~r.c.keep_images)
            .distinct()
        )
        with self._index.reading() as conn:
            candidates = [int(x) for x in conn.execute(candidates_query).scalars()]
            if not candidates:
                return
            deletable: list[int] = []
            kept: list[int] = []
            for start in range(0, len(candidates), 500):
                chunk = candidates[start : start + 500]
                waiting = {int(x) for x in conn.execute(sa.select(q.c.image_id).where(q.c.image_id.in_(chunk)))
                           .scalars()}  # fmt: skip
                states: dict[int, set[str]] = {}
                for image_id, state in conn.execute(
                    sa.select(i.c.image_id, i.c.state).where(i.c.image_id.in_(chunk), i.c.state.in_((PENDING, FAILED)))
                ):
                    states.setdefault(int(image_id), set()).add(str(state))
                for image_id in chunk:
                    if FAILED in states.get(image_id, set()):
                        kept.append(image_id)
                    elif image_id not in waiting and PENDING not in states.get(image_id, set()):
                        deletable.append(image_id)
        if deletable:
            self._context.delete_images(deletable)
        with self._index.writing() as conn:
            for ids, state in ((deletable, DELETED), (kept, KEPT)):
                for start in range(0, len(ids), 500):
                    batches = sa.select(b.c.id).join(r, r.c.id == b.c.rule_id).where(~r.c.keep_images)
                    conn.execute(
                        i.update()
                        .where(
                            i.c.image_id.in_(ids[start : start + 500]),
                            i.c.state == DELIVERED,
                            i.c.batch_id.in_(batches),
                        )  # fmt: skip
                        .values(state=state)
                    )
        if deletable:
            self._context.index.add_log(
                "INFO", "Forwarding", f"{len(deletable)} forwarded images deleted here after their delivery"
            )

    # ------------------------------------------------------------------ tests

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once nothing is queued or being sent (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._index.reading() as conn:
                busy = conn.execute(sa.select(sa.func.count()).select_from(forwarding_queue)).scalar_one()
                busy += conn.execute(
                    sa.select(sa.func.count()).select_from(forwarding_batches)
                    .where(forwarding_batches.c.state.in_((QUEUED, SENDING)))
                ).scalar_one()  # fmt: skip
            if not busy:
                return True
            time.sleep(0.05)
        return False


def forwarding_service_factory(context: SliceboxContext) -> ForwardingService:
    """The factory ``services.service_factories`` lists (the C-STORE job it submits is registered by the app)."""
    return ForwardingService(context)
