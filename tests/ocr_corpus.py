"""A corpus of images with identifiers burned into their pixels, and where every planted text is.

Made by the project, deterministically (seeded), for the OCR tests and ``bench/ocr.py``: ultrasound-like
frames (speckled fan, dark surround, grey or colour), secondary captures (a CT-like slice with a window,
8-bit captures) and screenshot- and document-like RGB captures, some multi-frame. On them, patient names,
IDs, dates and times of the image's own header, in many common formats, at sizes of 10 to 40 pixels, in
the fonts installed on the machine (DejaVu, Liberation, GNU FreeFont and PIL's own), in several colours
and contrasts, at the edges and over the image itself, some on noise or texture; plus annotations that
identify nobody ("5 cm", "L", "MI 0.9", depth marks), kept apart as kind ``other``.

Each planted text knows its ink: the pixels its glyphs touch (any anti-aliased coverage), so a mask can
be checked to cover all of it (``bench/ocr.py`` defines recall on that).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["FONT_FILES", "CorpusImage", "PlantedText", "corpus", "missing_fonts"]

US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_IMPL_UID = "1.2.826.0.1.3680043.10.1289.1"

#: the TrueType fonts used (Debian fonts-dejavu-core, fonts-liberation, fonts-freefont-ttf); "" is PIL's own
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/freefont/FreeMono.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSerifBold.ttf",
    "",
)

FIRST_NAMES = ("Maja", "Erik", "Ingrid", "Johan", "Astrid", "Lars", "Sofia", "Nils", "Karin", "Anders",
               "Elin", "Gustav", "Hanna", "Oskar", "Freja", "Viktor", "Ebba", "Axel", "Linnea", "Emil")  # fmt: skip
LAST_NAMES = ("Lindqvist", "Johansson", "Bergstrom", "Nilsson", "Karlsson", "Holmberg", "Sandberg",
              "Ekstrom", "Lundgren", "Forsberg", "Sjoberg", "Wallin", "Engstrom", "Dahlberg", "Hedlund",
              "Mattsson", "Blomqvist", "Nyberg", "Sundqvist", "Akesson")  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
OTHER_TEXTS = ("5 cm", "L", "R", "MI 0.9", "TIS 0.4", "Gn 52", "FR 28Hz", "2D", "C5-1", "12.0",
               "PW", "Depth 14", "ABD", "DR 60")  # fmt: skip


@dataclass(frozen=True)
class PlantedText:
    """One text drawn into one frame (1-based), its ink bounding box, and which pixels its glyphs touch."""

    frame: int
    x: int
    y: int
    width: int
    height: int
    text: str
    #: name, id, date, time (identifying) or other (annotations that identify nobody)
    kind: str
    font: str
    size: int
    ink: np.ndarray = field(repr=False, compare=False)  # bool, height x width

    @property
    def identifying(self) -> bool:
        return self.kind != "other"


@dataclass(frozen=True)
class CorpusImage:
    name: str
    #: us, us-rgb, sc, sc-ct, screen, doc
    kind: str
    dataset: Dataset
    planted: tuple[PlantedText, ...]

    @property
    def frames(self) -> int:
        return int(self.dataset.get("NumberOfFrames") or 1)


def missing_fonts() -> list[str]:
    """Font files of :data:`FONT_FILES` not installed here (the corpus needs all of them)."""
    return [path for path in FONT_FILES if path and not Path(path).exists()]


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if not path:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


# ------------------------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class _Identity:
    first: str
    last: str
    patient_id: str
    birth: datetime.date
    study: datetime.datetime
    accession: str


def _identity(rng: np.random.Generator) -> _Identity:
    first = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]
    last = LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]
    birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 30000)))
    study = datetime.datetime(2019, 1, 1, 7, 0) + datetime.timedelta(
        days=int(rng.integers(0, 2000)), minutes=int(rng.integers(0, 660)), seconds=int(rng.integers(0, 60))
    )
    style = int(rng.integers(4))
    if style == 0:
        patient_id = f"{birth:%Y%m%d}-{int(rng.integers(1000, 9999))}"
    elif style == 1:
        patient_id = f"{int(rng.integers(10_000_000, 99_999_999))}"
    elif style == 2:
        patient_id = f"MRN{int(rng.integers(100_000, 999_999))}"
    else:
        patient_id = f"US-{int(rng.integers(1000, 9999))}-{chr(65 + int(rng.integers(26)))}"
    accession = f"A{int(rng.integers(1_000_000, 9_999_999))}"
    return _Identity(first, last, patient_id, birth, study, accession)


def _name_text(person: _Identity, rng: np.random.Generator) -> str:
    choices = (
        f"{person.last.upper()}, {person.first.upper()}",
        f"{person.first} {person.last}",
        f"{person.last}^{person.first}",
        f"Name: {person.last}, {person.first}",
        f"{person.last.upper()} {person.first[0]}.",
        f"Pt: {person.first.upper()} {person.last.upper()}",
    )
    return choices[int(rng.integers(len(choices)))]


def _id_text(person: _Identity, rng: np.random.Generator) -> str:
    choices = (person.patient_id, f"ID: {person.patient_id}", f"PID {person.patient_id}", f"Acc {person.accession}")
    return choices[int(rng.integers(len(choices)))]


def _date_text(day: datetime.date, rng: np.random.Generator, label: str = "") -> str:
    formats = (
        f"{day:%Y-%m-%d}",
        f"{day:%d.%m.%Y}",
        f"{day:%m/%d/%Y}",
        f"{day.day:02d}-{_MONTHS[day.month - 1].upper()}-{day.year}",
        f"{day.day} {_MONTHS[day.month - 1]} {day.year}",
        f"{day:%Y%m%d}",
        f"{day:%d/%m/%y}",
    )
    text = formats[int(rng.integers(len(formats)))]
    return f"{label}{text}" if label else text


def _time_text(moment: datetime.datetime, rng: np.random.Generator) -> str:
    hour12 = moment.hour % 12 or 12
    choices = (
        f"{moment:%H:%M:%S}",
        f"{moment:%H:%M}",
        f"{hour12}:{moment:%M} {'PM' if moment.hour >= 12 else 'AM'}",
        f"{moment:%H.%M.%S}",
    )
    return choices[int(rng.integers(len(choices)))]


def _texts(person: _Identity, rng: np.random.Generator, others: int) -> list[tuple[str, str]]:
    """(text, kind) of one frame: name, ID, a date, a time, sometimes the birth date, and ``others``."""
    texts = [
        (_name_text(person, rng), "name"),
        (_id_text(person, rng), "id"),
        (_date_text(person.study.date(), rng), "date"),
        (_time_text(person.study, rng), "time"),
    ]
    if rng.random() < 0.4:
        texts.append((_date_text(person.birth, rng, "DOB " if rng.random() < 0.5 else ""), "date"))
    for _ in range(others):
        texts.append((OTHER_TEXTS[int(rng.integers(len(OTHER_TEXTS)))], "other"))
    return texts


# ------------------------------------------------------------------------------------------- backgrounds


def _speckle(rng: np.random.Generator, rows: int, columns: int, scale: float) -> np.ndarray:
    speckle = rng.rayleigh(scale, size=(rows, columns))
    blurred = np.asarray(Image.fromarray(np.clip(speckle, 0, 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(1)))
    return blurred.astype(np.float64)


def _ultrasound(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """A dark frame with a speckled sector (fan) and a few brighter structures, 0..255 float."""
    image = rng.normal(8, 4, size=(rows, columns))
    yy, xx = np.mgrid[0:rows, 0:columns]
    apex_x, apex_y = columns / 2 + rng.normal(0, columns / 30), rows * 0.08
    radius = np.hypot(xx - apex_x, yy - apex_y)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    half = float(rng.uniform(30, 45))
    inner, outer = rows * 0.05, rows * float(rng.uniform(0.8, 0.95))
    fan = (np.abs(angle) < half) & (radius > inner) & (radius < outer)
    tissue = _speckle(rng, rows, columns, float(rng.uniform(25, 45)))
    depth_gain = np.clip(1.2 - radius / (outer * 1.6), 0.3, 1.2)
    for _ in range(int(rng.integers(1, 4))):  # bright interfaces and dark cysts
        cy, cx = rng.uniform(rows * 0.3, rows * 0.8), rng.uniform(columns * 0.35, columns * 0.65)
        ry, rx = rng.uniform(10, rows / 8), rng.uniform(15, columns / 8)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        tissue[blob] *= float(rng.choice([0.2, 2.2]))
    image[fan] = (tissue * depth_gain)[fan]
    return np.clip(image, 0, 255)


def _ct_slice(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hounsfield-like values: air, a body ellipse of soft tissue with noise, a few bones."""
    hu = np.full((size, size), -1000.0)
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((yy - size / 2) / (size * 0.36)) ** 2 + ((xx - size / 2) / (size * 0.45)) ** 2 < 1
    hu[body] = rng.normal(40, 25, size=int(body.sum()))
    for _ in range(3):
        cy, cx = rng.uniform(size * 0.35, size * 0.65), rng.uniform(size * 0.3, size * 0.7)
        bone = ((yy - cy) / rng.uniform(8, 20)) ** 2 + ((xx - cx) / rng.uniform(8, 20)) ** 2 < 1
        hu[bone] = rng.normal(700, 80, size=int(bone.sum()))
    return hu


