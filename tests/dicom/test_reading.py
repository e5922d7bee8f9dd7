"""parse_part10 accepts what the node can store and serve, and refuses the rest with a reason."""

from __future__ import annotations

import io
import os
import timeit
import warnings

import numpy as np
import pydicom
import pydicom.data
import pytest
from bundled import bundled_part10_files
from generators import ct_bytes, ct_dataset, to_bytes
from pydicom import dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from slicebox_lab.dicom import ACCEPTED_TRANSFER_SYNTAXES, ParsedDicom, extract_attributes, parse_part10
from slicebox_lab.errors import InvalidDicom
from slicebox_lab.model import IMAGE_ATTRIBUTES, PATIENT_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES

BUNDLED = bundled_part10_files()

#: Bundled files parse_part10 refuses, with words of the reason.  Everything else is accepted.
REFUSED = {
    # test files for the JPEG-LS codec, written without a study or series
    "JPEGLSNearLossless_08.dcm": "StudyInstanceUID, SeriesInstanceUID",
    "JPEGLSNearLossless_16.dcm": "StudyInstanceUID, SeriesInstanceUID",
    "SC_rgb_jls_lossy_line.dcm": "StudyInstanceUID, SeriesInstanceUID",
    "SC_rgb_jls_lossy_sample.dcm": "StudyInstanceUID, SeriesInstanceUID",
    # fragments of datasets made to test sequence parsing: no identity at all
    "UN_sequence.dcm": "SOPInstanceUID",
    "priv_SQ.dcm": "SOPInstanceUID",
    "nested_priv_SQ.dcm": "SOPInstanceUID, SOPClassUID",
    "empty_charset_LEI.dcm": "SOPInstanceUID, SOPClassUID",
    "no_meta_group_length.dcm": "SOPInstanceUID",
    # DICOMDIRs are media directories, not images
    "DICOMDIR": "SOPInstanceUID",
    "DICOMDIR-nopatient": "SOPInstanceUID",
    "DICOMDIR-implicit": "SOPInstanceUID",
    "DICOMDIR-empty.dcm": "SOPInstanceUID",
    "DICOMDIR-nooffset": "SOPInstanceUID",
    "DICOMDIR-reordered": "SOPInstanceUID",
    "DICOMDIR-bigEnd": "SOPInstanceUID",
    # genuinely truncated files
    "rtplan_truncated.dcm": "truncated: element (300A,00B0) BeamSequence declares 976 bytes",
    "MR_truncated.dcm": "truncated: element (7FE0,0010) PixelData declares 8192 bytes",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
}


def bundled_id(path: str) -> str:
    return os.path.relpath(path, os.path.dirname(os.path.dirname(path)))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", BUNDLED, ids=bundled_id)
def test_bundled_file_is_accepted_or_refused_with_its_reason(path: str) -> None:
    data = open(path, "rb").read()
    name = os.path.basename(path)
    if name in REFUSED:
        with pytest.raises(InvalidDicom) as refused:
            parse_part10(data)
        assert REFUSED[name] in refused.value.message
        return
    parsed = parse_part10(data)
    assert parsed.transfer_syntax_uid in ACCEPTED_TRANSFER_SYNTAXES
    attributes = extract_attributes(parsed)
    assert attributes.image["SOPInstanceUID"] == parsed.sop_instance_uid
    assert attributes.number_of_frames >= 1
    for level in (attributes.patient, attributes.study, attributes.series, attributes.image):
        assert all(isinstance(value, str) for value in level.values())


def test_the_bundled_corpus_is_large_and_mostly_accepted() -> None:
    refused = [p for p in BUNDLED if os.path.basename(p) in REFUSED]
    assert len(BUNDLED) > 200
    assert len(refused) < 25


# ---------------------------------------------------------------- accepted transfer syntaxes


def test_accepted_transfer_syntaxes_are_the_decodable_ones() -> None:
    assert "1.2.840.10008.1.2" in ACCEPTED_TRANSFER_SYNTAXES
    assert "1.2.840.10008.1.2.4.50" in ACCEPTED_TRANSFER_SYNTAXES
    assert "1.2.840.10008.1.2.5" in ACCEPTED_TRANSFER_SYNTAXES
    assert "1.2.840.10008.1.2.4.100" not in ACCEPTED_TRANSFER_SYNTAXES  # MPEG2
    assert all(isinstance(uid, str) for uid in ACCEPTED_TRANSFER_SYNTAXES)


