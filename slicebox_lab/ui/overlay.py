"""Segmentations over their source series in the Viewer: find them, read them, map their frames to slices.

A DICOM Segmentation (SEG) names its source series (``ReferencedSeriesSequence``) and, frame by frame, its
segment (``SegmentIdentificationSequence``), its source image (``DerivationImageSequence`` →
``SourceImageSequence``) and its plane position.  The viewer lists the SEGs of the shown series' study
that reference it (an app's results land there, see slicebox_lab/apps), reads the chosen one with
pydicom, and turns it into one label map per source slice: ``uint8``, the segment number, 0 for none
(where segments overlap the higher number wins, e.g. the lungs over the body).  A frame finds its slice
by the SOPInstanceUID (and frame number) it was derived from, else by its position along the slice.
Each map is sent to the browser once, keyed by its slice's (image id, frame), so the browser's
re-ordering of slices never moves an overlay off its image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slicebox_lab.client.volume import read_dataset

__all__ = ["PALETTE", "Frame", "Segment", "Segmentation", "label_maps", "read_segmentation", "segmentations_of"]

#: colours of segments without a recommended display colour, in segment order (1: yellow, 2: cyan, ...)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 215, 0), (0, 200, 255), (255, 64, 64), (64, 220, 64), (200, 90, 255), (255, 140, 0), (255, 105, 180),
)  # fmt: skip
SEG_MODALITY = "SEG"
#: how close (mm along the slice normal, and in the plane) a frame's position must be to its slice's
_POSITION_TOLERANCE = 0.05


@dataclass(frozen=True)
class Segment:
    number: int
    label: str
    color: tuple[int, int, int]

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "label": self.label, "color": "#{:02x}{:02x}{:02x}".format(*self.color)}


@dataclass
class Frame:
    """One SEG frame: which segment, derived from which image (and frame), where, and its mask."""

    segment: int
    source_sop: str | None
    source_frame: int
    position: tuple[float, float, float] | None
    mask: np.ndarray  # (rows, columns) bool


@dataclass
class Segmentation:
    series_id: int
    label: str
    segments: list[Segment] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)


def is_segmentation(record: Mapping[str, Any]) -> bool:
    return str(record.get("Modality", "")).upper() == SEG_MODALITY


def referenced_series(ds: Any) -> set[str]:
    """The SeriesInstanceUIDs a SEG says it was made from."""
    return {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])} - {""}


def _header(client: Any, series_id: int) -> tuple[int, Any] | None:
    """(first image id, its dataset without pixels) of a series, None when it has no image."""
    ids = client.image_ids(int(series_id))
    if not ids:
        return None
    return ids[0], read_dataset(client.image_bytes(ids[0]))


def segmentations_of(client: Any, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The SEG series of the record's study that reference its series: ``[{series_id, label}]``, newest last."""
    series_uid = str(record.get("SeriesInstanceUID", ""))
    study = record.get("study_id")
    if not series_uid or study is None:
        return []
    found = []
    listing = client.series(int(study))
    for row in listing.to_dict("records"):
        if not is_segmentation(row) or int(row["id"]) == int(record.get("series_id", -1)):
            continue
        header = _header(client, int(row["id"]))
        if header is not None and series_uid in referenced_series(header[1]):
            description = str(row.get("SeriesDescription") or "") or f"segmentation (series {int(row['id'])})"
            found.append({"series_id": int(row["id"]), "label": description})
    return found


def source_of(client: Any, record: Mapping[str, Any]) -> int | None:
    """The node's id of the series a SEG (``record``) was made from, in the SEG's study; None if not here."""
    header = _header(client, int(record["series_id"]))
    study = record.get("study_id")
    if header is None or study is None:
        return None
    wanted = referenced_series(header[1])
    for row in client.series(int(study)).to_dict("records"):
        if str(row.get("SeriesInstanceUID", "")) in wanted and not is_segmentation(row):
            return int(row["id"])
    return None


def cielab_to_rgb(value: Sequence[int]) -> tuple[int, int, int]:
    """A DICOM ``RecommendedDisplayCIELabValue`` (L*a*b* scaled to 0..65535, D65) as sRGB."""
    lightness = float(value[0]) * 100.0 / 65535.0
    a, b = (float(v) * 255.0 / 65535.0 - 128.0 for v in value[1:3])
    fy = (lightness + 16.0) / 116.0
    f = np.array([fy + a / 500.0, fy, fy - b / 200.0])
    xyz = np.where(f**3 > 0.008856, f**3, (f - 16.0 / 116.0) / 7.787) * np.array([0.95047, 1.0, 1.08883])
    linear = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]) @ xyz
    linear = np.clip(linear, 0.0, 1.0)
    srgb = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    red, green, blue = (int(round(float(c) * 255)) for c in np.clip(srgb, 0.0, 1.0))
    return red, green, blue


