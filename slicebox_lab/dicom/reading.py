"""Reading and validating DICOM Part-10 files, and the attributes the index keeps.

Every way in (upload, SCP, watched folder, box) passes its bytes through
:func:`parse_part10`, so this is where a file is accepted or refused, with a
message that tells the sender what is wrong.

pydicom reads a truncated file without complaint (a short value is kept short,
a missing delimiter only warns and drops the dataset), and warning filters are
process-wide, so catching warnings is not safe in the ingest threads.  Instead the
parsed structure is checked against the bytes: the last element must be complete,
nothing may be left over after it, native Pixel Data must hold every frame, and
encapsulated Pixel Data must consist of whole items.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from slicebox_lab.dicom.render import verify_number_of_frames
from slicebox_lab.errors import InvalidDicom
from slicebox_lab.model import (
    IMAGE_ATTRIBUTES,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    IndexedAttributes,
)

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "Header",
    "ParsedDicom",
    "TrailingPixels",
    "extract_attributes",
    "parse_header",
    "parse_part10",
    "read_until_pixels",
]

#: Transfer syntaxes whose pixel data the installed decoders can render.  HTJ2K is
#: included because pylibjpeg-openjpeg decodes it (tests/dicom proves it).
ACCEPTED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        RLELossless,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
    }
)

_HOW_TO_WRITE_PART10 = (
    "Part-10 files with File Meta Information are required: set ds.file_meta "
    "(at least TransferSyntaxUID) and write the file with pydicom's "
    "dcmwrite(path, ds, enforce_file_format=True)"
)
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)  # PixelData, DoubleFloat..., Float...
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = 0xFFFEE000
_ENCAPSULATED_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_IDENTIFYING_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00080060, 0x00100020)


@dataclass(frozen=True)
class ParsedDicom:
    """A validated Part-10 file: the dataset (pixel data included, not decoded) and its identity."""

    dataset: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def parse_part10(data: bytes) -> ParsedDicom:
    """Read and validate a whole Part-10 file; refuse anything the node cannot store and serve.

    Raises :class:`~slicebox_lab.errors.InvalidDicom` (and never another exception)
    with a message naming the reason.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if not data:
        raise InvalidDicom("empty body: no DICOM data received")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidDicom(_describe_non_part10(data))
    try:
        return _parse_checked(data)
    except InvalidDicom:
        raise
    except Exception as exc:  # pydicom raises many types on bad input
        ts = transfer_syntax_of(data)
        if ts is not None and ts not in ACCEPTED_TRANSFER_SYNTAXES:
            raise InvalidDicom(_unsupported_ts_message(ts)) from exc
        raise InvalidDicom(
            f"the DICOM file is truncated or corrupt and cannot be read: {type(exc).__name__}: {exc}"
        ) from exc


def _parse_checked(data: bytes) -> ParsedDicom:
    ds = pydicom.dcmread(io.BytesIO(data))
    meta = ds.file_meta
    _check_file_meta_complete(meta, len(data))
    ts = meta.get("TransferSyntaxUID")
    if not ts:
        raise InvalidDicom(
            "the file has no Transfer Syntax UID (0002,0010) in its File Meta Information. " + _HOW_TO_WRITE_PART10
        )
    ts = str(ts).rstrip(" \x00")
    if ts not in ACCEPTED_TRANSFER_SYNTAXES:
        raise InvalidDicom(_unsupported_ts_message(ts))
    if len(ds) == 0:
        raise InvalidDicom(_empty_dataset_message(data, meta.get("FileMetaInformationGroupLength")))
    _check_structure(ds, data, UID(ts))

    values = _required_values(ds)
    missing = [keyword for keyword, value in values.items() if not value]
    if missing:
        raise InvalidDicom(f"the DICOM file lacks required attributes: {', '.join(missing)}")
    return ParsedDicom(
        dataset=ds,
        transfer_syntax_uid=ts,
        sop_class_uid=values["SOPClassUID"],
        sop_instance_uid=values["SOPInstanceUID"],
    )


def _required_values(ds: Dataset, meta: Dataset | Mapping[str, Any] | None = None) -> dict[str, str]:
    """The identity every stored file must have ("" where it lacks one); ``meta``: the file meta (``ds``'s own)."""
    meta = ds.file_meta if meta is None else meta
    return {
        "SOPInstanceUID": _first_value(ds, "SOPInstanceUID"),
        # the SOP Class may come from the file meta when the dataset lacks it
        "SOPClassUID": _first_value(ds, "SOPClassUID") or _first_value(meta, "MediaStorageSOPClassUID"),
        "StudyInstanceUID": _first_value(ds, "StudyInstanceUID"),
        "SeriesInstanceUID": _first_value(ds, "SeriesInstanceUID"),
    }


