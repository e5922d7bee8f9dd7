"""Text burned into the pixels, found with Tesseract OCR: a pure function of a dataset → text boxes.

Why not Tesseract on the whole frame: its page segmentation is made for documents. On ultrasound
speckle, noise or texture it thresholds the background into thousands of specks and reads little
(on the project's corpus, whole-frame Tesseract found 58 % of the planted identifiers; with Sauvola
thresholding 78 %). So each frame is looked at the way a person sees it (:func:`render_frame`: the
Modality LUT and the file's window, and the full range when a window hides part of it) and the
work is split in two:

1. **candidates** — text is small glyphs of one colour that stand out from their surroundings, either
   way: pixels brighter (or darker) than the ground behind them (a grey opening, or closing, of the
   lightly smoothed frame: it drops thin strokes and keeps the edges of large regions) by a margin,
   on the raw and on the smoothed frame (thin strokes and noisy grounds both count), are grouped into
   connected components of glyph size, and components side by side at the same height into lines;
   then, once more, at twice the margin (text over speckle or texture, whose strokes merge with the
   ground into blobs at the first margin, stands apart there). Besides the frame: the full range of a
   windowed one, a 3x3 median of a noisy one, the chroma of a colour one (:func:`_chroma`: coloured
   text on grey speckle or noise), and where a frame has a ground of wide pixel noise, the frame with
   that noise lifted out (:func:`.noisetext.lifted_views`: dark text on full-range noise);
2. **recognition** — each line is cut out with a margin (restored where the frame's edge cuts it),
   scaled so its glyphs are about :data:`TARGET_HEIGHT` pixels high, made dark-on-light, and read by
   Tesseract as a block (``PSM.SINGLE_BLOCK``: lines whose glyphs touch make one candidate), as it is,
   as its contrast to the ground, smoothed, as the glyph mask alone, and last binarized after a median
   (:func:`_binarized`), until one reads as text (:func:`_is_text`: noise read as letters is short and
   unsure; a reading that names the image's own patient, ID or dates counts at any confidence). A
   text's box is the candidate's, grown along its line over neighbouring glyphs (:func:`_complete`) and
   then over fainter ones (:func:`_extend`), not Tesseract's.

The Tesseract engine (``tesserocr``, in-process: 7 ms to read a line here, where ``pytesseract``,
which starts the tesseract program for each call, takes 150 ms) is made once per thread and reused.
Identical frames (cine loops whose overlay does not change) are read once. Everything here is CPU
work on one dataset, so :func:`detect_text` can run in a worker process as it is (it takes a
dataset or a file path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from ..dicom.render import render_frame
from .noisetext import lifted_views

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "TARGET_HEIGHT",
    "TextBox",
    "detect_text",
    "masked_text",
    "ocr_unavailable_reason",
    "tessdata_path",
]

#: glyph height (pixels) lines are scaled to before recognition: Tesseract reads best around 30-40
TARGET_HEIGHT = 36
#: a pixel belongs to a glyph candidate when it differs from the ground (a grey opening or closing over
#: _BACKGROUND pixels: strokes up to ~14 px wide) by this much on the raw frame, or by _SMOOTH_CONTRAST
#: after a 3x3 mean (thin strokes, noise)
_RAW_CONTRAST = 55.0
_SMOOTH_CONTRAST = 28.0
_BACKGROUND = 15
#: faint glyphs a found line grows over (see _extend): contrast to the ground, and how far (line heights)
_FAINT_CONTRAST, _FAINT_REACH = 12.0, 3
#: how many times a found line grows by that reach at most (see _extend)
_FAINT_STEPS = 3
#: the widest gap (line heights) between a line and faint glyphs it grows over: ": " in a monospaced font
_FAINT_GAP = 1.5
#: glyph components: height range (pixels) and fewest pixels
_MIN_GLYPH_HEIGHT, _MAX_GLYPH_HEIGHT, _MIN_GLYPH_AREA = 4, 90, 5
#: a line's recognized text needs this many letters or digits, and this confidence for 5 or more (0-100)
_MIN_CHARACTERS = 3
_MIN_CONFIDENCE = 62.0
#: ... or this confidence when its candidate holds this many glyphs
_LINE_CONFIDENCE, _LINE_GLYPHS = 45.0, 6
#: the confidence above which a short reading counts and no other view is tried (see _is_text)
_SURE = 85.0
#: the shape of a date, a time or an ID: counts whatever Tesseract's confidence
_STRUCTURED = re.compile(
    r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}[:.]\d{2}[:.]\d{2}|\d{1,2}:\d{2}|\d{5,}"
    r"|\d{1,2}[ .-]?(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*[ .,-]*\d{2,4}"
)
#: pixel noise (robust sigma, grey levels) above which a frame is also read after a 3x3 median
_NOISY = 8.0
#: candidates per frame and polarity beyond which the rest (those of fewest glyphs) are not read: a bound
#: on the time a frame of pure noise takes (each candidate costs 7-30 ms)
_MAX_CANDIDATES = 200
#: lines (of three glyphs or more) read at twice the margin, per frame and polarity: those of most glyphs
_MAX_STRONG = 30

_DEBIAN_TESSDATA = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                    "/usr/share/tessdata", "/usr/local/share/tessdata")  # fmt: skip


@dataclass(frozen=True)
class TextBox:
    """Text found in one frame (1-based): the glyphs' bounding box, what Tesseract read, its confidence (0-100)."""

    frame: int
    x: int
    y: int
    width: int
    height: int
    text: str
    confidence: float

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """JSON of the box; the text masked (``J*** D**``) unless ``reveal``."""
        return {
            "frame": self.frame,
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "text": self.text if reveal else masked_text(self.text),
            "confidence": round(self.confidence, 1),
        }


