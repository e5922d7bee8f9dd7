"""Burned-in annotation: pixel masks, the refusal, and blacking out (PS3.15 E.3.1, Clean Pixel Data Option).

Text burned into the pixels (names, dates, IDs on ultrasound, screenshots, scanned documents) is
not touched by the attribute profile. Which images may carry it (:func:`burned_in_reason`): those that
say so (``BurnedInAnnotation=YES``), and, whatever their flag says, images of a modality that commonly
carries text in its pixels (:data:`SCANNED_MODALITIES`: ultrasound, secondary and other captures,
external-camera photographs, documents, endoscopy) or of a Secondary Capture SOP class, because the
flag is absent or wrong on exactly those images.

What leaves of such an image is decided in pixeltext.py (the ``burnedInText`` policy: refuse, mask
the text Tesseract finds, mask only the identifying text, or keep); here are its tools:

* a :class:`PixelMask` that matches the image (like CTP's DicomPixelAnonymizer: criteria on a few
  attributes, then rectangles to blank), applied before anything is read;
* :func:`clean_pixels`: rectangles set to zero (a mask's in every frame, a detected text's in its
  frame, every sample), the pixel data written anew (re-encoded in the source's lossless transfer
  syntax when an encoder is installed, else Explicit VR Little Endian), ``BurnedInAnnotation`` set to
  ``NO`` only then; the anonymizer records the Clean Pixel Data Option (CID 7050 113101).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, get_encoder, pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ..errors import AnonymizationRefused, InvalidInput

__all__ = [
    "BURNED_IN_POLICIES",
    "CLEAN_PIXEL_DATA_CODE",
    "CLEAN_PIXEL_DATA_TITLE",
    "SCANNED_MODALITIES",
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "PixelMask",
    "Rectangle",
    "burned_in_reason",
    "has_pixel_data",
    "header_burned_in_reason",
    "clean_pixels",
    "load_pixel_masks",
]

CLEAN_PIXEL_DATA_CODE = "113101"
CLEAN_PIXEL_DATA_TITLE = "Clean Pixel Data Option"

#: the ``burnedInText`` policy (pixeltext.py): ``refuse`` an image flagged or in which text is found (the
#: default), ``mask-detected`` (black out all text found), ``mask-detected-phi`` (only identifying text),
#: ``keep`` (the caller accepts its pixels)
BURNED_IN_POLICIES = ("refuse", "mask-detected", "mask-detected-phi", "keep")

#: Secondary Capture Image Storage and the four multi-frame SC classes (PS3.4 B.5)
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)

#: modalities whose pixels commonly carry names, IDs and dates (ultrasound, secondary capture, other,
#: external-camera photography, document, endoscopy): the flag on them is not trusted
SCANNED_MODALITIES = frozenset({"US", "SC", "OT", "XC", "DOC", "ES"})

#: the attributes a mask can select images by (all given ones must match)
_TEXT_CRITERIA = ("SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName")
_INT_CRITERIA = ("Rows", "Columns")
_TEXT_CRITERIA_NAMES = ", ".join(_TEXT_CRITERIA + _INT_CRITERIA)
#: meaningful only for the encapsulated or the old pixel data, or no longer true after cleaning
_STALE_AFTER_CLEANING = (
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
)
_MASK_EXAMPLE = (
    '{"match": {"Modality": "US", "Rows": 480, "Columns": 640}, '
    '"rectangles": [{"x": 0, "y": 0, "width": 640, "height": 40}]}'
)


@dataclass(frozen=True)
class Rectangle:
    """``width`` × ``height`` pixels from column ``x``, row ``y`` (0-based, top left); clipped to the image."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"rectangle {name} must be an integer, not {value!r}")
        if self.x < 0 or self.y < 0:
            raise InvalidInput(f"rectangle x and y must be at least 0, not ({self.x}, {self.y})")
        if self.width < 1 or self.height < 1:
            raise InvalidInput(f"rectangle width and height must be at least 1, not {self.width} x {self.height}")

    @classmethod
    def from_json(cls, value: Any) -> Rectangle:
        if not isinstance(value, Mapping) or set(value) != {"x", "y", "width", "height"}:
            raise InvalidInput(f'a rectangle must be an object {{"x", "y", "width", "height"}}, not {value!r}')
        return cls(value["x"], value["y"], value["width"], value["height"])

    def to_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class PixelMask:
    """Rectangles to blank in the images whose attributes match every given criterion.

    Text criteria compare after stripping spaces, ``Manufacturer`` and ``ManufacturerModelName``
    ignoring case (vendors are not consistent about it). At least one criterion is required, so a
    mask never silently applies to every burned-in image of a node.
    """

    rectangles: tuple[Rectangle, ...]
    SOPClassUID: str | None = None
    Modality: str | None = None
    Manufacturer: str | None = None
    ManufacturerModelName: str | None = None
    Rows: int | None = None
    Columns: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rectangles", tuple(self.rectangles))
        if not self.rectangles or not all(isinstance(r, Rectangle) for r in self.rectangles):
            raise InvalidInput("a pixel mask needs at least one rectangle")
        if not self.criteria():
            raise InvalidInput(
                f"a pixel mask must say which images it applies to (any of {', '.join(_TEXT_CRITERIA + _INT_CRITERIA)})"
            )
        for keyword in _TEXT_CRITERIA:
            value = getattr(self, keyword)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInput(f"pixel mask criterion {keyword} must be a non-empty string, not {value!r}")
        for keyword in _INT_CRITERIA:
            value = getattr(self, keyword)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"pixel mask criterion {keyword} must be a positive integer, not {value!r}")

    def criteria(self) -> dict[str, str | int]:
        """The given criteria by DICOM keyword."""
        return {
            keyword: value
            for keyword in _TEXT_CRITERIA + _INT_CRITERIA
            if (value := getattr(self, keyword)) is not None
        }

    def matches(self, ds: Dataset) -> bool:
        for keyword, wanted in self.criteria().items():
            value = ds.get(keyword)
            if isinstance(wanted, int):
                if not isinstance(value, int) or value != wanted:
                    return False
                continue
            actual = "" if value is None else str(value).strip()
            if keyword in ("Manufacturer", "ManufacturerModelName"):
                if actual.casefold() != wanted.strip().casefold():
                    return False
            elif actual != wanted.strip():
                return False
        return True

    @classmethod
    def from_json(cls, value: Any) -> PixelMask:
        """``{"name": ..., "match": {"Modality": "US", ...}, "rectangles": [{"x", "y", "width", "height"}]}``."""
        if not isinstance(value, Mapping):
            raise InvalidInput(f"a pixel mask must be a JSON object like {_MASK_EXAMPLE}")
        unknown = set(value) - {"name", "match", "rectangles"}
        if unknown:
            raise InvalidInput(f"unknown pixel mask field(s) {', '.join(sorted(unknown))}; example: {_MASK_EXAMPLE}")
        match = value.get("match", {})
        if not isinstance(match, Mapping):
            raise InvalidInput(f'pixel mask "match" must be an object, e.g. {_MASK_EXAMPLE}')
        unknown = set(match) - set(_TEXT_CRITERIA + _INT_CRITERIA)
        if unknown:
            known = ", ".join(_TEXT_CRITERIA + _INT_CRITERIA)
            raise InvalidInput(f"unknown pixel mask criteria {', '.join(sorted(unknown))}; known: {known}")
        rectangles = value.get("rectangles")
        if not isinstance(rectangles, list):
            raise InvalidInput(f'pixel mask "rectangles" must be a JSON array, e.g. {_MASK_EXAMPLE}')
        name = value.get("name", "")
        if not isinstance(name, str):
            raise InvalidInput(f'pixel mask "name" must be a string, not {name!r}')
        return cls(rectangles=tuple(Rectangle.from_json(r) for r in rectangles), name=name, **match)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.criteria(), "rectangles": [r.to_json() for r in self.rectangles]}
        if self.name:
            out = {"name": self.name, **out}
        return out


