"""Pixels to PNG: the one way the node renders an image (viewer, thumbnails, REST).

Only the requested frame is decoded.  Grey-scale images go through the DICOM
display pipeline (Modality LUT, then a window or VOI LUT, then MONOCHROME1
inversion) into 8 bits; colour images become 8-bit RGB.
"""

from __future__ import annotations

import math
import numbers
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import UID, ExplicitVRLittleEndian

from slicebox_lab.errors import InvalidDicom, InvalidInput, RenderingFailed, SliceboxError

__all__ = ["image_information", "render_frame", "render_png"]

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Copied into a per-frame view so functional-group values can override them.
_DISPLAY_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_MAX_IMAGE_HEIGHT = 16384
_MAX_OUTPUT_PIXELS = 64 * 1024 * 1024


def image_information(ds: Dataset) -> dict[str, int]:
    """Frame count, frame index and stored pixel range, as Slicebox's imageinformation route."""
    return {
        "number_of_frames": max(_int(ds, "NumberOfFrames", 1), 1),
        "frame_index": max(_int(ds, "InstanceNumber", 1), _int(ds, "ImageIndex", 1)),
        "minimum_pixel_value": _int(ds, "SmallestImagePixelValue", 0),
        "maximum_pixel_value": _int(ds, "LargestImagePixelValue", 0),
    }


def render_png(
    ds: Dataset,
    frame_number: int = 1,
    window_min: float | None = None,
    window_max: float | None = None,
    image_height: int = 0,
) -> bytes:
    """One frame as PNG bytes.

    The window is ``window_min``..``window_max`` (in Modality LUT output units, e.g.
    HU) when ``window_min < window_max``; otherwise the file's first window or VOI
    LUT, otherwise the frame's own range.  ``image_height > 0`` scales the image to
    that height, keeping its aspect ratio.

    Raises :class:`InvalidInput` for bad arguments and :class:`RenderingFailed`
    for an image that cannot be rendered; never another exception.
    """
    _check_arguments(frame_number, window_min, window_max, image_height)
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise RenderingFailed("image has no pixel data")
    frames = max(_int(ds, "NumberOfFrames", 1), 1)
    if frame_number > frames:
        raise InvalidInput(f"frame_number must be between 1 and {frames}, got {frame_number}")
    user_window = (
        (float(window_min), float(window_max))
        if window_min is not None and window_max is not None and window_min < window_max
        else None
    )
    try:
        image = _render(ds, frame_number - 1, user_window)
        if image_height > 0 and image.height != image_height:
            width = max(1, round(image.width * image_height / image.height))
            if width * image_height > _MAX_OUTPUT_PIXELS:
                raise InvalidInput(
                    f"image_height {image_height} would make a {width} x {image_height} image; ask for a smaller height"
                )
            image = image.resize((width, image_height), Image.Resampling.BILINEAR)
        out = BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    except SliceboxError:
        raise
    except Exception as exc:  # decoders and numpy raise anything on broken data
        raise RenderingFailed(f"image cannot be rendered: {type(exc).__name__}: {exc}") from exc


def render_frame(
    ds: Dataset, frame_number: int = 1, window: tuple[float, float] | None = None, full_range: bool = False
) -> Image.Image:
    """One frame as an 8-bit PIL image ("L" or "RGB"), as :func:`render_png` draws it (no scaling).

    For those who look at the pixels the way a person sees them (text detection). ``window``
    (low, high) as in :func:`render_png`; ``full_range``: grey-scale values stretched from the
    frame's minimum to its maximum, ignoring the file's window (text outside the window shows).
    Raises :class:`RenderingFailed` for an image that cannot be rendered.
    """
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise RenderingFailed("image has no pixel data")
    try:
        return _render(ds, frame_number - 1, window, full_range)
    except SliceboxError:
        raise
    except Exception as exc:  # decoders and numpy raise anything on broken data
        raise RenderingFailed(f"image cannot be rendered: {type(exc).__name__}: {exc}") from exc