def masked_text(text: str) -> str:
    """Each word's first character and stars (``Lindqvist Maja`` → ``L******** M***``): enough to see what
    kind of text it is in a review, not enough to read a name."""
    return " ".join(word[:1] + "*" * (len(word) - 1) for word in text.split())


# ------------------------------------------------------------------------------------------- the engine


def tessdata_path() -> str | None:
    """The folder of Tesseract's ``eng.traineddata``: ``$TESSDATA_PREFIX`` (Tesseract's own variable), else
    Debian's ``tesseract-ocr-eng`` locations; None when there is none."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *_DEBIAN_TESSDATA]
    for folder in candidates:
        if folder and (Path(folder) / "eng.traineddata").is_file():
            return folder
    return None


def ocr_unavailable_reason() -> str | None:
    """Why text cannot be detected here (the binding, scipy or the language data is missing), or None."""
    try:
        import scipy.ndimage  # noqa: F401
        import tesserocr  # noqa: F401
    except ImportError as e:
        return (
            f"{e.name or 'the Tesseract binding tesserocr'} is not installed (pip install 'slicebox_lab[ocr]', "
            "and on Debian apt-get install tesseract-ocr tesseract-ocr-eng)"
        )
    if tessdata_path() is None:
        return (
            "Tesseract's English language data (eng.traineddata) was not found "
            "(Debian: apt-get install tesseract-ocr-eng, or set TESSDATA_PREFIX to its folder)"
        )
    return None


_local = threading.local()


def _line_reader() -> Any:
    """This thread's Tesseract API set up for one line of text (made once: loading the model costs ~50 ms)."""
    api = getattr(_local, "api", None)
    if api is None:
        import tesserocr

        api = tesserocr.PyTessBaseAPI(path=tessdata_path() or "", lang="eng", psm=tesserocr.PSM.SINGLE_BLOCK)
        _local.api = api
    return api


# ------------------------------------------------------------------------------------------- detection


