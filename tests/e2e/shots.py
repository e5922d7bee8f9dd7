"""Where browser tests put their screenshots: an ignored folder, so a test run leaves the checkout clean.

``tests/e2e/screenshots/latest/`` gets every screenshot of every run (look at them there).  The README's
screenshots are the committed ones in ``tests/e2e/screenshots/``; one command refreshes them (and only them) from a run:

    SLICEBOX_README_SCREENSHOTS=1 python -m pytest tests/e2e/test_dashboards.py tests/e2e/test_jupyterlab_viewer.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

TRACKED = Path(__file__).resolve().parent / "screenshots"
LATEST = TRACKED / "latest"


#: the height the page needs to show everything at once: the document's, or for pages that scroll an inner box
#: of the window's height (Voila's #rendered_cells, JupyterLab's panels) the window plus what that box hides
_CONTENT_HEIGHT = """() => {
  let tallest = document.documentElement.scrollHeight;
  for (const el of document.querySelectorAll('body *')) {
    const style = getComputedStyle(el);
    if (/(auto|scroll)/.test(style.overflowY) && el.clientHeight >= innerHeight * 0.8
        && el.scrollHeight > el.clientHeight + 1) {
      tallest = Math.max(tallest, innerHeight + el.scrollHeight - el.clientHeight);
    }
  }
  return Math.ceil(tallest);
}"""


def save(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Screenshot ``page`` as ``<name>.png`` in LATEST (and in TRACKED when refreshing the README's).

    ``full_page``: the whole page, also where it scrolls an inner box rather than the document (Voila does):
    the window grows to the page's height for the picture, as on a tall screen, and then gets its size back."""
    LATEST.mkdir(parents=True, exist_ok=True)
    path = LATEST / f"{name}.png"
    size = page.viewport_size
    if full_page and size:
        height = size["height"]
        for _ in range(4):  # a page laid out for a taller window may need more again (boxes sized to the window)
            needed = int(page.evaluate(_CONTENT_HEIGHT))
            if needed <= height:
                break
            height = min(needed, 16_000)
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_timeout(300)  # the layout follows the window
    try:
        page.screenshot(path=str(path), full_page=full_page)
    finally:
        if size and page.viewport_size != size:
            page.set_viewport_size(size)
            page.wait_for_timeout(300)
    tracked = TRACKED / path.name
    if os.environ.get("SLICEBOX_README_SCREENSHOTS") == "1" and tracked.exists():  # the README's own, no others
        shutil.copyfile(path, tracked)
    return path
