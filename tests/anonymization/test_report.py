"""The review report: it says, for every path, what anonymize() really does to it, and names the residual risks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas
import pytest
from generators import ct_dataset
from planted import planted_dataset, shift
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, SecondaryCaptureImageStorage

from slicebox_lab.anonymization import Option, PixelMask, Profile, PseudonymKeys, anonymize
from slicebox_lab.anonymization.report import COLUMNS, OUTCOMES, Report, ReportRow, element_name, report_frame, review
from slicebox_lab.errors import AnonymizationRefused

KEYS = PseudonymKeys(b"report-test-secret-0123456789abcdef")

OPTION_SETS = [
    pytest.param(frozenset(), id="basic"),
    pytest.param(frozenset({Option.RETAIN_SAFE_PRIVATE, Option.RETAIN_INSTITUTION_IDENTITY}), id="safe-private+inst"),
    pytest.param(
        frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_DEVICE_IDENTITY}), id="modified-dates+dev"
    ),
    pytest.param(
        frozenset({Option.RETAIN_UIDS, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.RETAIN_LONGITUDINAL_FULL_DATES}),
        id="uids+patient+full-dates",
    ),
    pytest.param(
        frozenset({Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}), id="clean"
    ),
]

Location = tuple[tuple[int, int], ...]  # (sequence tag, item index) from the root down


def _walk(ds: Dataset, prefix: str = "", where: Location = ()) -> Iterator[tuple[str, Location, DataElement]]:
    """(report path, location of the parent dataset, element) of every element at every depth."""
    for elem in ds:
        path = f"{prefix}{element_name(ds, elem)}"
        yield path, where, elem
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield from _walk(item, f"{path}[*].", (*where, (int(elem.tag), index)))


def _find(ds: Dataset, where: Location, tag: Any) -> DataElement | None:
    target = ds
    for seq, index in where:
        if seq not in target or len(target[seq].value) <= index:
            return None
        target = target[seq].value[index]
    return target.get(tag)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, MultiValue | list) else value


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == b"" or (isinstance(value, Sequence | list) and len(value) == 0)


def _agrees(outcome: str, before: DataElement, after: DataElement | None, offset: int) -> bool:
    """Whether what anonymize() did (``before`` → ``after``) is what the report's ``outcome`` says."""
    if outcome == "removed":
        return after is None
    if after is None:
        return False
    old, new = _plain(before.value), _plain(after.value)
    if before.VR == "SQ":
        if outcome == "emptied":
            return len(new) == 0
        return outcome in ("kept", "cleaned") and len(new) == len(old)
    if outcome == "emptied":
        return _empty(new)
    if outcome == "kept":
        return new == old
    if outcome in ("dummy", "pseudonym"):
        return not _empty(new) and new != old
    if outcome == "uid-mapped":
        values = new if isinstance(new, list) else [new]
        return new != old and all(UID(str(v)).is_valid for v in values)
    if outcome == "date-shifted":
        values = old if isinstance(old, list) else [old]
        expected = [shift(str(v), offset) for v in values]
        return new == (expected if isinstance(old, list) else expected[0])
    return outcome == "cleaned"


def assert_report_matches_anonymize(ds: Dataset, options: frozenset[Option]) -> Report:
    """Every path of the report against what anonymize() did to each element there, both ways."""
    profile = Profile(options)
    report = review([ds], profile)
    out = anonymize(ds, profile, KEYS)
    offset = KEYS.date_offset_days(str(ds.get("PatientName", "")), str(ds.get("PatientID", "")))
    rows: dict[str, ReportRow] = {}
    for row in report.rows:
        assert row.path not in rows, f"one image, one fate: {row.path} twice"
        rows[row.path] = row

    wrong = []
    for path, where, elem in _walk(ds):
        row = rows.get(path)
        if row is None:
            wrong.append(f"{path}: not in the report")
        elif row.outcome == "added":
            assert _find(out, where, elem.tag) is not None
        elif not _agrees(row.outcome, elem, _find(out, where, elem.tag), offset):
            wrong.append(f"{path}: report says {row.outcome} ({row.decided_by}), anonymize() did otherwise")
    output_paths = set()
    for path, _, _elem in _walk(out):
        output_paths.add(path)
        row = rows.get(path)
        if row is None or row.outcome == "removed":
            wrong.append(f"{path} is in the output, the report says {row and row.outcome}")
    for tag in ds.file_meta.keys():
        if tag.element == 0:
            continue
        row = rows[element_name(ds.file_meta, ds.file_meta[tag])]
        present = tag in out.file_meta
        if row.outcome == "removed":
            assert not present, row
        elif row.outcome == "dummy":
            assert present, row
        else:
            assert _agrees(row.outcome, ds.file_meta[tag], out.file_meta.get(tag), offset), row
    added = [row for row in report.rows if row.outcome == "added"]
    assert {row.keyword for row in added} >= {
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "LongitudinalTemporalInformationModified",
    }
    for row in added:
        assert row.path in output_paths, row
    assert not wrong, "\n".join(wrong)
    return report


