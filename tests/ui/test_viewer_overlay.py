"""The Viewer draws an app's segmentation (DICOM SEG) over the series it was made from, without a browser.

The SEG is the shipped example app's result (slicebox_lab/apps/examples/body_and_lungs.py, run by a real
``jupyter slicebox`` node); the front end is played by hand as in test_viewer.py, so the test sees the
label maps the browser would blend over each slice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from e2e.labproc import phantom_series, upload_series
from e2e.nodeproc import NodeProcess, start_node
from test_viewer import frontend, wait_for

import slicebox_lab
from slicebox_lab.ui.overlay import PALETTE, cielab_to_rgb
from slicebox_lab.ui.viewer import Viewer

pytest.importorskip("highdicom", reason="the example app makes its SEG with highdicom: pip install -e '.[apps]'")
pytest.importorskip("scipy", reason="the example app fills holes with scipy: pip install -e '.[apps]'")

N = 10
SIZE = 48
DICOM = {"Content-Type": "application/dicom"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    work = tmp_path_factory.mktemp("overlay")
    node = start_node(work / "node", work, "overlay-token", "--SliceboxApp.fsync=False")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Any:
    return slicebox_lab.connect(node.url, token=node.token)


@pytest.fixture(scope="module")
def ct_and_seg(node: NodeProcess) -> tuple[int, int]:
    """A CT series and the example app's SEG of it, made by the node."""
    s = node.session()
    ct = upload_series(node.api, s, phantom_series(N, SIZE, PatientName="Overlay^Ct", PatientID="OVL-1"))
    function = "slicebox_lab.apps.examples.body_and_lungs:segment"
    example = {"name": "body-and-lungs", "version": "1.0", "function": function}
    app = s.post(node.api + "/apps", json=example)
    assert app.status_code == 201, app.text
    job = s.post(f"{node.api}/apps/{app.json()['id']}/runs", json={"series_ids": [ct]}).json()
    deadline = time.monotonic() + 180
    while (job := s.get(f"{node.api}/jobs/{job['id']}").json())["state"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, "the example app did not finish"
        time.sleep(0.2)
    assert job["state"] == "SUCCEEDED", job
    (run,) = s.get(node.api + "/apps/runs", params={"job": job["id"]}).json()
    return ct, int(run["outputs"][0]["series_id"])


def expected_labels(client: Any, ct: int) -> dict[int, np.ndarray]:
    """image id → label map: 2 where the app found lungs, 1 where body only, 0 elsewhere."""
    from slicebox_lab.apps.examples.body_and_lungs import masks

    volume = client.series_volume(ct)
    body, lungs = masks(volume.array)
    labels = np.where(lungs, 2, np.where(body, 1, 0)).astype(np.uint8)
    return {image_id: labels[i] for i, image_id in enumerate(volume.image_ids)}


def overlay_loaded(viewer: Viewer) -> bool:
    return viewer.overlay_status.startswith("on ") and viewer.overlay_map(*viewer.slice_image(0)) is not None


def test_the_newest_segmentation_of_the_series_is_drawn_over_each_slice(client: Any, ct_and_seg: tuple[int, int]):
    ct, seg = ct_and_seg
    expected = expected_labels(client, ct)
    assert all(m.any() for m in expected.values()) and any((m == 2).any() for m in expected.values())
    viewer = Viewer(client, series_id=ct)
    sent = frontend(viewer)
    wait_for(lambda: overlay_loaded(viewer), 60)
    assert viewer.overlays == [{"series_id": seg, "label": "body-and-lungs 1.0: body and lungs"}]
    assert viewer.overlay_series_id == seg and viewer.overlay_visible
    assert viewer.overlay_status == f"on {N} of {N} slices"
    colors = ["#{:02x}{:02x}{:02x}".format(*c) for c in PALETTE[:2]]
    assert viewer.overlay_segments == [
        {"number": 1, "label": "Body", "color": colors[0]},
        {"number": 2, "label": "Lungs", "color": colors[1]},
    ]
    for i in range(N):
        image_id, frame = viewer.slice_image(i)
        assert np.array_equal(viewer.overlay_map(image_id, frame), expected[image_id]), f"slice {i}"
    # what the browser got: one label map per slice, keyed by its image and frame, the same values
    wait_for(lambda: len([c for c, _ in sent if c["type"] == "overlay"]) == N, 30)
    for content, buffers in [(c, b) for c, b in sent if c["type"] == "overlay"]:
        assert content["overlay"] == seg and content["generation"] == viewer.generation
        got = np.frombuffer(buffers[0], np.uint8).reshape(content["rows"], content["columns"])
        assert np.array_equal(got, expected[content["image_id"]])
    # hidden and shown again from the kernel
    viewer.show_overlay(None)
    assert viewer.overlay_series_id is None and viewer.overlay_map(*viewer.slice_image(0)) is None
    viewer.show_overlay(seg)
    assert np.array_equal(viewer.overlay_map(*viewer.slice_image(3)), expected[viewer.slice_image(3)[0]])
    viewer.close()


def test_showing_the_segmentation_itself_shows_its_source_series_under_it(client: Any, ct_and_seg: tuple[int, int]):
    ct, seg = ct_and_seg
    viewer = Viewer(client, series_id=seg)
    frontend(viewer)
    assert viewer.series_id == ct and viewer.n_slices == N
    wait_for(lambda: overlay_loaded(viewer), 60)
    assert viewer.overlay_series_id == seg
    viewer.close()


def test_frames_without_their_source_image_find_their_slice_by_position(
    node: NodeProcess, client: Any, ct_and_seg: tuple[int, int]
):
    """A SEG that names no source image per frame (some tools leave DerivationImageSequence out)."""
    ct, seg = ct_and_seg
    import io

    ds = pydicom.dcmread(io.BytesIO(client.image_bytes(client.image_ids(seg)[0])))
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    ds.SeriesInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = "positions only"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    r = node.session().post(node.api + "/images", data=out.getvalue(), headers=DICOM)
    assert r.status_code == 201, r.text
    positions_only = int(r.json()["series_id"])
    expected = expected_labels(client, ct)
    viewer = Viewer(client, series_id=ct)
    frontend(viewer)
    wait_for(lambda: len(viewer.overlays) == 2, 60)
    assert {o["label"] for o in viewer.overlays} == {"body-and-lungs 1.0: body and lungs", "positions only"}
    viewer.show_overlay(positions_only)
    assert viewer.overlay_status == f"on {N} of {N} slices", viewer.overlay_status
    for i in range(N):
        image_id, frame = viewer.slice_image(i)
        assert np.array_equal(viewer.overlay_map(image_id, frame), expected[image_id]), f"slice {i}"
    viewer.close()
    assert node.session().delete(f"{node.api}/images/{r.json()['id']}").status_code in (200, 204)


def test_recommended_display_colours_are_converted_from_cielab():
    # DICOM PS3.3 C.10.7.1.1: L*a*b* scaled to 0..65535; white, black and a pure red
    assert cielab_to_rgb([65535, 32896, 32896]) == (255, 255, 255)
    assert cielab_to_rgb([0, 32896, 32896]) == (0, 0, 0)
    red = cielab_to_rgb([int(53.24 * 655.35), int((80.09 + 128) * 257), int((67.20 + 128) * 257)])
    assert red[0] >= 250 and red[1] <= 10 and red[2] <= 10, red
