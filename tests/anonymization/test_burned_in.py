"""Burned-in annotation: refused by default, kept on request, or cleaned with a matching pixel mask."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from generators import ct_dataset, to_bytes
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pack_bits
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from slicebox_lab.anonymization import PixelMask, Profile, PseudonymKeys, Rectangle, anonymize, load_pixel_masks
from slicebox_lab.anonymization.pixels import SECONDARY_CAPTURE_SOP_CLASSES
from slicebox_lab.errors import AnonymizationRefused, InvalidInput

KEYS = PseudonymKeys(b"burned-in-test-secret-0123456789")
BAR = Rectangle(x=2, y=1, width=5, height=3)  # columns 2..6, rows 1..3
CT_MASK = PixelMask(rectangles=(BAR,), Modality="CT", Rows=16, Columns=16)


def burned_ct(**attributes: object) -> Dataset:
    return ct_dataset(BurnedInAnnotation="YES", Manufacturer="Acme Medical", **attributes)  # type: ignore[arg-type]


def roundtrip(ds: Dataset) -> Dataset:
    """The output as a receiver sees it: written as Part 10 and read back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def decoded(ds: Dataset) -> np.ndarray:
    """All frames as (frames, rows, columns, samples), YBR decoded to RGB."""
    arr, props = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=True)
    frames, samples = int(props.get("number_of_frames") or 1), int(props["samples_per_pixel"])
    return arr.reshape(frames, int(props["rows"]), int(props["columns"]), samples)


def assert_masked(before: np.ndarray, after: np.ndarray, rectangles: list[Rectangle]) -> None:
    inside = np.zeros(before.shape[1:3], dtype=bool)
    for r in rectangles:
        inside[r.y : r.y + r.height, r.x : r.x + r.width] = True
    assert after.shape == before.shape
    assert inside.any()
    assert not after[:, inside, :].any(), "the masked rectangle is all zero"
    assert before[:, inside, :].any(), "the test is not hollow: there was something to blank"
    np.testing.assert_array_equal(after[:, ~inside, :], before[:, ~inside, :])


def test_a_burned_in_image_is_refused_with_a_message_that_says_how_to_proceed():
    ds = burned_ct()
    with pytest.raises(AnonymizationRefused) as refused:
        anonymize(ds, Profile(), KEYS)
    message = refused.value.message
    assert refused.value.status_code == 422
    assert ds.SOPInstanceUID in message
    assert "BurnedInAnnotation is YES" in message
    assert "pixel mask" in message and '"burnedInAnnotation": "keep"' in message
    assert "Modality CT" in message and "16x16 pixels" in message  # what a mask would match on


def test_keep_accepts_the_pixels_and_keeps_the_flag():
    ds = burned_ct()
    out = anonymize(ds, Profile(burned_in="keep"), KEYS)
    assert out.BurnedInAnnotation == "YES"
    assert out.PixelData == ds.PixelData
    assert out.PatientIdentityRemoved == "YES"
    assert "113101" not in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]


def test_a_flag_no_or_absent_is_not_burned_in():
    for ds in (ct_dataset(BurnedInAnnotation="NO"), ct_dataset()):
        assert anonymize(ds, Profile(), KEYS).PixelData == ds.PixelData


def test_a_matching_mask_blanks_its_rectangle_and_records_the_clean_pixel_data_option():
    ds = burned_ct()
    before = decoded(ds)
    reference = copy.deepcopy(ds)
    out = roundtrip(anonymize(ds, Profile(pixel_masks=(CT_MASK,)), KEYS))

    assert_masked(before, decoded(out), [BAR])
    assert out.BurnedInAnnotation == "NO"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (out.BitsAllocated, out.BitsStored, out.PixelRepresentation) == (16, 16, 1)
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100", "113101"]
    assert "Clean Pixel Data Option" in "".join(out.DeidentificationMethod)
    assert out.PatientID != ds.PatientID  # the attribute profile still ran
    # the input is untouched
    assert ds == reference and ds.PixelData == reference.PixelData and ds.BurnedInAnnotation == "YES"


def test_every_matching_mask_applies_and_rectangles_are_clipped():
    ds = burned_ct()
    corner = Rectangle(x=12, y=12, width=100, height=100)  # runs off the image
    outside = Rectangle(x=40, y=40, width=2, height=2)  # entirely outside: nothing to blank
    by_manufacturer = PixelMask(rectangles=(corner, outside), Manufacturer="ACME MEDICAL")  # case ignored
    out = anonymize(ds, Profile(pixel_masks=(CT_MASK, by_manufacturer)), KEYS)
    assert_masked(decoded(ds), decoded(out), [BAR, Rectangle(12, 12, 4, 4)])


