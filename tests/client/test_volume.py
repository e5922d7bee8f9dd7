"""Series.to_numpy() against pydicom's own decoding: a 100-slice oblique CT uploaded in shuffled order,
compressed series (RLE, JPEG-LS, JPEG 2000) and multi-frame images."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator

import numpy as np
import pydicom
import pydicom.data
import pytest
from clientnode import client_of, running_node
from generators import ct_dataset, to_bytes
from nodeproc import NodeProcess
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless, generate_uid

from slicebox_lab.client import SliceboxClient, Volume

ROW = (1.0, 0.0, 0.0)
COL = (0.0, 0.8, -0.6)
NORMAL = np.cross(ROW, COL)  # (0, 0.6, 0.8)
STEP = 2.5


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("client-volume")) as n:
        yield n


@pytest.fixture(scope="module")
def sbx(node: NodeProcess) -> SliceboxClient:
    return client_of(node)


def _oblique_ct(n: int = 100) -> list[Dataset]:
    """Slices k = 0..n-1 along the normal, in-plane offsets and instance numbers scrambled, and a rescale
    that differs between slices; position order is the only right order."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    origin = np.array([-40.0, 12.5, 300.0])
    slices = []
    for k in range(n):
        in_plane = (k % 7) * np.array(ROW) + (k % 5) * np.array(COL)  # does not move the slice along the normal
        position = origin + k * STEP * NORMAL + in_plane
        ds = ct_dataset(
            PatientID="VOL",
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            rows=24,
            columns=20,
            seed=1000 + k,
            InstanceNumber=(k * 37) % n + 1,
            ImagePositionPatient=[f"{v:.4f}" for v in position],
            ImageOrientationPatient=[*ROW, *COL],
            PixelSpacing=[0.6, 0.8],
            SliceThickness=STEP,
            FrameOfReferenceUID=frame,
        )
        ds.RescaleSlope = 2 if k % 3 == 0 else 1
        ds.RescaleIntercept = -1000 if k % 2 else -1024
        slices.append(ds)
    return slices


def _decoded(ds: Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_hundred_slice_ct_uploaded_shuffled_equals_pydicom(sbx: SliceboxClient) -> None:
    slices = _oblique_ct()
    order = list(range(len(slices)))
    random.Random(4).shuffle(order)
    for k in order:
        sbx.upload_bytes(to_bytes(slices[k]))
    series_id = int(sbx.flat_series(PatientID="VOL")["series_id"].iloc[0])
    volume = sbx.series_obj(series_id).to_numpy(progress=True)
    assert isinstance(volume, Volume)
    assert volume.array.dtype == np.float32 and volume.shape == (100, 24, 20)
    expected = np.stack([_decoded(ds) for ds in slices])
    np.testing.assert_array_equal(volume.array, expected.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(volume), volume.array)
    assert volume.spacing == pytest.approx((STEP, 0.6, 0.8), abs=1e-3)
    assert volume.orientation == pytest.approx((*ROW, *COL))
    np.testing.assert_allclose(
        volume.positions, [[float(v) for v in ds.ImagePositionPatient] for ds in slices], atol=1e-3
    )
    sop_to_id = {r["SOPInstanceUID"]: int(r["id"]) for r in sbx.images(series_id).to_dict("records")}
    assert volume.image_ids == [sop_to_id[ds.SOPInstanceUID] for ds in slices]
    assert volume.window == (40.0, 400.0)
    assert np.all(np.diff(volume.positions @ NORMAL) > 0)
    # the same through the client's other door
    np.testing.assert_array_equal(sbx.series_volume(series_id).array, volume.array)


def test_instance_number_orders_slices_without_positions(sbx: SliceboxClient) -> None:
    study, series = generate_uid(), generate_uid()
    slices = [
        ct_dataset(PatientID="NOPOS", StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=k + 1, seed=k)
        for k in range(6)
    ]
    for ds in reversed(slices):
        sbx.upload_bytes(to_bytes(ds))
    series_id = int(sbx.flat_series(PatientID="NOPOS")["series_id"].iloc[0])
    volume = sbx.series_volume(series_id)
    np.testing.assert_array_equal(volume.array, np.stack([_decoded(ds) for ds in slices]).astype(np.float32))
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.orientation is None


def test_rle_compressed_series_decodes(sbx: SliceboxClient) -> None:
    slices = _oblique_ct(5)
    originals = [copy.deepcopy(ds) for ds in slices]
    for ds in slices:
        ds.PatientID = "RLE"
        ds.compress(RLELossless, encoding_plugin="pydicom")
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        sbx.upload_bytes(to_bytes(ds))
    series_id = int(sbx.flat_series(PatientID="RLE")["series_id"].iloc[0])
    assert set(sbx.images(series_id)["TransferSyntaxUID"]) == {RLELossless}
    volume = sbx.series_volume(series_id)
    np.testing.assert_array_equal(volume.array, np.stack([_decoded(ds) for ds in originals]).astype(np.float32))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm"])
def test_bundled_compressed_image_decodes(sbx: SliceboxClient, name: str) -> None:
    path = pydicom.data.get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.PatientID = f"BUNDLED-{name}"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    image = sbx.upload_bytes(to_bytes(ds))
    expected = pydicom.dcmread(path).pixel_array.astype(np.float64)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    expected = expected * slope + intercept
    np.testing.assert_array_equal(sbx.pixel_array(image["id"]), expected.astype(np.float32))
    volume = sbx.series_volume(image["series_id"])
    assert volume.shape == (1, *expected.shape)
    np.testing.assert_array_equal(volume.array[0], expected.astype(np.float32))


def test_multiframe_image_frames_are_slices(sbx: SliceboxClient) -> None:
    path = pydicom.data.get_testdata_file("emri_small_jpeg_2k_lossless.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    ds.PatientID = "MULTIFRAME"
    image = sbx.upload_bytes(to_bytes(ds))
    expected = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert expected.shape[0] == 10
    np.testing.assert_array_equal(sbx.pixel_array(image["id"]), expected)
    np.testing.assert_array_equal(sbx.pixel_array(image["id"], frame=3), expected[2])
    volume = sbx.series_volume(image["series_id"])
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.image_ids == [image["id"]] * 10 and volume.frames == list(range(1, 11))


def test_enhanced_multiframe_sorted_by_per_frame_positions(sbx: SliceboxClient) -> None:
    """Frames stored top-down; per-frame positions and the shared rescale decide the order and values."""
    frames = 5
    ds = ct_dataset(PatientID="ENHANCED", rows=8, columns=6)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 1000, size=(frames, 8, 6), dtype=np.int16)
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 3
    transform.RescaleSlope = 2
    transform.RescaleIntercept = -5
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for n in range(frames):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0, 0, 40 - 4 * n]  # frame 1 is the highest slice
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    image = sbx.upload_bytes(to_bytes(ds))
    volume = sbx.series_volume(image["series_id"])
    expected = (pixels[::-1].astype(np.float32) * 2) - 5
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.spacing == pytest.approx((4.0, 0.5, 0.5))
    assert volume.frames == [5, 4, 3, 2, 1]
    assert list(volume.positions[:, 2]) == [24, 28, 32, 36, 40]
