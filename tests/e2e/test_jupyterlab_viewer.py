"""Acceptance: the Browser and the Viewer in a real JupyterLab, driven by Debian's chromium.

A notebook connects to the node of its own server (``slicebox_lab.connect()``), shows the browser
with the viewer under it; the test runs all cells, picks a series in the browser, scrolls slices with
the mouse wheel, changes the window by a preset and by dragging, and saves screenshots under
tests/e2e/screenshots/latest/ (tests/e2e/shots.py). It fails
unless the canvas pixels change with the slice and with the window,
and unless everything (JupyterLab, the anywidget and ipywidgets labextensions, the viewer's ESM)
loaded without a single request beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shots
from labproc import (
    CHROMIUM,
    LabProcess,
    canvas_data_url,
    chromium,
    open_notebook,
    phantom_series,
    run_all_cells,
    run_cell,
    start_lab,
    upload_series,
    wait_kernel_idle,
    write_notebook,
)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium ({CHROMIUM}) is not installed")

SLICES = 16
VIEWER = ".sbx-viewer"

NOTEBOOK = [
    "import slicebox_lab\n"
    "sbx = slicebox_lab.connect()\n"
    "from slicebox_lab.ui import Browser, Viewer\n"
    "sbx.flat_series()[['series_id', 'PatientName', 'Modality', 'SeriesDescription']]",
    "viewer = Viewer(sbx)\nbrowser = Browser(sbx, viewer=viewer)\nbrowser",
    'print(f"kernel sees index={viewer.index} window={viewer.window_center:.2f},{viewer.window_width:.2f}")',
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabProcess]:
    lab = start_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.stop()


def shoot(page: Any, name: str) -> None:
    shots.save(page, f"jupyterlab-viewer-{name}", full_page=False)


def viewer_state(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector(VIEWER, "el => ({...el.dataset})"))


def wait_drawn(page: Any, condition: str, timeout: float = 30_000) -> None:
    """Wait until the viewer's root dataset satisfies ``condition`` (JS over ``d``, its dataset)."""
    page.wait_for_function(
        f"() => {{ const el = document.querySelector('{VIEWER}'); if (!el) return false; const d = el.dataset;"
        f" return {condition}; }}",
        timeout=timeout,
    )


@pytest.mark.timeout(600)
def test_browse_view_scroll_and_window_in_jupyterlab(lab: LabProcess):
    series_id = upload_series(
        lab.api, lab.session(), phantom_series(SLICES, 128, PatientName="Lab^Viewer", PatientID="LAB-1")
    )
    write_notebook(lab.root_dir / "viewer.ipynb", NOTEBOOK)
    with chromium() as browser:
        page = browser.page
        open_notebook(page, lab, "viewer.ipynb")
        run_all_cells(page)
        wait_kernel_idle(page)
        # the first cell found this server by itself and lists the series
        output = page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea-output").first
        output.wait_for(timeout=60_000)
        assert "Lab^Viewer" in output.inner_text()
        # no series chosen yet: the stage says so in page text, the canvas waits hidden
        placeholder = page.locator(f"{VIEWER} .sbx-placeholder")
        placeholder.wait_for(timeout=60_000)
        assert "Tick a series" in placeholder.inner_text()
        shoot(page, "1-browser")

        # pick the series in the browser's series table: the checkbox of its row
        # (the browser's table rows: ipywidgets checkboxes; the viewer's segmentation toggle is not one of them)
        checkboxes = page.locator(".jp-Cell").nth(1).locator(".widget-checkbox input[type=checkbox]")
        checkboxes.first.wait_for(timeout=30_000)
        assert checkboxes.count() == 1, "one series, one row checkbox"
        checkboxes.first.check()
        wait_drawn(page, "Number(d.drawCount) >= 1 && d.drawnIndex === '0'")
        wait_drawn(page, f"Number(d.loaded) === {SLICES}")
        page.locator(VIEWER).scroll_into_view_if_needed()
        title = page.inner_text(f"{VIEWER} .sbx-title")
        assert f"series {series_id}" in title
        assert page.inner_text(f"{VIEWER} .sbx-position") == f"slice 1 / {SLICES}"
        shoot(page, "2-series")
        first = canvas_data_url(page)

        # scroll three slices with the wheel on the canvas
        canvas = page.locator(f"{VIEWER} canvas")
        canvas.hover()
        for _ in range(3):
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(50)
        wait_drawn(page, "d.drawnIndex === '3'")
        assert page.inner_text(f"{VIEWER} .sbx-position") == f"slice 4 / {SLICES}"
        scrolled = canvas_data_url(page)
        assert scrolled != first, "the canvas did not change when scrolling to another slice"
        shoot(page, "3-scrolled")

        # window by preset: lung
        page.locator(f"{VIEWER} .sbx-preset[data-preset='lung']").click()
        wait_drawn(page, "d.drawnWindow === '-600,1500'")
        lung = canvas_data_url(page)
        assert lung != scrolled, "the canvas did not change when the window changed (preset)"
        shoot(page, "4-lung")

        # window by dragging on the canvas
        box = canvas.bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x - 60, y + 40, steps=8)
        page.mouse.up()
        wait_drawn(page, "d.drawnWindow !== '-600,1500'")
        dragged = canvas_data_url(page)
        assert dragged != lung, "the canvas did not change when the window was dragged"
        shoot(page, "5-dragged")

        # the kernel got the user's index and window: run the last cell again, it prints the traits
        state = viewer_state(page)
        assert state["drawnIndex"] == "3"
        center, width = (float(v) for v in state["drawnWindow"].split(","))
        run_cell(page, 2)
        wait_kernel_idle(page)
        expected = f"kernel sees index=3 window={center:.2f},{width:.2f}"
        page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output", has_text=expected).wait_for(timeout=30_000)
        status = page.inner_text(f"{VIEWER} .sbx-status")
        assert f"{SLICES} of {SLICES} slices loaded" in status, status
        assert page.locator(f"{VIEWER} .sbx-status.sbx-error").count() == 0
        assert page.locator(f"{VIEWER} .sbx-attributes tr").count() > 10  # the attribute list beside the image
        assert not browser.blocked, f"requests beyond 127.0.0.1: {browser.blocked}"


