"""An unflagged ultrasound image with a name in its pixels never leaves the node as it is.

Its BurnedInAnnotation is absent, as it is on most ultrasound, so the flag cannot be trusted: the
image is refused on every outgoing path (anonymized download, anonymization in place, the review,
a box pushing or polled, a forwarding rule to a box) unless a pixel mask covers it or the profile
says ``keep``; the stored original never changes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from generators import to_bytes, ultrasound_with_burned_name
from helpers import body_json

from slicebox_lab.anonymization import Profile, PseudonymKeys, anonymize
from slicebox_lab.anonymization.pixels import SCANNED_MODALITIES
from slicebox_lab.box import BoxService, BoxSettings, InMemoryTransport, submit_send
from slicebox_lab.box import connections as box_connections
from slicebox_lab.box import outgoing as box_outgoing
from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import AnonymizationRefused
from slicebox_lab.events import ImageAdded
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.index.schema import images as images_table
from slicebox_lab.model import Source
from slicebox_lab.routing import forwarding
from slicebox_lab.routing.forwarding import ForwardingService
from slicebox_lab.storage import MemoryStorage

KEYS = PseudonymKeys(b"unflagged-burned-in-secret-012345")
SCANNER = Source("scp", "us-scanner")
NAME_BAR = {"x": 0, "y": 0, "width": 320, "height": 32}  # where the generator draws name and ID
US_MASK = {"name": "US top bar", "match": {"Modality": "US", "Rows": 120, "Columns": 320}, "rectangles": [NAME_BAR]}
JSON = {"Content-Type": "application/json"}


def _us() -> bytes:
    return to_bytes(ultrasound_with_burned_name())


def _assert_refusal_message(message: str, sop_instance_uid: str) -> None:
    assert sop_instance_uid in message
    assert "modality US" in message
    assert "pixel mask" in message and "SliceboxApp.anonymization_pixel_masks" in message
    assert '"burnedInAnnotation": "keep"' in message


# ---------------------------------------------------------------- the anonymizer


def test_the_anonymizer_refuses_an_unflagged_ultrasound_image_and_names_the_settings():
    ds = ultrasound_with_burned_name()
    assert "BurnedInAnnotation" not in ds and ds.pixel_array[:32].max() == 255  # the name is in the pixels
    with pytest.raises(AnonymizationRefused) as refused:
        anonymize(ds, Profile(), KEYS)
    _assert_refusal_message(refused.value.message, ds.SOPInstanceUID)
    assert "SliceboxApp.burned_in_modalities" in refused.value.message


@pytest.mark.parametrize("modality", sorted(SCANNED_MODALITIES))
def test_every_scanned_modality_is_refused_even_when_flagged_no(modality: str):
    for flag in (None, "NO"):
        ds = ultrasound_with_burned_name(Modality=modality)
        if flag:
            ds.BurnedInAnnotation = flag
        with pytest.raises(AnonymizationRefused):
            anonymize(ds, Profile(), KEYS)


def test_a_mask_covering_the_text_cleans_it_and_keep_accepts_it():
    ds = ultrasound_with_burned_name()
    masked = anonymize(ds, Profile.from_json({"pixelMasks": [US_MASK]}), KEYS)
    assert masked.BurnedInAnnotation == "NO" and not masked.pixel_array[:32].any()
    np.testing.assert_array_equal(masked.pixel_array[32:], ds.pixel_array[32:])
    kept = anonymize(ds, Profile(burned_in="keep"), KEYS)
    assert kept.PixelData == ds.PixelData and "BurnedInAnnotation" not in kept


def test_a_node_that_trusts_the_flag_lets_it_through():
    """``SliceboxApp.burned_in_modalities = []``: the old behaviour, chosen explicitly."""
    ds = ultrasound_with_burned_name()
    assert anonymize(ds, Profile(burned_in_modalities=frozenset()), KEYS).PixelData == ds.PixelData


# ---------------------------------------------------------------- REST: download, in place, review


async def test_rest_download_in_place_and_review_refuse_it(api):
    data = _us()
    r = await api("images", method="POST", body=data, headers={"Content-Type": "application/dicom"})
    assert r.code == 201, r.body
    image = body_json(r)
    for method, action in (("POST", "anonymized"), ("PUT", "anonymize")):
        r = await api("images", image["id"], action, method=method, body=b"{}", headers=JSON)
        assert r.code == 422, (action, r.body)
        assert body_json(r)["reason"] == "AnonymizationRefused"
        _assert_refusal_message(body_json(r)["message"], image["SOPInstanceUID"])

    body = json.dumps({"imageIds": [image["id"]]})
    r = await api("anonymization", "report", method="POST", body=body, headers=JSON)
    assert r.code == 200, r.body
    report = body_json(r)
    assert report["summary"]["burned_in"]["refused"] == 1
    modality_rows = [row for row in report["attributes"] if row["keyword"] == "Modality"]
    assert any("commonly carry text" in (row.get("risk") or "") for row in modality_rows)

    r = await api("images", image["id"], "anonymized", method="POST", body=json.dumps({"pixelMasks": [US_MASK]}))
    assert r.code == 200, r.body
    assert not pydicom.dcmread(io.BytesIO(r.body)).pixel_array[:32].any()
    assert (await api("images", image["id"])).body == data  # the stored original is unchanged


# ---------------------------------------------------------------- boxes and forwarding


def _context(path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(path))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


class _Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> float:
        return self.seconds


@dataclass
class _Pair:
    sender: SliceboxContext
    receiver: SliceboxContext
    box: box_connections.Box
    service: BoxService
    clock: _Clock

    def run(self) -> None:
        for _ in range(30):
            self.clock.seconds += 120
            moved = self.service.run_once()
            open_ = [
                t for t in box_outgoing.list_outgoing(self.sender.index) if t["status"] in ("WAITING", "PROCESSING")
            ]
            if not moved and not open_:
                return

    def received(self) -> list[pydicom.Dataset]:
        with self.receiver.index.reading() as conn:
            ids = [int(i) for i in conn.execute(sa.select(images_table.c.id)).scalars()]
        return [pydicom.dcmread(io.BytesIO(self.receiver.image_bytes(i))) for i in ids]


@pytest.fixture(params=["push", "poll"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Pair]:
    """PUSH: the connecting node sends; POLL: the polled node sends and the connecting one fetches."""
    connecting, polled = _context(tmp_path / "connecting.sqlite"), _context(tmp_path / "polled.sqlite")
    _, token = box_connections.create_poll_box(polled.index, "connecting-node")
    box, _ = box_connections.connect_push_box(
        connecting.index, "polled-node", f"http://p.invalid/slicebox/api/transactions/{token}"
    )
    transport = InMemoryTransport(polled, token)
    clock = _Clock()
    service = BoxService(connecting, BoxSettings(poll_interval=1.0), transport_factory=lambda b: transport, clock=clock)
    if request.param == "poll":
        sender_box = box_connections.list_boxes(polled.index)[0]
        p = _Pair(polled, connecting, sender_box, service, clock)
    else:
        p = _Pair(connecting, polled, box, service, clock)
    yield p
    connecting.close()
    polled.close()


def test_a_box_refuses_it_with_the_reason_and_sends_the_rest(pair: _Pair):
    data = _us()
    us = pair.sender.ingest(data, SCANNER).image
    ct = pair.sender.ingest(to_bytes(ultrasound_with_burned_name(Modality="CT")), SCANNER).image
    submit_send(pair.sender, pair.box.id, [us.id, ct.id])
    pair.run()
    received = pair.received()
    assert [ds.Modality for ds in received] == ["CT"]  # the CT went, the ultrasound did not
    outgoing = box_outgoing.list_outgoing(pair.sender.index)[0]
    assert outgoing["status"] == "FAILED" and "1 of 2 images could not be delivered" in outgoing["reason"]
    assert pair.sender.image_bytes(us.id) == data


def test_a_box_whose_profile_masks_it_sends_it_cleaned(pair: _Pair):
    data = _us()
    us = pair.sender.ingest(data, SCANNER).image
    submit_send(pair.sender, pair.box.id, [us.id], profile_json={"pixelMasks": [US_MASK]})
    pair.run()
    (received,) = pair.received()
    assert received.BurnedInAnnotation == "NO" and not received.pixel_array[:32].any()
    assert str(received.PatientName) != "Lindqvist^Maja"
    assert pair.sender.image_bytes(us.id) == data


def test_a_forwarding_rule_to_a_box_does_not_deliver_it_and_keeps_it(tmp_path: Path):
    sender, receiver = _context(tmp_path / "sender.sqlite"), _context(tmp_path / "receiver.sqlite")
    try:
        _, token = box_connections.create_poll_box(receiver.index, "hospital")
        box, _ = box_connections.connect_push_box(
            sender.index, "university", f"http://b.invalid/slicebox/api/transactions/{token}"
        )
        clock = _Clock()
        boxes = BoxService(
            sender, BoxSettings(poll_interval=1.0), transport_factory=lambda b: InMemoryTransport(receiver, token)
        )
        forwarder = ForwardingService(sender, retry_seconds=10, clock=lambda: clock.now)
        sender.events.subscribe(ImageAdded, forwarder.on_image_added)
        forwarding.create_rule(
            sender.index,
            {
                "source": {"sourceType": "scp", "sourceName": "us-scanner"},
                "destination": {"type": "box", "id": box.id},
                "keepImages": False,
                "quietSeconds": 1,
            },
        )
        data = _us()
        us = sender.ingest(data, SCANNER).image
        for _ in range(5):
            clock.now += timedelta(seconds=30)
            forwarder.run_once()
            boxes.run_once()
        with receiver.index.reading() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(images_table)).scalar() == 0
        assert sender.image_bytes(us.id) == data  # not delivered, so not deleted
        outgoing = box_outgoing.list_outgoing(sender.index)[0]
        assert outgoing["status"] == "FAILED" and "could not be delivered" in outgoing["reason"]
    finally:
        sender.close()
        receiver.close()
