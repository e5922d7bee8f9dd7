"""The data dictionary behind /dicom/dictionary/*."""

from __future__ import annotations

import pytest

from slicebox_lab.dicom import keyword, keywords, tag, vm, vr
from slicebox_lab.errors import InvalidInput, NotFound


def test_keyword_and_tag_are_inverse() -> None:
    assert keyword(0x00100010) == "PatientName"
    assert tag("PatientName") == 0x00100010
    for name in ("StudyInstanceUID", "PixelData", "ReferencedImageSequence", "TransferSyntaxUID"):
        assert keyword(tag(name)) == name


def test_repeating_groups() -> None:
    assert keyword(0x60003000) == "OverlayData"
    assert keyword(0x60023000) == "OverlayData"
    assert tag("OverlayData") == 0x60003000
    assert "OverlayData" in keywords(filter="overlaydata")


@pytest.mark.parametrize("unknown", [0x00091001, 0x00111010, 0x00990099, 0x12345678])
def test_unknown_and_private_tags(unknown: int) -> None:
    with pytest.raises(NotFound):
        keyword(unknown)
    assert vr(unknown) == "UN"
    assert vm(unknown) == {"min": 1}


def test_out_of_range_tag_is_not_found() -> None:
    with pytest.raises(NotFound):
        keyword(-1)
    with pytest.raises(NotFound):
        keyword(1 << 40)
    assert vr(-1) == "UN"


def test_unknown_keyword() -> None:
    with pytest.raises(NotFound, match="NoSuchKeyword"):
        tag("NoSuchKeyword")
    with pytest.raises(NotFound):
        tag("")


def test_vr() -> None:
    assert vr(0x00100010) == "PN"
    assert vr(0x00081140) == "SQ"
    assert vr(0x00280010) == "US"
    assert vr(0x00280106) == "US"  # "US or SS": the first
    assert vr(0x7FE00010) == "OB"  # "OB or OW": the first


def test_vm() -> None:
    assert vm(0x00100010) == {"min": 1, "max": 1}
    assert vm(0x00080008) == {"min": 2}  # ImageType: 2-n
    assert vm(0x00200037) == {"min": 6, "max": 6}  # ImageOrientationPatient
    assert vm(0x00280030) == {"min": 2, "max": 2}  # PixelSpacing
    assert vm(0x00100020) == {"min": 1, "max": 1}
    assert vm(0x00081150) == {"min": 1, "max": 1}
    assert vm(0x00280034) == {"min": 2, "max": 2}
    assert vm(0x00181310) == {"min": 4, "max": 4}  # AcquisitionMatrix
    assert vm(0x00081090) == {"min": 1, "max": 1}
    assert vm(0x00200052) == {"min": 1, "max": 1}
    assert vm(0x0008001B) == {"min": 1, "max": 1}


def test_keywords_filter_is_a_case_insensitive_substring() -> None:
    found = keywords(filter="atientnam")
    assert "PatientName" in found
    assert all("atientnam" in name.lower() for name in found)
    assert keywords(filter="PATIENTNAME") == keywords(filter="patientname")
    assert keywords(filter="no such keyword here") == []


def test_keywords_are_sorted_and_complete() -> None:
    everything = keywords()
    assert everything == sorted(everything)
    assert len(everything) > 4000
    assert "" not in everything
    assert len(everything) == len(set(everything))


def test_keywords_by_kind() -> None:
    sequences = keywords(kind="sequence")
    others = keywords(kind="nonsequence")
    assert "ReferencedImageSequence" in sequences
    assert "PatientName" in others
    assert all(vr(tag(name)) == "SQ" for name in sequences)
    assert not any(vr(tag(name)) == "SQ" for name in others)
    assert sorted(sequences + others) == keywords()
    assert all("Code" in name for name in keywords(filter="code", kind="sequence"))


def test_bad_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="kind"):
        keywords(kind="bogus")  # type: ignore[arg-type]
