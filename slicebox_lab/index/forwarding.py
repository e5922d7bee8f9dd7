"""Statements of forwarding (tables ``forwarding_rules``, ``forwarding_queue``, ``forwarding_batches`` and
``forwarding_batch_images``): rows in, plain rows out.

The rules (validation, when a queue becomes a batch, retries, what may be deleted) and the states of
batches and of their images live in ``routing/forwarding.py``; states arrive here as the strings
they are.  Functions taking a connection are parts of a transaction the caller composes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from .database import inserted_id
from .repository import Index
from .schema import forwarding_batch_images, forwarding_batches, forwarding_queue, forwarding_rules, images
from .sources import source_ids

__all__ = [
    "BatchRow",
    "DueBatch",
    "ListedRule",
    "RuleRow",
    "SendingBatch",
    "batch_images",
    "batch_rule",
    "batches_in_state",
    "delete_rule",
    "delivered_images_of_deleting_rules",
    "due_batches",
    "existing_images",
    "image_states",
    "insert_batch",
    "insert_rule",
    "listed_rules",
    "queue_image",
    "queued_among",
    "queued_images",
    "rule",
    "rule_batches",
    "rule_by_id",
    "rule_id_for",
    "rule_sources",
    "rules_page",
    "set_batch_sending",
    "set_batch_state",
    "set_delivered_images",
    "set_image_states",
    "unqueue",
    "waiting_queues",
]

#: ids per ``IN (...)``: well below the bind parameter limits of SQLite and PostgreSQL
_CHUNK = 500


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


# ---------------------------------------------------------------------------------------------- rules


class RuleRow(NamedTuple):
    id: int
    source_type: str
    source_name: str
    destination_type: str
    destination_id: int
    destination_name: str
    keep_images: bool
    quiet_seconds: float
    created: datetime


class ListedRule(NamedTuple):
    """A rule with the id of its source (None: nothing received from it yet) and its queued images."""

    rule: RuleRow
    source_id: int | None
    queued: int


def _rule(row: Any) -> RuleRow:
    return RuleRow(
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


def rule_sources(index: Index) -> list[tuple[int, str, str]]:
    """(id, source type, source name) of every rule."""
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(forwarding_rules.c.id, forwarding_rules.c.source_type, forwarding_rules.c.source_name)
        ).all()
    return [(int(rule_id), source_type, source_name) for rule_id, source_type, source_name in rows]


def _queued(conn: sa.Connection) -> dict[int, int]:
    q = forwarding_queue
    rows = conn.execute(sa.select(q.c.rule_id, sa.func.count()).group_by(q.c.rule_id)).all()
    return {int(r[0]): int(r[1]) for r in rows}


def listed_rules(conn: sa.Connection, rules: list[RuleRow]) -> list[ListedRule]:
    ids, queued = source_ids(conn), _queued(conn)
    return [ListedRule(r, ids.get((r.source_type, r.source_name)), queued.get(r.id, 0)) for r in rules]


def rules_page(index: Index, start_index: int, count: int) -> list[ListedRule]:
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(forwarding_rules).order_by(forwarding_rules.c.id).offset(start_index).limit(count)
        ).all()
        return listed_rules(conn, [_rule(r) for r in rows])


def rule_by_id(conn: sa.Connection, rule_id: int) -> RuleRow | None:
    row = conn.execute(sa.select(forwarding_rules).where(forwarding_rules.c.id == rule_id)).first()
    return None if row is None else _rule(row)


def rule(index: Index, rule_id: int) -> ListedRule | None:
    with index.reading() as conn:
        found = rule_by_id(conn, rule_id)
        return None if found is None else listed_rules(conn, [found])[0]


def rule_id_for(
    conn: sa.Connection, source_type: str, source_name: str, destination_type: str, destination_id: int
) -> int | None:
    """The rule forwarding this source to this destination, if any."""
    r = forwarding_rules
    return conn.execute(
        sa.select(r.c.id).where(
            r.c.source_type == source_type,
            r.c.source_name == source_name,
            r.c.destination_type == destination_type,
            r.c.destination_id == destination_id,
        )
    ).scalar()


def insert_rule(
    conn: sa.Connection,
    source_type: str,
    source_name: str,
    destination_type: str,
    destination_id: int,
    destination_name: str,
    keep_images: bool,
    quiet_seconds: float,
    created: datetime,
) -> int:
    return inserted_id(
        conn,
        forwarding_rules,
        source_type=source_type,
        source_name=source_name,
        destination_type=destination_type,
        destination_id=destination_id,
        destination_name=destination_name,
        keep_images=keep_images,
        quiet_seconds=quiet_seconds,
        created=created,
    )


def delete_rule(index: Index, rule_id: int) -> bool:
    """Delete a rule with its queue and batches; False when there was no such rule."""
    with index.writing() as conn:
        if conn.execute(forwarding_rules.delete().where(forwarding_rules.c.id == rule_id)).rowcount == 0:
            return False
        # the cascades, spelled out for engines without foreign keys enforced
        batch_ids = sa.select(forwarding_batches.c.id).where(forwarding_batches.c.rule_id == rule_id)
        conn.execute(forwarding_batch_images.delete().where(forwarding_batch_images.c.batch_id.in_(batch_ids)))
        conn.execute(forwarding_batches.delete().where(forwarding_batches.c.rule_id == rule_id))
        conn.execute(forwarding_queue.delete().where(forwarding_queue.c.rule_id == rule_id))
    return True


# ---------------------------------------------------------------------------------------------- batches (API)


class BatchRow(NamedTuple):
    id: int
    rule_id: int
    state: str
    attempt: int
    image_count: int
    #: the number of the batch's images in each image state
    images: Mapping[str, int]
    job_id: int | None
    transaction_id: int | None
    reason: str
    not_before: datetime | None
    created: datetime
    updated: datetime


def rule_batches(index: Index, rule_id: int, start_index: int, count: int) -> list[BatchRow] | None:
    """A page of the rule's batches, newest first; None when there is no such rule."""
    b, i = forwarding_batches, forwarding_batch_images
    with index.reading() as conn:
        if rule_by_id(conn, rule_id) is None:
            return None
        rows = conn.execute(
            sa.select(b).where(b.c.rule_id == rule_id).order_by(b.c.id.desc()).offset(start_index).limit(count)
        ).all()
        counts: dict[int, dict[str, int]] = {int(r.id): {} for r in rows}
        if counts:
            for batch_id, state, n in conn.execute(
                sa.select(i.c.batch_id, i.c.state, sa.func.count())
                .where(i.c.batch_id.in_(list(counts)))
                .group_by(i.c.batch_id, i.c.state)
            ):
                counts[int(batch_id)][str(state)] = int(n)
        return [
            BatchRow(
                int(r.id),
                int(r.rule_id),
                r.state,
                int(r.attempt),
                int(r.image_count),
                counts[int(r.id)],
                r.job_id,
                r.transaction_id,
                r.reason,
                r.not_before,
                r.created,
                r.updated,
            )
            for r in rows
        ]


