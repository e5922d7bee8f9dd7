"""An ultrasound series with identifiers burned into its pixels, sent through a box with ``mask-detected``:
it arrives with nothing an OCR can read of them, and the sender's originals are unchanged (issue 16).

Two in-process nodes over the in-memory transport, pushed and polled; the real Tesseract reads what
arrives, twice: with the node's own detector and as a whole page (what anyone with an OCR would do).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from generators import to_bytes, ultrasound_with_burned_name
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from slicebox_lab.anonymization import ocr
from slicebox_lab.box import BoxService, BoxSettings, InMemoryTransport, submit_send
from slicebox_lab.box import connections as box_connections
from slicebox_lab.box import outgoing as box_outgoing
from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicom.render import render_frame
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.index.schema import images as images_table
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

pytestmark = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason=f"OCR unavailable: {ocr.ocr_unavailable_reason()}"
)
SCANNER = Source("scp", "us-scanner")
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
#: what is burned in, and the pieces of it that must not be readable after the transfer
PLANTED = ("LINDQVIST, MAJA", "ID 19840312-4417", "05.03.2024", "14:21:07")
PIECES = ("LINDQVIST", "MAJA", "19840312", "4417", "05.03", "2024", "14:21")


def _frame(rng: np.random.Generator, colour: bool, shift: int) -> np.ndarray:
    """A speckled 480x640 frame with the planted texts at the top and bottom, grey or in colour."""
    base = rng.rayleigh(20, size=(480, 640)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(base).convert("RGB" if colour else "L")
    draw = ImageDraw.Draw(image)
    positions = ((10 + shift, 8), (10 + shift, 32), (480, 8), (500, 450))
    for i, (text, position) in enumerate(zip(PLANTED, positions, strict=True)):
        font = ImageFont.truetype(FONTS[i % 2], 18 if i == 0 else 14)
        fill = ((255, 255, 0) if i % 2 else (255, 255, 255)) if colour else 235
        draw.text(position, text, fill=fill, font=font)
    return np.asarray(image)


def ultrasound_series() -> list[Dataset]:
    """Three images of one series: grey, colour, and a two-frame cine loop, none flagged burned-in."""
    rng = np.random.default_rng(16)
    study, series = generate_uid(), generate_uid()
    images = []
    for number, (colour, frames) in enumerate(((False, 1), (True, 1), (False, 2)), start=1):
        ds = ultrasound_with_burned_name(
            PatientName="Lindqvist^Maja", PatientID="19840312-4417", rows=480, columns=640,
            StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number,
        )  # fmt: skip
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = "20240305", "142107"
        pixels = [_frame(rng, colour, shift) for shift in range(0, 6 * frames, 6)]
        if colour:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        if frames > 1:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
            ds.NumberOfFrames = frames
        ds.PixelData = b"".join(p.tobytes() for p in pixels)
        images.append(ds)
    return images


def _context(path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(path))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["push", "poll"])
def nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SliceboxContext, SliceboxContext, int, BoxService]]:
    """(sender, receiver, the sender's box id, the service that moves images) for a push or a poll box."""
    connecting, polled = _context(tmp_path / "connecting.sqlite"), _context(tmp_path / "polled.sqlite")
    polled_box, token = box_connections.create_poll_box(polled.index, "connecting-node")
    url = f"http://polled.invalid/slicebox/api/transactions/{token}"
    connecting_box, _ = box_connections.connect_push_box(connecting.index, "polled-node", url)
    transport = InMemoryTransport(polled, token)
    clock = _Clock()
    service = BoxService(connecting, BoxSettings(poll_interval=1.0), transport_factory=lambda b: transport, clock=clock)
    service.test_clock = clock  # type: ignore[attr-defined]
    if request.param == "poll":
        yield polled, connecting, polled_box.id, service
    else:
        yield connecting, polled, connecting_box.id, service
    connecting.close()
    polled.close()


def _run(service: BoxService, sender: SliceboxContext) -> None:
    clock = service.test_clock  # type: ignore[attr-defined]
    for _ in range(40):
        clock.now += 120
        moved = service.run_once()
        pending = [t for t in box_outgoing.list_outgoing(sender.index) if t["status"] in ("WAITING", "PROCESSING")]
        if not moved and not pending:
            return


def _received(receiver: SliceboxContext) -> list[Dataset]:
    with receiver.index.reading() as conn:
        ids = [int(i) for i in conn.execute(sa.select(images_table.c.id)).scalars()]
    return [pydicom.dcmread(io.BytesIO(receiver.image_bytes(i))) for i in ids]


def _page_text(ds: Dataset) -> str:
    """Every frame read by Tesseract as a page of sparse text, as it is and inverted (no help from our detector)."""
    import tesserocr

    texts = []
    with tesserocr.PyTessBaseAPI(path=ocr.tessdata_path() or "", psm=tesserocr.PSM.SPARSE_TEXT) as api:
        for frame in range(1, int(ds.get("NumberOfFrames") or 1) + 1):
            grey = render_frame(ds, frame).convert("L")
            for image in (grey, Image.eval(grey, lambda v: 255 - v)):
                api.SetImage(image.resize((image.width * 2, image.height * 2)))
                texts.append(api.GetUTF8Text())
    return " ".join(texts).upper()


def test_planted_identifiers_are_readable_before_the_transfer():
    """The check below is not hollow: Tesseract reads the planted identifiers in the originals."""
    for ds in ultrasound_series():
        found = " ".join(box.text.upper() for box in ocr.detect_text(ds))
        assert "LINDQVIST" in found and "19840312" in found and "2024" in found, found


def test_an_ultrasound_series_sent_with_mask_detected_arrives_with_no_readable_identifier(nodes):
    sender, receiver, box_id, service = nodes
    series = ultrasound_series()
    originals = {sender.ingest(to_bytes(ds), SCANNER).image.id: to_bytes(ds) for ds in series}

    submit_send(sender, box_id, list(originals), profile_json={"burnedInText": "mask-detected"})
    _run(service, sender)

    received = _received(receiver)
    assert len(received) == 3
    assert sorted(int(ds.get("NumberOfFrames") or 1) for ds in received) == [1, 1, 2]
    for ds in received:
        assert ds.Modality == "US" and ds.BurnedInAnnotation == "NO" and ds.PatientIdentityRemoved == "YES"
        assert "113101" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert "Lindqvist" not in str(ds.PatientName)
        detected = " ".join(box.text.upper() for box in ocr.detect_text(ds))
        page = _page_text(ds)
        for piece in PIECES:
            assert piece not in detected and piece not in page, (piece, detected, page)
    for image_id, data in originals.items():  # the sending node's originals are unchanged
        assert sender.image_bytes(image_id) == data
