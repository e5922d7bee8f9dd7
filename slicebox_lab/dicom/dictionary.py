"""The DICOM data dictionary, as the ``/dicom/dictionary/*`` routes serve it (from pydicom's).

Private tags are unknown here: their meaning depends on the private creator, which
a bare tag does not carry.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydicom.datadict import (
    DicomDictionary,
    RepeatersDictionary,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)

from slicebox_lab.errors import InvalidInput, NotFound

__all__ = ["keywords", "vr", "vm", "keyword", "tag"]

_KINDS = ("all", "sequence", "nonsequence")


@lru_cache(maxsize=1)
def _all_entries() -> tuple[tuple[str, str], ...]:
    """(keyword, VR) of every standard element, repeating groups included, sorted by keyword."""
    entries = {entry[4]: entry[0] for entry in DicomDictionary.values() if entry[4]}
    entries.update({entry[4]: entry[0] for entry in RepeatersDictionary.values() if entry[4]})
    return tuple(sorted(entries.items()))


@lru_cache(maxsize=1)
def _repeater_tags() -> dict[str, int]:
    """Keywords of repeating groups (e.g. OverlayData, 60xx,3000) to their first tag."""
    return {entry[4]: int(mask.replace("x", "0"), 16) for mask, entry in RepeatersDictionary.items() if entry[4]}


def keywords(filter: str = "", kind: Literal["all", "sequence", "nonsequence"] = "all") -> list[str]:
    """Standard keywords, sorted; ``filter`` is a case-insensitive substring, ``kind`` selects SQ or not."""
    if kind not in _KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    needle = filter.lower()
    return [
        keyword
        for keyword, element_vr in _all_entries()
        if needle in keyword.lower() and (kind == "all" or (element_vr == "SQ") == (kind == "sequence"))
    ]


def vr(tag: int) -> str:
    """The VR of a standard tag ("UN" when unknown or private).

    Where the standard allows several ("US or SS", "OB or OW") the first is returned,
    as a single VR is what a client can use.
    """
    if _is_private(tag):
        return "UN"
    try:
        value = str(dictionary_VR(tag))
    except (KeyError, ValueError, OverflowError):
        return "UN"
    return value.split(" or ")[0]


def vm(tag: int) -> dict[str, int]:
    """The value multiplicity as ``{"min": m, "max": n}``; ``max`` is left out when unbounded."""
    if _is_private(tag):
        return {"min": 1}
    try:
        text = str(dictionary_VM(tag))
    except (KeyError, ValueError, OverflowError):
        return {"min": 1}
    low, _, high = text.partition("-")
    try:
        minimum = int(low)
    except ValueError:
        return {"min": 1}
    if not high:
        return {"min": minimum, "max": minimum}
    if "n" in high:  # "1-n", "2-2n", "3-3n": no upper bound
        return {"min": minimum}
    return {"min": minimum, "max": int(high)}


def keyword(tag: int) -> str:
    """The keyword of a standard tag; :class:`NotFound` for unknown and private tags."""
    if not 0 <= tag <= 0xFFFFFFFF:
        raise NotFound(f"no DICOM keyword for {tag}: not a tag (0 to 0xFFFFFFFF)")
    found = "" if _is_private(tag) else keyword_for_tag(tag)
    if not found:
        raise NotFound(f"no DICOM keyword for tag ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    return found


def tag(keyword: str) -> int:
    """The tag of a standard keyword (the first group of a repeating group, e.g. 6000,3000)."""
    found = tag_for_keyword(keyword) if keyword else None
    if found is None:
        found = _repeater_tags().get(keyword)
    if found is None:
        raise NotFound(f"no DICOM tag for keyword {keyword!r}")
    return int(found)


def _is_private(tag: int) -> bool:
    return bool((tag >> 16) & 1)