def _texture(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """A textured grey background (waves and noise), 0..255 float."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    period = float(rng.uniform(6, 30))
    waves = np.sin(xx / period) * np.cos(yy / (period * 1.3))
    base = float(rng.uniform(40, 110))
    return np.clip(base + 35 * waves + rng.normal(0, 12, size=(rows, columns)), 0, 255)


# ------------------------------------------------------------------------------------------- drawing


def _place(
    rng: np.random.Generator,
    occupied: np.ndarray,
    size: tuple[int, int],
    region: tuple[int, int, int, int],
) -> tuple[int, int] | None:
    """A free spot for a ``size`` (width, height) box inside ``region`` (x0, y0, x1, y1), or None."""
    width, height = size
    x0, y0, x1, y1 = region
    for _ in range(60):
        if x1 - width <= x0 or y1 - height <= y0:
            return None
        x, y = int(rng.integers(x0, x1 - width)), int(rng.integers(y0, y1 - height))
        if not occupied[max(0, y - 3) : y + height + 3, max(0, x - 3) : x + width + 3].any():
            return x, y
    return None


@dataclass
class _Canvas:
    """One frame being drawn: float pixels (rows, columns[, 3]) and what was planted."""

    pixels: np.ndarray
    frame: int
    rng: np.random.Generator
    #: False: nothing is drawn (the same images without text, for false detections)
    draw: bool = True
    planted: list[PlantedText] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.occupied = np.zeros(self.pixels.shape[:2], dtype=bool)

    def text(
        self,
        text: str,
        kind: str,
        font_file: str,
        size: int,
        colour: float | tuple[float, float, float],
        region: tuple[int, int, int, int],
        backdrop: float | tuple[float, float, float] | None = None,
    ) -> bool:
        if not self.draw:
            return False
        rows, columns = self.pixels.shape[:2]
        font = _font(font_file, size)
        left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        spot = _place(self.rng, self.occupied, (right - left + 2, bottom - top + 2), region)
        if spot is None:
            return False
        # drawn alone on a layer the size of its box (plus a margin), so the ink is exactly known
        margin = 2
        layer = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
        ImageDraw.Draw(layer).text((margin - left, margin - top), text, fill=255, font=font)
        local = np.asarray(layer, dtype=np.float64) / 255.0
        ys, xs = np.nonzero(local > 0)
        if not len(ys):
            return False
        local = local[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        y0, x0 = spot[1] + 1, spot[0] + 1
        y1, x1 = min(rows, y0 + local.shape[0]), min(columns, x0 + local.shape[1])
        local = local[: y1 - y0, : x1 - x0]
        touched = local > 0
        if backdrop is not None:  # a label drawn on its own box (screens, title bars)
            pad = max(2, size // 5)
            by0, bx0 = max(0, y0 - pad), max(0, x0 - pad)
            self.pixels[by0 : y1 + pad, bx0 : x1 + pad] = backdrop
        a = local[..., None] if self.pixels.ndim == 3 else local
        region_pixels = self.pixels[y0:y1, x0:x1]
        region_pixels[:] = region_pixels * (1 - a) + np.asarray(colour, dtype=np.float64) * a
        self.occupied[y0:y1, x0:x1] = True
        self.planted.append(
            PlantedText(
                self.frame, x0, y0, x1 - x0, y1 - y0, text, kind, Path(font_file).name or "PIL default", size, touched
            )
        )
        return True


def _size(rng: np.random.Generator, small: bool) -> int:
    """Font sizes of 10 to 40 pixels; scanners mostly use the small end."""
    if small:
        return int(rng.choice([10, 11, 12, 13, 14, 15, 16, 18]))
    return int(rng.choice([10, 12, 14, 16, 18, 20, 24, 28, 32, 36, 40]))


def _font_file(rng: np.random.Generator) -> str:
    return FONT_FILES[int(rng.integers(len(FONT_FILES)))]


# ------------------------------------------------------------------------------------------- images


def _dataset(person: _Identity, sop_class: str, modality: str, rows: int, columns: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    identity = [person.last, person.first, person.patient_id, person.study.isoformat()]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*identity, sop_class, str(rows), str(columns), modality])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = _IMPL_UID
    ds.SOPClassUID = sop_class
    ds.PatientName = f"{person.last}^{person.first}"
    ds.PatientID = person.patient_id
    ds.PatientBirthDate = f"{person.birth:%Y%m%d}"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[ds.SOPInstanceUID, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[ds.SOPInstanceUID, "series"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{person.study:%Y%m%d}"
    ds.StudyTime = ds.ContentTime = f"{person.study:%H%M%S}"
    ds.AccessionNumber = person.accession
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, columns
    return ds


def _grey8(ds: Dataset, frames: list[np.ndarray]) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = b"".join(np.clip(np.rint(f), 0, 255).astype(np.uint8).tobytes() for f in frames)


def _rgb8(ds: Dataset, frames: list[np.ndarray]) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = b"".join(np.clip(np.rint(f), 0, 255).astype(np.uint8).tobytes() for f in frames)


def _multiframe(ds: Dataset, frames: int) -> None:
    if frames > 1:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
            US_MULTIFRAME_STORAGE if ds.Modality == "US" else ds.SOPClassUID
        )
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = 0x00181063


_COLOURS_GREY = (255.0, 235.0, 210.0, 190.0, 170.0)
_COLOURS_RGB = ((255, 255, 255), (255, 255, 0), (0, 255, 255), (120, 255, 120), (255, 170, 60), (200, 200, 200))


def _ultrasound_image(rng: np.random.Generator, number: int, colour: bool, frames: int, draw: bool) -> CorpusImage:
    person = _identity(rng)
    rows, columns = [(480, 640), (600, 800), (768, 1024), (434, 636)][int(rng.integers(4))]
    texts = _texts(person, rng, others=int(rng.integers(0, 4)))
    fonts = [_font_file(rng) for _ in texts]
    sizes = [_size(rng, small=rng.random() < 0.7) for _ in texts]
    over_image = rng.random() < 0.3  # some texts lie over the speckle
    planted: list[PlantedText] = []
    pixel_frames = []
    base = _ultrasound(rng, rows, columns)
    ink_colours = [
        _COLOURS_RGB[int(rng.integers(len(_COLOURS_RGB)))] if colour else _COLOURS_GREY[int(rng.integers(5))]
        for _ in texts
    ]
    for frame in range(1, frames + 1):
        moved = np.roll(base, int(rng.integers(-6, 7)), axis=1) * float(rng.uniform(0.9, 1.1))
        pixels = np.repeat(moved[..., None], 3, axis=2) if colour else moved
        if colour and rng.random() < 0.6:  # a colour Doppler box
            cy, cx = int(rows * rng.uniform(0.35, 0.6)), int(columns * rng.uniform(0.4, 0.55))
            h, w = int(rows * 0.15), int(columns * 0.12)
            flow = rng.random((h, w)) < 0.5
            patch = pixels[cy : cy + h, cx : cx + w]
            patch[flow] = (200, 40, 30) if rng.random() < 0.5 else (30, 60, 220)
        canvas = _Canvas(pixels, frame, np.random.default_rng(int(rng.integers(1 << 30))), draw)
        for i, (text, kind) in enumerate(texts):
            if over_image and i % 2:
                region = (int(columns * 0.25), int(rows * 0.3), int(columns * 0.75), int(rows * 0.85))
            elif kind == "other":
                region = (int(columns * 0.7), int(rows * 0.1), columns, rows)
            elif i < 2:
                region = (0, 0, columns, int(rows * 0.14))
            else:
                region = (0, 0, columns, rows)
            canvas.text(text, kind, fonts[i], sizes[i], ink_colours[i], region)
        planted.extend(canvas.planted)
        pixel_frames.append(canvas.pixels)
    ds = _dataset(person, US_STORAGE, "US", rows, columns)
    (_rgb8 if colour else _grey8)(ds, pixel_frames)
    _multiframe(ds, frames)
    kind = "us-rgb" if colour else "us"
    return CorpusImage(f"{kind}-{number:03d}", kind, ds, tuple(planted))


def _ct_capture(rng: np.random.Generator, number: int, draw: bool) -> CorpusImage:
    """A Secondary Capture of a CT slice (16-bit, rescale and window) with the patient's data in the corners.

    The text is drawn as a workstation draws it, on the windowed display (anti-aliased there), and
    written back in Hounsfield units."""
    person = _identity(rng)
    size = int(rng.choice([512, 512, 384]))
    hu = _ct_slice(rng, size)
    low, width = -160.0, 400.0  # the window 40/400
    display = np.clip((hu - low) / width * 255.0, 0, 255)
    canvas = _Canvas(display.copy(), 1, np.random.default_rng(int(rng.integers(1 << 30))), draw)
    texts = _texts(person, rng, others=int(rng.integers(0, 2)))
    corner = int(size * 0.3)
    regions = [(0, 0, size, corner), (0, size - corner, size, size)]
    for i, (text, kind) in enumerate(texts):
        colour = float(rng.choice([255.0, 220.0, 180.0]))
        canvas.text(text, kind, _font_file(rng), _size(rng, small=False), colour, regions[i % 2])
    drawn = canvas.pixels != display
    hu[drawn] = low + canvas.pixels[drawn] / 255.0 * width
    ds = _dataset(person, SC_STORAGE, "CT" if rng.random() < 0.5 else "OT", size, size)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16).tobytes()
    return CorpusImage(f"sc-ct-{number:03d}", "sc-ct", ds, tuple(canvas.planted))


def _grey_capture(rng: np.random.Generator, number: int, draw: bool) -> CorpusImage:
    """An 8-bit Secondary Capture: textured or noisy grey with text in light or dark ink."""
    person = _identity(rng)
    rows, columns = [(512, 512), (480, 640), (600, 800)][int(rng.integers(3))]
    pixels = (
        _texture(rng, rows, columns) if rng.random() < 0.5 else np.clip(rng.normal(100, 25, (rows, columns)), 0, 255)
    )
    canvas = _Canvas(pixels, 1, np.random.default_rng(int(rng.integers(1 << 30))), draw)
    for text, kind in _texts(person, rng, others=int(rng.integers(0, 2))):
        colour = float(rng.choice([255.0, 240.0, 10.0, 0.0]))
        canvas.text(text, kind, _font_file(rng), _size(rng, small=False), colour, (0, 0, columns, rows))
    ds = _dataset(person, SC_STORAGE, "OT", rows, columns)
    _grey8(ds, [canvas.pixels])
    return CorpusImage(f"sc-{number:03d}", "sc", ds, tuple(canvas.planted))


def _screen(rng: np.random.Generator, number: int, document: bool, draw: bool) -> CorpusImage:
    """A screenshot (panels, a title bar, an embedded image) or a scanned-document-like page, RGB."""
    person = _identity(rng)
    rows, columns = (800, 640) if document else [(600, 800), (768, 1024)][int(rng.integers(2))]
    paper = float(rng.uniform(225, 255))
    pixels = np.full((rows, columns, 3), paper) + rng.normal(0, 4 if document else 1, size=(rows, columns, 1))
    title = (0, 0, columns, 0)
    if not document:
        bar = int(rng.integers(24, 44))
        pixels[:bar] = (float(rng.uniform(20, 60)), float(rng.uniform(40, 90)), float(rng.uniform(110, 170)))
        title = (0, 0, columns, bar)
        for _ in range(int(rng.integers(2, 5))):  # panels in other shades
            y0, x0 = int(rng.integers(bar, rows - 100)), int(rng.integers(0, columns - 150))
            pixels[y0 : y0 + int(rng.integers(60, 200)), x0 : x0 + int(rng.integers(100, 300))] = rng.uniform(
                180, 240, 3
            )
        y0, x0 = int(rows * 0.45), int(columns * 0.5)  # an embedded image
        pixels[y0 : y0 + rows // 3, x0 : x0 + columns // 3] = rng.uniform(0, 255, (rows // 3, columns // 3, 1))
    canvas = _Canvas(pixels, 1, np.random.default_rng(int(rng.integers(1 << 30))), draw)
    texts = _texts(person, rng, others=int(rng.integers(0, 3)))
    for i, (text, kind) in enumerate(texts):
        size = _size(rng, small=False)
        if not document and i == 0 and size <= title[3] - 6:  # the name in the title bar, white on blue
            canvas.text(text, kind, _font_file(rng), size, (255, 255, 255), title)
            continue
        ink = tuple(float(v) for v in rng.choice([[0, 0, 0], [30, 30, 30], [20, 40, 140], [120, 20, 20], [70, 70, 70]]))
        backdrop = tuple(float(v) for v in rng.uniform(200, 255, 3)) if rng.random() < 0.2 else None
        region = (0, title[3], columns, rows)
        canvas.text(text, kind, _font_file(rng), size, ink, region, backdrop)  # type: ignore[arg-type]
    ds = _dataset(person, SC_STORAGE, "DOC" if document else "OT", rows, columns)
    _rgb8(ds, [canvas.pixels])
    kind = "doc" if document else "screen"
    return CorpusImage(f"{kind}-{number:03d}", kind, ds, tuple(canvas.planted))


def corpus(seed: int = 16, scale: int = 1, text: bool = True) -> Iterator[CorpusImage]:
    """The corpus, image by image (``scale`` 1: 210 frames; tests take a few with ``itertools.islice``).
    ``text=False``: the same images with nothing drawn on them (what is found there is a false detection).

    Per ``scale``: 90 grey and 30 colour ultrasound frames, 10 ultrasound cine loops of 4 frames
    (grey and colour), 15 CT secondary captures, 15 8-bit captures, 15 screenshots and 5 documents,
    shuffled so that a prefix holds a bit of every kind."""
    plan = (
        ["us"] * 90 + ["us-rgb"] * 30 + ["cine"] * 5 + ["cine-rgb"] * 5 + ["sc-ct"] * 15 + ["sc"] * 15
        + ["screen"] * 15 + ["doc"] * 5
    ) * scale  # fmt: skip
    for number, i in enumerate(np.random.default_rng(seed + 1).permutation(len(plan))):
        kind = plan[i]
        image_rng = np.random.default_rng([seed, number])
        if kind in ("us", "us-rgb"):
            yield _ultrasound_image(image_rng, number, colour=kind == "us-rgb", frames=1, draw=text)
        elif kind in ("cine", "cine-rgb"):
            yield _ultrasound_image(image_rng, number, colour=kind == "cine-rgb", frames=4, draw=text)
        elif kind == "sc-ct":
            yield _ct_capture(image_rng, number, draw=text)
        elif kind == "sc":
            yield _grey_capture(image_rng, number, draw=text)
        else:
            yield _screen(image_rng, number, document=kind == "doc", draw=text)
