"""Viewer responsiveness in a real JupyterLab and Debian chromium: first slice shown, then per slice.

A 512×512×100 CT series (0.5 MB per image) is uploaded to the node of a JupyterLab started here on
127.0.0.1; a notebook cell ``Viewer(sbx, series_id=...)`` is run with Shift+Enter, and the times
are read from the browser's own clock (performance.now()): the keydown of Shift+Enter, and the
``data-drawn-at`` stamp viewer.js sets on its root element after each canvas draw. So

* first slice = Shift+Enter → slice 0 drawn (kernel: list, download and decode one image, create the
  widget; browser: load the ESM, ask for the pixels, receive them, apply the window, draw),
* all loaded = Shift+Enter → every slice in the browser's cache (the background transfer),
* per slice = a mouse-wheel event on the canvas → the next slice drawn: the first 10 steps right
  after slice 0 appeared (while the rest is still loading), then 89 more once all are loaded,
* window = a click on a preset button → the slice drawn with the new window.

Targets (issue 8): first slice < 1 s, further slices < 50 ms.

    python bench/viewer.py                 # --slices 100 --size 512 --rounds 3 --steps 89 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

sys.path.insert(0, str(harness.REPO / "tests" / "e2e"))
from labproc import (  # noqa: E402
    CHROMIUM,
    chromium,
    open_notebook,
    phantom_series,
    run_cell,
    start_lab,
    upload_series,
    wait_kernel_idle,
    write_notebook,
)

SETUP = "import slicebox_lab\nfrom slicebox_lab.ui import Viewer\nsbx = slicebox_lab.connect()\nSERIES = {series_id}"
EARLY_STEPS = 10
ROUND = (
    "if 'v' in globals():\n    v.close()  # one viewer's pixels in memory at a time\n"
    "v = Viewer(sbx, series_id=SERIES)\nv"
)

STAMP_KEYS = """() => {
  window.__sbx = {};
  window.addEventListener('keydown', e => {
    if (e.key === 'Enter' && e.shiftKey) window.__sbx.enter = performance.now();
  }, {capture: true});
  window.addEventListener('wheel', () => { window.__sbx.wheel = performance.now(); }, {capture: true});
  window.addEventListener('click', () => { window.__sbx.click = performance.now(); }, {capture: true});
}"""


def viewer_of(cell: int) -> str:
    return f".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell:nth-child({cell + 1}) .sbx-viewer"


def wait_dataset(
    page: Any, selector: str, condition: str, value: str = "Number(d.drawnAt)", timeout: float = 60_000
) -> float:
    """Wait until ``condition`` holds for the element's dataset ``d``; returns ``value`` (a JS expression) then."""
    handle = page.wait_for_function(
        f"""() => {{ const el = document.querySelector("{selector}"); if (!el) return false;
                    const d = el.dataset; return ({condition}) ? ({value}) : false; }}""",
        timeout=timeout,
        polling="raf",
    )
    return float(handle.json_value())


def measure(slices: int, size: int, rounds: int, steps: int) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": harness.machine_info(), "slices": slices, "size": size, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        lab = start_lab(Path(tmp))
        try:
            t = time.monotonic()
            series_id = upload_series(lab.api, lab.session(), phantom_series(slices, size))
            result["upload_s"] = time.monotonic() - t
            write_notebook(lab.root_dir / "bench.ipynb", [SETUP.format(series_id=series_id)] + [ROUND] * rounds)
            result["loadavg_start"] = harness.loadavg()
            with chromium() as browser:
                page = browser.page
                open_notebook(page, lab, "bench.ipynb")
                page.evaluate(STAMP_KEYS)
                run_cell(page, 0)
                wait_kernel_idle(page)
                try:
                    run_rounds(page, slices, rounds, steps, result)
                except Exception:
                    page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-viewer-failure.png"))
                    raise
                assert not browser.blocked, f"requests beyond 127.0.0.1: {browser.blocked}"
            result["loadavg_end"] = harness.loadavg()
        finally:
            lab.stop()
    return result


def run_rounds(page: Any, slices: int, rounds: int, steps: int, result: dict[str, Any]) -> None:
    """Each round: a new Viewer cell, its first slice, the background load, wheel steps, presets."""
    for r in range(1, rounds + 1):
        selector = viewer_of(r)
        run_cell(page, r)
        drawn = wait_dataset(page, selector, "Number(d.drawCount) >= 1 && d.drawnIndex === '0'")
        enter = float(page.evaluate("window.__sbx.enter"))
        canvas = page.locator(f"{selector} canvas")
        canvas.scroll_into_view_if_needed()
        canvas.hover()

        def step(k: int, selector: str = selector) -> float:
            page.mouse.wheel(0, 100)
            at = wait_dataset(page, selector, f"d.drawnIndex === '{k}'")
            return at - float(page.evaluate("window.__sbx.wheel"))

        # at once, while the other slices are still on their way (a wheel step may wait for its slice)
        early = [step(k) for k in range(1, min(EARLY_STEPS, slices - 1) + 1)]
        all_in = f"Number(d.loaded) === {slices}"
        loaded = wait_dataset(page, selector, all_in, "performance.now()", 120_000)
        wait_kernel_idle(page)
        canvas.hover()
        per_slice = [step(k) for k in range(len(early) + 1, min(len(early) + steps, slices - 1) + 1)]
        windows = []
        for preset, window in (("lung", "-600,1500"), ("bone", "300,1500"), ("brain", "40,80")):
            page.locator(f"{selector} .sbx-preset[data-preset='{preset}']").click()
            at = wait_dataset(page, selector, f"d.drawnWindow === '{window}'")
            windows.append(at - float(page.evaluate("window.__sbx.click")))
        row = {
            "round": r,
            "first_slice_ms": drawn - enter,
            "all_loaded_ms": loaded - enter,
            "per_slice_while_loading_ms": harness.summary(early),
            "per_slice_ms": harness.summary(per_slice),
            "window_ms": harness.summary(windows),
        }
        result["rounds"].append(row)
        print(json.dumps(row), flush=True)


def table(result: dict[str, Any]) -> str:
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    lines = [
        "| date (UTC) | series | round | first slice ms | all loaded ms | per slice ms median / p90 / max "
        "| per slice while loading ms median / max | window preset ms median | load avg start → end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rounds"]:
        s = row["per_slice_ms"]
        lines.append(
            f"| {date} | {result['size']}²×{result['slices']} | {row['round']} | {row['first_slice_ms']:.0f} "
            f"| {row['all_loaded_ms']:.0f} | {s['median']:.1f} / {s['p90']:.1f} / {s['max']:.1f} "
            f"| {row['per_slice_while_loading_ms']['median']:.1f} / {row['per_slice_while_loading_ms']['max']:.1f} "
            f"| {row['window_ms']['median']:.1f} "
            f"| {result['loadavg_start'].split()[0]} → {result['loadavg_end'].split()[0]} |"
        )
    firsts = [r["first_slice_ms"] for r in result["rounds"]]
    medians = [r["per_slice_ms"]["median"] for r in result["rounds"]]
    lines.append("")
    lines.append(
        f"first slice median {statistics.median(firsts):.0f} ms (target < 1000), "
        f"per slice median {statistics.median(medians):.1f} ms (target < 50)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=89, help="wheel steps per round once all slices are loaded")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")
    harness.exit_on_sigterm()
    result = measure(args.slices, args.size, args.rounds, args.steps)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
