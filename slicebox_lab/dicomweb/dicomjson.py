"""DICOM JSON (PS3.18 F.2) for values from the index and elements from stored files.

Index values are plain strings (multiple values joined by a backslash); building pydicom
datasets for every row of a QIDO answer would cost more than the SQL, so they are serialised
here directly by their dictionary VR.  Elements read from files go through pydicom, with large
binary values replaced by a ``BulkDataURI`` the node serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from slicebox_lab.errors import InvalidInput

__all__ = ["dataset_json", "element_json", "parse_tag_path", "tag_of", "tag_text", "value_json", "vr_of"]

_INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
#: VRs whose values may go out by reference instead of inline
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: binary values longer than this become a BulkDataURI in metadata
BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})


def tag_text(tag: int) -> str:
    return f"{tag:08X}"


def tag_of(name: str) -> int:
    """A keyword (``PatientName``) or eight hex digits (``00100010``) as a tag; 400 otherwise."""
    text = name.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    tag = tag_for_keyword(text)
    if tag is None:
        raise InvalidInput(f"{name!r} is neither a DICOM keyword nor a tag (eight hex digits, e.g. 00100010)")
    return int(tag)


def vr_of(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or tag_text(tag)


def value_json(vr: str, text: str | int | None) -> dict[str, Any]:
    """One attribute from an index value: ``{"vr": ..., "Value": [...]}``, no Value when empty."""
    if text is None or text == "":
        return {"vr": vr}
    if isinstance(text, int):
        return {"vr": vr, "Value": [text]}
    values: list[str] = [text] if vr in _TEXT_VRS else text.split("\\")
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": v} if v else {} for v in values]}
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        numbers: list[Any] = []
        for v in values:
            try:
                numbers.append(int(v) if vr in _INT_VRS else float(v))
            except ValueError:
                return {"vr": vr}
        return {"vr": vr, "Value": numbers}
    return {"vr": vr, "Value": values}


def dataset_json(ds: Dataset, bulk_uri: Callable[[str], str] | None, path: str = "") -> dict[str, Any]:
    """``ds`` as DICOM JSON; large binary values become ``bulk_uri(tag path)`` (left out without one)."""
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        tag = BaseTag(tag)
        if tag.element == 0 or tag.group == 0x0002:  # group lengths, file meta
            continue
        try:
            element = ds[tag]
        except Exception:  # noqa: S112 - an unreadable element is left out of the metadata
            continue
        out[tag_text(int(tag))] = element_json(element, bulk_uri, f"{path}{tag_text(int(tag))}")
    return out


def element_json(element: DataElement, bulk_uri: Callable[[str], str] | None, path: str) -> dict[str, Any]:
    vr = str(element.VR)
    if vr == "SQ":
        items = [dataset_json(item, bulk_uri, f"{path}/{i}/") for i, item in enumerate(element.value or [])]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BULK_VRS or element.tag in _PIXEL_TAGS:
        value = element.value
        size = len(value) if isinstance(value, bytes | bytearray) else 0
        if element.tag in _PIXEL_TAGS or size > BULK_THRESHOLD:
            return {"vr": vr, "BulkDataURI": bulk_uri(path)} if bulk_uri is not None else {"vr": vr}
    try:
        result: dict[str, Any] = element.to_json_dict(None, BULK_THRESHOLD)
    except Exception:  # a value pydicom cannot encode: give the attribute without it
        return {"vr": vr}
    return result


def parse_tag_path(path: str) -> list[tuple[int, int | None]]:
    """``00540016/0/00181072`` as [(tag, item index), ..., (tag, None)]; 400 when malformed."""
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) % 2 == 0:
        raise InvalidInput(f"bad bulk data path {path!r}")
    steps: list[tuple[int, int | None]] = []
    for i in range(0, len(pieces), 2):
        tag = tag_of(pieces[i])
        index: int | None = None
        if i + 1 < len(pieces):
            if not pieces[i + 1].isdigit():
                raise InvalidInput(f"bad item index {pieces[i + 1]!r} in bulk data path")
            index = int(pieces[i + 1])
        steps.append((tag, index))
    return steps