def detect_text(
    source: Dataset | str | os.PathLike[str],
    blank: Iterable[tuple[int, int, int, int]] = (),
    known: Callable[[str], bool] | None = None,
) -> tuple[TextBox, ...]:
    """Every line of text found in every frame of ``source`` (a dataset or the path of a DICOM file).

    ``blank``: rectangles (x, y, width, height) already blacked out (configured pixel masks): read as
    a flat ground, so only the text they leave is found. ``known``: whether a reading names one of the
    image's own identifiers (its patient's name, ID, dates): such a reading counts as text however unsure
    Tesseract is of it (a name in a bold or blurred font reads right at confidence 10-40).

    Raises :class:`RuntimeError` naming what is missing when OCR is not available (see
    :func:`ocr_unavailable_reason`), and :class:`~slicebox_lab.errors.RenderingFailed` for pixels
    that cannot be rendered. The dataset is only read.
    """
    reason = ocr_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    ds = source if isinstance(source, Dataset) else dcmread(source)
    frames = max(_int(ds.get("NumberOfFrames"), 1), 1)
    windowed = "WindowCenter" in ds or "VOILUTSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    rectangles = list(blank)
    seen: dict[bytes, list[TextBox]] = {}
    boxes: list[TextBox] = []
    # 8-bit grey without a window: its values as a display shows them; the node's PNG rendering stretches
    # the frame's range, which turns faint speckle into glyph-like contrast once bright text is masked
    raw = None if windowed or _int(ds.get("BitsStored"), 8) > 8 or "RescaleSlope" in ds else (0.0, 255.0)
    for frame in range(1, frames + 1):
        rendered = render_frame(ds, frame, window=raw)
        greys = [_grey(rendered)]
        if windowed:
            greys.append(_grey(render_frame(ds, frame, full_range=True)))
        denoised = _denoised(greys[0])
        if denoised is not None:
            greys.append(denoised)
        chroma = _chroma(rendered)
        if chroma is not None:
            greys.append(chroma)
        for grey in greys:
            for x, y, width, height in rectangles:
                grey[max(0, y) : y + height, max(0, x) : x + width] = 0.0
        key = hashlib.blake2b(b"".join(g.tobytes() for g in greys), digest_size=16).digest()
        if key in seen:  # an identical frame of a cine loop: the same text
            boxes.extend(dataclasses.replace(b, frame=frame) for b in seen[key])
            continue
        # each view with the polarities read in it: the chroma for bright text only (grey grounds have
        # none); the frame with its noise lifted out (text over a panel of pixel noise) where it has some
        views: list[tuple[NDArray[np.float32], tuple[float, ...]]] = [
            (grey, (1.0,) if grey is chroma else (1.0, -1.0)) for grey in greys
        ]
        views.extend((view, (polarity,)) for view, polarity in lifted_views(greys[0]) or [])
        found: list[TextBox] = []
        for grey, polarities in views:
            for box in _read_frame(grey, frame, known, polarities):
                found = _merged(found, box)
        seen[key] = found
        boxes.extend(found)
    return tuple(boxes)


def _denoised(grey: NDArray[np.float32]) -> NDArray[np.float32] | None:
    """The frame after a 3x3 median when it is noisy (pixel noise of sigma 8 or more: small text drowns in
    it), else None. Speckle and clean frames measure 0-5, noisy captures 10-25."""
    from scipy import ndimage

    median = ndimage.median_filter(grey, size=3, mode="nearest")
    sigma = 1.4826 * float(np.median(np.abs(grey - median)))
    return median if sigma >= _NOISY else None


def _chroma(image: Image.Image) -> NDArray[np.float32] | None:
    """How coloured each pixel of an RGB frame is (its largest channel minus its smallest), or None for a
    grey frame: coloured text on grey speckle or noise, lost among them in grey, stands out alone here."""
    if image.mode != "RGB":
        return None
    pixels = np.asarray(image, dtype=np.int16)
    chroma = (pixels.max(axis=2) - pixels.min(axis=2)).astype(np.float32)
    return chroma if float(chroma.max()) >= 2 * _RAW_CONTRAST else None


def _grey(image: Image.Image) -> NDArray[np.float32]:
    return np.array(image.convert("L"), dtype=np.float32)  # a writable copy


