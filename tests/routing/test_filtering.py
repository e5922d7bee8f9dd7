"""Tag filters on a real index: CRUD rules, combination per source, what a whitelist never removes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from generators import ct_dataset
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from slicebox_lab import dicom
from slicebox_lab.anonymization import keystore
from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import IndexedAttributes, Source
from slicebox_lab.routing import filtering

SCANNER = Source("scp", "ct-scanner")
OTHER = Source("scp", "mr-scanner")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    try:
        yield Index(engine)
    finally:
        engine.dispose()


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def planted() -> Dataset:
    """A CT with identifiers at the top level, inside sequence items and in a private block."""
    ds = ct_dataset(PatientName="Doe^Jane", PatientID="P7", PatientAddress="1 Main St", OperatorsName="Op^One")
    ds.RequestAttributesSequence = Sequence(
        [_item(RequestedProcedureID="RP1", PatientAddress="in item 0"), _item(RequestedProcedureID="RP2")]
    )
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "private secret")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "test profile"
    return ds


def _filter(index: Index, name: str, kind: str, *paths: str) -> int:
    return filtering.create_filter(index, {"name": name, "type": kind, "tagPaths": list(paths)}).id


def _attach(index: Index, filter_id: int, source: Source = SCANNER) -> int:
    body = {"sourceType": source.source_type, "sourceName": source.source_name, "filterId": filter_id}
    return filtering.create_association(index, body).id


def _reparsed(ds: Dataset) -> dicom.ParsedDicom:
    """What ingest does with a filtered dataset: write it again and validate it as any upload."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    parsed = dicom.parse_part10(buffer.getvalue())
    dicom.verify_pixel_data(parsed.dataset)
    return parsed


def test_no_filter_attached_is_none(index: Index):
    _filter(index, "unused", "BLACKLIST", "PatientAddress")
    assert filtering.filter_for_source(index, SCANNER) is None


def test_blacklist_removes_top_level_nested_and_private_elements(index: Index):
    filter_id = _filter(
        index,
        "no addresses",
        "BLACKLIST",
        "PatientAddress",
        "RequestAttributesSequence[*].PatientAddress",
        "(0019,1010)",
        "OperatorsName",
    )
    _attach(index, filter_id)
    ds = planted()
    tag_filter = filtering.filter_for_source(index, SCANNER)
    assert tag_filter is not None and tag_filter.apply(ds) is True
    assert "PatientAddress" not in ds and "OperatorsName" not in ds
    assert all("PatientAddress" not in item for item in ds.RequestAttributesSequence)
    assert [item.RequestedProcedureID for item in ds.RequestAttributesSequence] == ["RP1", "RP2"]
    assert Tag(0x0019, 0x1010) not in ds
    assert ds.PatientName == "Doe^Jane" and ds.StudyDescription == "Test study"
    assert tag_filter.apply(ds) is False  # nothing left to remove: the caller need not write again


def test_whitelist_keeps_only_listed_and_what_no_filter_removes(index: Index):
    _attach(index, _filter(index, "minimal", "WHITELIST", "Modality", "RequestAttributesSequence[0].PatientAddress"))
    ds = planted()
    meta = Dataset(ds.file_meta)
    tag_filter = filtering.filter_for_source(index, SCANNER)
    assert tag_filter is not None and tag_filter.apply(ds)
    always = {"SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
              "SpecificCharacterSet"}  # fmt: skip
    marker = {"PatientIdentityRemoved", "DeidentificationMethod"}
    assert set(ds.dir()) == always | marker | {"Modality", "RequestAttributesSequence"}
    assert [item.dir() for item in ds.RequestAttributesSequence] == [["PatientAddress"], []]
    assert "PixelData" not in ds and "Rows" not in ds  # pixels not listed: dropped with their description
    assert not any(tag.group == 0x0019 for tag in ds.keys())  # private block not listed
    assert Dataset(ds.file_meta) == meta  # file meta untouched
    parsed = _reparsed(ds)
    attributes: IndexedAttributes = dicom.extract_attributes(parsed)
    assert attributes.patient["PatientName"] == "Doe^Jane" and attributes.image["SOPInstanceUID"] == ds.SOPInstanceUID
    assert attributes.study["StudyDescription"] == ""
    assert keystore.is_anonymous(parsed.dataset)  # still re-identifiable (Slicebox's whitelist lost this)


def test_whitelist_keeping_pixel_data_keeps_the_pixel_description(index: Index):
    _attach(index, _filter(index, "pixels", "WHITELIST", "PixelData"))
    ds = planted()
    pixels = ds.PixelData
    tag_filter = filtering.filter_for_source(index, SCANNER)
    assert tag_filter is not None and tag_filter.apply(ds)
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):  # fmt: skip
        assert keyword in ds, keyword
    assert "RescaleSlope" not in ds and "StudyDate" not in ds
    parsed = _reparsed(ds)
    assert parsed.dataset.PixelData == pixels
    assert parsed.dataset.pixel_array.shape == (16, 16)