@pytest.mark.parametrize("options", OPTION_SETS)
def test_planted_dataset_report_agrees_with_anonymize(options: frozenset[Option]) -> None:
    ds, _ = planted_dataset()
    report = assert_report_matches_anonymize(ds, options)
    # the planted dataset holds every Table E.1-1 attribute: the report covers them all
    assert len(report.rows) > 600
    assert report.images == 1
    assert all(row.outcome in OUTCOMES and row.occurrences == 1 for row in report.rows)


def test_odd_elements_agree_with_anonymize() -> None:
    """Unknown public, creator-less private, group length, a kept standard attribute, no PatientName."""
    ds = ct_dataset(rows=4, columns=4)
    del ds.PatientName
    ds.add(DataElement(0x0008FFF0, "LO", "who knows"))  # no dictionary knows it
    ds.add(DataElement(0x00111050, "LO", "orphan"))  # private, no creator
    ds.add(DataElement(0x00200000, "UL", 4))  # group length
    ds.ImageComments = "free text"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    for options in (frozenset(), frozenset({Option.RETAIN_SAFE_PRIVATE})):
        report = assert_report_matches_anonymize(ds, options)
        by_path = {row.path: row for row in report.rows}
        assert by_path["(0008,FFF0)"].decided_by == "unknown public attribute: removed"
        assert by_path["(0011,1050)"].decided_by == "private: no private creator"
        assert by_path["(0020,0000)"].decided_by == "group length"
        assert by_path["ImageType"].decided_by == "not in Table E.1-1: kept"
        assert by_path["ImageType"].risk is None  # a code string, not free text
        assert by_path["PatientName"].outcome == "added"  # the pseudonym is written anyway
        assert by_path["PatientID"].outcome == "pseudonym"


def test_cleaned_sequence_agrees_with_anonymize() -> None:
    """Under the Clean options a structured-content sequence is kept and its items are cleaned, at every depth."""
    ds = ct_dataset(StudyDescription="CT chest for John Smith")
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "Smith has a nodule"
    item.PersonName = "Doe^J"
    code = Dataset()
    code.CodeValue = "121071"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([code])
    ds.ContentSequence = Sequence([item])
    options = frozenset({Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_DESCRIPTORS})
    rows = _rows(assert_report_matches_anonymize(ds, options))
    assert rows["ContentSequence"].decided_by == "Clean Structured Content Option (C)"
    assert rows["StudyDescription"].decided_by == "Clean Descriptors Option (C)"
    for path in ("StudyDescription", "ContentSequence[*].TextValue"):
        assert rows[path].outcome == "cleaned"
        assert rows[path].risk and "cleaned heuristically" in rows[path].risk
    basic = _rows(assert_report_matches_anonymize(ds, frozenset()))
    assert basic["ContentSequence"].outcome == "emptied"
    assert basic["ContentSequence[*].TextValue"].decided_by == "inside ContentSequence (emptied)"


def _rows(report: Report) -> dict[str, ReportRow]:
    return {row.path: row for row in report.rows}


