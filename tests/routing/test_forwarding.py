"""Forwarding rules in process: the quiet timer, batching, keepImages, retries, restarts.

The box destination is a real in-process partner over the in-memory transport; the SCU destination
is dcmtk storescp (refusing first, then listening).  The service's clock is driven by the test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from generators import ct_bytes

from slicebox_lab.box import BoxService, BoxSettings, InMemoryTransport
from slicebox_lab.box import connections as box_connections
from slicebox_lab.box import outgoing as box_outgoing
from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.events import ImageAdded
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.index.schema import forwarding_batches, forwarding_queue, scus
from slicebox_lab.index.schema import images as images_table
from slicebox_lab.model import Source
from slicebox_lab.net import nodes
from slicebox_lab.net.scu_jobs import register_scu_jobs
from slicebox_lab.routing import forwarding
from slicebox_lab.routing.forwarding import ForwardingService
from slicebox_lab.storage import MemoryStorage

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
from netutil import DCMTK_ENV, dcmtk, free_port, wait_listening  # noqa: E402

SCANNER = Source("scp", "ct-scanner")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _context(path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(path))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


def _service(context: SliceboxContext, clock: Clock) -> ForwardingService:
    """A service driven by ``run_once`` (no thread), subscribed to new images."""
    register_scu_jobs(context)
    service = ForwardingService(context, retry_seconds=10, clock=clock)
    context.events.subscribe(ImageAdded, service.on_image_added)
    return service


class BoxClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pair:
    sender: SliceboxContext
    receiver: SliceboxContext
    box: box_connections.Box
    boxes: BoxService
    forwarder: ForwardingService
    clock: Clock
    box_clock: BoxClock

    def deliver(self) -> None:
        """Let the box service move everything it has."""
        for _ in range(20):
            self.box_clock.now += 120
            moved = self.boxes.run_once()
            open_ = [
                t for t in box_outgoing.list_outgoing(self.sender.index) if t["status"] in ("WAITING", "PROCESSING")
            ]
            if not moved and not open_:
                return


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    sender, receiver = _context(tmp_path / "sender.sqlite"), _context(tmp_path / "receiver.sqlite")
    _, token = box_connections.create_poll_box(receiver.index, "hospital")
    box, _ = box_connections.connect_push_box(
        sender.index, "university", f"http://b.invalid/slicebox/api/transactions/{token}"
    )
    transport = InMemoryTransport(receiver, token)
    box_clock = BoxClock()
    boxes = BoxService(sender, BoxSettings(poll_interval=1.0), transport_factory=lambda b: transport, clock=box_clock)
    clock = Clock()
    yield Pair(sender, receiver, box, boxes, _service(sender, clock), clock, box_clock)
    sender.close()
    receiver.close()


def _ingest(context: SliceboxContext, n: int, source: Source = SCANNER, first: int = 0) -> list[int]:
    return [
        context.ingest(ct_bytes(PatientID="FWD-1", seed=first + i, InstanceNumber=first + i + 1), source).image.id
        for i in range(n)
    ]


def _image_ids(context: SliceboxContext) -> list[int]:
    with context.index.reading() as conn:
        return sorted(int(i) for i in conn.execute(sa.select(images_table.c.id)).scalars())


def _wait_idle(context: SliceboxContext, timeout: float = 30.0) -> bool:
    """True once nothing is queued or being sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with context.index.reading() as conn:
            busy = conn.execute(sa.select(sa.func.count()).select_from(forwarding_queue)).scalar_one()
            busy += conn.execute(
                sa.select(sa.func.count())
                .select_from(forwarding_batches)
                .where(forwarding_batches.c.state.in_((forwarding.BatchState.QUEUED, forwarding.BatchState.SENDING)))
            ).scalar_one()
        if not busy:
            return True
        time.sleep(0.05)
    return False


