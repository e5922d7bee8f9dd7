"""render_png: one frame through the display pipeline into a PNG; image_information."""

from __future__ import annotations

import base64
import io
import os
import warnings

import numpy as np
import pydicom
import pydicom.data
import pytest
from bundled import bundled_part10_files
from generators import ct_dataset, to_bytes
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import HTJ2K, HTJ2KLossless, HTJ2KLosslessRPCL, JPEGBaseline8Bit, RLELossless

from slicebox_lab.dicom import (
    ACCEPTED_TRANSFER_SYNTAXES,
    image_information,
    parse_part10,
    render_png,
    verify_pixel_data,
)
from slicebox_lab.errors import InvalidDicom, InvalidInput, RenderingFailed


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.load()
    return np.asarray(image)


def ct_with_pixels(pixels: np.ndarray, **attributes: object) -> Dataset:
    """A CT (intercept -1024, window C40/W400) holding exactly these stored values."""
    ds = ct_dataset(rows=pixels.shape[0], columns=pixels.shape[1], **attributes)
    ds.PixelData = pixels.astype(np.int16).tobytes()
    return parse_part10(to_bytes(ds)).dataset


# ---------------------------------------------------------------- the bundled corpus


def bundled_images() -> list[str]:
    """Bundled files that parse_part10 accepts and that have pixel data."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in bundled_part10_files():
            try:
                ds = parse_part10(open(path, "rb").read()).dataset
            except InvalidDicom:
                continue
            if any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                found.append(path)
    return found


BUNDLED_IMAGES = bundled_images()

#: Accepted bundled files whose pixel data is genuinely broken (see pydicom's test_files/README.txt).
CANNOT_RENDER = {
    # "4 of the encoded pixel data bytes replaced with the Sequence Delimiter": not a J2K codestream
    "JPEG2000-embedded-sequence-delimiter.dcm": "Unable to decode",
    # NEMA's NM1_JPLY: invalid SOS parameters for sequential JPEG (JPGExtended.dcm is the fixed copy)
    "JPEG-lossy.dcm": "Unable to decode",
    # made to test bad values: Number of Frames '1A'
    "badVR.dcm": "1A",
}


def bundled_id(path: str) -> str:
    return os.path.relpath(path, os.path.dirname(os.path.dirname(path)))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", BUNDLED_IMAGES, ids=bundled_id)
def test_bundled_image_renders_first_and_last_frame(path: str) -> None:
    ds = parse_part10(open(path, "rb").read()).dataset
    frames = image_information(ds)["number_of_frames"]
    name = os.path.basename(path)
    for frame in sorted({1, frames}):
        if name in CANNOT_RENDER:
            with pytest.raises(RenderingFailed) as failed:
                render_png(ds, frame)
            assert CANNOT_RENDER[name] in failed.value.message
            # ingest refuses them up front, naming the reason
            with pytest.raises(InvalidDicom) as refused:
                verify_pixel_data(ds)
            assert CANNOT_RENDER[name] in refused.value.message
            continue
        verify_pixel_data(ds)
        pixels = decode(render_png(ds, frame))
        assert pixels.shape[:2] == (ds.Rows, ds.Columns)
        assert pixels.dtype == np.uint8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_bundled_images_cover_every_codec_family() -> None:
    syntaxes = set()
    for path in BUNDLED_IMAGES:
        syntaxes.add(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    for uid in (
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.1.99",  # deflated
        "1.2.840.10008.1.2.2",  # big endian
    ):
        assert uid in syntaxes


@pytest.mark.parametrize(
    "name",
    [
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
    ],
)
def test_jpeg_ls_near_lossless_renders(name: str) -> None:
    """parse_part10 refuses these bundled files (no study or series), but their pixels decode."""
    path = pydicom.data.get_testdata_file(name)
    assert isinstance(path, str)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.81"
    assert decode(render_png(ds)).shape[:2] == (ds.Rows, ds.Columns)


# ---------------------------------------------------------------- HTJ2K

#: 16 x 16 12-bit ramps ((x + 16 y) * 13 mod 4096) encoded with OpenJPH's ojph_compress:
#: reversible (RPCL progression, valid for .201 and .202) and irreversible.
HTJ2K_REVERSIBLE = base64.b64decode(
    "/0//UQApQAAAAAAQAAAAEAAAAAAAAAAAAAAAEAAAABAAAAAAAAAAAAABCwEB/1AACAACAAAACP9SAAwAAgABAAUEBEAB"
    "/1wAEyBweHiAeHiAeHiAeHh4cHB4/2QAFgABT3BlbkpQSCBWZXIgMC45LjAu/5AACgAAAAAAeQAB/5PAATAZ+AMHdAAA"
    "wACWAATA7AEHdADY/gMHdADAAJoABOA0/QCCdABoR/sAo1QAwACogAFWGGP8qnACdQCmmzZt+sBCAey2AMABWQAFpIiI"
    "iIjnwKenp8J4AJ49PT09PT09/Yxge/Yxgey6AP/Z"
)
HTJ2K_IRREVERSIBLE = base64.b64decode(
    "/0//UQApQAAAAAAQAAAAEAAAAAAAAAAAAAAAEAAAABAAAAAAAAAAAAABCwEB/1AACAACAAAAIP9SAAwAAgABAAUEBEAA"
    "/1wAIyJhqWGLYYthblmZWZlZhlHLUctR2kpCSkJKlkIgQiBB2P9kABYAAU9wZW5KUEggVmVyIDAuOS4wLv+QAAoAAAAA"
    "AG8AAf+TwATAEf4Ch3QAAMAJYATQAlDiAAd0AMb+Agd0APUAx3QAwBLAFRAEYMAAQnQAAVAA6ACGtACAAwDAJYBXgPCg"
    "C+QABIpYiEUU8UAAAKbtajgAoCtAAFZVfQV7917LMYzqAP/Z"
)
RAMP = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 13) % 4096


def htj2k_dataset(transfer_syntax: str, codestream: bytes) -> Dataset:
    ds = ct_dataset(rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return parse_part10(to_bytes(ds)).dataset


@pytest.mark.parametrize(
    ("transfer_syntax", "codestream", "tolerance"),
    [
        (HTJ2KLossless, HTJ2K_REVERSIBLE, 0),
        (HTJ2KLosslessRPCL, HTJ2K_REVERSIBLE, 0),
        (HTJ2K, HTJ2K_IRREVERSIBLE, 400),
    ],
)
def test_htj2k_is_accepted_because_the_installed_plugins_decode_it(
    transfer_syntax: str, codestream: bytes, tolerance: int
) -> None:
    assert transfer_syntax in ACCEPTED_TRANSFER_SYNTAXES
    ds = htj2k_dataset(transfer_syntax, codestream)
    decoded = pydicom.pixels.get_decoder(transfer_syntax).as_array(ds, index=0)[0]
    assert np.abs(decoded.astype(int) - RAMP.astype(int)).max() <= tolerance
    pixels = decode(render_png(ds))
    assert pixels.shape == (16, 16)
    if tolerance == 0:  # the frame's range is stretched to 0..255: the ramp's order is kept
        assert pixels[0, 0] == 0 and pixels.max() == 255
        assert np.array_equal(np.argsort(pixels.ravel(), kind="stable"), np.argsort(RAMP.ravel(), kind="stable"))


# ---------------------------------------------------------------- grey-scale pipeline


def test_ct_default_window_from_the_file() -> None:
    """C40/W400 after intercept -1024: -1024 HU is black, +1000 HU white, 40 HU mid-grey."""
    stored = np.zeros((4, 4), dtype=np.int16)
    stored[0, 0] = 0  # -1024 HU
    stored[0, 1] = 2024  # +1000 HU
    stored[0, 2] = 1064  # 40 HU, the window center
    stored[0, 3] = 1024 - 160  # -160 HU, the window's bottom
    pixels = decode(render_png(ct_with_pixels(stored)))
    assert pixels[0, 0] == 0
    assert pixels[0, 1] == 255
    assert 126 <= pixels[0, 2] <= 129
    assert pixels[0, 3] == 0


def test_window_argument_overrides_the_file_and_changes_the_output() -> None:
    stored = np.arange(64, dtype=np.int16).reshape(8, 8) * 32  # -1024 .. 992 HU
    ds = ct_with_pixels(stored)
    default = decode(render_png(ds))
    wide = decode(render_png(ds, window_min=-1024, window_max=992))
    assert not np.array_equal(default, wide)
    assert wide[0, 0] == 0 and wide[7, 7] == 255
    assert np.all(np.diff(wide.ravel().astype(int)) >= 0)  # a linear ramp stays monotonic
    # an empty or inverted window falls back to the file's window
    assert np.array_equal(decode(render_png(ds, window_min=5, window_max=5)), default)
    assert np.array_equal(decode(render_png(ds, window_min=100, window_max=-100)), default)


def test_without_any_window_the_frame_range_is_used() -> None:
    stored = np.arange(16, dtype=np.int16).reshape(4, 4) * 100
    ds = ct_with_pixels(stored)
    del ds.WindowCenter, ds.WindowWidth
    pixels = decode(render_png(ds))
    assert pixels[0, 0] == 0 and pixels[3, 3] == 255


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    stored = np.arange(64, dtype=np.int16).reshape(8, 8) * 7
    mono2 = ct_with_pixels(stored)
    mono1 = ct_with_pixels(stored, PhotometricInterpretation="MONOCHROME1")
    for ds in (mono1, mono2):
        del ds.WindowCenter, ds.WindowWidth
    assert np.array_equal(decode(render_png(mono1)).astype(int), 255 - decode(render_png(mono2)).astype(int))


def test_voi_lut_sequence_is_applied_when_there_is_no_window() -> None:
    stored = np.array([[0, 1, 2, 3]], dtype=np.int16)
    ds = ct_with_pixels(stored)
    del ds.WindowCenter, ds.WindowWidth, ds.RescaleIntercept, ds.RescaleSlope
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.LUTData = [1000, 0, 500, 1000]  # a LUT that is not monotonic, unlike any window
    ds.VOILUTSequence = Sequence([lut])
    assert decode(render_png(ds)).tolist() == [[255, 0, 128, 255]]


def test_enhanced_multiframe_uses_the_functional_groups() -> None:
    """Rescale and window in the shared functional groups, not at the top level."""
    ds = ct_dataset(rows=2, columns=2)
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.NumberOfFrames = 2
    ds.PixelData = np.array([[[0, 2024], [1064, 0]], [[2024, 0], [0, 0]]], dtype=np.int16).tobytes()
    transformation = Dataset()
    transformation.RescaleIntercept, transformation.RescaleSlope, transformation.RescaleType = -1024, 1, "HU"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transformation])
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    parsed = parse_part10(to_bytes(ds)).dataset
    first = decode(render_png(parsed, 1))
    assert first[0, 0] == 0 and first[0, 1] == 255 and 126 <= first[1, 0] <= 129
    assert decode(render_png(parsed, 2))[0, 0] == 255


# ---------------------------------------------------------------- frames and size


def three_frames() -> Dataset:
    ds = ct_dataset(rows=4, columns=6)
    ds.NumberOfFrames = 3
    frames = np.stack([np.full((4, 6), value, dtype=np.int16) for value in (0, 1064, 2024)])
    frames[:, 0, 0] = (0, 0, 0)
    ds.PixelData = frames.tobytes()
    return parse_part10(to_bytes(ds)).dataset


def test_each_frame_is_rendered() -> None:
    ds = three_frames()
    assert decode(render_png(ds, 1))[1, 1] == 0
    assert 126 <= decode(render_png(ds, 2))[1, 1] <= 129
    assert decode(render_png(ds, 3))[1, 1] == 255


def test_each_frame_of_rle_is_rendered() -> None:
    ds = three_frames()
    ds.compress(RLELossless)
    ds = parse_part10(to_bytes(ds)).dataset
    assert decode(render_png(ds, 3))[1, 1] == 255


@pytest.mark.parametrize("frame", [0, -1, 4, 100])
def test_frame_out_of_range_is_invalid_input(frame: int) -> None:
    with pytest.raises(InvalidInput) as invalid:
        render_png(three_frames(), frame)
    assert "frame_number" in invalid.value.message
    if frame > 3:
        assert "between 1 and 3" in invalid.value.message


def test_single_frame_range_is_named() -> None:
    with pytest.raises(InvalidInput, match="between 1 and 1"):
        render_png(ct_with_pixels(np.zeros((2, 2))), 2)


def test_image_height_rescales_preserving_aspect_ratio() -> None:
    ds = ct_with_pixels(np.zeros((100, 50)))
    image = Image.open(io.BytesIO(render_png(ds, image_height=400)))
    assert image.size == (200, 400)
    image = Image.open(io.BytesIO(render_png(ds, image_height=30)))
    assert image.size == (15, 30)
    assert Image.open(io.BytesIO(render_png(ds))).size == (50, 100)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"image_height": -1}, "image_height"),
        ({"image_height": 10**6}, "image_height"),
        ({"window_min": float("nan"), "window_max": 10.0}, "window_min must be a finite number"),
        ({"window_min": 0.0, "window_max": float("inf")}, "window_max must be a finite number"),
    ],
)
def test_bad_arguments_are_invalid_input(arguments: dict[str, float], words: str) -> None:
    with pytest.raises(InvalidInput) as invalid:
        render_png(ct_with_pixels(np.zeros((2, 2))), **arguments)  # type: ignore[arg-type]
    assert words in invalid.value.message


def test_no_pixel_data_cannot_be_rendered() -> None:
    ds = ct_with_pixels(np.zeros((2, 2)))
    del ds.PixelData
    with pytest.raises(RenderingFailed, match="image has no pixel data"):
        render_png(ds)


def test_a_broken_codestream_is_rendering_failed() -> None:
    ds = ct_dataset(rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a JPEG \xff\xd9"])
    ds["PixelData"].VR = "OB"
    parsed = parse_part10(to_bytes(ds)).dataset
    with pytest.raises(RenderingFailed, match="image cannot be rendered"):
        render_png(parsed)


# ---------------------------------------------------------------- colour


def rgb_dataset(photometric: str = "RGB") -> tuple[Dataset, np.ndarray]:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[1] = (200, 100, 50)
    ds = ct_dataset(rows=4, columns=4)
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)
    ds.PixelData = stored.tobytes()
    return parse_part10(to_bytes(ds)).dataset, rgb


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_is_rendered_as_rgb(photometric: str) -> None:
    ds, rgb = rgb_dataset(photometric)
    pixels = decode(render_png(ds))
    assert pixels.shape == (4, 4, 3)
    assert np.abs(pixels.astype(int) - rgb.astype(int)).max() <= 2


# ---------------------------------------------------------------- image_information


def test_image_information_defaults() -> None:
    ds = ct_with_pixels(np.zeros((2, 2)))
    assert image_information(ds) == {
        "number_of_frames": 1,
        "frame_index": 1,
        "minimum_pixel_value": 0,
        "maximum_pixel_value": 0,
    }


def test_image_information_values() -> None:
    ds = three_frames()
    ds.InstanceNumber = 4
    ds.ImageIndex = 9
    ds.SmallestImagePixelValue = -5
    ds.LargestImagePixelValue = 2024
    assert image_information(ds) == {
        "number_of_frames": 3,
        "frame_index": 9,
        "minimum_pixel_value": -5,
        "maximum_pixel_value": 2024,
    }