def test_blacklist_then_whitelist_from_several_filters(index: Index):
    _attach(index, _filter(index, "keep", "WHITELIST", "RequestAttributesSequence", "StudyDate"))
    _attach(index, _filter(index, "drop", "BLACKLIST", "RequestAttributesSequence[*].PatientAddress"))
    _attach(index, _filter(index, "keep more", "WHITELIST", "StudyDescription"))
    ds = planted()
    tag_filter = filtering.filter_for_source(index, SCANNER)
    assert tag_filter is not None and tag_filter.apply(ds)
    assert ds.StudyDate == "20240102" and ds.StudyDescription == "Test study"
    assert [item.dir() for item in ds.RequestAttributesSequence] == [["RequestedProcedureID"]] * 2
    assert "Modality" not in ds


def test_filter_of_source_a_does_not_touch_source_b(index: Index):
    _attach(index, _filter(index, "drop", "BLACKLIST", "PatientAddress"), SCANNER)
    assert filtering.filter_for_source(index, OTHER) is None
    assert filtering.filter_for_source(index, Source("directory", "ct-scanner")) is None  # same name, other type
    ds = planted()
    tag_filter = filtering.filter_for_source(index, SCANNER)
    assert tag_filter is not None and tag_filter.apply(ds) and "PatientAddress" not in ds


def test_changes_apply_to_the_next_image_without_restart(index: Index):
    filter_id = _filter(index, "drop", "BLACKLIST", "PatientAddress")
    assert filtering.filter_for_source(index, SCANNER) is None
    association = _attach(index, filter_id)
    first = filtering.filter_for_source(index, SCANNER)
    assert first is not None
    assert filtering.filter_for_source(index, SCANNER) is first  # cached

    path = filtering.add_tag_path(index, filter_id, {"tagPath": "OperatorsName"})
    ds = planted()
    updated = filtering.filter_for_source(index, SCANNER)
    assert updated is not None and updated.apply(ds)
    assert "OperatorsName" not in ds and "PatientAddress" not in ds

    filtering.delete_tag_path(index, filter_id, path.id)
    ds = planted()
    updated = filtering.filter_for_source(index, SCANNER)
    assert updated is not None and updated.apply(ds)
    assert ds.OperatorsName == "Op^One"

    filtering.delete_association(index, association)
    assert filtering.filter_for_source(index, SCANNER) is None
    _attach(index, filter_id)
    filtering.delete_filter(index, filter_id)  # cascades to the association
    assert filtering.filter_for_source(index, SCANNER) is None
    assert filtering.list_associations(index) == []


def test_a_second_index_object_sees_changes_after_its_cache_is_cleared(index: Index):
    """The cache is per Index object: a fresh one (a restarted server) reads what is stored."""
    _attach(index, _filter(index, "drop", "BLACKLIST", "PatientAddress"))
    fresh = Index(index.engine)
    assert filtering.filter_for_source(fresh, SCANNER) is not None


def test_paths_are_stored_canonical_and_unique(index: Index):
    created = filtering.create_filter(
        index,
        {"name": "f", "type": "blacklist", "tagPaths": ["(0010,1040)", "(0008,1110)[*].00081155", "(0019,1010)"]},
    )
    assert created.type == "BLACKLIST"
    assert [p.tag_path for p in created.tag_paths] == [
        "PatientAddress",
        "ReferencedStudySequence[*].ReferencedSOPInstanceUID",
        "(0019,1010)",
    ]
    with pytest.raises(Conflict, match="already has the tag path"):
        filtering.add_tag_path(index, created.id, {"tagPath": "PatientAddress"})
    with pytest.raises(Conflict, match="listed twice"):
        filtering.create_filter(index, {"name": "g", "type": "BLACKLIST", "tagPaths": ["PatientAddress", "00101040"]})
    with pytest.raises(Conflict, match="already exists"):
        filtering.create_filter(index, {"name": " f ", "type": "WHITELIST"})
    assert filtering.get_filter(index, created.id).to_json()["tagPaths"][0] == {
        "id": created.tag_paths[0].id,
        "tagPath": "PatientAddress",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"type": "BLACKLIST"}, '"name"'),
        ({"name": "x" * 201, "type": "BLACKLIST"}, "at most 200"),
        ({"name": "x", "type": "GREYLIST"}, "WHITELIST or BLACKLIST"),
        ({"name": "x", "type": "BLACKLIST", "tagPaths": "PatientName"}, "JSON array"),
        ({"name": "x", "type": "BLACKLIST", "tagPaths": ["NoSuchKeyword"]}, "not a DICOM keyword"),
        ({"name": "x", "type": "BLACKLIST", "tagPaths": ["SOPInstanceUID"]}, "cannot remove SOPInstanceUID"),
        ({"name": "x", "type": "BLACKLIST", "tagPaths": ["Rows"]}, "cannot remove Rows"),
        ({"name": "x", "type": "BLACKLIST", "tagPaths": ["PatientIdentityRemoved"]}, "cannot remove"),
        ({"name": "x", "type": "WHITELIST", "tagPaths": ["TransferSyntaxUID"]}, "group 0002"),
    ],
)
def test_bad_filters_are_refused_with_the_reason(index: Index, body: object, message: str):
    with pytest.raises(InvalidInput, match=message):
        filtering.create_filter(index, body)
    assert filtering.list_filters(index) == []


