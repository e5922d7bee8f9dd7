"""The dashboards at their stable URL inside JupyterLab and Notebook 7 (issue 20, item 1), as installed from the
wheel: ``jupyter lab`` and ``jupyter notebook`` of the venv tests/e2e/wheelenv.py makes, with no configuration
of ours (the wheel's own ``jupyter_server_config.d/slicebox_lab.json`` enables the extension), serve
``<base_url>slicebox/dashboards/viewer``; Debian's chromium draws a series in it, fetches nothing from outside
127.0.0.1 and hears no warning or error in the console.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from labproc import CHROMIUM, CHROMIUM_ARGS, LabProcess, phantom_series, start_lab, upload_series
from wheelenv import Installed

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium ({CHROMIUM}) is not installed"),
    pytest.mark.timeout(600),
]

#: the front end each app serves at its own path (what makes it that app and not `jupyter slicebox`)
FRONT_END = {"lab": ("lab", "JupyterLab"), "notebook": ("tree", "Jupyter Notebook")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(params=sorted(FRONT_END))
def server(request: pytest.FixtureRequest, installed: Installed, tmp_path: Path) -> Iterator[tuple[str, LabProcess]]:
    """("lab", a `jupyter lab`) or ("notebook", a `jupyter notebook`) of the wheel's venv, with the node inside."""
    app = request.param
    server = start_lab(
        tmp_path, f"{app}-token", app=app, command=[str(installed.venv / "bin" / f"jupyter-{app}")],
        env=installed.env(), enable_extension=False,
    )  # fmt: skip
    try:
        yield app, server
    finally:
        server.stop()


def test_a_dashboard_at_its_stable_url(server: tuple[str, LabProcess], browser: Any):
    app, jupyter = server
    path, name = FRONT_END[app]
    front = requests.get(f"{jupyter.url}{path}?token={jupyter.token}", timeout=60)
    assert front.status_code == 200 and name in front.text  # a real JupyterLab / Notebook 7 serves this node
    upload_series(jupyter.api, jupyter.session(), phantom_series(4, 64, PatientName="Inside^Jupyter", PatientID="J-1"))

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    outside: list[str] = []
    console: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith("data:") or urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: console.append(f"uncaught: {error}"))
    page.goto(f"{jupyter.url}slicebox/dashboards/viewer?token={jupyter.token}", timeout=180_000)
    page.wait_for_selector(".jupyter-widgets", timeout=180_000)
    page.wait_for_function("() => document.body.innerText.includes('Inside^Jupyter')", timeout=120_000)
    cell = page.locator(".widget-html", has_text="Inside^Jupyter").first
    cell.locator("xpath=preceding-sibling::div[contains(@class,'widget-checkbox')][1]//input").check()
    page.wait_for_function(
        "() => { const d = document.querySelector('.sbx-viewer')?.dataset;"
        " return d && Number(d.drawCount) >= 1 && Number(d.loaded) >= 1; }",
        timeout=120_000,
    )
    assert "Traceback" not in page.inner_text("body")
    page.close(run_before_unload=True)  # Voila shuts the dashboard's kernel down
    assert outside == []
    assert console == []
