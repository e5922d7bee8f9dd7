"""TagPathSet: remove (blacklist) and keep (whitelist) what tag paths name, items and private blocks included."""

from __future__ import annotations

from generators import ct_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from slicebox_lab.dicom.tagpath import TagPath, TagPathSet


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _dataset() -> Dataset:
    ds = ct_dataset(PatientName="Doe^Jane", PatientAddress="1 Main St")
    ds.ReferencedStudySequence = Sequence(
        [
            _item(ReferencedSOPInstanceUID="1.2.3", PatientAddress="nested 0"),
            _item(ReferencedSOPInstanceUID="1.2.4", PatientAddress="nested 1"),
        ]
    )
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "private secret")
    block.add_new(0x11, "LO", "private other")
    return ds


def _set(*texts: str) -> TagPathSet:
    return TagPathSet(TagPath.parse(t) for t in texts)


def test_remove_is_rooted_top_level_only():
    ds = _dataset()
    assert _set("PatientAddress").remove_from(ds) == 1
    assert "PatientAddress" not in ds
    assert [item.PatientAddress for item in ds.ReferencedStudySequence] == ["nested 0", "nested 1"]


def test_remove_in_every_item_or_one_item():
    ds = _dataset()
    assert _set("ReferencedStudySequence[1].PatientAddress").remove_from(ds) == 1
    assert [("PatientAddress" in item) for item in ds.ReferencedStudySequence] == [True, False]
    ds = _dataset()
    assert _set("ReferencedStudySequence[*].PatientAddress").remove_from(ds) == 2
    assert all("PatientAddress" not in item for item in ds.ReferencedStudySequence)
    assert ds.PatientAddress == "1 Main St"


def test_a_path_naming_a_sequence_removes_it_whole():
    ds = _dataset()
    assert _set("ReferencedStudySequence").remove_from(ds) == 1
    assert "ReferencedStudySequence" not in ds


def test_remove_private_element_and_private_creator_block():
    ds = _dataset()
    assert _set("(0019,1010)").remove_from(ds) == 1
    assert Tag(0x0019, 0x1010) not in ds and ds[0x0019, 0x1011].value == "private other"
    ds = _dataset()
    assert _set("(0019,0010)").remove_from(ds) == 3  # the creator and its two elements
    assert not any(tag.group == 0x0019 for tag in ds.keys())


def test_remove_never_raises_on_data_that_does_not_fit():
    ds = _dataset()
    # PatientName is not a sequence: a path into its "items" matches nothing
    assert _set("PatientName[*].PatientID", "OtherPatientIDsSequence[0].PatientID").remove_from(ds) == 0
    assert ds.PatientName == "Doe^Jane"


def test_keep_only_keeps_listed_the_way_to_them_and_always():
    ds = _dataset()
    removed = _set("ReferencedStudySequence[0].ReferencedSOPInstanceUID", "Modality").keep_only(
        ds, always=[Tag(0x0008, 0x0018)]
    )
    assert removed > 10
    assert sorted(ds.dir()) == ["Modality", "ReferencedStudySequence", "SOPInstanceUID"]
    first, second = ds.ReferencedStudySequence
    assert first.dir() == ["ReferencedSOPInstanceUID"]
    assert len(second) == 0  # kept as an empty item: item positions keep their meaning
    assert ds.file_meta.TransferSyntaxUID  # file meta is not part of the dataset walk


def test_keep_only_star_and_index_combine():
    ds = _dataset()
    _set("ReferencedStudySequence[*].ReferencedSOPInstanceUID", "ReferencedStudySequence[1].PatientAddress").keep_only(
        ds
    )
    first, second = ds.ReferencedStudySequence
    assert first.dir() == ["ReferencedSOPInstanceUID"]
    assert sorted(second.dir()) == ["PatientAddress", "ReferencedSOPInstanceUID"]


def test_keep_only_whole_sequence_and_private_element_keeps_its_creator():
    ds = _dataset()
    _set("ReferencedStudySequence", "(0019,1011)").keep_only(ds)
    assert [item.PatientAddress for item in ds.ReferencedStudySequence] == ["nested 0", "nested 1"]
    assert ds[0x0019, 0x0010].value == "ACME 1.0"
    assert ds[0x0019, 0x1011].value == "private other"
    assert Tag(0x0019, 0x1010) not in ds


def test_keep_only_drops_a_non_sequence_a_path_goes_into():
    ds = _dataset()
    assert _set("PatientName[0].PatientID").keep_only(ds, always=[Tag(0x0010, 0x0020)]) > 0
    assert ds.dir() == ["PatientID"]


def test_names_whole_and_empty_set():
    paths = _set("PixelData", "ReferencedStudySequence[*].PatientAddress")
    assert paths.names_whole(Tag(0x7FE0, 0x0010))
    assert not paths.names_whole(Tag(0x0008, 0x1110))
    assert not TagPathSet([])
    assert TagPathSet([]).remove_from(_dataset()) == 0