def _read_frame(
    grey: NDArray[np.float32],
    frame: int,
    known: Callable[[str], bool] | None = None,
    polarities: tuple[float, ...] = (1.0, -1.0),
) -> Iterator[TextBox]:
    from scipy import ndimage

    smooth = ndimage.uniform_filter(grey, 3, mode="nearest")
    for polarity in polarities:  # bright text, then dark text
        # the ground behind bright text: the frame without its thin bright strokes (a grey opening
        # keeps the edges of large bright regions, where a local mean would make a bright band)
        if polarity > 0:
            background = ndimage.grey_opening(smooth, size=(_BACKGROUND, _BACKGROUND), mode="nearest")
        else:
            background = ndimage.grey_closing(smooth, size=(_BACKGROUND, _BACKGROUND), mode="nearest")
        glyphs = (polarity * (grey - background) > _RAW_CONTRAST) | (
            polarity * (smooth - background) > _SMOOTH_CONTRAST
        )
        # what Tesseract is shown (each made dark-on-light), until it reads text: the frame as it is; its
        # contrast to the ground (flattens a bright or dark patch behind the text); smoothed; the glyphs alone
        local = np.clip(128.0 + 2.0 * (smooth - background), 0, 255)
        views = [grey, local, smooth, np.where(glyphs, 255.0, 0.0).astype(np.float32)]
        if polarity < 0:
            views[3] = 255.0 - views[3]
        components = _components(glyphs)
        found = _lines(components)
        lines = [(x0, y0, x1, y1) for x0, y0, x1, y1, _ in found]
        # then the glyphs of twice the contrast: text over speckle or texture, whose strokes merge with the
        # ground into blobs at the first margin, stands apart here (only lines not already seen are read)
        strong = polarity * (grey - background) > 2 * _RAW_CONTRAST
        strong_components = _components(strong)
        strong_lines = [line for line in _lines(strong_components) if line[4] >= 3 and not _seen(line[:4], lines)]
        strong_lines = sorted(strong_lines, key=lambda line: line[4], reverse=True)[:_MAX_STRONG]
        strong_views = [*views[:3], np.where(strong, 255.0, 0.0).astype(np.float32) if polarity > 0 else
                        np.where(strong, 0.0, 255.0).astype(np.float32)]  # fmt: skip
        passes = (
            (found, components, views, polarity * (smooth - background), _FAINT_CONTRAST),
            (strong_lines, strong_components, strong_views, polarity * (grey - background), _RAW_CONTRAST),
        )
        for candidates, parts, shown, contrast, faint in passes:
            known_lines = [(x0, y0, x1, y1) for x0, y0, x1, y1, _ in candidates]
            for x0, y0, x1, y1, glyph_count in candidates:
                line = _recognize(shown, (x0, y0, x1, y1), polarity > 0, glyph_count, known)
                if line is not None:
                    x0, y0, x1, y1 = _complete((x0, y0, x1, y1), parts, known_lines)
                    for _ in range(_FAINT_STEPS):  # a long line read in part grows step by step
                        grown = _extend((x0, y0, x1, y1), contrast, polarity * grey, faint)
                        if grown == (x0, y0, x1, y1):
                            break
                        x0, y0, x1, y1 = grown
                    yield TextBox(frame, x0, y0, x1 - x0, y1 - y0, *line)


def _seen(box: tuple[int, int, int, int], lines: list[tuple[int, int, int, int]]) -> bool:
    """Whether a line much like ``box`` (overlapping it by 70 % of the larger of the two) is in ``lines``."""
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in lines:
        width, height = min(x1, a1) - max(x0, a0), min(y1, b1) - max(y0, b0)
        if width > 0 and height > 0 and width * height >= 0.7 * max((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0)):
            return True
    return False