def test_a_blacklist_may_remove_protected_names_inside_items(index: Index):
    created = filtering.create_filter(
        index, {"name": "x", "type": "BLACKLIST", "tagPaths": ["ReferencedImageSequence[*].ReferencedSOPInstanceUID"]}
    )
    assert len(created.tag_paths) == 1


def test_associations_by_name_or_by_source_id(index: Index):
    filter_id = _filter(index, "drop", "BLACKLIST", "PatientAddress")
    created = filtering.create_association(
        index, {"sourceType": "scp", "sourceName": "ct-scanner", "filterId": filter_id}
    )
    assert created.to_json() == {
        "id": created.id,
        "sourceType": "scp",
        "sourceName": "ct-scanner",
        "sourceId": None,
        "filterId": filter_id,
        "filterName": "drop",
    }
    with pytest.raises(Conflict, match="already attached"):
        _attach(index, filter_id)
    # a source the index knows (it sent an image) can be named by its id
    attributes = dicom.extract_attributes(_reparsed(planted()))
    index.ingest(attributes, OTHER, "key-1", 100)
    other_id = next(s.source_id for s in index.sources() if s.source_name == "mr-scanner")
    by_id = filtering.create_association(index, {"sourceType": "scp", "sourceId": other_id, "filterId": filter_id})
    assert (by_id.source_name, by_id.source_id) == ("mr-scanner", other_id)
    assert filtering.filter_for_source(index, OTHER) is not None
    with pytest.raises(InvalidInput, match="is of type 'scp'"):
        filtering.create_association(index, {"sourceType": "box", "sourceId": other_id, "filterId": filter_id})
    with pytest.raises(InvalidInput, match="is named"):
        filtering.create_association(
            index, {"sourceType": "scp", "sourceId": other_id, "sourceName": "x", "filterId": filter_id}
        )
    with pytest.raises(NotFound, match="source 999 not found"):
        filtering.create_association(index, {"sourceType": "scp", "sourceId": 999, "filterId": filter_id})
    with pytest.raises(NotFound, match="tag filter 999 not found"):
        filtering.create_association(index, {"sourceType": "scp", "sourceName": "a", "filterId": 999})
    with pytest.raises(InvalidInput, match="sourceType"):
        filtering.create_association(index, {"sourceType": "pacs", "sourceName": "a", "filterId": filter_id})
    with pytest.raises(InvalidInput, match="sourceName"):
        filtering.create_association(index, {"sourceType": "scp", "filterId": filter_id})
    with pytest.raises(InvalidInput, match="must be an integer"):
        filtering.create_association(index, {"sourceType": "scp", "sourceName": "a", "filterId": "1"})
    assert [a.source_name for a in filtering.list_associations(index)] == ["ct-scanner", "mr-scanner"]


def test_forget_source_detaches_its_filters(index: Index):
    filter_id = _filter(index, "drop", "BLACKLIST", "PatientAddress")
    _attach(index, filter_id, SCANNER)
    _attach(index, filter_id, OTHER)
    assert filtering.filter_for_source(index, SCANNER) is not None
    assert filtering.forget_source(index, "scp", "ct-scanner") == 1
    assert filtering.filter_for_source(index, SCANNER) is None
    assert filtering.filter_for_source(index, OTHER) is not None


def test_unknown_ids_are_not_found(index: Index):
    with pytest.raises(NotFound):
        filtering.get_filter(index, 5)
    with pytest.raises(NotFound):
        filtering.delete_filter(index, 2**70)
    filter_id = _filter(index, "drop", "BLACKLIST", "PatientAddress")
    with pytest.raises(NotFound, match="tag path 9 of tag filter"):
        filtering.delete_tag_path(index, filter_id, 9)
    with pytest.raises(NotFound):
        filtering.delete_association(index, 3)
    with pytest.raises(InvalidInput, match='needs "tagPath"'):
        filtering.add_tag_path(index, filter_id, {"path": "PatientAddress"})