_SNIFF_BYTES = 16384


def _describe_non_part10(data: bytes) -> str:
    """Tell a dataset without file meta apart from bytes that are not DICOM at all.

    Only a prefix is read: forcing pydicom through megabytes of garbage (a zero-filled
    body reads as thousands of empty elements) costs a tenth of a second per request.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data[:_SNIFF_BYTES]), force=True, stop_before_pixels=True)
        has_meta_ts = bool(ds.file_meta.get("TransferSyntaxUID"))
        looks_like_dicom = has_meta_ts or any(tag in ds for tag in _IDENTIFYING_TAGS)
    except Exception:
        looks_like_dicom = has_meta_ts = False
    if not looks_like_dicom:
        return "not a DICOM file: no 'DICM' prefix after a 128-byte preamble and no DICOM dataset found"
    if has_meta_ts:
        return "not a DICOM Part-10 file: the 128-byte preamble and 'DICM' prefix are missing. " + _HOW_TO_WRITE_PART10
    return (
        "a DICOM dataset without File Meta Information (no 128-byte preamble, 'DICM' prefix "
        "or Transfer Syntax UID). " + _HOW_TO_WRITE_PART10
    )


#: VRs whose explicit little-endian element header has a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS"}
    | {b"ST", b"TM", b"UI", b"UL", b"US"}
)


def _meta_transfer_syntax(data: bytes) -> str | None:
    """(0002,0010) read straight from the bytes of a Part-10 file meta group as PS3.10 writes it (explicit VR
    little endian): microseconds, where pydicom's parse of the group costs a tenth of a millisecond for every
    upload's header.  Raises ValueError for anything else (no preamble, a VR it does not know, a group cut
    short), which pydicom then reads."""
    if data[128:132] != b"DICM":
        raise ValueError("no preamble")
    pos, end = 132, len(data)
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 2:
            return None  # the group ended without one
        vr = data[pos + 4 : pos + 6]
        if vr in _SHORT_VRS:
            length, value = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        elif vr in _LONG_VRS and pos + 12 <= end:
            length, value = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            raise ValueError("not a plain file meta group")
        if length == 0xFFFFFFFF or value + length > end:
            raise ValueError("an element of undefined length, or cut short")
        if element == 0x0010:
            return data[value : value + length].decode("ascii").rstrip(" \x00") or None
        pos = value + length
    raise ValueError("the group is cut short")


def transfer_syntax_of(data: bytes) -> str | None:
    """The file's transfer syntax from its file meta only (no data set parsed), or None."""
    try:
        return _meta_transfer_syntax(data)
    except (ValueError, UnicodeDecodeError, struct.error):
        pass  # pydicom reads what is not plain
    try:
        meta = read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length: True).file_meta
        ts = meta.get("TransferSyntaxUID")
        return str(ts).rstrip(" \x00") if ts else None
    except Exception:
        return None


def _unsupported_ts_message(ts: str) -> str:
    name = UID(ts).name
    described = f"{ts} ({name})" if name != ts else f"{ts} (an unknown transfer syntax)"
    return (
        f"transfer syntax {described} is not accepted; convert the file to Explicit VR Little "
        "Endian or one of the supported JPEG, JPEG-LS, JPEG 2000 or RLE transfer syntaxes"
    )


def _check_file_meta_complete(meta: Dataset | Mapping[str, Any], size: int) -> None:
    group_length = meta.get("FileMetaInformationGroupLength")
    if isinstance(group_length, int) and 132 + 12 + group_length > size:
        raise InvalidDicom(
            f"the DICOM file is truncated inside its File Meta Information "
            f"({size} bytes, the meta group alone declares {132 + 12 + group_length})"
        )