#: pixels of the viewer's canvas that are not grey (r, g, b not all equal): the overlay's colour, nothing else
#: (read from a copy made for reading: reading the viewer's own canvas twice makes Chromium warn in the console)
COLOURED = """c => { const copy = document.createElement('canvas'); copy.width = c.width; copy.height = c.height;
  const x = copy.getContext('2d', {willReadFrequently: true}); x.drawImage(c, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) n++; return n; }"""


@pytest.mark.timeout(600)
def test_an_apps_segmentation_is_drawn_over_its_series_with_toggle_and_opacity(lab: LabProcess):
    """Acceptance of issue 19: the example app's SEG over the CT it was made from, in the notebook Viewer."""
    pytest.importorskip("highdicom", reason="the example app makes its SEG with highdicom: pip install -e '.[apps]'")
    s = lab.session()
    series_id = upload_series(lab.api, s, phantom_series(SLICES, 128, PatientName="Lab^Overlay", PatientID="LAB-SEG"))
    function = "slicebox_lab.apps.examples.body_and_lungs:segment"
    app = s.post(lab.api + "/apps", json={"name": "body-and-lungs", "version": "1.0", "function": function})
    assert app.status_code == 201, app.text
    job = s.post(f"{lab.api}/apps/{app.json()['id']}/runs", json={"series_ids": [series_id]}).json()
    while (job := s.get(f"{lab.api}/jobs/{job['id']}").json())["state"] not in ("SUCCEEDED", "FAILED"):
        time.sleep(0.2)
    assert job["state"] == "SUCCEEDED", job
    write_notebook(
        lab.root_dir / "overlay.ipynb",
        ["import slicebox_lab\nfrom slicebox_lab.ui import Viewer\n"
         f"viewer = Viewer(slicebox_lab.connect(), series_id={series_id})\nviewer"],
    )  # fmt: skip
    with chromium() as browser:
        page = browser.page
        open_notebook(page, lab, "overlay.ipynb")
        run_all_cells(page)
        wait_kernel_idle(page)
        page.wait_for_selector(f"{VIEWER} canvas", timeout=60_000)
        wait_drawn(page, f"Number(d.loaded) === {SLICES} && Number(d.overlayPixels) > 0", timeout=60_000)
        page.locator(VIEWER).scroll_into_view_if_needed()
        # scroll to the middle, where the lungs are widest
        canvas = page.locator(f"{VIEWER} canvas")
        canvas.hover()
        for _ in range(SLICES // 2):
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(30)
        wait_drawn(page, f"d.drawnIndex === '{SLICES // 2}' && Number(d.overlayPixels) > 0")
        bar = page.locator(f"{VIEWER} .sbx-overlay")
        assert bar.is_visible()
        assert "body-and-lungs 1.0: body and lungs" in bar.locator("select").inner_text()
        assert "Body" in bar.inner_text() and "Lungs" in bar.inner_text()
        coloured = int(page.eval_on_selector(f"{VIEWER} canvas", COLOURED))
        drawn = int(viewer_state(page)["overlayPixels"])
        assert coloured > 0.2 * 128 * 128 and coloured <= drawn, (coloured, drawn)
        shoot(page, "6-segmentation")
        with_overlay = canvas_data_url(page)

        # opacity: more of the segments' colour
        bar.locator(".sbx-overlay-opacity").fill("90")
        wait_drawn(page, "Number(d.drawCount) > 0")
        page.wait_for_function(
            f"(before) => document.querySelector('{VIEWER} canvas').toDataURL('image/png') !== before",
            arg=with_overlay, timeout=30_000,
        )  # fmt: skip
        shoot(page, "7-segmentation-opaque")
        # toggle off: the grey image alone, not one coloured pixel
        bar.locator(".sbx-overlay-toggle").uncheck()
        wait_drawn(page, "d.overlayPixels === '0'")
        assert int(page.eval_on_selector(f"{VIEWER} canvas", COLOURED)) == 0
        shoot(page, "8-segmentation-off")
        assert not browser.blocked, f"requests beyond 127.0.0.1: {browser.blocked}"