def test_a_mask_that_does_not_match_still_refuses():
    ds = burned_ct()
    for mask in (
        PixelMask(rectangles=(BAR,), Modality="US"),
        PixelMask(rectangles=(BAR,), Modality="CT", Rows=480),  # every criterion must match
        PixelMask(rectangles=(BAR,), Manufacturer="Other"),
    ):
        with pytest.raises(AnonymizationRefused):
            anonymize(ds, Profile(pixel_masks=(mask,)), KEYS)


def test_a_mask_wins_over_keep():
    out = anonymize(burned_ct(), Profile(burned_in="keep", pixel_masks=(CT_MASK,)), KEYS)
    assert out.BurnedInAnnotation == "NO"


def test_multi_frame_colour_is_masked_in_every_frame_and_sample():
    rng = np.random.default_rng(3)
    pixels = rng.integers(1, 256, size=(3, 10, 12, 3), dtype=np.uint8)
    ds = ct_dataset(rows=10, columns=12, BurnedInAnnotation="YES")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # multi-frame true colour SC
    ds.Modality = "OT"
    ds.NumberOfFrames = 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds = roundtrip(ds)
    mask = PixelMask(rectangles=(Rectangle(0, 0, 12, 2), Rectangle(9, 5, 3, 5)), SOPClassUID=ds.SOPClassUID)
    out = roundtrip(anonymize(ds, Profile(pixel_masks=(mask,)), KEYS))
    after = decoded(out)
    assert after.shape == (3, 10, 12, 3) and out.NumberOfFrames == 3
    assert_masked(pixels, after, list(mask.rectangles))


@pytest.mark.parametrize("sop_class", sorted(SECONDARY_CAPTURE_SOP_CLASSES))
def test_secondary_captures_are_burned_in_whatever_their_flag_says(sop_class: str):
    ds = ct_dataset(Modality="CT")  # a Secondary Capture of CT pixels: the SOP class alone decides
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    unread = Profile(detect_text=False)  # without text detection (with it, see test_burned_in_text.py)
    with pytest.raises(AnonymizationRefused, match="Secondary Capture"):
        anonymize(ds, unread, KEYS)
    ds.BurnedInAnnotation = "NO"  # screenshots carry a wrong flag as often as none
    with pytest.raises(AnonymizationRefused, match="Secondary Capture"):
        anonymize(ds, unread, KEYS)
    del ds.BurnedInAnnotation
    assert anonymize(ds, Profile(secondary_capture_burned_in=False, detect_text=False), KEYS).PixelData == ds.PixelData


def test_the_flag_refuses_even_when_secondary_captures_are_trusted():
    with pytest.raises(AnonymizationRefused):
        anonymize(burned_ct(), Profile(secondary_capture_burned_in=False), KEYS)


@pytest.mark.parametrize(
    "name,frames,rectangle,syntax",
    [
        # JPEG baseline, YBR_FULL: decoded to RGB, written uncompressed (compressing lossy again loses more)
        ("SC_rgb_jpeg_dcmtk.dcm", 1, Rectangle(10, 20, 30, 15), ExplicitVRLittleEndian),
        ("SC_rgb_rle_2frame.dcm", 2, Rectangle(10, 20, 30, 15), RLELossless),  # RLE, two RGB frames: RLE again
        ("JPEG-LL.dcm", 1, Rectangle(100, 500, 60, 40), ExplicitVRLittleEndian),  # JPEG lossless: no encoder
    ],
)
def test_compressed_burned_in_images_come_out_masked_and_reencoded_where_possible(
    name: str, frames: int, rectangle: Rectangle, syntax: str
):
    ds = pydicom.dcmread(get_testdata_file(name))
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    ds.BurnedInAnnotation = "YES"
    original = to_bytes(ds)
    before = decoded(ds)
    mask = PixelMask(rectangles=(rectangle,), SOPClassUID=SecondaryCaptureImageStorage, Rows=ds.Rows)

    out = roundtrip(anonymize(ds, Profile(pixel_masks=(mask,)), KEYS))

    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.BurnedInAnnotation == "NO"
    assert out.PhotometricInterpretation in ("RGB", "MONOCHROME2")
    assert out.PhotometricInterpretation == ("RGB" if before.shape[-1] == 3 else "MONOCHROME2")
    assert int(out.get("NumberOfFrames", 1)) == frames
    assert "ExtendedOffsetTable" not in out
    if syntax == ExplicitVRLittleEndian:
        assert len(out.PixelData) == before.size * before.itemsize
    assert_masked(before, decoded(out), [rectangle])
    assert to_bytes(ds) == original  # the input is untouched