def _empty_dataset_message(data: bytes, meta_length: object) -> str:
    """pydicom drops the whole dataset when an undefined-length value has no delimiter: say which."""
    fp = io.BytesIO(data)
    try:
        head = pydicom.dcmread(fp, stop_before_pixels=True)
        pixel_offset = fp.tell() if len(head) else None  # pydicom stops at the Pixel Data tag
    except Exception:
        pixel_offset = None
    if pixel_offset is not None and data[pixel_offset : pixel_offset + 4] == _ENCAPSULATED_PIXEL_DATA_TAG:
        # tag, VR, reserved, undefined length: the items follow (explicit VR little endian)
        _check_fragments(data[pixel_offset + 12 :], little_endian=True)
        return "the DICOM file is truncated: its encapsulated Pixel Data has no sequence delimiter (FFFE,E0DD)"
    remaining = len(data) - (132 + 12 + meta_length) if isinstance(meta_length, int) else None
    if remaining is not None and remaining <= 0:
        return (
            "the DICOM file has File Meta Information but no dataset: it lacks required "
            "attributes SOPInstanceUID, SOPClassUID, StudyInstanceUID, SeriesInstanceUID"
        )
    if remaining is not None and remaining < 8:
        return "the DICOM file is truncated inside the header of its first element after the File Meta Information"
    return "the DICOM file is truncated or corrupt: an undefined-length element has no sequence delimiter (FFFE,E0DD)"


def _check_structure(ds: Dataset, data: bytes, ts: UID) -> None:
    """Refuse a file cut short: pydicom keeps whatever it could read and says nothing."""
    # the element read last: the greatest tag, unless the writer did not sort its elements
    last = max(ds.elements(), key=_position)
    last_tag = int(last.tag)
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        present = len(last.value) if last.value is not None else last.length
        if present < last.length:
            raise InvalidDicom(
                f"the DICOM file is truncated: element {_describe_tag(last_tag)} declares "
                f"{last.length} bytes but only {present} are present"
            )
    if ts == DeflatedExplicitVRLittleEndian:
        _check_deflate_complete(ds, data)
    else:  # element positions are in the inflated stream for deflate
        end = _element_end(last)
        if end is not None and end > len(data):
            raise InvalidDicom(
                f"the DICOM file is truncated: element {_describe_tag(last_tag)} ends at byte "
                f"{end} but the file has {len(data)} bytes"
            )
        if end is not None and end < len(data):
            raise InvalidDicom(
                f"the DICOM file is truncated: {len(data) - end} byte(s) after element "
                f"{_describe_tag(last_tag)} are not a complete element header"
            )

    pixel_tag = next((t for t in _PIXEL_DATA_TAGS if t in ds), None)
    if pixel_tag is None:
        # an element boundary inside the Image Pixel module is the one cut nothing else reveals
        # (MR Spectroscopy has Rows and Columns but Spectroscopy Data instead of pixels)
        if "BitsAllocated" in ds or (("Rows" in ds or "Columns" in ds) and "SpectroscopyData" not in ds):
            raise InvalidDicom(
                "the DICOM file is truncated before its Pixel Data: it has Image Pixel attributes "
                "(Rows, Columns, BitsAllocated) but no Pixel Data element"
            )
        return
    pixel = ds.get_item(pixel_tag)
    if not isinstance(pixel, RawDataElement) or pixel.value is None:
        return
    if pixel.length == _UNDEFINED_LENGTH:
        _check_fragments(pixel.value, pixel.is_little_endian)
    elif ts.is_encapsulated and pixel_tag == 0x7FE00010:
        raise InvalidDicom(
            f"the Pixel Data of a file in {ts.name} must be encapsulated (undefined length), "
            f"but it has a defined length of {pixel.length} bytes"
        )
    else:
        _check_native_length(ds, len(pixel.value))


def _check_deflate_complete(ds: Dataset, data: bytes) -> None:
    """pydicom inflates a cut deflate stream without complaint; zlib knows where it should end."""
    group_length = ds.file_meta.get("FileMetaInformationGroupLength")
    if not isinstance(group_length, int):
        return  # the start of the deflated dataset is unknown
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(memoryview(data)[132 + 12 + group_length :])
    if not inflater.eof:
        raise InvalidDicom("the DICOM file is truncated: its deflated dataset ends before the deflate stream does")


def _position(elem: DataElement | RawDataElement) -> int:
    if isinstance(elem, RawDataElement):
        return elem.value_tell
    return int(getattr(elem, "file_tell", None) or 0)


def _element_end(elem: DataElement | RawDataElement) -> int | None:
    """Where an element ends in the file, when pydicom kept enough to know."""
    if not isinstance(elem, RawDataElement) or elem.value is None:
        return None
    if elem.length == _UNDEFINED_LENGTH:
        return elem.value_tell + len(elem.value) + 8  # the sequence delimiter item
    return elem.value_tell + elem.length


