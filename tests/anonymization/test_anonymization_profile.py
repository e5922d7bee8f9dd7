from __future__ import annotations

import json
from importlib import resources

import pytest
from pydicom.tag import Tag

from slicebox_lab.anonymization import Action, Option, Profile
from slicebox_lab.anonymization.profile import confidentiality_table, resolve_basic, safe_private_table

BASIC = Profile(frozenset())


def test_tables_are_package_data() -> None:
    tables = resources.files("slicebox_lab.anonymization").joinpath("tables")
    e11 = json.loads(tables.joinpath("confidentiality_profile_attributes_2024e.json").read_text(encoding="utf-8"))
    assert len(confidentiality_table()) == len(e11) == 621
    assert len(safe_private_table()) == 130


def test_option_codes_are_cid_7050() -> None:
    assert {option.name: option.code for option in Option} == {
        "RETAIN_SAFE_PRIVATE": "113111",
        "RETAIN_UIDS": "113110",
        "RETAIN_DEVICE_IDENTITY": "113109",
        "RETAIN_INSTITUTION_IDENTITY": "113112",
        "RETAIN_PATIENT_CHARACTERISTICS": "113108",
        "RETAIN_LONGITUDINAL_FULL_DATES": "113106",
        "RETAIN_LONGITUDINAL_MODIFIED_DATES": "113107",
        "CLEAN_DESCRIPTORS": "113105",
        "CLEAN_STRUCTURED_CONTENT": "113104",
        "CLEAN_GRAPHICS": "113103",
    }
    not_options = {"name", "tag", "id", "stdCompIOD", "basicProfile"}
    columns = {key for row in confidentiality_table() for key in row} - not_options
    assert {option.column for option in Option} == columns
    assert all(option.title.endswith("Option") and option.description for option in Option)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("X", Action.X),
        ("Z", Action.Z),
        ("D", Action.D),
        ("U", Action.U),
        ("X/Z", Action.Z),
        ("X/D", Action.D),
        ("X/Z/D", Action.D),
        ("Z/D", Action.D),
        ("X/Z/U*", Action.U),
    ],
)
def test_compound_codes_resolve_to_the_last_alternative(code: str, action: Action) -> None:
    assert resolve_basic(code) is action


@pytest.mark.parametrize(
    ("keyword", "action"),
    [
        ("PatientName", Action.Z),
        ("PatientID", Action.D),  # Z/D
        ("AcquisitionDate", Action.Z),  # X/Z
        ("InstitutionName", Action.D),  # X/Z/D
        ("ProtocolName", Action.D),  # X/D
        ("StudyDescription", Action.X),
        ("SOPInstanceUID", Action.U),
        ("ReferencedImageSequence", Action.U),  # X/Z/U*
        ("Rows", Action.K),  # not in the table
        ("SOPClassUID", Action.K),
    ],
)
def test_basic_profile_actions(keyword: str, action: Action) -> None:
    assert BASIC.action(Tag(keyword)) is action


def test_option_overrides() -> None:
    assert Profile(frozenset({Option.RETAIN_UIDS})).action(Tag("SOPInstanceUID")) is Action.K
    assert Profile(frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES})).action(Tag("StudyDate")) is Action.K
    modified = Profile(frozenset({Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    assert modified.action(Tag("StudyDate")) is Action.C
    assert modified.action(Tag("StudyDate"), vr="UN") is Action.Z  # C only cleans dates: else basic
    assert Profile(frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS})).action(Tag("PatientSex")) is Action.K
    assert Profile(frozenset({Option.RETAIN_DEVICE_IDENTITY})).action(Tag("StationName")) is Action.K
    assert Profile(frozenset({Option.RETAIN_INSTITUTION_IDENTITY})).action(Tag("InstitutionName")) is Action.K
    # a clean option cleans its text (test_clean.py); another VR falls back to the (stricter) basic action
    assert Profile(frozenset({Option.CLEAN_DESCRIPTORS})).action(Tag("StudyDescription")) is Action.C
    assert Profile(frozenset({Option.CLEAN_DESCRIPTORS})).action(Tag("MakerNote")) is Action.X
    assert Profile(frozenset(Option) - {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}).action(Tag("StudyDate")) is Action.K


def test_full_and_modified_dates_are_alternatives() -> None:
    with pytest.raises(ValueError, match="alternatives"):
        Profile(frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))


@pytest.mark.parametrize(
    "options",
    [frozenset(), frozenset({Option.CLEAN_GRAPHICS}), frozenset(Option) - {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}],
)
def test_curves_and_overlays_are_removed(options: frozenset[Option]) -> None:
    profile = Profile(options)
    for tag in [
        (0x5000, 0x3000),
        (0x501E, 0x0010),
        (0x6000, 0x3000),
        (0x6002, 0x3000),
        (0x601E, 0x4000),
        (0x6000, 0x0010),
        (0x6000, 0x1500),
    ]:
        assert profile.action(Tag(tag)) is Action.X, tag


def test_private_attributes() -> None:
    safe = Profile(frozenset({Option.RETAIN_SAFE_PRIVATE}))
    assert BASIC.action(Tag(0x0019, 0x109E), "LO", "GEMS_ACQU_01") is Action.X
    assert safe.action(Tag(0x0019, 0x109E), "LO", "GEMS_ACQU_01") is Action.K
    assert safe.action(Tag(0x0019, 0x209E), "LO", "GEMS_ACQU_01 ") is Action.K  # any block, padded creator
    assert safe.action(Tag(0x0019, 0x0010), "LO", "GEMS_ACQU_01") is Action.K
    assert safe.action(Tag(0x0019, 0x10F0), "LO", "GEMS_ACQU_01") is Action.X  # element not listed
    assert safe.action(Tag(0x0019, 0x109E), "LO", "OTHER") is Action.X  # creator must match
    assert safe.action(Tag(0x0021, 0x109E), "LO", "GEMS_ACQU_01") is Action.X  # group must match
    assert safe.action(Tag(0x0019, 0x109E), "LO", None) is Action.X
    assert safe.action(Tag(0x0019, 0x0010), "LO", "ACME") is Action.X


def test_group_length_is_removed() -> None:
    assert BASIC.action(Tag(0x0008, 0x0000)) is Action.X


def test_modified_dates_shift_device_dates_even_when_device_identity_is_retained() -> None:
    both = Profile(frozenset({Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    assert both.action(Tag("CalibrationDate")) is Action.C
    assert both.action(Tag("CalibrationTime")) is Action.C  # TM: kept by the anonymizer
    assert Profile(frozenset({Option.RETAIN_DEVICE_IDENTITY})).action(Tag("CalibrationDate")) is Action.K
    assert both.action(Tag("CalibrationDate"), vr="UN") is Action.K  # not a date value: the retain applies