# ---------------------------------------------------------------------------------------------- the queue


def queue_image(index: Index, rule_id: int, image_id: int, added: datetime) -> None:
    """Queue the image for the rule, or mark it queued again at ``added`` (one transaction)."""
    q = forwarding_queue
    try:
        with index.writing() as conn:
            bumped = conn.execute(
                q.update().where(q.c.rule_id == rule_id, q.c.image_id == image_id).values(added=added)
            ).rowcount
            if not bumped:
                conn.execute(q.insert().values(rule_id=rule_id, image_id=image_id, added=added))
    except sa.exc.IntegrityError:
        pass  # the rule or the image was deleted meanwhile, or a concurrent overwrite queued it


def waiting_queues(index: Index) -> list[tuple[int, datetime, int, float]]:
    """(rule id, when its last image was queued, how many are queued, its quiet seconds) of every queue."""
    q, r = forwarding_queue, forwarding_rules
    with index.reading() as conn:
        return [
            (int(rule_id), last, int(count), float(quiet))
            for rule_id, last, count, quiet in conn.execute(
                sa.select(q.c.rule_id, sa.func.max(q.c.added), sa.func.count(), r.c.quiet_seconds)
                .join(r, r.c.id == q.c.rule_id)
                .group_by(q.c.rule_id, r.c.quiet_seconds)
            ).all()
        ]


def queued_images(conn: sa.Connection, rule_id: int, limit: int) -> list[int]:
    """The rule's first ``limit`` queued images, the longest waiting first."""
    q = forwarding_queue
    return [
        int(i)
        for i in conn.execute(
            sa.select(q.c.image_id).where(q.c.rule_id == rule_id).order_by(q.c.added, q.c.image_id).limit(limit)
        ).scalars()
    ]


def unqueue(conn: sa.Connection, rule_id: int, image_ids: list[int]) -> None:
    q = forwarding_queue
    conn.execute(q.delete().where(q.c.rule_id == rule_id, q.c.image_id.in_(image_ids)))


def queued_among(conn: sa.Connection, image_ids: Sequence[int]) -> set[int]:
    """Those of the images queued for any rule."""
    q = forwarding_queue
    found: set[int] = set()
    for chunk in _chunks(image_ids):
        found.update(int(x) for x in conn.execute(sa.select(q.c.image_id).where(q.c.image_id.in_(chunk))).scalars())
    return found


# ---------------------------------------------------------------------------------------------- batches (service)


class DueBatch(NamedTuple):
    id: int
    attempt: int
    destination_type: str
    destination_id: int


class SendingBatch(NamedTuple):
    id: int
    attempt: int
    job_id: int | None
    transaction_id: int | None


def insert_batch(
    conn: sa.Connection,
    rule_id: int,
    image_ids: list[int],
    state: str,
    image_state: str,
    attempt: int,
    not_before: datetime | None,
    created: datetime,
) -> int:
    """A batch of the images in ``state``, each image in ``image_state``; its id."""
    batch_id = inserted_id(
        conn,
        forwarding_batches,
        rule_id=rule_id,
        state=state,
        attempt=attempt,
        image_count=len(image_ids),
        reason="",
        not_before=not_before,
        created=created,
        updated=created,
    )
    conn.execute(
        forwarding_batch_images.insert(),
        [{"batch_id": batch_id, "image_id": i, "state": image_state} for i in image_ids],
    )
    return batch_id


