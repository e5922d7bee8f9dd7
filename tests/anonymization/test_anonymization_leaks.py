"""The acceptance test: no planted marker survives unless a selected option retains its attribute."""

from __future__ import annotations

import io
from typing import Any

import pytest
from planted import Plant, planted_dataset, plants_for, shift, table
from pydicom import dcmread
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset

from slicebox_lab.anonymization import Option, Profile, PseudonymKeys, anonymize
from slicebox_lab.dicom import parse_part10, write_part10

KEYS = PseudonymKeys(b"leak-test-secret-0123456789abcdef")

ALL_WITH_FULL_DATES = frozenset(Option) - {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
ALL_WITH_MODIFIED_DATES = frozenset(Option) - {Option.RETAIN_LONGITUDINAL_FULL_DATES}
OPTION_SETS = [
    pytest.param(frozenset(), id="basic"),
    *(pytest.param(frozenset({option}), id=option.name) for option in Option),
    pytest.param(ALL_WITH_FULL_DATES, id="all-with-full-dates"),
    pytest.param(ALL_WITH_MODIFIED_DATES, id="all-with-modified-dates"),
]


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _strings(ds: Dataset) -> list[str]:
    """Every decoded value, as text, at every depth."""
    out: list[str] = []
    for elem in ds.iterall():
        if elem.VR != "SQ" and elem.value is not None:
            value = elem.value
            out.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return out


def _element(ds: Dataset, plant: Plant) -> Any:
    target = ds
    for tag in plant.path:
        if tag not in target or not target[tag].value:
            return None
        target = target[tag].value[0]
    return target.get(plant.tag)


@pytest.mark.parametrize("as_read", [False, True], ids=["in-memory", "as-read"])
@pytest.mark.parametrize("options", OPTION_SETS)
def test_no_marker_leaks_unless_retained(options: frozenset[Option], as_read: bool) -> None:
    """``as_read``: the planted file parsed as the node parses a stored one (its elements still undecoded, so
    the ones the profile keeps go over as read) and written by the node's writer (``dicom.write_part10``)."""
    ds, raw_plants = planted_dataset()
    plants = plants_for(raw_plants, options)
    original = _write(ds)
    if as_read:
        ds = parse_part10(original).dataset
    out = anonymize(ds, Profile(options), KEYS)
    data = write_part10(out) if as_read else _write(out)
    decoded = dcmread(io.BytesIO(data))
    text = "\n".join(_strings(decoded))
    offset = KEYS.date_offset_days(str(ds.PatientName), str(ds.PatientID))

    assert _write(ds) == original, "the input must be left untouched"
    leaks, lost = [], []
    for plant in plants:
        element = _element(decoded, plant)
        if plant.search is None:  # binary numbers: removed, emptied, zeroed or kept
            value = None if element is None else element.value
            if plant.fate == "retain" and value != plant.value:
                lost.append(plant.name)
            if plant.fate == "gone" and value not in (None, 0, []):
                leaks.append(plant.name)
            continue
        found = plant.search in data or plant.search.decode() in text
        if plant.fate == "retain":
            if not found or element is None or element.value != plant.value:
                lost.append(plant.name)
        elif found:
            leaks.append(plant.name)
        if plant.fate == "shift" and (element is None or element.value != shift(plant.value, offset)):
            lost.append(plant.name)

    retained = [p for p in plants if p.fate == "retain"]
    print(
        f"\n{'+'.join(o.name for o in sorted(options, key=lambda o: o.name)) or 'BASIC'}: "
        f"{len(plants)} markers, {len(retained)} retained, "
        f"{sum(p.fate == 'shift' for p in plants)} shifted, {len(leaks)} leaks"
    )
    assert leaks == []
    assert lost == []
    assert len(plants) > 600


def test_every_plantable_table_attribute_is_planted() -> None:
    _, plants = planted_dataset()
    top = {p.tag for p in plants if not p.path}
    sequences = {p.path[0] for p in plants if p.path}
    for row in table():
        if not all(c in "0123456789abcdef" for c in row["id"]) or row["id"][:4] in ("0000", "0002"):
            continue
        tag = int(row["id"], 16)
        if dictionary_has_tag(tag):
            assert tag in top or tag in sequences, row["name"]


def test_every_marker_is_found_in_the_original() -> None:
    """The search is not hollow: before anonymization every marker is where the leak test looks."""
    ds, plants = planted_dataset()
    data = _write(ds)
    decoded = dcmread(io.BytesIO(data))
    text = "\n".join(_strings(decoded))
    for plant in plants:
        element = _element(decoded, plant)
        assert element is not None and element.value == plant.value, plant.name
        if plant.search is not None:
            assert plant.search in data and plant.search.decode() in text, plant.name