def pixel_masks_from_json(value: Any) -> tuple[PixelMask, ...]:
    """A JSON array of masks; the position of a bad one is in the message."""
    if not isinstance(value, list):
        raise InvalidInput(f"pixel masks must be a JSON array of objects like {_MASK_EXAMPLE}")
    masks = []
    for position, item in enumerate(value):
        try:
            masks.append(PixelMask.from_json(item))
        except InvalidInput as e:
            raise InvalidInput(f"pixel mask {position}: {e.message}") from None
    return tuple(masks)


def load_pixel_masks(value: str | list[Any]) -> tuple[PixelMask, ...]:
    """Masks from configuration: a JSON array (as text or already parsed) or the path of a JSON file holding one."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        if not text.startswith("["):
            path = Path(text).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise InvalidInput(f"cannot read pixel masks from {path}: {e.strerror or e}") from None
        try:
            value = json.loads(text)
        except ValueError as e:
            raise InvalidInput(f"pixel masks are not valid JSON: {e}") from None
    return pixel_masks_from_json(value)


def has_pixel_data(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def burned_in_reason(
    ds: Dataset,
    secondary_capture: bool = True,
    modalities: Iterable[str] = SCANNED_MODALITIES,
    has_pixels: bool | None = None,
) -> str | None:
    """Why ``ds`` counts as having burned-in annotation, or None when it does not (or has no pixels).

    ``secondary_capture``: a Secondary Capture SOP class counts whatever its flag says;
    ``modalities``: so does an image of one of these modalities (the flag is not trusted on them);
    ``has_pixels=True``: ``ds`` is a header read without its pixels, which the file has.
    """
    if not (has_pixel_data(ds) if has_pixels is None else has_pixels):
        return None
    return header_burned_in_reason(ds, secondary_capture, modalities)


def header_burned_in_reason(
    ds: Dataset, secondary_capture: bool = True, modalities: Iterable[str] = SCANNED_MODALITIES
) -> str | None:
    """:func:`burned_in_reason` from the header alone (read without pixels, as the review report does)."""
    flag = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if secondary_capture and _sop_class(ds) in SECONDARY_CAPTURE_SOP_CLASSES:
        return "it is a Secondary Capture image, whose pixels often carry text whatever its BurnedInAnnotation says"
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality and modality in modalities:
        return (
            f"its modality {modality} commonly carries text in the pixels, whatever its BurnedInAnnotation says "
            "(SliceboxApp.burned_in_modalities)"
        )
    return None


def clean_pixels(
    src: Dataset,
    out: Dataset,
    masks: Iterable[PixelMask] = (),
    rectangles: Mapping[int, Iterable[Rectangle]] | None = None,
) -> None:
    """Write ``src``'s pixels into ``out`` with the masks' rectangles (every frame) and ``rectangles``
    (by 1-based frame; 0: every frame) set to zero.

    ``src`` is only read. ``out`` gets the photometric interpretation of the decoded pixels (YBR
    decoded to RGB), interleaved samples, ``BurnedInAnnotation`` NO, and the source's transfer syntax
    when it is one of :data:`REENCODED_SYNTAXES` and can be encoded here, else Explicit VR Little Endian.
    """
    syntax = _transfer_syntax(src)
    decoder = get_decoder(syntax)
    if not decoder.is_available:
        raise AnonymizationRefused(
            f"{_describe(src)} cannot be masked: no decoder is installed for {syntax.name}; "
            'install pylibjpeg or python-gdcm, or send "burnedInAnnotation": "keep"'
        )
    try:
        options: dict[str, Any] = {"as_rgb": True}  # YBR to RGB, so zero is black in every sample
        arr, properties = decoder.as_array(src, index=None, **options)
    except Exception as e:  # decoders raise anything on broken data
        raise AnonymizationRefused(f"{_describe(src)} cannot be masked: its pixel data does not decode: {e}") from e
    if not arr.flags.writeable:
        arr = arr.copy()
    frames = int(properties.get("number_of_frames") or 1)
    samples = int(properties.get("samples_per_pixel") or 1)
    rows, columns = int(properties["rows"]), int(properties["columns"])
    view = arr.reshape((frames, rows, columns, samples))  # whatever shape the decoder gave
    by_frame: dict[int, list[Rectangle]] = {0: [r for mask in masks for r in mask.rectangles]}
    for frame, found in (rectangles or {}).items():
        by_frame.setdefault(frame, []).extend(found)
    for frame, found in by_frame.items():
        if frame > frames:
            continue
        target = view if frame == 0 else view[frame - 1 : frame]
        for r in found:
            if r.x < columns and r.y < rows:
                target[:, r.y : min(r.y + r.height, rows), r.x : min(r.x + r.width, columns), :] = 0

    bits_allocated = int(properties.get("bits_allocated") or src.get("BitsAllocated") or 8)
    if bits_allocated == 1:
        data = pack_bits(arr)
    else:
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        bits_allocated = arr.dtype.itemsize * 8
    if len(data) % 2:
        data += b"\x00"
    out.add(DataElement(0x7FE00010, "OB" if bits_allocated <= 8 else "OW", data))
    out.BitsAllocated = bits_allocated
    if "bits_stored" in properties:
        out.BitsStored = int(properties["bits_stored"])
        out.HighBit = out.BitsStored - 1
    out.PhotometricInterpretation = str(properties.get("photometric_interpretation", src.PhotometricInterpretation))
    out.SamplesPerPixel = samples
    if samples > 1:
        out.PlanarConfiguration = 0
    elif "PlanarConfiguration" in out:
        del out.PlanarConfiguration
    for keyword in _STALE_AFTER_CLEANING:
        if keyword in out:
            delattr(out, keyword)
    out.BurnedInAnnotation = "NO"
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.set_original_encoding(False, True, src.original_character_set)
    if meta is not None and syntax in REENCODED_SYNTAXES and bits_allocated > 1:
        _reencode(out, syntax, view[0] if frames == 1 else view)


#: compressed sources whose masked pixels are compressed again in the same transfer syntax (when its
#: encoder is installed: RLE always, JPEG 2000 through pylibjpeg-openjpeg, JPEG-LS through pyjpegls).
#: Lossy sources (JPEG baseline, JPEG 2000 and JPEG-LS lossy) and JPEG Lossless, which pydicom cannot
#: encode, are written uncompressed: compressing lossy again would lose more, and no value is invented.
REENCODED_SYNTAXES = frozenset({RLELossless, JPEG2000Lossless, JPEGLSLossless})


def _reencode(out: Dataset, syntax: UID, pixels: Any) -> None:
    """Compress ``out``'s fresh native pixel data in ``syntax``; leave it native when that cannot be done."""
    encoder = get_encoder(syntax)
    if not encoder.is_available:
        return
    array = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    native = out["PixelData"], out.PhotometricInterpretation
    try:
        out.compress(syntax, array, generate_instance_uid=False)
    except Exception:  # an encoder that refuses these pixels (bit depth, size): the native data stays
        out["PixelData"], out.PhotometricInterpretation = native
        out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.set_original_encoding(False, True, out.original_character_set)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(syntax)
    implicit, little = ds.original_encoding
    if little is False:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _sop_class(ds: Dataset) -> str:
    value = ds.get("SOPClassUID")
    if not value:
        meta = getattr(ds, "file_meta", None)
        value = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return str(value or "").strip()


def _describe(ds: Dataset) -> str:
    """The image by SOPInstanceUID, with what a mask would match on."""
    parts = [
        f"{keyword} {value}"
        for keyword in ("Modality", "Manufacturer", "ManufacturerModelName")
        if (value := str(ds.get(keyword) or "").strip())
    ]
    if "Rows" in ds and "Columns" in ds:
        parts.append(f"{ds.Columns}x{ds.Rows} pixels")
    details = f" ({', '.join(parts)})" if parts else ""
    return f"image {str(ds.get('SOPInstanceUID') or '(no SOPInstanceUID)').strip()}{details}"