def test_retain_institution_identity_leaves_a_risk() -> None:
    ds = ct_dataset(InstitutionName="St. Elsewhere", InstitutionAddress="1 Main St")
    basic = _rows(review([ds], Profile()))
    assert basic["InstitutionName"].outcome == "dummy"  # X/Z/D: the last alternative, valid for any Type
    assert basic["InstitutionName"].decided_by == "basic profile (X/Z/D)"
    assert basic["InstitutionAddress"].outcome == "removed"
    assert basic["InstitutionAddress"].decided_by == "basic profile (X)"
    assert basic["InstitutionName"].risk is None

    report = review([ds], Profile(frozenset({Option.RETAIN_INSTITUTION_IDENTITY})))
    row = _rows(report)["InstitutionName"]
    assert (row.outcome, row.decided_by) == ("kept", "Retain Institution Identity Option (K)")
    assert row.risk and "Retain Institution Identity Option" in row.risk
    assert {"path": "InstitutionName", "outcome": "kept", "risk": row.risk} in report.risks
    assert row.tag == "(0008,0080)" and row.vr == "LO" and row.keyword == "InstitutionName"


def test_retain_safe_private_keeps_the_creator_with_a_risk() -> None:
    ds = ct_dataset()
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x9E, "LO", "pulse sequence")  # in Table E.3.10-1
    block.add_new(0xF0, "LO", "something else")  # not in it
    other = ds.private_block(0x0021, "ACME 1.0", create=True)
    other.add_new(0x01, "LO", "secret")

    basic = _rows(review([ds], Profile()))
    assert basic["(0019,00xx) GEMS_ACQU_01"].outcome == "removed"
    assert basic["(0019,xx9E) GEMS_ACQU_01"].decided_by == "basic profile (X): private"

    rows = _rows(review([ds], Profile(frozenset({Option.RETAIN_SAFE_PRIVATE}))))
    creator = rows["(0019,00xx) GEMS_ACQU_01"]
    assert (creator.outcome, creator.keyword, creator.tag) == ("kept", "PrivateCreator", "(0019,00xx)")
    assert creator.risk and "private creator kept" in creator.risk
    safe = rows["(0019,xx9E) GEMS_ACQU_01"]
    assert (safe.outcome, safe.decided_by) == ("kept", "safe private attribute (Table E.3.10-1)")
    assert safe.keyword == "Internal Pulse Sequence Name" and safe.risk
    assert rows["(0019,xxF0) GEMS_ACQU_01"].decided_by == "private: not in Table E.3.10-1"
    assert rows["(0021,00xx) ACME 1.0"].outcome == "removed"
    assert rows["(0021,xx01) ACME 1.0"].outcome == "removed"


def test_pixel_flags_are_risks_counted_over_images() -> None:
    burned = ct_dataset(BurnedInAnnotation="YES")
    clean = ct_dataset(BurnedInAnnotation="NO")
    face = ct_dataset(RecognizableVisualFeatures="YES")
    capture = ct_dataset()
    capture.SOPClassUID = SecondaryCaptureImageStorage
    report = review([burned, clean, face, capture], Profile())
    rows = _rows(report)
    assert report.images == 4
    assert rows["BurnedInAnnotation"].occurrences == 2
    assert rows["BurnedInAnnotation"].risk and "YES in 1 image" in rows["BurnedInAnnotation"].risk
    assert rows["RecognizableVisualFeatures"].risk and "YES in 1 image" in rows["RecognizableVisualFeatures"].risk
    assert rows["SOPClassUID"].risk and "1 secondary capture" in rows["SOPClassUID"].risk
    assert rows["SOPClassUID"].occurrences == 4
    assert rows["PatientIdentityRemoved"].occurrences == 4

    assert report.burned_in == {"refused": 2, "masked": 0, "kept": 0}  # YES, and the SC without a NO
    assert "2 refused by the anonymizer" in rows["BurnedInAnnotation"].risk

    quiet = review([clean], Profile())
    assert _rows(quiet)["BurnedInAnnotation"].risk is None and _rows(quiet)["SOPClassUID"].risk is None
    assert quiet.to_json()["summary"]["burned_in"] == {"refused": 0, "masked": 0, "kept": 0}

    kept = review([burned, capture], Profile(burned_in="keep"))
    assert kept.burned_in == {"refused": 0, "masked": 0, "kept": 2}
    assert "2 sent with their pixels as they are" in (_rows(kept)["SOPClassUID"].risk or "")
    mask = PixelMask.from_json(
        {"name": "CT banner", "match": {"Modality": "CT"}, "rectangles": [{"x": 0, "y": 0, "width": 4, "height": 2}]}
    )
    masked = review([burned, capture], Profile(pixel_masks=(mask,)))
    assert masked.burned_in == {"refused": 0, "masked": 2, "kept": 0}
    lenient = review([burned, capture], Profile(secondary_capture_burned_in=False))
    assert lenient.burned_in == {"refused": 1, "masked": 0, "kept": 0}

    # what the report says the anonymizer does with them, it does (headers only: as if the pixels were not
    # read; the REST report reads them, see tests/anonymization/test_burned_in_text.py)
    with pytest.raises(AnonymizationRefused):
        anonymize(burned, Profile(), KEYS)
    with pytest.raises(AnonymizationRefused):
        anonymize(capture, Profile(detect_text=False), KEYS)
    assert anonymize(capture, Profile(secondary_capture_burned_in=False), KEYS).PatientIdentityRemoved == "YES"
    assert anonymize(burned, Profile(burned_in="keep"), KEYS).PixelData == burned.PixelData
    assert anonymize(burned, Profile(pixel_masks=(mask,)), KEYS).PixelData != burned.PixelData


