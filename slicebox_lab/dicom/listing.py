"""The attribute listing of an image: every element, nested sequences flattened.

This is what the viewer's attribute table and ``GET /images/{id}/attributes`` show,
so it must never fail on a file that was accepted: an element pydicom cannot
convert is listed with its raw bytes instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

__all__ = ["attribute_listing"]

#: Pixel data elements: large and shown by the viewer, not in the table.
_PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
_BINARY_SHOWN_UP_TO = 20  # bytes; longer binary values are summarised
_BINARY_SUMMARY = "< Binary data >"
_UNDEFINED_LENGTH = 0xFFFFFFFF


def attribute_listing(ds: Dataset) -> list[dict[str, Any]]:
    """Every element except pixel data, file meta (group 0002) first, sequences depth-first.

    Each entry has ``tag`` ("GGGG,EEEE"), ``tag_path`` (e.g. "0008,1140[0].0008,1155"),
    ``keyword`` ("" when private or unknown), ``name_path``, ``vr``, ``length``
    (bytes as stored, -1 for undefined length), ``depth`` and ``values`` (strings).
    """
    entries: list[dict[str, Any]] = []
    meta = getattr(ds, "file_meta", None)
    if isinstance(meta, Dataset):
        entries.extend(_walk(meta, "", [], 0, ["iso8859"]))
    try:
        encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    except Exception:
        encodings = ["iso8859"]
    entries.extend(_walk(ds, "", [], 0, encodings))
    return entries


def _walk(ds: Dataset, prefix: str, names: list[str], depth: int, encodings: list[str]) -> Iterator[dict[str, Any]]:
    for tag in sorted(ds.keys()):
        if tag in _PIXEL_DATA_TAGS:
            continue
        stored_length = _stored_length(ds.get_item(tag))
        tag_text = _tag_text(tag)
        tag_path = prefix + tag_text
        keyword = "" if Tag(tag).is_private else keyword_for_tag(tag)
        name_path = [*names, keyword]
        try:
            elem = ds[tag]
        except Exception as exc:  # a value pydicom cannot convert: say so, keep listing
            yield _entry(
                tag_text,
                tag_path,
                keyword,
                name_path,
                _raw_vr(ds, tag),
                stored_length,
                depth,
                [f"< Unreadable: {exc} >"],
            )
            continue
        length = stored_length if stored_length is not None else _encoded_length(elem, encodings)
        if elem.VR == "SQ":
            yield _entry(tag_text, tag_path, keyword, name_path, "SQ", length, depth, [])
            items = elem.value if isinstance(elem.value, Sequence | list) else []
            for index, item in enumerate(items):
                yield from _walk(item, f"{tag_path}[{index}].", name_path, depth + 1, encodings)
        else:
            yield _entry(tag_text, tag_path, keyword, name_path, str(elem.VR), length, depth, _values(elem))


def _entry(
    tag: str,
    tag_path: str,
    keyword: str,
    name_path: list[str],
    vr: str,
    length: int | None,
    depth: int,
    values: list[str],
) -> dict[str, Any]:
    return {
        "tag": tag,
        "tag_path": tag_path,
        "keyword": keyword,
        "name_path": name_path,
        "vr": vr,
        "length": -1 if length is None else length,
        "depth": depth,
        "values": values,
    }


def _tag_text(tag: int) -> str:
    return f"{tag >> 16:04X},{tag & 0xFFFF:04X}"


def _stored_length(elem: DataElement | RawDataElement | None) -> int | None:
    """The value length as read from the file, known only before pydicom converts the element."""
    if isinstance(elem, RawDataElement):
        return -1 if elem.length == _UNDEFINED_LENGTH else elem.length
    if isinstance(elem, DataElement) and elem.is_undefined_length:
        return -1
    return None


def _encoded_length(elem: DataElement, encodings: list[str]) -> int | None:
    """Length of an already converted element, found by encoding it again as pydicom would."""
    if elem.VR == "SQ":
        return None  # re-encoding whole sequences is not worth it for a listing
    try:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = True  # 8-byte header: tag + 4-byte length
        write_data_element(fp, elem, encodings)
        return len(fp.getvalue()) - 8
    except Exception:
        return None


def _raw_vr(ds: Dataset, tag: BaseTag) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    return str(vr) if vr else "UN"


def _values(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, bytes | bytearray | memoryview) or elem.VR in _BINARY_VRS:
        data = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None
        if data is None:  # a binary VR already converted to numbers (e.g. US or OW as US)
            return [_text(v) for v in _as_list(value)]
        if len(data) > _BINARY_SHOWN_UP_TO:
            return [_BINARY_SUMMARY]
        return [data.hex(" ").upper()]
    return [_text(v) for v in _as_list(value)]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _text(value: Any) -> str:
    if isinstance(value, BaseTag):
        return f"({value.group:04X},{value.element:04X})"
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip(" \x00")
    if value is None:
        return ""
    return str(value).rstrip(" \x00")