def _rule(context: SliceboxContext, destination: dict, keep: bool = False, quiet: float = 10, **source: str) -> int:
    body = {
        "source": {"sourceType": source.get("type", "scp"), "sourceName": source.get("name", "ct-scanner")},
        "destination": destination,
        "keepImages": keep,
        "quietSeconds": quiet,
    }
    return int(forwarding.create_rule(context.index, body)["id"])


def test_a_batch_waits_for_the_quiet_source_and_images_go_only_after_delivery(pair: Pair):
    rule = _rule(pair.sender, {"type": "box", "id": pair.box.id}, keep=False, quiet=10)
    other = _ingest(pair.sender, 2, Source("user", "someone"), first=100)  # another source: never forwarded
    sent = _ingest(pair.sender, 3)
    pair.clock.advance(6)
    sent += _ingest(pair.sender, 2, first=3)
    assert forwarding.get_rule(pair.sender.index, rule)["queuedImageCount"] == 5

    pair.clock.advance(6)  # 6 s since the last image: not quiet yet
    pair.forwarder.run_once()
    assert forwarding.list_batches(pair.sender.index, rule) == []

    pair.clock.advance(5)  # 11 s: quiet → one batch of all five, as one box transaction
    pair.forwarder.run_once()
    (batch,) = forwarding.list_batches(pair.sender.index, rule)
    assert batch["state"] == "SENDING" and batch["imageCount"] == 5 and batch["images"] == {"PENDING": 5}
    transaction = box_outgoing.get_outgoing(pair.sender.index, batch["transactionId"])
    assert transaction["total_image_count"] == 5 and transaction["status"] != "FINISHED"
    assert forwarding.get_rule(pair.sender.index, rule)["queuedImageCount"] == 0

    pair.forwarder.run_once()  # not delivered yet: nothing is deleted
    assert _image_ids(pair.sender) == sorted(other + sent)
    assert _image_ids(pair.receiver) == []

    pair.deliver()
    assert box_outgoing.get_outgoing(pair.sender.index, batch["transactionId"])["status"] == "FINISHED"
    assert len(_image_ids(pair.receiver)) == 5
    assert _image_ids(pair.sender) == sorted(other + sent)  # delivered, but the forwarder has not looked yet

    pair.forwarder.run_once()
    assert _image_ids(pair.sender) == sorted(other)
    (batch,) = forwarding.list_batches(pair.sender.index, rule)
    assert batch["state"] == "DELIVERED" and batch["images"] == {"DELETED": 5}

    # images arriving later form the next batch
    _ingest(pair.sender, 1, first=50)
    pair.clock.advance(11)
    pair.forwarder.run_once()
    assert [b["imageCount"] for b in forwarding.list_batches(pair.sender.index, rule)] == [1, 5]


def test_keep_images_true_keeps_them_and_two_rules_delete_only_after_both_delivered(pair: Pair, tmp_path: Path):
    storescp_port, out, process = _storescp(tmp_path)
    try:
        node = nodes.add_scu(pair.sender.index, "pacs", "STORESCP", "127.0.0.1", storescp_port)
        keep = _rule(pair.sender, {"type": "scu", "id": node.id}, keep=True, quiet=0)
        drop = _rule(pair.sender, {"type": "box", "id": pair.box.id}, keep=False, quiet=0)
        ids = _ingest(pair.sender, 3)
        pair.forwarder.run_once()
        _wait_jobs(pair.sender)
        pair.forwarder.run_once()  # the C-STORE is confirmed, the box not yet: the images stay
        assert forwarding.list_batches(pair.sender.index, keep)[0]["images"] == {"DELIVERED": 3}
        assert _image_ids(pair.sender) == ids
        assert len(_received(out)) == 3
        pair.deliver()
        pair.forwarder.run_once()  # now every rule delivered them; one rule says delete: delete wins
        assert _image_ids(pair.sender) == []
        assert forwarding.list_batches(pair.sender.index, drop)[0]["images"] == {"DELETED": 3}
        assert forwarding.list_batches(pair.sender.index, keep)[0]["images"] == {"DELIVERED": 3}
    finally:
        process.terminate()
        process.wait(10)