def _components(glyphs: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Boxes (x0, y0, x1, y1, pixels) of the 8-connected components of ``glyphs``, one row each."""
    from scipy import ndimage

    labels, count = ndimage.label(glyphs, structure=np.ones((3, 3), dtype=bool))
    if not count:
        return np.zeros((0, 5), dtype=np.int64)
    areas = np.bincount(labels.ravel())
    rows = [
        (found[1].start, found[0].start, found[1].stop, found[0].stop, areas[index])
        for index, found in enumerate(ndimage.find_objects(labels), start=1)
        if found is not None
    ]
    return np.asarray(rows, dtype=np.int64)


def _lines(components: NDArray[np.int64]) -> list[tuple[int, int, int, int, int]]:
    """Boxes (x0, y0, x1, y1, glyphs) of lines of glyph-sized components standing side by side."""
    glyphs = []
    for x0, y0, x1, y1, area in components.tolist():
        height, width = y1 - y0, x1 - x0
        if not _MIN_GLYPH_HEIGHT <= height <= _MAX_GLYPH_HEIGHT or area < _MIN_GLYPH_AREA:
            continue
        if width > 12 * height or area > 0.9 * height * width and height > 8 and width > 8:
            continue  # a bar, or a filled block: not a glyph
        glyphs.append((x0, y0, x1, y1))
    return _group(glyphs)


def _complete(
    box: tuple[int, int, int, int], components: NDArray[np.int64], lines: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int]:
    """``box`` grown along its line: over the other candidate lines and the components at its height just
    beyond its ends (the rest of a name Tesseract read only part of, punctuation, glyphs too faint to be
    candidates). A box that holds part of a name must hold all of it."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    rows = [*components[:, :4].tolist(), *(list(line) for line in lines)] if len(components) else list(map(list, lines))
    if not rows:
        return box
    parts = np.asarray(rows, dtype=np.int64)
    cx0, cy0, cx1, cy1 = parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3]
    part_height = cy1 - cy0
    in_band = (cy0 >= y0 - 0.4 * height) & (cy1 <= y1 + 0.4 * height) & (part_height <= 1.5 * height)
    in_band &= (cx0 >= x0 - 4 * height) & (cx1 <= x1 + 4 * height)
    glyph = part_height >= 0.25 * height  # glyphs and their parts, not specks of noise
    for _ in range(8):
        near = in_band & glyph & (cx1 >= x0 - height) & (cx0 <= x1 + height)
        if not near.any():
            break
        grown = (
            min(x0, int(cx0[near].min())),
            min(y0, int(cy0[near].min())),
            max(x1, int(cx1[near].max())),
            max(y1, int(cy1[near].max())),
        )
        if grown == (x0, y0, x1, y1):
            break
        x0, y0, x1, y1 = grown
    # then, once, the specks right next to it (a full stop, the dot after an initial): only once, so that
    # noise does not creep along the line
    specks = in_band & ~glyph & (cx1 >= x0 - 0.3 * height) & (cx0 <= x1 + 0.3 * height)
    if specks.any():
        x0, x1 = min(x0, int(cx0[specks].min())), max(x1, int(cx1[specks].max()))
    return x0, y0, x1, y1


def _extend(
    box: tuple[int, int, int, int], contrast: NDArray[np.float32], signed: NDArray[np.float32], faint: float
) -> tuple[int, int, int, int]:
    """``box`` grown along its line over faint glyphs: components of pixels standing out from the ground by
    ``faint`` (:data:`_FAINT_CONTRAST`: a third of what makes a candidate) that fit in the line's height band, no
    farther than a word gap from it, at most :data:`_FAINT_REACH` line heights on each side. The part of a
    name on a darker or textured patch (too faint, or merged with the texture, to be a candidate) goes too.
    ``signed``: the frame, negated for dark text; pixels ``faint`` twice over the median of the
    line's neighbourhood count too (a label on a patch of its own, which the ground estimate misses)."""
    from scipy import ndimage

    x0, y0, x1, y1 = box
    height = y1 - y0
    rows, columns = contrast.shape
    reach = _FAINT_REACH * height
    top, bottom = max(0, y0 - height), min(rows, y1 + height)
    left, right = max(0, x0 - reach), min(columns, x1 + reach)
    near, raised = signed[top:bottom, left:right], contrast[top:bottom, left:right]
    # on a noisy ground, three times its noise: the ground's own grain is no glyph
    grain = 3.0 * 1.4826 * float(np.median(np.abs(raised - np.median(raised))))
    faint = max(faint, grain)
    ground = float(np.median(near))
    masks = [(raised > faint) | (near - ground > 2 * faint)]
    # and, apart, pixels nearly as inked as the line's own glyphs (its brightest tenth, for bright text):
    # text of one colour whose ground darkens or brightens along the line, where contrast falls short
    ink = float(np.percentile(signed[y0:y1, x0:x1], 90))
    if ink - ground > 2 * _FAINT_CONTRAST:
        masks.append(near >= ink - 0.5 * (ink - ground))
    band_top, band_bottom = y0 - 0.35 * height - top, y1 + 0.35 * height - top
    inky = np.zeros(right - left, dtype=bool)
    for inked in masks:
        labels, _ = ndimage.label(inked, structure=np.ones((3, 3), bool))
        for found in ndimage.find_objects(labels):
            if found is None:
                continue
            ys, xs = found
            tall, wide = ys.stop - ys.start, xs.stop - xs.start
            if ys.start >= band_top and ys.stop <= band_bottom and tall >= 0.3 * height and wide <= 2 * height:
                inky[xs] = True
    gap = max(2, round(_FAINT_GAP * height))
    new_x0, new_x1 = x0, x1
    column, last = x0 - 1 - left, x0 - left
    while column >= 0 and last - column <= gap:
        if inky[column]:
            last = column
        column -= 1
    new_x0 = min(x0, last + left)
    column, last = x1 - left, x1 - 1 - left
    while column < len(inky) and column - last <= gap:
        if inky[column]:
            last = column
        column += 1
    new_x1 = max(x1, last + 1 + left)
    return new_x0, y0, new_x1, y1


