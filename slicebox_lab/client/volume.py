"""Pixels in the kernel: decode stored DICOM files with pydicom and stack a series into a 3-D volume.

Decoding happens here, not on the server, so a notebook gets the exact stored values (rescale
applied) without a lossy PNG round trip; pylibjpeg's plugins (dependencies) decode compressed data.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

__all__ = ["Slice", "Volume", "decode_pixels", "read_dataset", "stack_volume", "window_of"]


def read_dataset(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _functional(ds: Dataset, sequence: str, attribute: str, frame: int | None = None) -> Any:
    """An attribute of the (shared, else per-frame) functional groups of an enhanced multi-frame image."""
    groups: list[Any] = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            groups.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        items = group.get(sequence)
        if items:
            value = items[0].get(attribute)
            if value is not None:
                return value
    return None


def _rescale(ds: Dataset, frame: int | None = None) -> tuple[float, float]:
    slope = _first(ds.get("RescaleSlope"))
    intercept = _first(ds.get("RescaleIntercept"))
    if slope is None and intercept is None:
        slope = _first(_functional(ds, "PixelValueTransformationSequence", "RescaleSlope", frame))
        intercept = _first(_functional(ds, "PixelValueTransformationSequence", "RescaleIntercept", frame))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def window_of(ds: Dataset) -> tuple[float, float] | None:
    """(center, width) of the file's first VOI window, from the top level or the functional groups."""
    center = _first(ds.get("WindowCenter"))
    width = _first(ds.get("WindowWidth"))
    if center is None or width is None:
        center = _first(_functional(ds, "FrameVOILUTSequence", "WindowCenter"))
        width = _first(_functional(ds, "FrameVOILUTSequence", "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return center, width


def decode_pixels(ds: Dataset, frame: int | None = None) -> np.ndarray:
    """float32 pixels with the modality rescale applied: (rows, cols) for one frame (``frame`` 1-based,
    or a single-frame image), (frames, rows, cols) for every frame of a multi-frame image. Colour
    images keep their samples axis and get no rescale."""
    frames = int(ds.get("NumberOfFrames") or 1)
    if frame is not None and not 1 <= frame <= frames:
        raise ValueError(f"frame {frame} out of range: the image has {frames} frame(s)")
    pixels = ds.pixel_array
    colour = int(ds.get("SamplesPerPixel") or 1) > 1
    if frames > 1 and frame is not None:
        pixels = pixels[frame - 1]
    out = np.asarray(pixels, dtype=np.float32)
    if colour:
        return out
    if frames > 1 and frame is None:
        for n in range(frames):
            slope, intercept = _rescale(ds, n)
            if slope != 1.0 or intercept != 0.0:
                out[n] = out[n] * np.float32(slope) + np.float32(intercept)
        return out
    slope, intercept = _rescale(ds, None if frame is None else frame - 1)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


@dataclass
class Slice:
    """One 2-D slice of a volume, with what sorting and spacing need."""

    image_id: int
    pixels: np.ndarray
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    instance_number: float | None
    frame: int | None = None
    window: tuple[float, float] | None = None
    thickness: float | None = None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == n and all(math.isfinite(v) for v in values) else None


def slices_of(image_id: int, ds: Dataset) -> list[Slice]:
    """The slices of one stored image: itself, or each frame of a multi-frame image."""
    frames = int(ds.get("NumberOfFrames") or 1)
    window = window_of(ds)
    instance = _first(ds.get("InstanceNumber"))
    thickness = _first(ds.get("SpacingBetweenSlices")) or _first(ds.get("SliceThickness"))
    if frames <= 1:
        return [
            Slice(
                image_id,
                decode_pixels(ds),
                _floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
                _floats(ds.get("ImageOrientationPatient"), 6),
                _floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
                instance,
                None,
                window,
                thickness,
            )
        ]
    pixels = decode_pixels(ds)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6) or _floats(
        _functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    spacing = _floats(ds.get("PixelSpacing"), 2) or _floats(_functional(ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    thickness = (
        thickness
        or _first(_functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices"))
        or _first(_functional(ds, "PixelMeasuresSequence", "SliceThickness"))
    )
    out = []
    for n in range(frames):
        position = _floats(_functional(ds, "PlanePositionSequence", "ImagePositionPatient", n), 3)
        out.append(
            Slice(
                image_id,
                pixels[n],
                position,  # type: ignore[arg-type]
                orientation,
                spacing,  # type: ignore[arg-type]
                float(n + 1),
                n + 1,
                window,
                thickness,
            )
        )
    return out


@dataclass
class Volume:
    """A series as a 3-D array: ``array[slice, row, column]`` in mm-ordered slices, rescale applied."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    orientation: tuple[float, ...] | None
    positions: np.ndarray
    image_ids: list[int]
    window: tuple[float, float] | None = None
    frames: list[int | None] = field(default_factory=list)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None:
            return self.array
        return self.array.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"window={self.window}, images={len(set(self.image_ids))})"
        )


def stack_volume(slices: list[Slice]) -> Volume:
    """Sort slices by position along the slice normal (fallback InstanceNumber) and stack them."""
    if not slices:
        raise ValueError("the series has no images")
    shapes = {s.pixels.shape for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"the images of this series have different sizes {sorted(shapes)}: no single volume")
    orientation = next((s.orientation for s in slices if s.orientation), None)
    have_positions = all(s.position is not None for s in slices)
    normal: np.ndarray | None = None
    if orientation is not None:
        row, col = np.array(orientation[:3]), np.array(orientation[3:])
        cross = np.cross(row, col)
        if np.linalg.norm(cross) > 1e-6:
            normal = cross / np.linalg.norm(cross)
    distances: np.ndarray | None = None
    if have_positions and normal is not None:
        distances = np.array([float(np.dot(np.array(s.position), normal)) for s in slices])
        projected = distances
        order = sorted(range(len(slices)), key=lambda i: (projected[i], slices[i].instance_number or 0))
    else:
        order = sorted(
            range(len(slices)),
            key=lambda i: (
                slices[i].instance_number if slices[i].instance_number is not None else math.inf,
                slices[i].image_id,
                slices[i].frame or 0,
            ),
        )
    ordered = [slices[i] for i in order]
    array = np.stack([s.pixels for s in ordered]).astype(np.float32, copy=False)
    z = None
    if distances is not None and len(ordered) > 1:
        steps = np.diff(np.sort(distances))
        steps = steps[steps > 1e-6]
        if steps.size:
            z = float(np.median(steps))
    if z is None:
        z = ordered[0].thickness or 1.0
    y, x = ordered[0].pixel_spacing or (1.0, 1.0)
    positions = np.array([s.position if s.position is not None else (np.nan,) * 3 for s in ordered], dtype=float)
    return Volume(
        array=array,
        spacing=(float(z), float(y), float(x)),
        orientation=orientation,
        positions=positions.reshape(len(ordered), 3),
        image_ids=[s.image_id for s in ordered],
        window=ordered[0].window,
        frames=[s.frame for s in ordered],
    )