def _storescp(tmp_path: Path, port: int | None = None) -> tuple[int, Path, subprocess.Popen[bytes]]:
    out = tmp_path / f"received-{time.monotonic_ns()}"
    out.mkdir()
    port = port or free_port()
    process = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port)
    return port, out, process


def _received(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_file()]


def _wait_jobs(context: SliceboxContext, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(not j.is_finished for j in context.jobs.list(kind="scu-send")):
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def refused_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_a_failed_send_keeps_the_images_and_is_retried_after_a_back_off(tmp_path: Path, refused_port: int):
    context, clock = _context(tmp_path / "node.sqlite"), Clock()
    service = _service(context, clock)
    try:
        node = nodes.add_scu(context.index, "pacs", "STORESCP", "127.0.0.1", refused_port)
        rule = _rule(context, {"type": "scu", "id": node.id}, keep=False, quiet=1)
        ids = _ingest(context, 4)
        clock.advance(2)
        service.run_once()
        _wait_jobs(context)
        service.run_once()  # the remote node refused the association: FAILED, retried later, images kept
        failed, retry = sorted(forwarding.list_batches(context.index, rule), key=lambda b: b["id"])
        assert failed["state"] == "FAILED" and failed["images"] == {"RETRIED": 4}
        assert "sent again in batch" in failed["reason"]
        assert retry["state"] == "QUEUED" and retry["attempt"] == 2 and retry["imageCount"] == 4
        assert _image_ids(context) == ids

        context.delete_images([ids[0]])  # deleted before the retry: skipped
        port, out, process = _storescp(tmp_path)
        try:
            with context.index.writing() as conn:
                conn.execute(scus.update().where(scus.c.id == node.id).values(port=port))
            clock.advance(5)
            service.run_once()  # the back-off (10 s) has not passed
            assert forwarding.list_batches(context.index, rule)[0]["state"] == "QUEUED"
            clock.advance(6)
            service.run_once()
            _wait_jobs(context)
            service.run_once()
            batch = forwarding.list_batches(context.index, rule)[0]
            assert batch["state"] == "DELIVERED"
            assert batch["images"] == {"DELETED": 3, "SKIPPED": 1}
            assert len(_received(out)) == 3
            assert _image_ids(context) == []
        finally:
            process.terminate()
            process.wait(10)
    finally:
        context.close()


def test_retries_give_up_after_max_attempts_and_keep_the_images(
    tmp_path: Path, refused_port: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(forwarding, "MAX_ATTEMPTS", 2)
    context, clock = _context(tmp_path / "node.sqlite"), Clock()
    service = _service(context, clock)
    try:
        node = nodes.add_scu(context.index, "pacs", "STORESCP", "127.0.0.1", refused_port)
        rule = _rule(context, {"type": "scu", "id": node.id}, keep=False, quiet=0)
        ids = _ingest(context, 2)
        for _ in range(3):
            service.run_once()
            _wait_jobs(context)
            service.run_once()
            clock.advance(3600)
        batches = forwarding.list_batches(context.index, rule)
        assert [b["state"] for b in batches] == ["FAILED", "FAILED"]
        assert batches[0]["images"] == {"FAILED": 2} and "given up after 2 attempts" in batches[0]["reason"]
        assert _image_ids(context) == ids
    finally:
        context.close()


def test_the_queue_and_a_sending_batch_survive_a_restart(tmp_path: Path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    receiver = SliceboxContext.open(b_dir, fsync=False)
    _, token = box_connections.create_poll_box(receiver.index, "hospital")
    sender = SliceboxContext.open(a_dir, fsync=False)
    box, _ = box_connections.connect_push_box(
        sender.index, "university", f"http://b.invalid/slicebox/api/transactions/{token}"
    )
    clock = Clock()
    service = _service(sender, clock)
    rule = _rule(sender, {"type": "box", "id": box.id}, keep=False, quiet=10)
    first = _ingest(sender, 3)
    sender.close()  # restart with three images queued

    sender = SliceboxContext.open(a_dir, fsync=False)
    service = _service(sender, clock)
    second = _ingest(sender, 2, first=3)
    clock.advance(11)
    service.run_once()
    (batch,) = forwarding.list_batches(sender.index, rule)
    assert batch["state"] == "SENDING" and batch["imageCount"] == 5
    sender.close()  # restart while the batch is under way

    sender = SliceboxContext.open(a_dir, fsync=False)
    service = _service(sender, clock)
    transport = InMemoryTransport(receiver, token)
    box_clock = BoxClock()
    boxes = BoxService(sender, BoxSettings(poll_interval=1.0), transport_factory=lambda b: transport, clock=box_clock)
    service.run_once()
    assert _image_ids(sender) == sorted(first + second)
    for _ in range(10):
        box_clock.now += 120
        boxes.run_once()
    service.run_once()
    assert _image_ids(sender) == []
    assert len(_image_ids(receiver)) == 5
    sender.close()
    receiver.close()


def test_rules_are_validated_and_deleting_one_stops_the_queueing(pair: Pair):
    index = pair.sender.index
    with pytest.raises(NotFound):
        _rule(pair.sender, {"type": "box", "id": 999})
    with pytest.raises(NotFound):
        _rule(pair.sender, {"type": "scu", "id": 999})
    with pytest.raises(InvalidInput):
        _rule(pair.sender, {"type": "printer", "id": 1})
    with pytest.raises(InvalidInput):
        _rule(pair.sender, {"type": "box", "id": pair.box.id}, type="fax")
    with pytest.raises(InvalidInput):
        _rule(pair.sender, {"type": "box", "id": pair.box.id}, quiet=-1)
    rule = _rule(pair.sender, {"type": "box", "id": pair.box.id}, type="watch", name="incoming")
    assert forwarding.get_rule(index, rule)["source"] == {
        "sourceType": "directory",
        "sourceName": "incoming",
        "sourceId": None,
    }
    with pytest.raises(Conflict, match=f"rule {rule}"):
        _rule(pair.sender, {"type": "box", "id": pair.box.id}, keep=True, type="directory", name="incoming")
    (gone,) = _ingest(pair.sender, 1, Source("directory", "incoming"), first=7)
    _ingest(pair.sender, 1, Source("directory", "incoming"))
    assert forwarding.get_rule(index, rule)["queuedImageCount"] == 2
    pair.sender.delete_images([gone])  # a deleted image leaves the queue at once
    assert forwarding.get_rule(index, rule)["queuedImageCount"] == 1
    forwarding.delete_rule(index, rule)
    with pytest.raises(NotFound):
        forwarding.get_rule(index, rule)
    _ingest(pair.sender, 1, Source("directory", "incoming"), first=1)
    pair.clock.advance(100)
    pair.forwarder.run_once()
    assert box_outgoing.list_outgoing(index) == []
    assert forwarding.list_rules(index) == []


def test_the_service_thread_forwards_on_its_own(pair: Pair):
    """Started as the node starts it: subscribed, ticking, sending by itself."""
    service = ForwardingService(pair.sender, tick=0.05, retry_seconds=1)
    service.start()
    try:
        rule = _rule(pair.sender, {"type": "box", "id": pair.box.id}, keep=True, quiet=0.2)
        _ingest(pair.sender, 2)
        deadline = time.monotonic() + 20
        while not forwarding.list_batches(pair.sender.index, rule):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pair.deliver()
        assert _wait_idle(pair.sender, 20)
        assert forwarding.list_batches(pair.sender.index, rule)[0]["state"] == "DELIVERED"
        assert len(_image_ids(pair.receiver)) == 2 and len(_image_ids(pair.sender)) == 2
    finally:
        service.stop(5)
