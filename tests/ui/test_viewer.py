"""The Viewer's model without a browser, against a real `jupyter slicebox` process.

The front end is played by hand: it sends ``ready`` and records the slice messages the kernel would
put on the wire, so the test sees exactly the bytes the browser would draw.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom.uid
import pytest
from e2e.labproc import phantom_series, upload_series
from e2e.nodeproc import NodeProcess, start_node
from generators import ct_dataset, to_bytes

import slicebox_lab
from slicebox_lab.ui.viewer import PRESETS, Viewer

DICOM = {"Content-Type": "application/dicom"}
N = 12


def upload(node: NodeProcess, files: list[bytes]) -> int:
    return upload_series(node.api, node.session(), files)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    work = tmp_path_factory.mktemp("viewer")
    node = start_node(work / "node", work)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Any:
    return slicebox_lab.connect(node.url, token=node.token)


@pytest.fixture(scope="module")
def series_id(node: NodeProcess) -> int:
    return upload(node, phantom_series(N, 64))


def frontend(viewer: Viewer) -> list[tuple[dict[str, Any], list[bytes]]]:
    """Record what the kernel sends, then say ``ready`` as viewer.js does once its model exists."""
    sent: list[tuple[dict[str, Any], list[bytes]]] = []
    original = viewer.send

    def record(content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        sent.append((content, list(buffers or [])))
        original(content, buffers)

    viewer.send = record  # type: ignore[method-assign]
    viewer._handle_custom_msg({"type": "ready"}, [])
    return sent


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_series_pixels_reach_the_browser_once_and_equal_the_volume(client: Any, series_id: int):
    volume = client.series_volume(series_id)
    viewer = Viewer(client, series_id=series_id)
    sent = frontend(viewer)
    # the shown slice is there before the rest has loaded, and goes first
    assert viewer.n_slices == N and viewer.index == 0
    assert (viewer.rows, viewer.columns) == (64, 64)
    assert sent and sent[0][0]["index"] == 0
    assert viewer.wait(60)
    assert viewer.error == "" and viewer.n_loaded == N
    assert viewer.status == f"{N} of {N} slices loaded"
    # the kernel's copy: sorted by position, rescale applied, the client's volume exactly
    for i in range(N):
        assert np.array_equal(viewer.slice_array(i).astype(np.float32), volume.array[i])
        assert viewer.slice_image(i) == (volume.image_ids[i], 1)
    # what went on the wire: each slice once, int16 (lossless for CT), equal to the volume
    slices = [(c, b) for c, b in sent if c["type"] == "slice"]
    assert sorted(c["index"] for c, _ in slices) == list(range(N))
    for content, buffers in slices:
        assert content["dtype"] == "int16" and (content["rows"], content["columns"]) == (64, 64)
        values = np.frombuffer(buffers[0], np.int16).reshape(64, 64).astype(np.float32)
        assert np.array_equal(values, volume.array[content["index"]])
        assert content["image_id"] == volume.image_ids[content["index"]]
    assert not [c for c, _ in sent if c["type"] == "order"]  # instance numbers already in position order
    # the attribute list follows the shown image
    wait_for(lambda: viewer.attributes)
    names = {a["name"]: a["value"] for a in viewer.attributes}
    assert names["Modality"] == "CT" and names["InstanceNumber"] == "1" and names["SOPInstanceUID"]
    viewer.index = 5
    assert viewer.current_image_id == volume.image_ids[5]
    viewer.close()


def test_instance_numbers_against_position_are_reordered(node: NodeProcess, client: Any):
    series = upload(node, phantom_series(6, 16, reverse_instances=True))
    volume = client.series_volume(series)
    viewer = Viewer(client, series_id=series)
    sent = frontend(viewer)
    assert viewer.wait(60)
    for i in range(6):
        assert np.array_equal(viewer.slice_array(i).astype(np.float32), volume.array[i])
    # the browser is told the permutation instead of getting the pixels again
    orders = [c for c, _ in sent if c["type"] == "order"]
    assert len(orders) == 1 and sorted(orders[0]["order"]) == list(range(6))
    assert len([c for c, _ in sent if c["type"] == "slice"]) == 6
    viewer.close()


def test_presets_and_window(client: Any, series_id: int):
    viewer = Viewer(client, series_id=series_id)
    assert (viewer.window_center, viewer.window_width) == (40.0, 400.0)  # the image's own window
    for name, (center, width) in PRESETS.items():
        viewer.preset(name)
        assert (viewer.window_center, viewer.window_width) == (center, width)
    assert (PRESETS["lung"], PRESETS["bone"], PRESETS["brain"]) == ((-600, 1500), (300, 1500), (40, 80))
    viewer.preset("default")
    assert (viewer.window_center, viewer.window_width) == (40.0, 400.0)
    viewer.set_window(-50, 350)
    assert (viewer.window_center, viewer.window_width) == (-50.0, 350.0)
    with pytest.raises(ValueError, match="unknown preset"):
        viewer.preset("liver-ish")
    with pytest.raises(ValueError, match="width"):
        viewer.set_window(0, 0)
    assert sorted(viewer.presets) == ["bone", "brain", "default", "lung"]
    viewer.close()


def test_index_stays_in_bounds(client: Any, series_id: int):
    viewer = Viewer(client, series_id=series_id)
    viewer.index = N + 50
    assert viewer.index == N - 1
    viewer.index = -3
    assert viewer.index == 0
    viewer.index = 4
    assert viewer.index == 4
    viewer.close()


def test_unknown_series_shows_the_servers_message(client: Any, series_id: int):
    viewer = Viewer(client, series_id=987654)
    assert viewer.n_slices == 0
    assert viewer.error and viewer.status == viewer.error
    assert "987654" in viewer.error or "not found" in viewer.error.lower()
    assert not viewer.error.isdigit()
    # the same widget recovers when given a series that exists
    viewer.show(series_id)
    assert viewer.error == "" and viewer.n_slices == N
    viewer.close()


def test_single_image_with_frames(node: NodeProcess, client: Any):
    ds = ct_dataset(rows=8, columns=8)
    frames = np.arange(3 * 64, dtype=np.int16).reshape(3, 8, 8)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    r = node.session().post(node.api + "/images", data=to_bytes(ds), headers=DICOM)
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    viewer = Viewer(client)  # displayed first, then told what to show
    sent = frontend(viewer)
    assert viewer.n_slices == 0 and not sent
    viewer.show(image_id=image_id)
    assert viewer.n_slices == 3 and viewer.error == ""
    for i in range(3):
        assert np.array_equal(viewer.slice_array(i), frames[i] - 1024)
        assert viewer.slice_image(i) == (image_id, i + 1)
    # every frame went to the listening front end, with the new generation
    expected = [(i, i + 1, viewer.generation) for i in range(3)]
    assert [(c["index"], c["frame"], c["generation"]) for c, _ in sent] == expected
    for content, buffers in sent:
        assert np.array_equal(np.frombuffer(buffers[0], np.int16).reshape(8, 8), frames[content["index"]] - 1024)
    viewer.close()


def test_a_series_of_multi_frame_images_shows_every_frame_of_every_image(node: NodeProcess, client: Any):
    """Cine loops or enhanced images: a slot per frame of each image, in instance then frame order."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    counts = {1: 3, 2: 1, 3: 4}  # InstanceNumber → frames
    pixels = {}
    files = []
    for instance, n in counts.items():
        ds = ct_dataset(rows=8, columns=8, StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=instance)
        frames = (np.arange(n * 64, dtype=np.int16).reshape(n, 8, 8) + 1000 * instance).astype(np.int16)
        ds.NumberOfFrames = n
        ds.PixelData = frames.tobytes()
        pixels[ds.SOPInstanceUID] = frames
        files.append(to_bytes(ds))
    series_id = upload(node, files)
    images = client.images(series_id)
    uid_of = dict(zip(images["id"], images["SOPInstanceUID"], strict=True))
    viewer = Viewer(client, series_id=series_id)
    assert viewer.wait(60) and viewer.error == ""
    assert viewer.n_slices == viewer.n_loaded == sum(counts.values())
    shown = [viewer.slice_image(i) for i in range(viewer.n_slices)]
    instance_of = dict(zip(images["id"], images["InstanceNumber"].astype(int), strict=True))
    # every frame of every image once, ordered by instance number, then frame
    assert [(instance_of[image_id], frame) for image_id, frame in shown] == [
        (instance, f) for instance, n in counts.items() for f in range(1, n + 1)
    ]
    for i, (image_id, frame) in enumerate(shown):
        assert np.array_equal(viewer.slice_array(i), pixels[uid_of[image_id]][frame - 1] - 1024)
    viewer.close()


def test_browser_code_is_found_and_imports_nothing():
    """The ESM comes from the package (slicebox_lab/_widgets in the wheel, widgets/ in a checkout) and is
    self-contained: no import statements, so nothing is fetched from a CDN or the network."""
    from slicebox_lab.ui import viewer as module

    source = module._asset("viewer.js").read_text()
    assert source.rstrip().endswith("export default { initialize, render };")
    code = [line for line in source.splitlines() if not line.lstrip().startswith("//")]
    assert not [line for line in code if line.lstrip().startswith("import ") or "import(" in line]
    assert "http://" not in source and "https://" not in source
    assert module._asset("viewer.css").is_file()