def _check_fragments(value: bytes, little_endian: bool) -> None:
    """Encapsulated pixel data must be whole items: a cut one means a truncated file."""
    unpack = struct.Struct("<HHL" if little_endian else ">HHL").unpack_from
    offset, size, count = 0, len(value), 0
    while offset < size:
        if size - offset < 8:
            raise InvalidDicom("the DICOM file is truncated: its encapsulated Pixel Data ends inside an item header")
        group, elem, length = unpack(value, offset)
        if (group << 16 | elem) != _ITEM_TAG:
            raise InvalidDicom(
                f"the encapsulated Pixel Data is corrupt: expected an item (FFFE,E000) at offset "
                f"{offset}, found ({group:04X},{elem:04X})"
            )
        if length == _UNDEFINED_LENGTH or offset + 8 + length > size:
            raise InvalidDicom(
                f"the DICOM file is truncated: fragment {count} of the encapsulated Pixel Data "
                f"declares {length} bytes but only {max(size - offset - 8, 0)} are present"
            )
        offset += 8 + length
        count += 1
    if count == 0:
        raise InvalidDicom("the encapsulated Pixel Data has no Basic Offset Table item")


def _check_native_length(ds: Dataset, actual: int) -> None:
    expected = _expected_native_length(ds)
    if expected is not None and actual < expected:
        raise InvalidDicom(
            f"the DICOM file is truncated inside its Pixel Data: {actual} bytes present, "
            f"{expected} expected from Rows, Columns, SamplesPerPixel, BitsAllocated and "
            "NumberOfFrames"
        )


def _expected_native_length(ds: Dataset) -> int | None:
    """Bytes that Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames need.

    Computed here rather than with ``pydicom.pixels.utils.get_expected_length``
    because that one misbehaves on invalid values (a NumberOfFrames of '1A' is
    multiplied as a string); ``None`` when the Image Pixel module is incomplete.
    """
    try:
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel") or 1)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    pixels = rows * columns * samples * max(frames, 1)
    length = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        length = length // 3 * 2
    return length


def _describe_tag(tag: int) -> str:
    t = Tag(tag)
    keyword = pydicom.datadict.keyword_for_tag(t)
    return f"({t.group:04X},{t.element:04X}) {keyword}".rstrip()


def _first_value(ds: Dataset | Mapping[str, Any], keyword: str) -> str:
    """The first value of an element as a str, "" when absent or empty."""
    value: Any = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else ""
    return _as_text(value)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).rstrip(" \x00")


def extract_attributes(parsed: ParsedDicom) -> IndexedAttributes:
    """The indexed attributes of each level, as strings (first value, "" when absent).

    Raises :class:`InvalidDicom` when a value cannot be decoded at all.
    """
    ds = parsed.dataset

    def level(keywords: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for keyword in keywords:
            try:
                if keyword == "ImageType":
                    value = ds.get(keyword)
                    if value is None:
                        out[keyword] = ""
                    elif isinstance(value, str):
                        out[keyword] = _as_text(value)
                    else:
                        out[keyword] = "\\".join(_as_text(v) for v in value)
                else:
                    out[keyword] = _first_value(ds, keyword)
            except Exception as exc:
                raise InvalidDicom(f"attribute {keyword} cannot be read: {exc}") from exc
        return out

    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return IndexedAttributes(
        patient=level(PATIENT_ATTRIBUTES),
        study=level(STUDY_ATTRIBUTES),
        series=level(SERIES_ATTRIBUTES),
        image=level(IMAGE_ATTRIBUTES),
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        number_of_frames=max(frames, 1),
    )


_PIXEL_DATA = 0x7FE00010
#: (implicit VR, the pixel element header before its 4-byte length) per transfer syntax
_NATIVE_LITTLE_ENDIAN = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}


@dataclass(frozen=True)
class TrailingPixels:
    """Where a stored file's Pixel Data element lies when it is the file's last element: from its tag at
    ``offset`` to the end of the file, ``length`` bytes (element header included); ``head``: its first bytes
    as read (the element header, what :func:`checked_header` needs of it)."""

    offset: int
    length: int
    head: bytes = b""


def _pixel_element(head: bytes, implicit_vr: bool) -> tuple[int, int] | None:
    """(size of the element header, value length) of a little-endian (7FE0,0010) Pixel Data element starting
    ``head``; None when ``head`` does not start one."""
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        return None
    if implicit_vr:  # tag, 4-byte length
        return 8, struct.unpack("<I", head[4:8])[0]
    if len(head) < 12 or head[4:6] not in (b"OB", b"OW"):  # tag, VR, 2 reserved bytes, 4-byte length
        return None
    return 12, struct.unpack("<I", head[8:12])[0]