def test_an_image_without_pixels_is_never_burned_in():
    ds = burned_ct()
    del ds.PixelData
    assert anonymize(ds, Profile(), KEYS).BurnedInAnnotation == "YES"


# ---------------------------------------------------------------- profile and mask JSON


def test_profile_from_json():
    mask = {"name": "US top bar", "match": {"Modality": "US", "Rows": 480}, "rectangles": [BAR.to_json()]}
    profile = Profile.from_json({"options": ["RETAIN_UIDS"], "burnedInAnnotation": "keep", "pixelMasks": [mask]})
    assert profile.burned_in == "keep"
    assert profile.pixel_masks == (PixelMask(rectangles=(BAR,), Modality="US", Rows=480, name="US top bar"),)
    assert profile.pixel_masks[0].to_json() == mask
    assert Profile.from_json({}) == Profile()
    more = profile.with_pixel_masks([CT_MASK])
    assert more.pixel_masks == (*profile.pixel_masks, CT_MASK) and more.options == profile.options
    assert profile.pixel_masks == (PixelMask.from_json(mask),)  # the original is unchanged (frozen)


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"burnedInAnnotation": "clean"}, "burnedInAnnotation"),
        ({"burnedInAnnotation": True}, "burnedInAnnotation"),
        ({"pixelMasks": {"match": {}}}, "JSON array"),
        ({"pixelMasks": [{"rectangles": [BAR.to_json()]}]}, "which images"),
        ({"pixelMasks": [{"match": {"Modality": "US"}, "rectangles": []}]}, "at least one rectangle"),
        ({"pixelMasks": [{"match": {"Modality": "US"}}]}, "rectangles"),
        ({"pixelMasks": [{"match": {"PatientName": "x"}, "rectangles": [BAR.to_json()]}]}, "PatientName"),
        ({"pixelMasks": [{"match": {"Rows": "480"}, "rectangles": [BAR.to_json()]}]}, "Rows"),
        ({"pixelMasks": [{"match": {"Modality": "US"}, "rectangles": [[0, 0, 1, 1]]}]}, "rectangle"),
        (
            {"pixelMasks": [{"match": {"Modality": "US"}, "rectangles": [{"x": 0, "y": 0, "width": 0, "height": 1}]}]},
            "width",
        ),
        (
            {"pixelMasks": [{"match": {"Modality": "US"}, "rectangles": [{"x": -1, "y": 0, "width": 1, "height": 1}]}]},
            "x and y",
        ),
        ({"options": ["NOPE"]}, "NOPE"),
    ],
)
def test_bad_profile_json_is_invalid_input(body: dict, needle: str):
    with pytest.raises(InvalidInput) as bad:
        Profile.from_json(body)
    assert needle in bad.value.message


def test_profile_refuses_an_unknown_burned_in_policy():
    with pytest.raises(ValueError, match="burned_in"):
        Profile(burned_in="maybe")


def test_load_pixel_masks_from_text_list_or_file(tmp_path: Path):
    masks = [CT_MASK.to_json()]
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(masks))
    assert load_pixel_masks(json.dumps(masks)) == load_pixel_masks(masks) == load_pixel_masks(str(path)) == (CT_MASK,)
    assert load_pixel_masks("") == ()
    with pytest.raises(InvalidInput, match="cannot read"):
        load_pixel_masks(str(tmp_path / "missing.json"))
    path.write_text("[{")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_pixel_masks(str(path))
    with pytest.raises(InvalidInput, match="pixel mask 1"):
        load_pixel_masks([CT_MASK.to_json(), {"match": {}}])


def test_masks_cannot_select_by_identifiers():
    """Masks carry no identifiers: matching is by class, modality, device and size only."""
    uid = generate_uid()
    with pytest.raises(InvalidInput, match="SOPInstanceUID"):
        PixelMask.from_json({"match": {"SOPInstanceUID": uid}, "rectangles": [BAR.to_json()]})


def test_single_bit_secondary_capture_is_repacked():
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, size=(2, 8, 16), dtype=np.uint8)
    bits[:, 0:2, :] = 1
    ds = ct_dataset(rows=8, columns=16, Modality="OT")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.1"  # multi-frame single bit SC
    ds.NumberOfFrames = 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.PixelData = pack_bits(bits)
    ds = roundtrip(ds)
    mask = PixelMask(rectangles=(Rectangle(0, 0, 16, 2),), SOPClassUID=ds.SOPClassUID)
    out = roundtrip(anonymize(ds, Profile(pixel_masks=(mask,)), KEYS))
    assert out.BitsAllocated == 1 and len(out.PixelData) == 2 * 8 * 16 // 8
    assert_masked(bits[..., np.newaxis], decoded(out), [Rectangle(0, 0, 16, 2)])
