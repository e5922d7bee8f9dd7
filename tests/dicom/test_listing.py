"""attribute_listing: every element but the pixels, sequences flattened depth-first."""

from __future__ import annotations

import io
import os
import warnings

import pydicom
import pydicom.data
import pytest
from generators import ct_dataset, to_bytes
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from slicebox_lab.dicom import attribute_listing, parse_part10

KEYS = {"tag", "tag_path", "keyword", "name_path", "vr", "length", "depth", "values"}


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def ct_with_references(undefined_length: bool = False) -> Dataset:
    ds = ct_dataset()
    references = []
    for number in (1, 2):
        reference = Dataset()
        reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        reference.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        reference.PurposeOfReferenceCodeSequence = Sequence([code("121311", "Localizer")])
        references.append(reference)
    ds.ReferencedImageSequence = Sequence(references)
    ds["ReferencedImageSequence"].is_undefined_length = undefined_length
    block = ds.private_block(0x0029, "SLICEBOX TEST", create=True)
    block.add_new(0x10, "OB", bytes(range(100)))
    block.add_new(0x11, "OB", b"\x01\x02\x03\x04")
    return parse_part10(to_bytes(ds)).dataset


def by_path(listing: list[dict]) -> dict[str, dict]:
    return {entry["tag_path"]: entry for entry in listing}


def test_entries_have_the_agreed_keys() -> None:
    listing = attribute_listing(ct_with_references())
    assert listing
    assert all(set(entry) == KEYS for entry in listing)


def test_file_meta_comes_first() -> None:
    listing = attribute_listing(ct_with_references())
    groups = [entry["tag"][:4] for entry in listing if entry["depth"] == 0]
    assert groups[0] == "0002"
    assert groups.index("0008") > max(i for i, group in enumerate(groups) if group == "0002")
    assert by_path(listing)["0002,0010"]["values"] == ["1.2.840.10008.1.2.1"]


def test_pixel_data_is_left_out() -> None:
    listing = attribute_listing(ct_with_references())
    assert not any(entry["tag"].startswith("7FE0") for entry in listing)


@pytest.mark.parametrize("undefined_length", [False, True])
def test_nested_sequences_are_flattened_depth_first(undefined_length: bool) -> None:
    listing = attribute_listing(ct_with_references(undefined_length))
    entries = by_path(listing)
    sequence = entries["0008,1140"]
    assert sequence["vr"] == "SQ"
    assert sequence["values"] == []
    assert sequence["depth"] == 0
    assert sequence["keyword"] == "ReferencedImageSequence"
    if undefined_length:
        assert sequence["length"] == -1
    else:
        assert sequence["length"] > 0

    second = entries["0008,1140[1].0008,1155"]
    assert second["values"] == ["1.2.3.2"]
    assert second["depth"] == 1
    assert second["tag"] == "0008,1155"
    assert second["name_path"] == ["ReferencedImageSequence", "ReferencedSOPInstanceUID"]

    meaning = entries["0008,1140[1].0040,A170[0].0008,0104"]
    assert meaning["depth"] == 2
    assert meaning["values"] == ["Localizer"]
    assert meaning["name_path"] == ["ReferencedImageSequence", "PurposeOfReferenceCodeSequence", "CodeMeaning"]

    # depth-first: the first item's elements, then the second item's, then what follows the sequence
    paths = [entry["tag_path"] for entry in listing]
    order = [
        "0008,1140",
        "0008,1140[0].0008,1150",
        "0008,1140[0].0040,A170",
        "0008,1140[0].0040,A170[0].0008,0100",
        "0008,1140[1].0008,1150",
        "0008,1140[1].0040,A170[0].0008,0104",
        "0010,0010",
    ]
    assert [paths.index(path) for path in order] == sorted(paths.index(path) for path in order)


def test_values_and_lengths() -> None:
    entries = by_path(attribute_listing(ct_with_references()))
    name = entries["0010,0010"]
    assert name == {
        "tag": "0010,0010",
        "tag_path": "0010,0010",
        "keyword": "PatientName",
        "name_path": ["PatientName"],
        "vr": "PN",
        "length": 8,
        "depth": 0,
        "values": ["Doe^John"],
    }
    assert entries["0008,0008"]["values"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert entries["0028,0010"]["values"] == ["16"]
    assert entries["0028,0010"]["length"] == 2
    assert [float(value) for value in entries["0028,1052"]["values"]] == [-1024.0]
    # an element pydicom already converted (parse_part10 reads the UIDs) keeps its stored length
    assert entries["0008,0018"]["length"] % 2 == 0 and entries["0008,0018"]["length"] > 0


def test_binary_values() -> None:
    entries = by_path(attribute_listing(ct_with_references()))
    long_binary = entries["0029,1010"]
    assert long_binary["values"] == ["< Binary data >"]
    assert long_binary["length"] == 100
    assert long_binary["keyword"] == ""
    assert entries["0029,1011"]["values"] == ["01 02 03 04"]
    assert entries["0029,0010"]["values"] == ["SLICEBOX TEST"]
    assert entries["0002,0001"]["vr"] == "OB"


def test_non_ascii_values() -> None:
    ds = parse_part10(to_bytes(ct_dataset(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100")))
    assert by_path(attribute_listing(ds.dataset))["0010,0010"]["values"] == ["Müller^Jürgen"]


def test_a_dataset_made_in_memory_is_listed() -> None:
    ds = ct_dataset()
    ds.ReferencedImageSequence = Sequence([Dataset()])
    listing = by_path(attribute_listing(ds))
    assert listing["0010,0010"]["length"] == 8
    assert listing["0008,1140"]["values"] == []


def test_an_unreadable_value_is_listed_not_raised() -> None:
    ds = ct_dataset()
    ds.add_new(0x00280011, "US", 16)  # Columns
    data = bytearray(to_bytes(ds))
    offset = data.index(b"\x28\x00\x11\x00US")
    data[offset + 6 : offset + 8] = b"\x03\x00"  # a 3-byte US value
    data[offset + 8 : offset + 10] = b"\x10\x00"
    data.insert(offset + 10, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listed = pydicom.dcmread(io.BytesIO(bytes(data)))
        entry = by_path(attribute_listing(listed))["0028,0011"]
    assert entry["length"] == 3
    assert isinstance(entry["values"], list)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_bundled_file_is_listed() -> None:
    listed = 0
    for path in pydicom.data.get_testdata_files():
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        listing = attribute_listing(ds)
        assert all(set(entry) == KEYS for entry in listing), os.path.basename(path)
        assert all(isinstance(value, str) for entry in listing for value in entry["values"])
        listed += 1
    assert listed > 200