def _group(components: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int, int]]:
    """Components into lines: same height band (half the smaller one overlaps), gap below ~1.2 glyph heights."""
    components.sort()
    lines: list[list[int]] = []  # x0, y0, x1, y1, members
    for x0, y0, x1, y1 in components:
        height = y1 - y0
        joined = None
        for line in reversed(lines[-60:]):  # lines still open to the left of this component
            lx0, ly0, lx1, ly1, _ = line
            line_height = ly1 - ly0
            overlap = min(y1, ly1) - max(y0, ly0)
            if overlap < 0.5 * min(height, line_height) or max(height, line_height) > 3 * min(height, line_height):
                continue
            if x0 - lx1 > 1.2 * max(height, line_height):
                continue
            line[0], line[1], line[2], line[3], line[4] = (
                min(lx0, x0),
                min(ly0, y0),
                max(lx1, x1),
                max(ly1, y1),
                line[4] + 1,
            )
            joined = line
            break
        if joined is None:
            lines.append([x0, y0, x1, y1, 1])
    kept = [line for line in lines if line[4] >= 2 or line[2] - line[0] >= 1.5 * (line[3] - line[1])]
    if len(kept) > _MAX_CANDIDATES:  # noise-dominated: the lines of most glyphs first (a name has many)
        kept.sort(key=lambda line: (line[4], line[2] - line[0]), reverse=True)
        kept = kept[:_MAX_CANDIDATES]
    return [(x0, y0, x1, y1, glyphs) for x0, y0, x1, y1, glyphs in kept]


def _recognize(
    views: list[NDArray[np.float32]],
    box: tuple[int, int, int, int],
    bright: bool,
    glyphs: int = 0,
    known: Callable[[str], bool] | None = None,
) -> tuple[str, float] | None:
    """(text, confidence) Tesseract reads in the line ``box`` (of ``glyphs`` components), the surest of the
    views where it reads text (or that names one of the image's own identifiers), or None."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    margin = max(4, height // 2)
    rows, columns = views[0].shape
    area = (slice(max(0, y0 - margin), min(rows, y1 + margin)), slice(max(0, x0 - margin), min(columns, x1 + margin)))
    scale = min(4.0, max(1.0, TARGET_HEIGHT / max(height, 1)))
    api = _line_reader()
    best: tuple[str, float] | None = None
    images = (_line_image(view, area, bright, margin, scale) for view in views)
    for image in itertools.chain(images, [None]):
        if image is None:  # none read as text: the frame binarized after a median (text on speckle or noise),
            if best is not None or glyphs < 3:  # for lines of three glyphs or more (two are mostly speckle)
                break
            image = _binarized(_line_image(views[0], area, bright, margin, scale))
        api.SetImage(image)
        text = " ".join((api.GetUTF8Text() or "").split())
        confidences = [c for c in api.AllWordConfidences() if c >= 0]
        confidence = float(np.mean(confidences)) if confidences else 0.0
        if (_is_text(text, confidence, glyphs) or _names_known(text, known)) and (best is None or confidence > best[1]):
            best = (text, confidence)
            if confidence >= _SURE:
                break
    return best


def _line_image(
    view: NDArray[np.float32], area: tuple[slice, slice], bright: bool, margin: int, scale: float
) -> Image.Image:
    """The line's crop of ``view``, dark-on-light, its margin restored, scaled to Tesseract's glyph height."""
    crop = 255.0 - view[area] if bright else view[area]
    crop = _with_margin(crop, area, view.shape, margin)
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
    if scale > 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return image


def _binarized(image: Image.Image) -> Image.Image:
    """``image`` after a 3x3 median, black below Otsu's threshold and white above: glyphs over speckle or
    noise, which Tesseract's own thresholding cuts to pieces, as clean strokes."""
    from PIL import ImageFilter

    pixels = np.asarray(image.filter(ImageFilter.MedianFilter(3)))
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    share = np.cumsum(counts) / counts.sum()
    mean = np.cumsum(counts * np.arange(256)) / counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * share - mean) ** 2 / (share * (1.0 - share))
    threshold = int(np.nanargmax(between)) if np.isfinite(between).any() else 127
    return Image.fromarray(np.where(pixels > threshold, 255, 0).astype(np.uint8))