def verify_number_of_frames(ds: Dataset) -> None:
    """NumberOfFrames, where present, must be a positive integer (part of :func:`verify_pixel_data`; alone for a
    header whose Pixel Data has not arrived yet)."""
    raw_frames = ds.get("NumberOfFrames")
    if raw_frames not in (None, "") and _int(ds, "NumberOfFrames", -1) < 1:
        raise InvalidDicom(f"NumberOfFrames {raw_frames!r} is not a positive integer; the file was not stored")


def verify_pixel_data(ds: Dataset) -> None:
    """Refuse, at ingest, pixel data that no installed decoder can read.

    A node that stores an image it can never show or hand to numpy only defers the
    error to a researcher months later; the sender can still fix it now.  Native
    pixel data is checked for length by ``parse_part10``; here the frame count must
    be a number and compressed pixel data must decode (its first frame: the cost of
    one decode, paid only for compressed transfer syntaxes).
    """
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        return
    verify_number_of_frames(ds)
    meta = getattr(ds, "file_meta", None)
    ts = UID(meta.get("TransferSyntaxUID") or ExplicitVRLittleEndian) if meta is not None else None
    if ts is None or not ts.is_encapsulated:
        return
    try:
        _decode_frame(ds, 0)
    except Exception as exc:  # decoders raise anything on broken data
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        raise InvalidDicom(f"the {ts.name} pixel data cannot be decoded, so the file was not stored: {reason}") from exc


