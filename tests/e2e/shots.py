"""Where browser tests put their screenshots: an ignored folder, so a test run leaves the checkout clean.

``tests/e2e/screenshots/latest/`` gets every screenshot of every run (look at them there).  The README's
screenshots are the committed ones in ``tests/e2e/screenshots/``; one command refreshes them from a run:

    SLICEBOX_README_SCREENSHOTS=1 python -m pytest tests/e2e/test_dashboards.py tests/e2e/test_jupyterlab_viewer.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

TRACKED = Path(__file__).resolve().parent / "screenshots"
LATEST = TRACKED / "latest"


_UNBOX = """() => {
  const tall = innerHeight * 0.8;
  for (const el of [document.documentElement, document.body, ...document.querySelectorAll('body *')]) {
    const style = getComputedStyle(el);
    if (/(auto|scroll|hidden)/.test(style.overflowY) && el.clientHeight >= tall && el.scrollHeight > el.clientHeight) {
      el.style.overflow = 'visible'; el.style.height = 'auto'; el.style.maxHeight = 'none';
    }
  }
}"""


def save(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Screenshot ``page`` as ``<name>.png`` in LATEST (and in TRACKED when refreshing the README's)."""
    LATEST.mkdir(parents=True, exist_ok=True)
    path = LATEST / f"{name}.png"
    if full_page:
        # Voila (and JupyterLab) scroll an inner box of the window's height, not the document: let the
        # page-sized boxes grow, so that the picture holds the whole page and not one window of it
        page.evaluate(_UNBOX)
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("SLICEBOX_README_SCREENSHOTS") == "1":
        shutil.copyfile(path, TRACKED / path.name)
    return path
