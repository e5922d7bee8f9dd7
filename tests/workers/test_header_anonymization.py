"""De-identifying only the header: the file a worker makes by rewriting the header and copying the stored
Pixel Data element as it is must be, byte for byte, the file of the full parse-and-rewrite; and wherever
that could differ (or leak: anything after the pixels, pixels the burned-in policy reads), the full path
runs instead."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from generators import ct_dataset, to_bytes
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from slicebox_lab import dicom
from slicebox_lab.anonymization import Profile, PseudonymKeys, keystore
from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.workers import tasks

PLANTED = "Planted^Identifier"


def _how(profile: Profile | None = None, tag_values: tuple = ()) -> tasks.Deidentification:
    return tasks.Deidentification(
        profile or Profile.from_json({}), PseudonymKeys(b"k" * 32), tag_values, keystore.DEFAULT_KEY_ATTRIBUTES
    )


def _without_time(record: keystore.KeyRecord) -> dict:
    return {name: value for name, value in record.values.items() if name != "created"}


def _stored(tmp_path: Path, ds: Dataset, name: str = "image.dcm") -> str:
    path = tmp_path / name
    path.write_bytes(to_bytes(ds))
    return str(path)


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _encapsulated(ds: Dataset) -> Dataset:
    """Two frames compressed with RLE Lossless (pydicom's own encoder): encapsulated fragments."""
    frames = np.stack([np.asarray(ds.pixel_array), np.asarray(ds.pixel_array)[::-1]])
    ds.NumberOfFrames = 2
    ds.compress(RLELossless, frames)
    return ds


@pytest.mark.parametrize(
    "make",
    [lambda: ct_dataset(rows=64, columns=64), lambda: _implicit(ct_dataset()), lambda: _encapsulated(ct_dataset())],
    ids=["explicit-native", "implicit-native", "encapsulated"],
)
def test_header_only_file_is_the_full_rewrite_byte_for_byte(tmp_path: Path, make) -> None:
    ds = make()
    ds.OtherPatientIDs = PLANTED
    path = _stored(tmp_path, ds)
    how = _how(tag_values=tuple(parse_tag_values([{"tagPath": "(0008,1030)", "value": "Study 1"}])))
    full, full_record = how.apply(path, None)
    with open(path, "rb") as source:
        split = how.apply_to_header(source)
    assert split is not None, "this file's pixels end it: the header path applies"
    header, pixels, record = split.header, split.pixels, split.record
    copied = header + Path(path).read_bytes()[pixels.offset :]
    assert copied == full
    assert _without_time(record) == _without_time(full_record)
    assert PLANTED.encode() not in copied and b"Doe^John" not in copied

    spool = tmp_path / "spool"
    spool.mkdir()
    for sha256 in (False, True):
        made = tasks.anonymize_file(path, None, how, str(spool), sha256=sha256)
        assert Path(made.path).read_bytes() == full and made.size == len(full)
        assert made.sha256 == (hashlib.sha256(full).hexdigest() if sha256 else "")
    blob = tmp_path / "blob"
    blob.write_bytes(b"")
    into = tasks.anonymize_into(path, None, how, str(blob))
    assert blob.read_bytes() == full and into.size == len(full)


def _with_trailing_private(ds: Dataset) -> Dataset:
    """A private group after Pixel Data (7FE1, as some vendors write): it must not be copied as it is."""
    ds.add_new(0x7FE10010, "LO", "ACME 1.0")
    ds.add_new(0x7FE11001, "LO", PLANTED)
    return ds


def _trailing_padding(ds: Dataset) -> Dataset:
    ds.DataSetTrailingPadding = PLANTED.encode()
    return ds


def _ultrasound(ds: Dataset) -> Dataset:
    ds.Modality = "US"
    return ds


@pytest.mark.parametrize(
    ("make", "profile"),
    [
        (lambda: _with_trailing_private(ct_dataset()), None),
        (lambda: _trailing_padding(ct_dataset()), None),
        (lambda: _ultrasound(ct_dataset()), Profile.from_json({"burnedInText": "keep"})),
        (lambda: ct_dataset(BurnedInAnnotation="YES"), Profile.from_json({"burnedInText": "keep"})),
        (lambda: ct_dataset(), dataclasses.replace(Profile.from_json({"burnedInText": "keep"}), scan_all=True)),
    ],
    ids=["private-after-pixels", "trailing-padding", "ultrasound", "flagged", "scan-all"],
)
def test_the_full_path_runs_where_the_header_alone_could_differ(tmp_path: Path, make, profile) -> None:
    ds = make()
    how = _how(profile)
    path = _stored(tmp_path, ds)
    with open(path, "rb") as source:
        assert how.apply_to_header(source) is None
    spool = tmp_path / "spool"
    spool.mkdir()
    made = Path(tasks.anonymize_file(path, None, how, str(spool)).path).read_bytes()
    assert PLANTED.encode() not in made and b"Doe^John" not in made
    assert made == how.apply(path, None)[0]


def test_a_tag_value_that_removes_pixel_data_takes_the_full_path(tmp_path: Path) -> None:
    path = _stored(tmp_path, ct_dataset())
    how = _how(tag_values=tuple(parse_tag_values([{"tagPath": "(7FE0,0010)", "value": None}])))
    with open(path, "rb") as source:
        assert how.apply_to_header(source) is None
    spool = tmp_path / "spool"
    spool.mkdir()
    made = Path(tasks.anonymize_file(path, None, how, str(spool)).path).read_bytes()
    assert "PixelData" not in pydicom.dcmread(io.BytesIO(made))


def test_read_until_pixels_finds_the_element_that_ends_the_file(tmp_path: Path) -> None:
    ds = ct_dataset(rows=8, columns=8)
    path = _stored(tmp_path, ds)
    data = Path(path).read_bytes()
    with open(path, "rb") as f:
        split = dicom.read_until_pixels(f)
    assert split is not None
    header, pixels = split
    assert "PixelData" not in header and header.PatientName == "Doe^John"
    assert pixels.offset + pixels.length == len(data)
    assert data[pixels.offset : pixels.offset + 4] == b"\xe0\x7f\x10\x00"
    assert data.endswith(np.asarray(ds.pixel_array).tobytes())

    jpeg = ct_dataset()
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 30])
    jpeg["PixelData"].VR = "OB"
    jpeg_path = _stored(tmp_path, jpeg, "jpeg.dcm")
    with open(jpeg_path, "rb") as f:
        assert dicom.read_until_pixels(f) is not None
    Path(jpeg_path).write_bytes(Path(jpeg_path).read_bytes()[:-8])  # the delimiter cut off
    with open(jpeg_path, "rb") as f:
        assert dicom.read_until_pixels(f) is None