def _segments(ds: Any) -> list[Segment]:
    out = []
    for n, item in enumerate(ds.get("SegmentSequence", [])):
        number = int(item.get("SegmentNumber", n + 1))
        lab = item.get("RecommendedDisplayCIELabValue")
        color = cielab_to_rgb(lab) if lab is not None and len(lab) == 3 else PALETTE[(number - 1) % len(PALETTE)]
        out.append(Segment(number, str(item.get("SegmentLabel", "") or f"segment {number}"), color))
    return out


def _first(item: Any, shared: Any, keyword: str) -> Any:
    for holder in (item, shared):
        if holder is not None and keyword in holder and len(holder[keyword].value):
            return holder[keyword].value[0]
    return None


def _frames(ds: Any) -> list[Frame]:
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        masks = pixels >= max(1, int(ds.get("MaximumFractionalValue", 255))) / 2
    else:
        masks = pixels > 0
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    shared_items = ds.get("SharedFunctionalGroupsSequence", [])
    shared = shared_items[0] if len(shared_items) else None
    frames = []
    for n, mask in enumerate(masks):
        item = per_frame[n] if n < len(per_frame) else None
        identification = _first(item, shared, "SegmentIdentificationSequence")
        segment = int(identification.ReferencedSegmentNumber) if identification is not None else 1
        sop, source_frame = None, 1
        derivation = _first(item, shared, "DerivationImageSequence")
        if derivation is not None and len(derivation.get("SourceImageSequence", [])):
            source = derivation.SourceImageSequence[0]
            sop = str(source.get("ReferencedSOPInstanceUID", "")) or None
            numbers = source.get("ReferencedFrameNumber")
            if numbers is not None:
                source_frame = int(numbers[0] if isinstance(numbers, Sequence) and not isinstance(numbers, str)
                                   else numbers)  # fmt: skip
        plane = _first(item, shared, "PlanePositionSequence")
        position = None
        if plane is not None and "ImagePositionPatient" in plane:
            x, y, z = (float(v) for v in plane.ImagePositionPatient)
            position = (x, y, z)
        frames.append(Frame(segment, sop, source_frame, position, mask))
    return frames


def read_segmentation(client: Any, series_id: int, label: str = "") -> Segmentation:
    """Every instance of a SEG series, read: its segments (label, colour) and frames."""
    segmentation = Segmentation(int(series_id), label or f"segmentation (series {int(series_id)})")
    for image_id in client.image_ids(int(series_id)):
        ds = read_dataset(client.image_bytes(image_id))
        if str(ds.get("Modality", "")).upper() != SEG_MODALITY:
            raise ValueError(f"series {series_id} is not a segmentation (image {image_id} is {ds.get('Modality')})")
        known = {s.number for s in segmentation.segments}
        segmentation.segments.extend(s for s in _segments(ds) if s.number not in known)
        segmentation.frames.extend(_frames(ds))
    return segmentation


@dataclass(frozen=True)
class SliceKey:
    """What the viewer knows of one of its slices."""

    image_id: int
    frame: int
    position: tuple[float, float, float] | None
    shape: tuple[int, int]


def label_maps(
    segmentation: Segmentation, slices: Iterable[SliceKey], sop_of_image: Mapping[int, str]
) -> tuple[dict[tuple[int, int], np.ndarray], int]:
    """({(image id, frame): uint8 label map}, frames that found no slice of the series)."""
    keys = list(slices)
    by_sop = {(sop_of_image.get(k.image_id), k.frame): k for k in keys}
    positioned = [k for k in keys if k.position is not None]
    points = np.array([k.position for k in positioned], dtype=float) if positioned else np.zeros((0, 3))
    maps: dict[tuple[int, int], np.ndarray] = {}
    unmatched = 0
    for frame in sorted(segmentation.frames, key=lambda f: f.segment):  # higher segment numbers drawn last
        key = by_sop.get((frame.source_sop, frame.source_frame)) if frame.source_sop else None
        if key is None and frame.position is not None and len(points):
            distances = np.linalg.norm(points - np.array(frame.position), axis=1)
            nearest = int(np.argmin(distances))
            if distances[nearest] <= _POSITION_TOLERANCE:
                key = positioned[nearest]
        if key is None or key.shape != frame.mask.shape:
            unmatched += 1
            continue
        target = maps.setdefault((key.image_id, key.frame), np.zeros(key.shape, dtype=np.uint8))
        target[frame.mask] = min(frame.segment, 255)
    return maps, unmatched