def _check_arguments(frame_number: int, window_min: float | None, window_max: float | None, image_height: int) -> None:
    if isinstance(frame_number, bool) or not isinstance(frame_number, int) or frame_number < 1:
        raise InvalidInput(f"frame_number must be an integer of at least 1, got {frame_number!r}")
    if isinstance(image_height, bool) or not isinstance(image_height, int) or image_height < 0:
        raise InvalidInput(f"image_height must be an integer of at least 0, got {image_height!r}")
    if image_height > _MAX_IMAGE_HEIGHT:
        raise InvalidInput(f"image_height must be at most {_MAX_IMAGE_HEIGHT}, got {image_height}")
    for name, value in (("window_min", window_min), ("window_max", window_max)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number, got {value!r}")


def _render(ds: Dataset, index: int, user_window: tuple[float, float] | None, full_range: bool = False) -> Image.Image:
    arr, properties = _decode_frame(ds, index)
    photometric = str(properties.get("photometric_interpretation") or ds.get("PhotometricInterpretation", ""))
    photometric = photometric.strip().upper()
    if photometric == "PALETTE COLOR":
        return Image.fromarray(_to_uint8_rgb(apply_color_lut(arr, ds), None))
    if arr.ndim == 3:
        return Image.fromarray(_colour_to_rgb(arr, photometric, ds))
    if arr.ndim != 2:
        raise RenderingFailed(f"cannot render pixel data of shape {arr.shape}")
    view = _frame_view(ds, index)
    values = apply_modality_lut(arr, view)
    grey = _stretch(values) if full_range else _window(values, view, user_window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)


def _decode_frame(ds: Dataset, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one frame only, with the decoder of the file's transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    ts = UID(meta.get("TransferSyntaxUID") or ExplicitVRLittleEndian) if meta is not None else None
    decoder = get_decoder(ts or ExplicitVRLittleEndian)
    if not decoder.is_available:
        raise RenderingFailed(f"no decoder is installed for {decoder.UID.name}")
    kwargs: dict[str, Any] = {} if decoder.UID.is_encapsulated else {"view_only": True}
    arr, properties = decoder.as_array(ds, index=index, **kwargs)
    return arr, dict(properties)


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """The display attributes of one frame: top level, overridden by the functional groups.

    pydicom's LUT functions read the top level only, so enhanced multi-frame images
    (rescale and window in per-frame or shared functional groups) need this view.
    """
    view = Dataset()
    for keyword in _DISPLAY_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        view.file_meta = meta
    implicit_vr, little_endian = ds.original_encoding
    view.set_original_encoding(implicit_vr, little_endian, ds.original_character_set)
    for groups in (
        _first_item(ds, "SharedFunctionalGroupsSequence"),
        _item(ds, "PerFrameFunctionalGroupsSequence", index),
    ):
        if groups is None:
            continue
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            item = _first_item(groups, sequence)
            if item is None:
                continue
            for keyword in (
                "RescaleSlope",
                "RescaleIntercept",
                "RescaleType",
                "WindowCenter",
                "WindowWidth",
                "VOILUTFunction",
            ):
                if keyword in item:
                    view[keyword] = item[keyword]
    return view


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    return _item(ds, keyword, 0)


def _item(ds: Dataset, keyword: str, index: int) -> Dataset | None:
    sequence = ds.get(keyword)
    if sequence is None or index >= len(sequence):
        return None
    item = sequence[index]
    return item if isinstance(item, Dataset) else None


def _window(values: np.ndarray, view: Dataset, user_window: tuple[float, float] | None) -> np.ndarray:
    """Modality values to 0..255: the asked window, else the file's VOI, else the frame's range."""
    if user_window is not None:
        low, high = user_window
        return _apply_window(values, (low + high) / 2, high - low, "LINEAR_EXACT")
    center, width = _first_float(view, "WindowCenter"), _first_float(view, "WindowWidth")
    if center is not None and width is not None:
        function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
        try:
            return _apply_window(values, center, width, function)
        except ValueError:
            pass  # an unusable window (width 0, unknown function): try the next option
    if view.get("VOILUTSequence"):
        try:
            return _apply_voi_lut(values, view)
        except Exception:
            pass  # a broken VOI LUT: fall back to the frame's range
    return _stretch(values)


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's windowing into exactly 0..255: an 8-bit unsigned output range, no rescale."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out = apply_windowing(np.asarray(values, dtype=np.float64), voi)
    return np.clip(np.rint(np.nan_to_num(out)), 0, 255).astype(np.uint8)


def _apply_voi_lut(values: np.ndarray, view: Dataset) -> np.ndarray:
    """The first VOI LUT, scaled from the range of its entries to 0..255."""
    item = view.VOILUTSequence[0]
    entries, first_map = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    table = apply_voi(np.arange(first_map, first_map + entries, dtype=np.int64), view).astype(np.float64)
    low, high = float(table.min()), float(table.max())
    out = apply_voi(np.rint(np.nan_to_num(values)).astype(np.int64), view).astype(np.float64)
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.rint((out - low) * scale), 0, 255).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.rint(np.nan_to_num((values - low) * scale)), 0, 255).astype(np.uint8)


def _colour_to_rgb(arr: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != 3:
        raise RenderingFailed(f"cannot render {arr.shape[-1]} samples per pixel")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        arr = convert_color_space(arr, photometric, "RGB")
    bits = _int(ds, "BitsStored", 8)
    return _to_uint8_rgb(arr, bits)


def _to_uint8_rgb(arr: np.ndarray, bits: int | None) -> np.ndarray:
    """Scale colour samples to 8 bits: by BitsStored, or by the dtype for palette output."""
    if arr.dtype == np.uint8 and (bits is None or bits <= 8):
        return np.ascontiguousarray(arr)
    if bits is None:  # palette output: 16-bit tables sometimes hold 8-bit entries
        bits = 8 if arr.size == 0 or int(arr.max()) <= 255 else 16
    maximum = float(2 ** min(bits, 32) - 1)
    scaled = np.asarray(arr, dtype=np.float64) * (255.0 / maximum)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _first_float(ds: Dataset, keyword: str) -> float | None:
    """The first value of a (possibly multi-valued) number, None when absent or unusable."""
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        number = float(value) if value is not None and value != "" else math.nan
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute, the default when absent, empty or not a number."""
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "" or isinstance(value, bytes):
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default