def test_what_a_worker_knows_of_its_copy_is_what_the_copy_reads_back_as(tmp_path: Path) -> None:
    """A bulk job's worker does not read back the copy it writes: the index takes the attributes of the dataset
    the header was written from, checked as an upload's header is (``dicom.checked_header``).  On every bundled
    file, under both ends of the option range and with tag values (plain and accented), that is exactly what
    inspecting the file written gives; an accented value decoded in memory sends the copy to be read back."""
    import warnings

    from bundled import bundled_part10_files

    from slicebox_lab.anonymization import Option
    from slicebox_lab.errors import InvalidDicom, SliceboxError

    options = frozenset(Option) - {Option.RETAIN_LONGITUDINAL_FULL_DATES}
    profiles = [Profile(frozenset(), detect_text=False), Profile(options, detect_text=False)]
    tag_value_sets = [
        (),
        tuple(
            parse_tag_values(
                [{"tagPath": "PatientName", "value": "Chosen^Name"}, {"tagPath": "StudyID", "value": "S7"}]
            )
        ),
        tuple(parse_tag_values([{"tagPath": "PatientName", "value": "Jöns^Åsa"}])),
    ]
    stored, blob = tmp_path / "stored.dcm", tmp_path / "blob.dcm"
    compared = in_memory = read_back = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in bundled_part10_files():
            data = Path(path).read_bytes()
            try:
                dicom.parse_part10(data)
            except InvalidDicom:
                continue
            stored.write_bytes(data)
            for profile in profiles:
                for values in tag_value_sets:
                    how = _how(profile, values)
                    blob.write_bytes(b"")
                    try:
                        into = tasks.anonymize_into(str(stored), None, how, str(blob))
                    except (SliceboxError, ValueError, TypeError):  # refused, or a value pydicom cannot write
                        continue
                    assert into.inspected == tasks.inspect(str(blob)), (path, profile.options, values)
                    assert into.size == blob.stat().st_size
                    compared += 1
                    with open(stored, "rb") as source:
                        split = how.apply_to_header(source)
                        if split is None:
                            continue
                        known = tasks._inspected_as_written(split, into.size)
                    in_memory += known is not None
                    read_back += known is None
                    if values and not values[0].value.isascii():
                        assert known is None, path
    assert compared > 700 and in_memory > 150, (compared, in_memory, read_back)  # 792, 180 (compressed: read back)