def _with_margin(
    crop: NDArray[np.float32], area: tuple[slice, slice], shape: tuple[int, int], margin: int
) -> NDArray[np.float32]:
    """``crop`` with its ``margin`` restored where the frame's edge cut it off, in the crop's lightest grey
    (the ground, once made dark-on-light): Tesseract misses text that touches the image's edge."""
    (top, bottom), (left, right) = ((s.start, shape[i] - s.stop) for i, s in enumerate(area))
    widths = ((max(0, margin - top), max(0, margin - bottom)), (max(0, margin - left), max(0, margin - right)))
    if not any(w for pair in widths for w in pair):
        return crop
    return np.pad(crop, widths, mode="constant", constant_values=float(np.percentile(crop, 90)))


def _names_known(text: str, known: Callable[[str], bool] | None) -> bool:
    """Whether ``text`` (three letters or digits or more) names one of the image's own identifiers."""
    return known is not None and sum(ch.isalnum() for ch in text) >= _MIN_CHARACTERS and known(text)


def _is_text(text: str, confidence: float, glyphs: int = 0) -> bool:
    """Whether Tesseract's reading of a candidate is text rather than speckle or noise read as characters.

    Noise reads as short salad ("ru", "as", "4 45", "2 733") at confidences up to 90. Identifiers are
    dates, times and IDs, which Tesseract often reads right but unsure when they are blurred (so the
    shape of one counts at any confidence), or numbers and names read with some confidence.
    """
    characters = sum(ch.isalnum() for ch in text)
    if characters < _MIN_CHARACTERS:
        return False
    if _STRUCTURED.search(text.upper()):
        return True
    if characters >= 5 or sum(ch.isdigit() for ch in text) >= 3:
        # a line of many glyphs is a line of text more surely than Tesseract's confidence says
        return confidence >= (_LINE_CONFIDENCE if glyphs >= _LINE_GLYPHS else _MIN_CONFIDENCE)
    return confidence >= _SURE


def _merged(found: list[TextBox], box: TextBox) -> list[TextBox]:
    """``found`` with ``box`` added; boxes that overlap it much (the same text seen twice) become their union,
    with the better reading (:func:`_fuller`)."""
    keep = []
    for other in found:
        if _overlap(box, other) > 0.5:
            x0, y0 = min(box.x, other.x), min(box.y, other.y)
            x1 = max(box.x + box.width, other.x + other.width)
            y1 = max(box.y + box.height, other.y + other.height)
            best = _fuller(box, other)
            box = TextBox(box.frame, x0, y0, x1 - x0, y1 - y0, best.text, best.confidence)
        else:
            keep.append(other)
    return [*keep, box]


def _fuller(a: TextBox, b: TextBox) -> TextBox:
    """The reading that holds clearly more (three letters or digits more: two lines read as one), else
    the surer one."""
    count_a, count_b = (sum(ch.isalnum() for ch in t.text) for t in (a, b))
    if abs(count_a - count_b) >= 3:
        return a if count_a > count_b else b
    return a if a.confidence >= b.confidence else b


def _overlap(a: TextBox, b: TextBox) -> float:
    """Intersection over the smaller box."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / min(a.width * a.height, b.width * b.height)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
