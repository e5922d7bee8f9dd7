"""Text over pixel noise (issue 16): the frame with its noise lifted out, and what Tesseract reads there."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from slicebox_lab.anonymization import ocr
from slicebox_lab.anonymization.noisetext import lifted_views, noise_region
from slicebox_lab.anonymization.ocr import _read_frame

needs_ocr = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason=f"OCR unavailable: {ocr.ocr_unavailable_reason()}"
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _noise(rows: int = 200, columns: int = 400, seed: int = 5) -> np.ndarray:
    """Uniform full-range grey noise (a screenshot's embedded noisy image)."""
    return np.random.default_rng(seed).integers(0, 256, size=(rows, columns)).astype(np.uint8)


def _with_text(pixels: np.ndarray, text: str, ink: int, size: int = 28) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, size)
    draw.text((60, 80), text, fill=ink, font=font)
    x0, y0, x1, y1 = draw.textbbox((60, 80), text, font=font)
    return np.asarray(image), (x0, y0, x1, y1)


def test_a_frame_of_uniform_noise_is_a_noisy_ground_and_a_flat_or_mildly_noisy_one_is_not():
    found = noise_region(_noise())
    assert found is not None and found[0].mean() > 0.9
    assert noise_region(np.full((200, 400), 180, dtype=np.uint8)) is None
    mild = np.clip(np.random.default_rng(1).normal(100, 4, (200, 400)), 0, 255).astype(np.uint8)
    assert noise_region(mild) is None  # paper grain, speckle: not this detector's business
    assert lifted_views(np.full((200, 400), 180.0, dtype=np.float32)) is None


def test_dark_text_keeps_its_strokes_when_the_noise_around_it_is_lifted_out():
    pixels, (x0, y0, x1, y1) = _with_text(_noise(), "JOHANSSON 1983", ink=20)
    views = lifted_views(pixels.astype(np.float32))
    assert views is not None
    dark, polarity = views[0]
    assert polarity < 0
    inside = dark[y0:y1, x0:x1]
    assert (inside == 20).sum() > 0.2 * (inside < 255).sum()  # the ink's flat cores stay
    away = dark[:, 300:][:60]  # noise with no text: almost all lifted to white
    assert (away == 255).mean() > 0.9


@needs_ocr
def test_dark_text_on_uniform_noise_is_read():
    pixels, (x0, y0, x1, y1) = _with_text(_noise(), "JOHANSSON 1983", ink=20)
    grey = pixels.astype(np.float32)
    # contrast alone does not separate it: the frame as it is reads nothing of it
    plain = " ".join(box.text for box in _read_frame(grey.copy(), 1)).upper()
    assert "JOHANSSON" not in plain
    views = lifted_views(grey)
    assert views is not None
    boxes = [box for view, polarity in views for box in _read_frame(view, 1, polarities=(polarity,))]
    read = [box for box in boxes if "JOHANS" in box.text.upper()]
    assert read, [box.text for box in boxes]
    box = read[0]
    assert box.x <= x0 + 20 and box.y <= y0 + 4 and box.y + box.height >= y1 - 4


@needs_ocr
def test_pure_noise_gives_no_candidate_and_no_text():
    grey = _noise(seed=11).astype(np.float32)
    views = lifted_views(grey)
    assert views is not None
    for view, polarity in views:
        # nothing glyph-sized is left of the noise: no line to read
        glyphs = polarity * (view - (255.0 if polarity < 0 else 0.0)) > ocr._RAW_CONTRAST
        lines = ocr._lines(ocr._components(glyphs))
        assert len(lines) <= 2, lines
        assert list(_read_frame(view, 1, polarities=(polarity,))) == []