def due_batches(index: Index, state: str, now: datetime) -> list[DueBatch]:
    """The batches in ``state`` whose ``not_before`` has passed, oldest first, with their destination."""
    b, r = forwarding_batches, forwarding_rules
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(b.c.id, b.c.attempt, r.c.destination_type, r.c.destination_id)
            .join(r, r.c.id == b.c.rule_id)
            .where(b.c.state == state, sa.or_(b.c.not_before.is_(None), b.c.not_before <= now))
            .order_by(b.c.id)
        ).all()
    return [DueBatch(int(i), int(attempt), kind, int(key)) for i, attempt, kind, key in rows]


def batches_in_state(index: Index, state: str) -> list[SendingBatch]:
    b = forwarding_batches
    with index.reading() as conn:
        rows = conn.execute(
            sa.select(b.c.id, b.c.attempt, b.c.job_id, b.c.transaction_id).where(b.c.state == state)
        ).all()
    return [SendingBatch(int(i), int(attempt), job_id, transaction_id) for i, attempt, job_id, transaction_id in rows]


def batch_rule(conn: sa.Connection, batch_id: int) -> int:
    b = forwarding_batches
    return int(conn.execute(sa.select(b.c.rule_id).where(b.c.id == batch_id)).scalar_one())


def set_batch_state(conn: sa.Connection, batch_id: int, state: str, reason: str, updated: datetime) -> None:
    b = forwarding_batches
    conn.execute(b.update().where(b.c.id == batch_id).values(state=state, reason=reason, updated=updated))


def set_batch_sending(
    conn: sa.Connection, batch_id: int, state: str, job_id: int, transaction_id: int | None, updated: datetime
) -> None:
    """The batch is in ``state`` (sending) by the job (and the box transaction)."""
    b = forwarding_batches
    conn.execute(
        b.update()
        .where(b.c.id == batch_id)
        .values(state=state, job_id=job_id, transaction_id=transaction_id, updated=updated)
    )


def batch_images(conn: sa.Connection, batch_id: int, state: str) -> list[int]:
    """The batch's images in ``state``, by id."""
    i = forwarding_batch_images
    statement = sa.select(i.c.image_id).where(i.c.batch_id == batch_id, i.c.state == state).order_by(i.c.image_id)
    return [int(x) for x in conn.execute(statement).scalars()]


def set_image_states(conn: sa.Connection, batch_id: int, image_ids: Iterable[int], state: str) -> None:
    i = forwarding_batch_images
    for chunk in _chunks(list(image_ids)):
        conn.execute(i.update().where(i.c.batch_id == batch_id, i.c.image_id.in_(chunk)).values(state=state))


def existing_images(conn: sa.Connection, image_ids: list[int]) -> set[int]:
    """Those of the images still stored."""
    found: set[int] = set()
    for chunk in _chunks(image_ids):
        found.update(int(x) for x in conn.execute(sa.select(images.c.id).where(images.c.id.in_(chunk))).scalars())
    return found


# ---------------------------------------------------------------------------------------------- deleting after delivery


def delivered_images_of_deleting_rules(conn: sa.Connection, delivered: str) -> list[int]:
    """Images in state ``delivered`` in a batch of a keepImages=false rule."""
    i, b, r = forwarding_batch_images, forwarding_batches, forwarding_rules
    statement = (
        sa.select(i.c.image_id)
        .join(b, b.c.id == i.c.batch_id)
        .join(r, r.c.id == b.c.rule_id)
        .where(i.c.state == delivered, ~r.c.keep_images)
        .distinct()
    )
    return [int(x) for x in conn.execute(statement).scalars()]


def image_states(conn: sa.Connection, image_ids: Sequence[int], states: tuple[str, ...]) -> dict[int, set[str]]:
    """The states among ``states`` each image has in any batch (images in none of them are left out)."""
    i = forwarding_batch_images
    found: dict[int, set[str]] = {}
    for chunk in _chunks(image_ids):
        statement = sa.select(i.c.image_id, i.c.state).where(i.c.image_id.in_(chunk), i.c.state.in_(states))
        for image_id, state in conn.execute(statement):
            found.setdefault(int(image_id), set()).add(str(state))
    return found


def set_delivered_images(conn: sa.Connection, image_ids: Sequence[int], delivered: str, state: str) -> None:
    """The images in state ``delivered`` in batches of keepImages=false rules go to ``state``."""
    i, b, r = forwarding_batch_images, forwarding_batches, forwarding_rules
    for chunk in _chunks(image_ids):
        batches = sa.select(b.c.id).join(r, r.c.id == b.c.rule_id).where(~r.c.keep_images)
        conn.execute(
            i.update()
            .where(i.c.image_id.in_(chunk), i.c.state == delivered, i.c.batch_id.in_(batches))
            .values(state=state)
        )
