"""A dataset with a unique, searchable marker planted in every attribute of Table E.1-1 pydicom knows.

The expected fate of each marker is computed here from the raw JSON table (not through
``Profile``), restating the resolution rules of ``slicebox_lab/anonymization/profile.py`` as the
specification the anonymizer is tested against.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from generators import ct_dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from slicebox_lab.anonymization import Option

TEXT_VRS = {"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"}
BYTE_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}

OtherPatientNames = Tag(0x0010, 0x1001)  # X in the basic profile and in every option
ReferencedSeriesSequence = Tag(0x0008, 0x1115)  # not in Table E.1-1: kept, items de-identified
ReferencedSOPInstanceUID = Tag(0x0008, 0x1155)  # U; K under Retain UIDs
SAFE_CREATOR = "GEMS_ACQU_01"  # (0019,xx9E) LO is in Table E.3.10-1, (0019,xxF0) is not


@dataclass(frozen=True)
class Plant:
    """One planted marker: where it is, what was written, what to search for, and its expected fate."""

    path: tuple[BaseTag, ...]  # sequences from the root down to (not including) the element
    tag: BaseTag
    vr: str
    value: Any
    search: bytes | None  # None for binary numbers: checked in the decoded dataset instead
    fate: str  # "retain", "shift" (moved back by the date offset), "clean" (still there, marker scrubbed)
    # or "gone" (removed, emptied, dummied, mapped)

    @property
    def name(self) -> str:
        return keyword_for_tag(self.tag) or str(self.tag)


def table() -> list[dict[str, str]]:
    text = (
        resources.files("slicebox_lab.anonymization")
        .joinpath("tables")
        .joinpath("confidentiality_profile_attributes_2024e.json")
    )
    return list(json.loads(text.read_text(encoding="utf-8")))


_ROWS = {int(row["id"], 16): row for row in table() if all(c in "0123456789abcdef" for c in row["id"])}


# options whose C cleans free text and keeps sequences with cleaned items; Modified Dates' C shifts dates
CLEANING_COLUMNS = ("cleanDescOpt", "cleanStructContOpt", "cleanGraphOpt", "rtnPatCharsOpt")
CLEANED_VRS = {"CS", "LO", "LT", "SH", "ST", "UC", "UT"}


def expected_fate(tag: BaseTag, vr: str, options: frozenset[Option]) -> str:
    """The fate of a non-sequence standard attribute under ``options``, read from the raw table.

    A C that cleans text leaves only allow-listed tokens: a marker (``LEAK`` and 4 digits, more digits
    than a kept token may have) never survives it. Such attributes get the fate "clean": the leak test
    treats them like "gone", test_clean.py also checks they are still there.
    """
    row = _ROWS.get(int(tag))
    if row is None:
        return "retain"
    if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options and "rtnLongModifDatesOpt" in row:
        if vr in ("DA", "DT"):
            return "shift"  # even where another option says K: no real date next to shifted ones
        if vr == "TM":
            return "retain"
    if "K" in {row[o.column] for o in options if o.column in row}:
        return "retain"
    if vr in CLEANED_VRS and any(row.get(o.column) == "C" for o in options if o.column in CLEANING_COLUMNS):
        return "clean"
    return "gone"


def keeps_items(tag: BaseTag, options: frozenset[Option]) -> bool:
    """Whether a sequence keeps its items (K, a cleaning C, or the U of X/Z/U*); otherwise it is removed or emptied."""
    row = _ROWS.get(int(tag))
    if row is None:
        return True
    if "K" in {row[o.column] for o in options if o.column in row}:
        return True
    if any(row.get(o.column) == "C" for o in options if o.column in CLEANING_COLUMNS):
        return True  # cleaned: kept, its items de-identified by their own rows
    return row["basicProfile"].split("/")[-1].startswith("U")


class _Markers:
    def __init__(self) -> None:
        self.n = 0
        self.dates = 0

    def value(self, vr: str) -> tuple[Any, bytes | None]:
        self.n += 1
        n = self.n
        if vr in TEXT_VRS:
            return f"LEAK{n:04d}", f"LEAK{n:04d}".encode()
        if vr == "PN":
            return f"LEAK{n:04d}^MARKER", f"LEAK{n:04d}".encode()
        if vr in ("DA", "DT"):
            # 11 years apart: a date shifted by 1..3650 days never equals another marker
            self.dates += 1
            value = f"{1000 + 11 * self.dates:04d}1113" + (f"101010.{n:06d}" if vr == "DT" else "")
            return value, value.encode()
        if vr == "TM":
            return f"131313.{n:06d}", f"131313.{n:06d}".encode()
        if vr == "UI":
            return f"1.2.3.999.{10000 + n}", f"1.2.3.999.{10000 + n}".encode()
        if vr == "AS":
            return f"{n % 1000:03d}W", f"{n % 1000:03d}W".encode()
        if vr == "DS":
            return f"9{n:04d}.37", f"9{n:04d}.37".encode()
        if vr == "IS":
            return f"9{n:04d}37", f"9{n:04d}37".encode()
        if vr in BYTE_VRS:
            return f"LEAK{n:04d}".encode(), f"LEAK{n:04d}".encode()
        if vr in NUMBER_VRS:
            return 30000 + n, None
        raise ValueError(f"no marker for VR {vr}")


def planted_dataset() -> tuple[Dataset, list[Plant]]:
    """A small CT image with markers in every plantable Table E.1-1 attribute, in nested sequences,
    in private blocks (safe and unsafe creators), curves and overlays. Returns the dataset and a
    list of plants with their fates under the basic profile (see :func:`plants_for`)."""
    ds = ct_dataset(rows=8, columns=8)
    markers = _Markers()
    plants: list[Plant] = []

    def plant(target: Dataset, path: tuple[BaseTag, ...], tag: BaseTag, vr: str) -> None:
        value, search = markers.value(vr)
        target.add(DataElement(tag, vr, value))
        plants.append(Plant(path, tag, vr, value, search, ""))

    def nested_items(path: tuple[BaseTag, ...], tag: BaseTag) -> Sequence:
        """An item with an always-removed marker, a UID reference and a second-level sequence."""
        item = Dataset()
        plant(item, (*path, tag), OtherPatientNames, "PN")
        plant(item, (*path, tag), ReferencedSOPInstanceUID, "UI")
        inner = Dataset()
        plant(inner, (*path, tag, ReferencedSeriesSequence), OtherPatientNames, "PN")
        plant(inner, (*path, tag, ReferencedSeriesSequence), ReferencedSOPInstanceUID, "UI")
        item.ReferencedSeriesSequence = Sequence([inner])
        return Sequence([item])

    for tag_int, _row in sorted(_ROWS.items()):
        tag = Tag(tag_int)
        if tag.group in (0x0000, 0x0002):
            continue  # command set (not allowed in a stored dataset) and file meta (set below)
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr == "SQ":
            ds.add(DataElement(tag, "SQ", nested_items((), tag)))
        else:
            plant(ds, (), tag, vr)

    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    # private: a safe creator block with a safe and an unsafe element, and an unsafe creator
    safe = ds.private_block(0x0019, SAFE_CREATOR, create=True)
    plant(ds, (), safe.get_tag(0x9E), "LO")
    plant(ds, (), safe.get_tag(0xF0), "LO")
    creator_value, creator_search = markers.value("LO")
    unsafe = ds.private_block(0x0029, f"{creator_value} CORP", create=True)
    plants.append(Plant((), Tag(0x0029, 0x0010), "LO", f"{creator_value} CORP", creator_search, ""))
    plant(ds, (), unsafe.get_tag(0x01), "LO")
    plant(ds, (), unsafe.get_tag(0x02), "OB")
    unsafe.add_new(0x03, "SQ", nested_items((), unsafe.get_tag(0x03)))

    # curves and overlays
    plant(ds, (), Tag(0x5000, 0x3000), "OB")  # Curve Data
    plant(ds, (), Tag(0x5000, 0x2500), "LO")  # Curve Label
    plant(ds, (), Tag(0x6000, 0x3000), "OB")  # Overlay Data
    plant(ds, (), Tag(0x6000, 0x4000), "LT")  # Overlay Comments
    plant(ds, (), Tag(0x6000, 0x1500), "LO")  # Overlay Label: not in the table, goes with the overlay
    return ds, plants


def plants_for(plants: list[Plant], options: frozenset[Option]) -> list[Plant]:
    """``plants`` with their expected fate under ``options``."""
    out = []
    for p in plants:
        fate = "gone"
        if not p.tag.group % 2 and not 0x5000 <= p.tag.group <= 0x60FF:
            if all(keeps_items(seq, options) for seq in p.path if not seq.group % 2) and not any(
                seq.group % 2 for seq in p.path
            ):
                fate = expected_fate(p.tag, p.vr, options)
        elif p.tag.group == 0x0019 and Option.RETAIN_SAFE_PRIVATE in options and p.tag.element & 0xFF == 0x9E:
            fate = "retain"
        out.append(Plant(p.path, p.tag, p.vr, p.value, p.search, fate))
    return out


def shift(value: str, days: int) -> str:
    day = datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8])) - datetime.timedelta(days=days)
    return f"{day.year:04d}{day.month:02d}{day.day:02d}{value[8:]}"
