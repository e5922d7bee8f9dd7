"""Text detection in pixels with the real Tesseract (no OCR result is mocked): what it finds and where."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from generators import to_bytes, ultrasound_with_burned_name
from ocr_corpus import corpus, missing_fonts
from PIL import Image, ImageDraw, ImageFont

from slicebox_lab.anonymization import ocr
from slicebox_lab.anonymization.ocr import TextBox, detect_text, masked_text

needs_ocr = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason=f"OCR unavailable: {ocr.ocr_unavailable_reason()}"
)
needs_fonts = pytest.mark.skipif(
    bool(missing_fonts()),
    reason=f"corpus fonts missing (apt-get install fonts-liberation fonts-freefont-ttf): {missing_fonts()}",
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _texts(boxes: tuple[TextBox, ...]) -> str:
    return " | ".join(box.text for box in boxes).upper()


def _draw(size: tuple[int, int], texts: list[tuple[tuple[int, int], str, int]], mode: str = "L") -> np.ndarray:
    """A dark, lightly noisy canvas with white texts at (x, y) of font size px."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 40, size=(size[1], size[0]), dtype=np.uint8)
    image = Image.fromarray(base).convert(mode)
    draw = ImageDraw.Draw(image)
    for position, text, px in texts:
        draw.text(position, text, fill="white" if mode == "RGB" else 255, font=ImageFont.truetype(FONT, px))
    return np.asarray(image)


@needs_ocr
def test_the_name_and_id_burned_into_an_unflagged_ultrasound_are_found_where_they_are():
    ds = ultrasound_with_burned_name()
    boxes = detect_text(ds)
    found = _texts(boxes)
    assert "LINDQVIST" in found and "US-PID-1" in found.replace(" ", "")
    for box in boxes:  # the generator draws in rows 0..31
        assert box.frame == 1 and box.y + box.height <= 34 and 0 <= box.confidence <= 100


@needs_ocr
def test_a_file_path_gives_the_same_boxes(tmp_path):
    ds = ultrasound_with_burned_name()
    path = tmp_path / "us.dcm"
    path.write_bytes(to_bytes(ds))
    assert detect_text(path) == detect_text(ds)


@needs_ocr
def test_an_image_without_text_has_no_boxes():
    ds = ultrasound_with_burned_name()
    rng = np.random.default_rng(11)
    ds.PixelData = rng.integers(0, 60, size=(ds.Rows, ds.Columns), dtype=np.uint8).tobytes()
    assert detect_text(ds) == ()


@needs_ocr
def test_every_frame_of_a_multiframe_rgb_image_is_read_with_its_own_text():
    from pydicom.uid import generate_uid

    ds = ultrasound_with_burned_name(rows=160, columns=480)
    frames = [
        _draw((480, 160), [((10, 10), "HOLMBERG, FREJA", 20), ((10, 120), "2024-03-05", 16)], "RGB"),
        _draw((480, 160), [((200, 60), "ID 19840312-4417", 18)], "RGB"),
        _draw((480, 160), [((10, 10), "HOLMBERG, FREJA", 20), ((10, 120), "2024-03-05", 16)], "RGB"),
    ]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = b"".join(frame.tobytes() for frame in frames)
    boxes = detect_text(ds)
    by_frame = {n: _texts(tuple(b for b in boxes if b.frame == n)) for n in (1, 2, 3)}
    assert "HOLMBERG" in by_frame[1] and "2024-03-05" in by_frame[1] and "4417" not in by_frame[1]
    assert "19840312-4417" in by_frame[2] and "HOLMBERG" not in by_frame[2]
    assert by_frame[3] == by_frame[1]  # the identical frame: read once, reported for itself
    name = next(b for b in boxes if b.frame == 1 and "HOLMBERG" in b.text.upper())
    assert 5 <= name.x <= 12 and 8 <= name.y <= 16 and name.width > 150


@needs_ocr
def test_text_outside_the_files_window_is_found_in_the_full_range():
    """A 16-bit capture whose window (40/400) shows the text as black on black: only the min/max view has it."""
    ds = ultrasound_with_burned_name(rows=120, columns=400)
    hu = np.full((120, 400), -1000.0)
    text = _draw((400, 120), [((10, 40), "SANDBERG, AXEL", 24)]) > 128
    hu[text] = -600.0  # below the window's lower end (-160): black in the file's window
    ds.Modality = "OT"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
    assert "SANDBERG" in _texts(detect_text(ds))


def test_recognized_text_is_shown_masked():
    assert masked_text("Lindqvist Maja") == "L******** M***"
    assert masked_text("  2024-01-02 ") == "2*********"
    box = TextBox(1, 2, 3, 40, 12, "Maja Lindqvist", 91.25)
    assert box.to_json() == {"frame": 1, "x": 2, "y": 3, "width": 40, "height": 12, "text": "M*** L********",
                             "confidence": 91.2}  # fmt: skip
    assert box.to_json(reveal=True)["text"] == "Maja Lindqvist"


def test_without_the_binding_detection_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "tesserocr", None)  # import tesserocr now raises ImportError
    reason = ocr.ocr_unavailable_reason()
    assert reason is not None and "tesserocr" in reason and "tesseract-ocr-eng" in reason
    with pytest.raises(RuntimeError, match="tesserocr"):
        detect_text(ultrasound_with_burned_name())


@needs_ocr
@needs_fonts
def test_the_corpus_identifiers_of_a_few_images_are_masked():
    """A regression guard on a slice of the benchmark's corpus, measured as bench/ocr.py measures it (every
    pixel the glyphs touch inside the rectangles mask-detected blacks out); bench/ocr.py measures all of it."""
    from slicebox_lab.anonymization import Profile
    from slicebox_lab.anonymization.pixeltext import decide

    planted = found = 0
    for image in itertools.islice(corpus(), 8):
        rectangles = decide(image.dataset, Profile(burned_in="mask-detected")).rectangles
        for text in image.planted:
            if not text.identifying:
                continue
            mask = np.zeros((int(image.dataset.Rows), int(image.dataset.Columns)), dtype=bool)
            for r in (*rectangles.get(0, ()), *rectangles.get(text.frame, ())):
                mask[r.y : r.y + r.height, r.x : r.x + r.width] = True
            planted += 1
            found += bool(mask[text.y : text.y + text.height, text.x : text.x + text.width][text.ink].all())
    assert planted >= 35
    # these eight hold three of the hardest images (8-bit captures of small text on noise and texture):
    # 30 of 35 when this was written; the whole corpus is in bench/README.md
    assert found / planted >= 0.85, f"{found} of {planted}"
