"""An upload's header inspected while the rest of it arrives (``dicom.parse_header``, ``tasks.inspect_head``):
where it answers, the whole file of the size it names passes the full inspection with the same attributes;
it never vouches for a file cut short; bad input gets None (the full parse then says why)."""

from __future__ import annotations

import struct

import pytest
from generators import ct_bytes, ct_dataset, to_bytes
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian

from slicebox_lab import dicom
from slicebox_lab.errors import InvalidDicom
from slicebox_lab.workers import tasks

#: pydicom's files: native little-endian ones with Pixel Data last, others the header cannot settle
BUNDLED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "rtdose.dcm",
    "SC_rgb.dcm",
    "SC_rgb_2frame.dcm",
    "SC_rgb_32bit.dcm",
    "emri_small.dcm",
    "OBXXXX1A.dcm",
    "liver.dcm",
    "693_UNCI.dcm",
    "JPEG2000.dcm",
    "US1_J2KR.dcm",
    "ExplVR_BigEnd.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
    "waveform_ecg.dcm",
]


def _implicit_ct() -> bytes:
    ds = ct_dataset(rows=64, columns=64)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return to_bytes(ds)


def _files() -> dict[str, bytes]:
    files = {name: open(path, "rb").read() for name in BUNDLED if (path := get_testdata_file(name))}
    files["generated CT 512²"] = ct_bytes(rows=512, columns=512)
    files["generated CT 64², implicit VR"] = _implicit_ct()
    return files


FILES = _files()


def test_where_the_header_answers_the_whole_file_passes_with_the_same_attributes():
    settled = 0
    for name, data in FILES.items():
        early = tasks.inspect_head(data)
        if early is None:
            continue
        if early.size == len(data):
            assert early.inspected == tasks.inspect(None, data), name
            settled += 1
        else:  # elements after the Pixel Data (CT_small's padding): the upload is inspected whole
            assert early.size < len(data), name
    assert settled >= 10  # the common case: native pixels end the file


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "US1_J2KR.dcm", "ExplVR_BigEnd.dcm", "rtplan.dcm", "image_dfl.dcm"])
def test_what_the_header_cannot_settle_is_left_to_the_full_inspection(name):
    """Compressed pixels must decode, big-endian and deflated syntaxes, files without Pixel Data."""
    if name not in FILES:
        pytest.skip(f"pydicom's test file {name} is not installed")
    assert dicom.parse_header(FILES[name]) is None


def test_the_header_never_vouches_for_a_file_cut_short():
    data = FILES["generated CT 512²"]
    whole = dicom.parse_header(data[:16384])
    assert whole is not None and whole.size == len(data)
    for cut in [*range(0, 4096, 7), *range(4096, len(data), 9973), len(data) - 1]:
        early = dicom.parse_header(data[:cut])
        # the header either cannot tell, or names the size of the whole file, which the cut one does not have
        assert early is None or early.size == len(data), cut


def test_a_header_longer_than_the_bytes_given_gets_none():
    ds = ct_dataset(rows=64, columns=64)
    ds.ImageComments = "x" * 20000
    data = to_bytes(ds)
    assert dicom.parse_header(data[:16384]) is None
    assert dicom.parse_header(data) is not None


def _with(**attributes: object) -> bytes:
    ds = ct_dataset(rows=64, columns=64)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return to_bytes(ds)


@pytest.mark.parametrize(
    "data",
    [
        _with(SOPInstanceUID=None),
        _with(SeriesInstanceUID=None),
        _with(NumberOfFrames="0"),
        _with(Rows=128),  # the Pixel Data declares fewer bytes than 128 × 64 pixels need
        b"\0" * 128 + b"DICM" + b"\0" * 1000,
        b"not DICOM at all" * 100,
    ],
    ids=["no SOPInstanceUID", "no SeriesInstanceUID", "NumberOfFrames 0", "Pixel Data too short", "zeros", "text"],
)
def test_bad_input_gets_none_and_the_full_inspection_refuses_it(data):
    assert dicom.parse_header(data) is None
    with pytest.raises(InvalidDicom):
        tasks.inspect(None, data)


def test_an_undefined_length_native_pixel_data_gets_none():
    data = bytearray(ct_bytes(rows=16, columns=16))
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    data[at + 8 : at + 12] = struct.pack("<I", 0xFFFFFFFF)
    assert dicom.parse_header(bytes(data)) is None