@pytest.mark.parametrize(
    ("transfer_syntax", "implicit_vr", "little_endian"),
    [
        (ImplicitVRLittleEndian, True, True),
        (ExplicitVRLittleEndian, False, True),
        (ExplicitVRBigEndian, False, False),
        (DeflatedExplicitVRLittleEndian, False, True),
    ],
)
def test_native_transfer_syntaxes_are_accepted(transfer_syntax: str, implicit_vr: bool, little_endian: bool) -> None:
    ds = ct_dataset(rows=32, columns=32)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    parsed = parse_part10(buf.getvalue())
    assert parsed.transfer_syntax_uid == transfer_syntax
    assert parsed.dataset.Rows == 32


def test_rle_encapsulated_is_accepted() -> None:
    ds = ct_dataset(rows=32, columns=32)
    ds.compress(RLELossless)
    parsed = parse_part10(to_bytes(ds))
    assert parsed.transfer_syntax_uid == RLELossless


# ---------------------------------------------------------------- identity


def test_parsed_identity() -> None:
    data = ct_bytes(SOPInstanceUID="1.2.3.4", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.5")
    parsed = parse_part10(data)
    assert isinstance(parsed, ParsedDicom)
    assert parsed.sop_instance_uid == "1.2.3.4"
    assert parsed.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert parsed.transfer_syntax_uid == ExplicitVRLittleEndian
    assert type(parsed.sop_instance_uid) is str


def test_sop_class_from_file_meta_when_dataset_lacks_it() -> None:
    ds = ct_dataset()
    del ds.SOPClassUID
    parsed = parse_part10(to_bytes(ds))
    assert parsed.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"


def test_pixel_data_is_read_but_not_decoded() -> None:
    data = ct_bytes(rows=64, columns=64)
    parsed = parse_part10(data)
    raw = parsed.dataset.get_item("PixelData")
    assert isinstance(raw, RawDataElement)  # still the bytes as read: nothing decoded
    assert len(raw.value) == 64 * 64 * 2


# ---------------------------------------------------------------- refused input


def refusal(data: bytes) -> str:
    with pytest.raises(InvalidDicom) as refused:
        parse_part10(data)
    return refused.value.message


def test_empty_body() -> None:
    assert "empty" in refusal(b"")


def test_random_bytes_are_not_dicom() -> None:
    data = np.random.default_rng(0).bytes(5000)
    assert "not a DICOM file" in refusal(data)
    assert "not a DICOM file" in refusal(b"hello")
    assert "not a DICOM file" in refusal(b"%PDF-1.4\n" + bytes(300))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_random_bytes_after_a_dicm_prefix_are_refused() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        refusal(bytes(128) + b"DICM" + rng.bytes(int(rng.integers(1, 3000))))


def test_dataset_without_file_meta_says_how_to_write_part10() -> None:
    ds = ct_dataset()
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    message = refusal(buf.getvalue())
    assert "without File Meta Information" in message
    assert "Part-10 files with File Meta Information are required" in message
    assert "enforce_file_format=True" in message


def test_file_meta_without_transfer_syntax_is_refused() -> None:
    ds = ct_dataset()
    del ds.file_meta.TransferSyntaxUID
    ds.preamble = bytes(128)
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    message = refusal(buf.getvalue())
    assert "Transfer Syntax UID" in message
    assert "enforce_file_format=True" in message


def test_file_meta_without_preamble_is_refused() -> None:
    message = refusal(ct_bytes()[132:])
    assert "preamble" in message
    assert "enforce_file_format=True" in message


@pytest.mark.parametrize(
    ("uid", "words"),
    [
        ("1.2.840.10008.1.2.4.100", "MPEG2"),
        ("1.2.840.10008.1.2.4.102", "MPEG-4"),
        ("1.2.3.4.5.6", "unknown transfer syntax"),
    ],
)
def test_unsupported_transfer_syntax_is_named(uid: str, words: str) -> None:
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = uid
    if UID(uid).is_transfer_syntax and UID(uid).is_encapsulated:
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(100)])
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    message = refusal(buf.getvalue())
    assert f"transfer syntax {uid}" in message
    assert words in message
    assert "not accepted" in message