def test_decisions_name_the_option_or_rule() -> None:
    ds = ct_dataset(StudyDate="20240102", StudyTime="101010", DeviceSerialNumber="SN1", PatientSex="F")
    ds.InstanceCreationDate = "20240102"
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"
    modified = Profile(frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS}))
    rows = _rows(review([ds], modified))
    title = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.title
    assert (rows["StudyDate"].outcome, rows["StudyDate"].decided_by) == ("date-shifted", f"{title} (C)")
    assert rows["StudyTime"].outcome == "kept" and rows["StudyTime"].decided_by.startswith(f"{title} (C)")
    assert (rows["DeviceSerialNumber"].outcome, rows["DeviceSerialNumber"].decided_by) == (
        "dummy",
        "basic profile (X/Z/D)",
    )
    assert rows["PatientSex"].decided_by == "Retain Patient Characteristics Option (K)"
    assert rows["PatientSex"].risk  # a retained text attribute
    assert rows["ReferencedSeriesSequence"].decided_by == "not in Table E.1-1: kept"
    nested = rows["ReferencedSeriesSequence[*].SeriesInstanceUID"]
    assert (nested.outcome, nested.decided_by) == ("uid-mapped", "basic profile (U)")
    assert rows["PatientName"].outcome == "pseudonym"

    device = _rows(review([ds], Profile(frozenset({Option.RETAIN_DEVICE_IDENTITY}))))
    assert device["DeviceSerialNumber"].decided_by == "Retain Device Identity Option (K)"
    assert device["StudyDate"].decided_by.startswith("basic profile (")


def test_json_and_dataframe() -> None:
    datasets = [ct_dataset(InstitutionName="Here") for _ in range(3)]
    report = review(datasets, Profile(frozenset({Option.RETAIN_INSTITUTION_IDENTITY, Option.RETAIN_UIDS})))
    data = json.loads(json.dumps(report.to_json()))  # JSON-able as it is
    summary = data["summary"]
    assert summary["images"] == 3
    assert summary["profile"]["options"] == ["RETAIN_UIDS", "RETAIN_INSTITUTION_IDENTITY"]  # Option order
    assert summary["profile"]["titles"][0] == "Basic Application Confidentiality Profile"
    assert set(summary["outcomes"]) == set(OUTCOMES)
    assert sum(summary["outcomes"].values()) == len(data["attributes"])
    assert any(risk["path"] == "InstitutionName" for risk in summary["risks"])
    assert set(data["attributes"][0]) == set(COLUMNS)

    frame = report_frame(data)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(report.rows)
    assert frame.loc[frame.path == "StudyInstanceUID", "outcome"].item() == "kept"  # Retain UIDs
    assert (frame.occurrences[frame.path == "StudyInstanceUID"] == 3).all()
    assert report.to_dataframe().equals(frame)

    empty = report_frame(review([], Profile()).to_json())
    assert list(empty.columns) == list(COLUMNS) and empty.empty
