"""Tag paths: parse every spelling, set nested values (creating items), remove, refuse nonsense clearly."""

from __future__ import annotations

import pytest
from generators import ct_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from slicebox_lab.dicom.tagpath import TagPath, apply_tag_values, parse_tag_values
from slicebox_lab.errors import InvalidInput


@pytest.mark.parametrize("text", ["PatientName", "(0010,0010)", "00100010", " PatientName "])
def test_spellings_of_a_top_level_tag(text: str):
    path = TagPath.parse(text)
    assert path.tag == Tag(0x0010, 0x0010) and path.steps == ()


def test_nested_path_with_items():
    path = TagPath.parse("ReferencedSeriesSequence[*].ReferencedInstanceSequence[2].ReferencedSOPInstanceUID")
    assert [(s.tag, s.item) for s in path.steps] == [(Tag(0x0008, 0x1115), -1), (Tag(0x0008, 0x114A), 2)]
    assert path.tag == Tag(0x0008, 0x1155)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty"),
        ("NoSuchKeyword", "not a DICOM keyword"),
        ("(0010,001G)", "is not a keyword"),
        ("ReferencedSeriesSequence.SeriesInstanceUID", "needs an item"),
        ("ReferencedSeriesSequence[0]", "must end with an attribute"),
        ("ReferencedSeriesSequence[999999999].SeriesInstanceUID", "too large"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(text: str, message: str):
    with pytest.raises(InvalidInput, match=message):
        TagPath.parse(text)


def test_set_replaces_inserts_and_removes():
    ds = ct_dataset(PatientName="Real^Name")
    assert TagPath.parse("PatientName").set(ds, "Anon^One") == 1
    assert ds.PatientName == "Anon^One"
    assert TagPath.parse("(0010,1010)").set(ds, "042Y") == 1  # PatientAge, absent before
    assert ds.PatientAge == "042Y"
    assert TagPath.parse("PatientAge").set(ds, None) == 1
    assert "PatientAge" not in ds
    assert TagPath.parse("PatientAge").set(ds, None) == 0
    TagPath.parse("Rows").set(ds, "32")
    assert ds.Rows == 32
    TagPath.parse("ImageType").set(ds, ["DERIVED", "SECONDARY"])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]


def test_set_inside_items_creates_the_next_item_and_wildcards_change_every_item():
    ds = Dataset()
    first, second = Dataset(), Dataset()
    first.SeriesInstanceUID, second.SeriesInstanceUID = "1.2.1", "1.2.2"
    ds.ReferencedSeriesSequence = Sequence([first, second])
    assert TagPath.parse("ReferencedSeriesSequence[*].SeriesInstanceUID").set(ds, "9.9") == 2
    assert [item.SeriesInstanceUID for item in ds.ReferencedSeriesSequence] == ["9.9", "9.9"]
    assert TagPath.parse("ReferencedSeriesSequence[2].SeriesInstanceUID").set(ds, "3.3") == 1
    assert len(ds.ReferencedSeriesSequence) == 3
    assert TagPath.parse("ReferencedSeriesSequence[7].SeriesInstanceUID").set(ds, "7.7") == 0  # no gap items
    assert TagPath.parse("OtherPatientIDsSequence[0].PatientID").set(ds, "X") == 1  # sequence created


def test_values_that_do_not_fit_the_vr_are_refused():
    with pytest.raises(InvalidInput, match="not an integer"):
        parse_tag_values([{"tagPath": "Rows", "value": "many"}])
    with pytest.raises(InvalidInput, match="binary"):
        parse_tag_values([{"tagPath": "PixelData", "value": "00"}])
    with pytest.raises(InvalidInput, match="names a sequence"):
        TagPath.parse("ReferencedSeriesSequence").set(Dataset(), "x")
    with pytest.raises(InvalidInput, match='"tagPath" and "value"'):
        parse_tag_values([{"tagPath": "PatientName"}])
    with pytest.raises(InvalidInput, match="JSON array"):
        parse_tag_values({"tagPath": "PatientName", "value": "x"})


def test_private_tags_need_a_vr_unless_present():
    ds = ct_dataset()
    values = parse_tag_values([{"tagPath": "(0019,1010)", "value": "x"}])
    with pytest.raises(InvalidInput, match='give its "vr"'):
        apply_tag_values(ds, values)
    apply_tag_values(ds, parse_tag_values([{"tagPath": "(0019,1010)", "value": "x", "vr": "LO"}]))
    assert ds[0x00191010].value == "x"