def test_missing_sop_instance_uid_is_named() -> None:
    ds = ct_dataset()
    del ds.SOPInstanceUID
    message = refusal(to_bytes(ds))
    assert "lacks required attributes: SOPInstanceUID" in message


def test_all_missing_identifiers_are_named() -> None:
    ds = ct_dataset()
    del ds.StudyInstanceUID, ds.SeriesInstanceUID
    ds.SOPInstanceUID = ""
    assert "SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID" in refusal(to_bytes(ds))


def test_truncated_at_half_is_refused() -> None:
    data = ct_bytes(rows=64, columns=64)
    message = refusal(data[: len(data) // 2])
    assert "truncated" in message
    assert "PixelData" in message


def test_truncated_inside_the_header_is_refused() -> None:
    data = ct_bytes(PatientName="Doe^Johnathan")
    cut = data.index(b"Doe^Johnathan") + 5
    message = refusal(data[:cut])
    assert "truncated" in message
    assert "PatientName" in message


def test_truncated_inside_the_file_meta_is_refused() -> None:
    assert "File Meta Information" in refusal(ct_bytes()[:170])


def test_native_pixel_data_shorter_than_the_image_is_refused() -> None:
    ds = ct_dataset(rows=16, columns=16)
    ds.Rows = 32  # the element is complete, but holds half the image
    message = refusal(to_bytes(ds))
    assert "truncated inside its Pixel Data" in message
    assert "512 bytes present, 1024 expected" in message


def test_odd_length_pixel_data_with_its_pad_byte_is_accepted() -> None:
    ds = ct_dataset(rows=3, columns=3)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(9)) + b"\0"
    parse_part10(to_bytes(ds))


def encapsulated_ct() -> bytes:
    ds = ct_dataset(rows=32, columns=32)
    ds.compress(RLELossless)
    return to_bytes(ds)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_encapsulated_without_sequence_delimiter_is_refused() -> None:
    data = encapsulated_ct()
    message = refusal(data[:-8])
    assert "truncated" in message
    assert "no sequence delimiter" in message


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_encapsulated_with_a_cut_fragment_is_refused() -> None:
    data = encapsulated_ct()
    message = refusal(data[:-300])
    assert "truncated" in message
    assert "fragment" in message


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deflated_and_cut_is_refused() -> None:
    ds = ct_dataset(rows=32, columns=32)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    for cut in range(len(data) - 41, len(data) - 1, 3):  # the last byte may be a pad after the stream
        refusal(data[:cut])


def element_ends(data: bytes) -> set[int]:
    """Offsets where a top-level element of ``data`` ends: the only cuts nothing can detect."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ends: set[int] = set()
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
            ends.add(raw.value_tell + raw.length)
    return ends


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("undefined_length", [False, True])
def test_every_cut_is_refused_unless_it_falls_between_elements(undefined_length: bool) -> None:
    """Cut a CT with nested sequences at every byte: only an element boundary before the pixels may pass."""
    ds = ct_dataset()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121311", "DCM", "Localizer"
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    reference.PurposeOfReferenceCodeSequence = Sequence([code])
    ds.ReferencedImageSequence = Sequence([reference, reference])
    ds["ReferencedImageSequence"].is_undefined_length = undefined_length
    data = to_bytes(ds)
    parse_part10(data)
    boundaries = element_ends(data)
    rows_offset = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows
    for cut in range(len(data)):
        try:
            parse_part10(data[:cut])
        except InvalidDicom:
            continue
        assert cut in boundaries, f"a cut at {cut} of {len(data)}, inside an element, was accepted"
        assert cut <= rows_offset, f"a cut at {cut} of {len(data)}, inside the Image Pixel module, was accepted"


def test_garbage_never_raises_anything_but_invalid_dicom() -> None:
    """Flip random bytes of a valid file: the result is accepted or refused, nothing else."""
    data = ct_bytes()
    rng = np.random.default_rng(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(400):
            mutated = bytearray(data)
            for position in rng.integers(132, len(data), size=int(rng.integers(1, 6))):
                mutated[position] = int(rng.integers(0, 256))
            try:
                parse_part10(bytes(mutated))
            except InvalidDicom:
                pass


# ---------------------------------------------------------------- extract_attributes


def test_extract_attributes_of_a_ct() -> None:
    data = ct_bytes(
        SOPInstanceUID="1.2.3.4",
        StudyInstanceUID="1.2.3",
        SeriesInstanceUID="1.2.3.5",
        InstanceNumber=7,
        Manufacturer="ACME",
    )
    attributes = extract_attributes(parse_part10(data))
    assert attributes.patient == {
        "PatientName": "Doe^John",
        "PatientID": "PID-1",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
    }
    assert attributes.study["StudyInstanceUID"] == "1.2.3"
    assert attributes.study["StudyDescription"] == "Test study"
    assert attributes.study["StudyDate"] == "20240102"
    assert attributes.study["AccessionNumber"] == "ACC1"
    assert attributes.study["PatientAge"] == ""
    assert attributes.series["SeriesInstanceUID"] == "1.2.3.5"
    assert attributes.series["Modality"] == "CT"
    assert attributes.series["Manufacturer"] == "ACME"
    assert attributes.series["ProtocolName"] == ""
    assert attributes.image == {
        "SOPInstanceUID": "1.2.3.4",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
        "InstanceNumber": "7",
    }
    assert attributes.transfer_syntax_uid == ExplicitVRLittleEndian
    assert attributes.number_of_frames == 1
    assert tuple(attributes.patient) == PATIENT_ATTRIBUTES
    assert tuple(attributes.study) == STUDY_ATTRIBUTES
    assert tuple(attributes.series) == SERIES_ATTRIBUTES
    assert tuple(attributes.image) == IMAGE_ATTRIBUTES


def test_extract_first_value_and_strip_padding() -> None:
    ds = ct_dataset(StationName="ST1\x00\x00", StudyDescription="padded   ")
    ds.PatientID = ["A", "B"]
    ds.ImageType = "DERIVED"
    attributes = extract_attributes(parse_part10(to_bytes(ds)))
    assert attributes.series["StationName"] == "ST1"
    assert attributes.study["StudyDescription"] == "padded"
    assert attributes.patient["PatientID"] == "A"
    assert attributes.image["ImageType"] == "DERIVED"


def test_extract_number_of_frames() -> None:
    ds = ct_dataset(rows=4, columns=4)
    ds.NumberOfFrames = 3
    ds.PixelData = bytes(4 * 4 * 2 * 3)
    assert extract_attributes(parse_part10(to_bytes(ds))).number_of_frames == 3


def test_extract_latin1_character_set() -> None:
    data = ct_bytes(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100", StudyDescription="Schädel")
    assert "Müller".encode("latin-1") in data
    attributes = extract_attributes(parse_part10(data))
    assert attributes.patient["PatientName"] == "Müller^Jürgen"
    assert attributes.study["StudyDescription"] == "Schädel"


@pytest.mark.parametrize(
    ("name", "patient_name"),
    [
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrFren.dcm", "Buc^Jérôme"),
    ],
)
def test_extract_bundled_character_sets(name: str, patient_name: str) -> None:
    [path] = pydicom.data.get_charset_files(name)
    attributes = extract_attributes(parse_part10(open(path, "rb").read()))
    assert attributes.patient["PatientName"] == patient_name


def test_parse_and_extract_are_fast_on_a_512_ct() -> None:
    """The ingest path reads every file: parse + extract must not decode or copy the pixels."""
    data = ct_bytes(rows=512, columns=512)
    seconds = min(timeit.repeat(lambda: extract_attributes(parse_part10(data)), number=20, repeat=5)) / 20
    assert seconds < 0.010, f"parse + extract took {seconds * 1000:.2f} ms"


def test_unsorted_elements_are_accepted_and_their_truncation_refused() -> None:
    """Some writers do not sort elements: the element read last, not the greatest tag, ends the file."""
    ds = ct_dataset()
    ds["PixelData"].VR = "OW"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(bytes(128) + b"DICM")
    write_file_meta_info(fp, ds.file_meta)
    for element_tag in [t for t in sorted(ds.keys()) if t != 0x00100010] + [0x00100010]:
        write_data_element(fp, ds[element_tag])  # PatientName after the pixels
    data = fp.getvalue()
    assert str(parse_part10(data).dataset.PatientName) == "Doe^John"
    assert "PatientName" in refusal(data[:-3])


# ---------------------------------------------------------------------------------------------- writing


def _pydicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_write_part10_writes_exactly_what_pydicom_writes() -> None:
    """write_part10 appends trailing native Pixel Data and copies raw elements itself: the bytes must stay
    pydicom's, for every bundled file (parsed, so elements are still raw; and after de-identification, as
    boxes send them)."""
    from slicebox_lab.anonymization import Profile, PseudonymKeys, anonymize
    from slicebox_lab.dicom import write_part10
    from slicebox_lab.dicom.writing import _direct_meta, _direct_part10, _trailing_native_pixels, write_part10_and_meta

    keys, appended, direct, direct_meta = PseudonymKeys.generate(), 0, 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in BUNDLED:
            with open(path, "rb") as f:
                data = f.read()
            try:
                parsed = parse_part10(data).dataset
            except InvalidDicom:
                continue
            candidates = [parsed]
            try:
                candidates.append(anonymize(parse_part10(data).dataset, Profile(), keys))
            except Exception:  # refused (burned in, ...): the original still counts
                pass
            for ds in candidates:
                try:
                    expected = _pydicom_bytes(ds)
                except Exception:  # pydicom cannot write it either
                    continue
                appended += _trailing_native_pixels(ds) is not None
                direct += _direct_part10(ds) is not None
                assert write_part10(ds) == expected, path
                # the file meta the writer says it wrote is the one the file holds
                direct_meta += _direct_meta(ds, ds.file_meta) is not None
                meta = pydicom.dcmread(io.BytesIO(expected), stop_before_pixels=True).file_meta
                said = write_part10_and_meta(ds)[1]
                assert said == {e.keyword: e.value for e in meta if e.keyword}, path
    assert appended > 50  # the fast path was taken, and checked, for many files
    assert direct > 200  # and raw elements were copied by the node, not by pydicom, for most of them
    assert direct_meta > 300  # and the file meta was encoded by the node for most of them


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_write_part10_appends_pixel_data_only_where_it_ends_the_dataset(syntax: UID) -> None:
    from slicebox_lab.dicom import write_part10
    from slicebox_lab.dicom.writing import _trailing_native_pixels

    ds = ct_dataset(rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = syntax
    ds = parse_part10(to_bytes(ds)).dataset
    assert _trailing_native_pixels(ds) is not None
    assert write_part10(ds) == _pydicom_bytes(ds)
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding after the pixels: pydicom writes all
    assert _trailing_native_pixels(ds) is None
    assert write_part10(ds) == _pydicom_bytes(ds)
    del ds[0xFFFCFFFC]
    ds.PixelData = ds.PixelData + b"\0"  # odd length: pydicom pads it
    assert _trailing_native_pixels(ds) is None
    assert write_part10(ds) == _pydicom_bytes(ds)


def test_the_transfer_syntax_read_from_the_meta_bytes_is_pydicoms_for_every_file_and_every_head():
    """``transfer_syntax_of`` reads a plain file meta group's bytes itself and leaves everything else to pydicom:
    on every bundled file, whole and cut at every third of its first 400 bytes, the answer is pydicom's, except
    where pydicom gives up on a head cut inside the element after the group (the one here is the file's)."""
    from pydicom.filereader import read_partial

    from slicebox_lab.dicom.reading import _meta_transfer_syntax, transfer_syntax_of

    def pydicoms(data: bytes) -> str | None:
        try:
            meta = read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length: True).file_meta
        except Exception:
            return None
        ts = meta.get("TransferSyntaxUID")
        return str(ts).rstrip(" \x00") if ts else None

    read_here = 0
    for path in bundled_part10_files():
        with open(path, "rb") as f:
            whole = pydicoms(f.read())
            f.seek(0)
            data = f.read(4096)
        for end in [*range(128, 400, 3), len(data)]:
            head = data[:end]
            mine, theirs = transfer_syntax_of(head), pydicoms(head)
            assert mine == theirs or (theirs is None and mine == whole), (path, end)
        try:
            read_here += _meta_transfer_syntax(data) is not None
        except ValueError:
            pass
    assert read_here > 150  # most files are read without pydicom
