"""The C (clean) action: the allow-list scrubber, which attributes it applies to, and cleaned sequences."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from generators import ct_dataset
from planted import planted_dataset, plants_for
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from slicebox_lab.anonymization import Action, Option, Profile, PseudonymKeys, anonymize
from slicebox_lab.anonymization.clean import (
    build_vocabulary,
    clean_text,
    identifying_tokens,
    known_code,
    vocabulary,
)

KEYS = PseudonymKeys(b"clean-test-secret-0123456789abcdef")
DESCRIPTORS = Profile(frozenset({Option.CLEAN_DESCRIPTORS}))
STRUCTURED = Profile(frozenset({Option.CLEAN_STRUCTURED_CONTENT}))
GRAPHICS = Profile(frozenset({Option.CLEAN_GRAPHICS}))


@pytest.mark.parametrize(
    "text",
    [
        "CT HEAD W/O CONTRAST",
        "T1 MPRAGE SAG 1mm",
        "AX FLAIR",
        "DWI b800",
        "CHEST ABDOMEN PELVIS C+ 5mm",
        "Thorax 2.0 B70",
        "3D T2 SPACE COR",
        "follow-up",
    ],
)
def test_known_imaging_text_is_unchanged(text: str) -> None:
    assert clean_text(text) == text


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Dr Smith 12345 follow-up", "Dr follow-up"),
        ("CT HEAD 20240131", "CT HEAD"),
        ("MRK0123 BRAIN", "BRAIN"),
        ("call 555 123 4567", ""),  # a run of small numbers is still a phone number
        ("(CONTRAST), W/ 3 mm", "(CONTRAST), W/ 3 mm"),
        ("   ", ""),
    ],
)
def test_unknown_tokens_and_long_numbers_are_removed(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned


def test_banned_tokens_go_even_if_they_are_vocabulary_words() -> None:
    assert {"white", "brain"} <= vocabulary()
    assert clean_text("MR BRAIN WHITE MATTER", frozenset({"white", "brain"})) == "MR MATTER"


def test_no_planted_marker_survives_cleaning() -> None:
    _, plants = planted_dataset()
    for plant in plants:
        if plant.search is not None:
            marker = plant.search.decode()
            assert marker not in clean_text(f"CT {marker} HEAD {marker.lower()}"), marker


@pytest.mark.parametrize(
    "options",
    [
        frozenset({Option.CLEAN_DESCRIPTORS}),
        frozenset({Option.CLEAN_STRUCTURED_CONTENT}),
        frozenset({Option.CLEAN_GRAPHICS}),
        frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS}),
        frozenset({Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}),
    ],
    ids=lambda options: "+".join(sorted(option.name for option in options)),
)
def test_cleaned_planted_attributes_are_kept_without_their_marker(options: frozenset[Option]) -> None:
    """The leak test proves no marker survives; this proves cleaned attributes are cleaned, not removed."""
    ds, raw = planted_dataset()
    cleaned = [plant for plant in plants_for(raw, options) if plant.fate == "clean"]
    out = dcmread(io.BytesIO(_bytes(anonymize(ds, Profile(options), KEYS))))
    for plant in cleaned:
        target = out
        for tag in plant.path:
            target = target[tag].value[0]
        assert plant.tag in target, plant.name
        assert plant.search is not None and plant.search.decode() not in str(target[plant.tag].value)
    if options & {Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS}:
        assert cleaned
    if Option.CLEAN_STRUCTURED_CONTENT in options:  # the planted items of cleaned sequences are kept
        assert len(out.ContentSequence) == 1 and len(out.AcquisitionContextSequence) == 1


def test_identifying_tokens_come_from_names_ids_and_institutions_at_any_depth() -> None:
    ds = ct_dataset()
    ds.PatientName = "White^Brain^J"
    ds.PatientID = "MRN-4711"
    ds.AccessionNumber = "ACC99"
    ds.InstitutionName = "St Mary Hospital"
    ds.StudyDescription = "CT HEAD"  # a descriptor, not an identifier: its words stay usable
    item = Dataset()
    item.PersonName = "Jones^Bob"
    ds.ContentSequence = Sequence([item])
    banned = identifying_tokens(ds)
    assert {"white", "brain", "j", "jones", "bob", "mrn-4711", "4711", "acc99", "st", "mary", "hospital"} <= banned
    assert "head" not in banned and "ct" not in banned


VOCABULARY_FILE = Path(__file__).parents[2] / "slicebox_lab" / "anonymization" / "tables" / "clean_vocabulary.txt"


def test_the_vocabulary_file_is_the_generated_one() -> None:
    """tables/clean_vocabulary.txt is made by ``python -m slicebox_lab.anonymization.clean --build``."""
    shipped, built = vocabulary(), frozenset(build_vocabulary())
    header = VOCABULARY_FILE.read_text(encoding="utf-8").splitlines()[1]
    if header == f"# from pydicom {pydicom.__version__}":
        assert shipped == built, "rebuild: python -m slicebox_lab.anonymization.clean --build"
    else:  # another pydicom release: its dictionary may add or rename a few words, not more
        assert len(shipped & built) >= 0.95 * len(shipped), "rebuild: python -m slicebox_lab.anonymization.clean"
    assert not {"smith", "jones", "john", "mary", "hodgkin"} & vocabulary()  # names and eponyms stay out


def test_known_codes() -> None:
    assert known_code("DCM", "121071")  # Finding
    assert known_code("SRT", "T-A0100") or known_code("SCT", "12738006")  # Brain
    assert not known_code("DCM", "4711")
    assert not known_code("99LOCAL", "121071")


def test_which_attributes_are_cleaned() -> None:
    assert DESCRIPTORS.action(Tag("StudyDescription")) is Action.C
    assert DESCRIPTORS.action(Tag("StudyDescription"), vr="UN") is Action.X  # not text: basic action
    assert DESCRIPTORS.action(Tag("MakerNote")) is Action.X  # OB: nothing to clean it with
    assert DESCRIPTORS.action(Tag("RequestAttributesSequence")) is Action.C  # sequence: kept, items cleaned
    assert Profile().action(Tag("StudyDescription")) is Action.X
    assert STRUCTURED.action(Tag("ContentSequence")) is Action.C
    assert STRUCTURED.action(Tag("StudyDescription")) is Action.X  # another option's C
    assert GRAPHICS.action(Tag("GraphicAnnotationSequence")) is Action.C
    assert GRAPHICS.action(Tag(0x6000, 0x4000)) is Action.X  # overlay comments go with the overlay data
    assert Profile(frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS})).action(Tag("Allergies")) is Action.C
    # unnamed text is kept, except below a cleaned sequence
    assert STRUCTURED.action(Tag("TextValue")) is Action.K
    assert STRUCTURED.action(Tag("TextValue"), cleaning=True) is Action.C
    assert STRUCTURED.action(Tag("CodeMeaning"), cleaning=True) is Action.C
    assert STRUCTURED.action(Tag("ReferencedSOPClassUID"), cleaning=True) is Action.K
    # dates keep their rule: shifted under Modified Dates, whatever a clean option says
    both = Profile(frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    assert both.action(Tag("StudyDate")) is Action.C
    assert DESCRIPTORS.action(Tag("StudyDate")) is Action.Z


def test_a_retain_of_another_option_wins_over_clean() -> None:
    profile = Profile(frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_DEVICE_IDENTITY}))
    row = {"basicProfile": "X", "cleanDescOpt": "C", "rtnDevIdOpt": "K"}  # no 2024e row has both
    assert profile._resolve(row, Action.X) is Action.K
    assert Profile(frozenset({Option.CLEAN_DESCRIPTORS}))._resolve(row, Action.X) is Action.C


def test_clean_descriptors_anonymize() -> None:
    ds = ct_dataset()
    ds.PatientName = "White^Brain"
    ds.StudyDescription = "MR BRAIN WHITE MATTER 3D T1"
    ds.SeriesDescription = "T1 MPRAGE SAG 1mm"
    ds.ImageComments = "Dr Smith 12345 follow-up"
    ds.ProtocolName = "MRK0123"  # X/D: a clean to nothing gives the dummy
    ds.AdmittingDiagnosesDescription = "Smith 4711"  # X: a clean to nothing gives zero length
    ds.ReasonForTheAttributeModification = "COERCE"  # CS, basic D: a clean to nothing gives the dummy
    ds.OperatorsName = "Brown^Bob"
    out = anonymize(ds, DESCRIPTORS, KEYS)
    assert out.StudyDescription == "MR MATTER 3D T1"
    assert out.SeriesDescription == "T1 MPRAGE SAG 1mm"
    assert out.ImageComments == "Dr follow-up"
    assert out.ProtocolName == "ANONYMOUS"
    assert "AdmittingDiagnosesDescription" in out and not out.AdmittingDiagnosesDescription
    assert out.ReasonForTheAttributeModification == "ANONYMOUS"
    basic = anonymize(ds, Profile(), KEYS)
    assert "StudyDescription" not in basic and "SeriesDescription" not in basic


def _sr() -> Dataset:
    ds = ct_dataset()
    ds.PatientName = "Doe^Jane"
    root = Dataset()
    root.ValueType = "CONTAINER"
    root.ContinuityOfContent = "SEPARATE"
    root.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    text.TextValue = "Small lesion in left frontal lobe 5 mm, discussed with Dr Jones 20240131, Jane Doe"
    code = Dataset()
    code.RelationshipType = "CONTAINS"
    code.ValueType = "CODE"
    code.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    code.ConceptCodeSequence = Sequence([_code("4711MRN", "99LOCAL", "Patient 4711 of Dr Jones")])
    person = Dataset()
    person.RelationshipType = "HAS OBS CONTEXT"
    person.ValueType = "PNAME"
    person.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    person.PersonName = "Jones^Tom"
    root.ContentSequence = Sequence([text, code, person])
    ds.ContentSequence = Sequence([root])
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def test_clean_structured_content_keeps_the_sr_tree_and_cleans_its_text() -> None:
    ds = _sr()
    out = dcmread(io.BytesIO(_bytes(anonymize(ds, STRUCTURED, KEYS))))
    root = out.ContentSequence[0]
    assert root.ValueType == "CONTAINER" and root.ContinuityOfContent == "SEPARATE"
    assert root.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert root.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurement Report"
    text, code, person = root.ContentSequence
    assert (text.RelationshipType, text.ValueType) == ("CONTAINS", "TEXT")
    assert text.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert text.TextValue == "Small lesion in left frontal lobe 5 mm, with Dr"
    concept = code.ConceptCodeSequence[0]
    assert concept.CodeValue == "" and concept.CodingSchemeDesignator == ""  # unknown local code: cleaned
    assert "4711" not in concept.CodeMeaning and "Jones" not in concept.CodeMeaning
    assert (person.RelationshipType, person.ValueType) == ("HAS OBS CONTEXT", "PNAME")
    assert "Jones" not in str(person.PersonName)
    data = _bytes(anonymize(ds, STRUCTURED, KEYS))
    for secret in (b"Jones", b"Jane", b"Doe", b"20240131", b"4711"):
        assert secret not in data, secret
    assert len(anonymize(ds, Profile(), KEYS).ContentSequence) == 0  # basic profile: D, no items


def test_clean_graphics_keeps_annotations_with_cleaned_text() -> None:
    ds = ct_dataset()
    ds.PatientName = "Doe^Jane"
    text_object = Dataset()
    text_object.UnformattedTextValue = "Jane Doe R 5mm lesion MRN 1234567"
    text_object.BoundingBoxAnnotationUnits = "PIXEL"
    text_object.BoundingBoxTopLeftHandCorner = [1.0, 1.0]
    text_object.BoundingBoxBottomRightHandCorner = [5.0, 5.0]
    graphic = Dataset()
    graphic.GraphicAnnotationUnits = "PIXEL"
    graphic.GraphicDimensions = 2
    graphic.NumberOfGraphicPoints = 2
    graphic.GraphicData = [1.0, 1.0, 4.0, 4.0]
    graphic.GraphicType = "POLYLINE"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text_object])
    annotation.GraphicObjectSequence = Sequence([graphic])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    out = anonymize(ds, GRAPHICS, KEYS)
    item = out.GraphicAnnotationSequence[0]
    assert item.GraphicLayer == "LAYER1"
    assert item.TextObjectSequence[0].UnformattedTextValue == "R 5mm lesion"
    assert item.TextObjectSequence[0].BoundingBoxAnnotationUnits == "PIXEL"
    assert item.GraphicObjectSequence[0].GraphicType == "POLYLINE"
    assert list(item.GraphicObjectSequence[0].GraphicData) == [1.0, 1.0, 4.0, 4.0]
    assert len(anonymize(ds, Profile(), KEYS).GraphicAnnotationSequence) == 0


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