def read_until_pixels(file: BinaryIO) -> tuple[Dataset, TrailingPixels] | None:
    """The dataset of a stored Part-10 file up to its Pixel Data, and where that element lies, when it ends
    the file in a little-endian, not deflated syntax (native, or encapsulated fragments up to their
    delimiter): its bytes may then follow a rewritten header as they are.  None otherwise (no Pixel Data,
    anything after it, a syntax where the header's encoding and the pixels' differ)."""
    size = os.fstat(file.fileno()).st_size
    dataset = pydicom.dcmread(file, stop_before_pixels=True)
    offset = file.tell()  # pydicom rewinds to the tag of the element it stopped at
    syntax = UID(dataset.file_meta.get("TransferSyntaxUID") or "")
    if not syntax or not syntax.is_little_endian or syntax.is_deflated:
        return None
    head = file.read(12)
    element = _pixel_element(head, syntax.is_implicit_VR)
    if element is None:
        return None
    header_bytes, length = element
    start = offset + header_bytes
    end = start + length if length != _UNDEFINED_LENGTH else _fragments_end(file, start)
    if end != size:
        return None
    return dataset, TrailingPixels(offset, size - offset, head)


@dataclass(frozen=True)
class Header:
    """What the first bytes of a Part-10 file tell when its native Pixel Data ends it: the file validated
    and parsed up to the pixels (the dataset holds no Pixel Data), valid only if the whole file is ``size``
    bytes, where the Pixel Data value its header declares ends."""

    parsed: ParsedDicom
    size: int


def parse_header(head: bytes) -> Header | None:
    """:func:`parse_part10`'s validation of a file from its first bytes, while the rest is still arriving.

    Only where the header decides it: a little-endian, not deflated syntax; (7FE0,0010) native Pixel Data
    whose element header is in ``head``; its declared length as long as Rows, Columns, SamplesPerPixel,
    BitsAllocated and NumberOfFrames need; the required UIDs.  A file of exactly :attr:`Header.size` bytes
    then passes :func:`parse_part10` with the same dataset (its last element is the Pixel Data, which ends
    the file; nothing is cut short).  None in every other case, bad input included: the full parse then
    decides, and says why."""
    found = transfer_syntax_of(head) if len(head) >= 132 and head[128:132] == b"DICM" else None
    ts = UID(found or "")
    if ts not in _NATIVE_LITTLE_ENDIAN:
        return None  # (compressed pixels: the file meta alone says so, before the header is parsed)
    try:
        fp = io.BytesIO(head)
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        offset = fp.tell()  # pydicom rewinds to the tag of the element it stopped at
    except Exception:  # pydicom raises many types on bad input: the full parse says why
        return None
    return checked_header(ds, ds.file_meta, offset, head[offset : offset + 12])


def checked_header(ds: Dataset, meta: Dataset | Mapping[str, Any], offset: int, pixel_head: bytes) -> Header | None:
    """:func:`parse_header`'s checks of a header: ``ds`` (without Pixel Data) and its file ``meta`` taking the
    first ``offset`` bytes of the file, followed by a Pixel Data element starting with ``pixel_head``.  Also
    what a worker knows of a file it has just written that way, without reading it back."""
    ts = UID(str(meta.get("TransferSyntaxUID") or "").rstrip(" \x00"))
    if ts not in _NATIVE_LITTLE_ENDIAN:
        return None
    try:
        element = _pixel_element(pixel_head, _NATIVE_LITTLE_ENDIAN[ts])
        if len(ds) == 0 or element is None or element[1] == _UNDEFINED_LENGTH:
            return None
        header_bytes, length = element
        size = offset + header_bytes + length
        _check_file_meta_complete(meta, size)
        _check_native_length(ds, length)
        verify_number_of_frames(ds)  # what render.verify_pixel_data checks of a header
        values = _required_values(ds, meta)
    except Exception:  # pydicom raises many types on bad input; InvalidDicom too: the full parse says why
        return None
    if not all(values.values()):
        return None
    return Header(ParsedDicom(ds, str(ts), values["SOPClassUID"], values["SOPInstanceUID"]), size)


def _fragments_end(file: BinaryIO, position: int) -> int | None:
    """Where the items of encapsulated Pixel Data starting at ``position`` end (after their delimiter)."""
    while True:
        file.seek(position)
        item = file.read(8)
        if len(item) < 8:
            return None
        group, element, length = struct.unpack("<HHI", item)
        if (group, element) == (0xFFFE, 0xE0DD):
            return position + 8
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return None
        position += 8 + length
