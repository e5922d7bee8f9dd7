"""The product in a real browser, as installed from the wheel: Debian chromium (Playwright) opens the landing
page, every Voila dashboard at its stable URL (``slicebox/dashboards/<name>``) and the API documentation of
real `jupyter slicebox` nodes installed from a wheel of this checkout into a fresh venv and started from a
folder under /tmp (tests/e2e/wheelenv.py), with the sample data loaded by the wheel's own
``python -m slicebox_lab.sample``.

*Send to partner* sends a patient to a second node through a box and waits for FINISHED on the page;
*Incoming* on that partner then lists the transfer; *Node status* shows the SCP and the partner online;
*Viewer* draws a series; *App runs* lists the example app's run and opens its segmentation over the CT,
as the *Viewer* then shows it too. Then every page is shot at 1280×800 and 1920×1080
(tests/e2e/screenshots/latest/, tests/e2e/shots.py). Every request the pages make must go to 127.0.0.1
(a CDN request fails the test), and any console error or warning fails it too (``pages_are_clean``; the
proof that it does: ``test_a_console_warning_or_error_fails_the_check``).

One chromium and one pair of nodes serve the whole module; each page is loaded once and shot at both sizes.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import shots
from labproc import CHROMIUM, CHROMIUM_ARGS
from nodeproc import NodeProcess, start_node
from wheelenv import Installed

import slicebox_lab

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium ({CHROMIUM}) is not installed"),
    pytest.mark.timeout(1500),
]

DASHBOARDS = ("send-to-partner", "incoming", "node-status", "viewer", "app-runs")
#: what a clinician must never read on a page: API column names, Python booleans, microsecond timestamps
RAW = re.compile(
    r"send_method|progress_done|progress_total|last_contact|last_error|received_image_count|total_image_count"
    r"|ae_title|entry_type|decided_by|\bTrue\b|\bFalse\b|\bNone\b|\bNaN\b|\d{2}:\d{2}:\d{2}\.\d{3,}"
)


@dataclass
class Nodes:
    hospital: NodeProcess  # has the patients, sends
    university: NodeProcess  # the partner, receives
    outside_requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # errors and warnings of every page opened


#: the login of the researcher running the hospital's node: the server's owner, shown where their uploads appear
OWNER = "k.eriksson"
SIZES = ((1280, 800), (1920, 1080))


def _node(installed: Installed, work: Path, token: str) -> NodeProcess:
    """The wheel's `jupyter slicebox`, run from ``work`` (under /tmp) as its root folder: no notebooks there.
    The box loop polls every second (the default 5 s would only make the test wait for the partner)."""
    name = "--SliceboxApp.node_name=" + work.name.rstrip("0123456789")
    command = [str(installed.jupyter_slicebox)]
    return start_node(
        work / "data", work, token, "--SliceboxApp.fsync=False", name, f"--SliceboxApp.owner_name={OWNER}",
        "--SliceboxApp.box_poll_interval=1", command=command, env=installed.env(), cwd=work, root_dir=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def nodes(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    hospital = _node(installed, tmp_path_factory.mktemp("Hospital"), "hospital-token")
    try:
        university = _node(installed, tmp_path_factory.mktemp("University"), "university-token")
    except BaseException:
        hospital.stop()
        raise
    try:
        sbx = slicebox_lab.connect(hospital.url, token=hospital.token)
        partner = slicebox_lab.connect(university.url, token=university.token)
        # the sample data, made and uploaded by the wheel's own command line
        work = tmp_path_factory.mktemp("sample")
        out = installed.run("-m", "slicebox_lab.sample", "--into", f"{hospital.url}?token={hospital.token}", cwd=work)
        assert out.returncode == 0 and "uploaded 102 sample images" in out.stdout, out.stderr
        sbx.add_scp("dicom-in", "HOSPITAL", 0, host="127.0.0.1")
        connection = partner.create_box_connection("hospital")
        sbx.connect_box("university", connection["base_url"])
        # the dashboards say "no partner is online" until the first poll round has reached the partner
        # (a few seconds; longer on a loaded machine): the tests start from two nodes that know each other
        wait_until_online(sbx, partner)
        yield Nodes(hospital, university)
    finally:
        university.stop()
        hospital.stop()


def wait_until_online(*clients: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        boxes = [client.boxes() for client in clients]
        if all(len(frame) and bool(frame["online"].all()) for frame in boxes):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the partner boxes did not come online in {timeout:.0f} s: {boxes}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def browser(nodes: Nodes) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def pages_are_clean(nodes: Nodes) -> Iterator[None]:
    """After each test: no page it opened made the browser fetch anything from outside the node (CDN fonts,
    MathJax, ...), nor said anything in its console: any error or warning fails the test (version mismatches
    of the widgets' JavaScript included)."""
    nodes.outside_requests.clear()
    nodes.console.clear()
    yield
    assert nodes.outside_requests == []
    assert nodes.console == []


def new_page(browser: Any, nodes: Nodes, width: int = 1400, height: int = 1000) -> Any:
    """A page that refuses every request beyond 127.0.0.1 and records its console errors and warnings."""
    page = browser.new_page(viewport={"width": width, "height": height})

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith("data:") or host == "127.0.0.1":
            route.continue_()
        else:
            nodes.outside_requests.append(route.request.url)
            route.abort()

    def console(message: Any) -> None:
        if message.type in ("error", "warning"):
            nodes.console.append(f"{page.url}: {message.type}: {message.text}")

    page.route("**/*", only_loopback)
    page.on("console", console)
    page.on("pageerror", lambda error: nodes.console.append(f"{page.url}: uncaught: {error}"))
    return page


def open_dashboard(browser: Any, nodes: Nodes, node: NodeProcess, name: str, width: int = 1400,
                   height: int = 1000, query: str = "") -> Any:  # fmt: skip
    page = new_page(browser, nodes, width, height)
    page.goto(f"{node.url}slicebox/dashboards/{name}?token={node.token}{query}", timeout=180_000)
    wait_rendered(page)
    return page


def wait_rendered(page: Any) -> None:
    """Voila renders cell by cell; the page is done when its widgets are on screen and no cell is running."""
    page.wait_for_selector(".jupyter-widgets", timeout=180_000)
    assert "cdn.jsdelivr" not in page.content() and "cdnjs" not in page.content()  # our Voila template
    page.wait_for_function("() => !document.querySelector('#loading') || "
                           "getComputedStyle(document.querySelector('#loading')).display === 'none'",
                           timeout=180_000)  # fmt: skip


def close(page: Any) -> None:
    """Close as a person closes the tab: Voila's unload handler shuts the dashboard's kernel down (Playwright
    skips unload handlers unless asked, and the kernels of every page opened would pile up in the nodes)."""
    if page.is_closed():
        return
    with page.expect_event("close", timeout=60_000):  # listening before the close: the event may come at once
        page.close(run_before_unload=True)


def shoot(page: Any, name: str) -> None:
    shots.save(page, f"dashboard-{name}")


def no_problem_shown(page: Any) -> None:
    problems = page.locator(".slicebox-problem")
    assert problems.count() == 0, problems.all_inner_texts()
    assert "Traceback" not in page.inner_text("body")


def row_checkbox(page: Any, text: str) -> Any:
    """The checkbox of the series-table row showing ``text`` (cells are siblings in a grid)."""
    cell = page.locator(".widget-html", has_text=text).first
    return cell.locator("xpath=preceding-sibling::div[contains(@class,'widget-checkbox')][1]//input")


def test_send_to_partner_sends_a_patient_and_follows_it_to_finished(browser: Any, nodes: Nodes):
    page = open_dashboard(browser, nodes, nodes.hospital, "send-to-partner")
    no_problem_shown(page)
    # the sample data came with the server's token: its owner by name, not "anonymous" (issue 20)
    page.wait_for_function(f"() => document.body.innerText.includes('{OWNER}')", timeout=60_000)
    assert "anonymous" not in page.inner_text("body")
    # search, pick the study's series, review, send
    page.get_by_placeholder("filter (any text column)").fill("Berg")
    page.get_by_placeholder("filter (any text column)").press("Enter")
    page.wait_for_function("() => !document.body.innerText.includes('Andersson^Anna')", timeout=60_000)
    row_checkbox(page, "Abdomen 5 mm portal venous").check()
    page.wait_for_function("() => document.body.innerText.includes('1 series to send')", timeout=60_000)
    destination = page.locator("select", has=page.locator("option", has_text="university"))
    label = destination.locator("option", has_text="university").first.inner_text()
    assert "online" in label, label
    destination.select_option(label=label)
    page.get_by_role("button", name="Review de-identification").click()
    send = page.locator("button").filter(has_text=re.compile(r"^\s*Send\s*$"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Send' && !b.disabled)",
        timeout=120_000,
    )
    send.click()
    page.wait_for_function("() => document.body.innerText.includes('FINISHED')", timeout=300_000)
    no_problem_shown(page)
    shoot(page, "send-to-partner")
    # and the partner has it, de-identified
    partner = slicebox_lab.connect(nodes.university.url, token=nodes.university.token)
    arrived = partner.flat_series()
    assert len(arrived) == 1 and "Berg" not in str(arrived.iloc[0].PatientName)
    close(page)


def test_incoming_on_the_partner_lists_the_transaction(browser: Any, nodes: Nodes):
    partner = slicebox_lab.connect(nodes.university.url, token=nodes.university.token)
    if not len(partner.transactions("incoming")):  # this test alone: send first, without the browser
        sbx = slicebox_lab.connect(nodes.hospital.url, token=nodes.hospital.token)
        sbx.select(sbx.flat_series(PatientName="Berg^Erik")).send(box="university", wait=True, progress=False)
    # a URL asking for Voila's own "lab" template (which loads fonts and MathJax from CDNs) still gets ours
    page = open_dashboard(browser, nodes, nodes.university, "incoming", query="&template=lab")
    no_problem_shown(page)
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.body.innerText.includes('1 transfer received')", timeout=60_000)
    text = page.inner_text("body")
    assert "FINISHED" in text and "hospital (box)" in text
    shoot(page, "incoming")
    close(page)


def test_node_status_shows_the_scp_and_the_partner(browser: Any, nodes: Nodes):
    page = open_dashboard(browser, nodes, nodes.hospital, "node-status")
    no_problem_shown(page)
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.body.innerText.includes('Node up')", timeout=60_000)
    text = page.inner_text("body")
    for expected in ("DICOM listeners (SCPs)", "HOSPITAL", "Partners (boxes)", "university", "Recent log"):
        assert expected in text, expected
    shoot(page, "node-status")
    close(page)


def test_viewer_draws_the_chosen_series(browser: Any, nodes: Nodes):
    page = open_dashboard(browser, nodes, nodes.hospital, "viewer")
    no_problem_shown(page)
    row_checkbox(page, "Thorax 5 mm").check()
    page.wait_for_function(
        "() => { const d = document.querySelector('.sbx-viewer')?.dataset;"
        " return d && Number(d.drawCount) >= 1 && Number(d.loaded) >= 1; }",
        timeout=120_000,
    )
    assert page.locator(".sbx-viewer").count() == 1
    page.locator(".sbx-viewer").scroll_into_view_if_needed()
    # the attribute list beside the image fills in after the first draw
    page.wait_for_function("() => document.querySelectorAll('.sbx-viewer .sbx-attributes tr').length > 10",
                           timeout=60_000)  # fmt: skip
    no_problem_shown(page)
    shoot(page, "viewer")
    close(page)


def test_landing_page_links_the_dashboards_jupyterlab_and_the_api_docs(browser: Any, nodes: Nodes):
    node = nodes.hospital
    page = new_page(browser, nodes)
    page.goto(f"{node.url}?token={node.token}")  # the server's root is the landing page
    page.wait_for_selector("text=What this node holds")
    assert page.url.split("?")[0].endswith("/slicebox/")
    text = page.inner_text("body")
    assert "Hospital" in text and "Healthy" in text and "102" in text and "1 DICOM listener running" in text
    links = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
    for name in DASHBOARDS:
        assert f"/slicebox/dashboards/{name}" in links, name
    assert "/lab" in links and "/slicebox/api-docs/" in links
    assert "/slicebox/api/openapi.json" in links and "/slicebox/api/openapi.yaml" in links
    # a tutorial: downloaded, and opened in JupyterLab (a copy in slicebox-tutorials/ of the server's folder)
    session = node.session()
    tutorial = session.get(node.url + "slicebox/tutorials/01-getting-started.ipynb", timeout=30)
    assert tutorial.status_code == 200 and tutorial.json()["cells"]
    page.get_by_role("button", name="Open in JupyterLab").first.click()
    page.wait_for_url(re.compile(r".*/lab/tree/slicebox-tutorials/01-getting-started\.ipynb"), timeout=60_000)
    assert (Path(node.log_path).parents[1] / "slicebox-tutorials" / "01-getting-started.ipynb").is_file()
    close(page)


def test_api_docs_render_the_openapi_document_from_the_node(browser: Any, nodes: Nodes):
    node = nodes.hospital
    session = node.session()
    document = session.get(node.api + "/openapi.json", timeout=30).json()
    assert document["openapi"].startswith("3.") and "/images" in document["paths"]
    assert session.get(node.api + "/openapi.yaml", timeout=30).text.startswith("openapi:")
    missing = session.get(node.api + "/no/such/route", timeout=30)
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    assert requests.get(node.api + "/", timeout=30).status_code == 403  # like every route: credentials first
    page = new_page(browser, nodes)
    page.goto(f"{node.url}slicebox/api-docs/?token={node.token}")
    page.wait_for_selector(".opblock", timeout=60_000)
    assert page.locator(".opblock").count() > 100  # every route with its method
    assert "slicebox_lab REST API" in page.inner_text("body")
    close(page)


#: canvas pixels that are not grey: only a segmentation's colour makes them
#: (read from a copy made for reading: reading the viewer's own canvas twice makes Chromium warn in the console)
COLOURED = """c => { const copy = document.createElement('canvas'); copy.width = c.width; copy.height = c.height;
  const x = copy.getContext('2d', {willReadFrequently: true}); x.drawImage(c, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) n++; return n; }"""


def wait_overlay(page: Any) -> int:
    """Wait until the viewer drew a slice with the segmentation over it; the coloured pixels of its canvas."""
    page.wait_for_function(
        "() => { const d = document.querySelector('.sbx-viewer')?.dataset;"
        " return d && Number(d.drawCount) >= 1 && Number(d.overlayPixels) > 0; }",
        timeout=180_000,
    )
    return int(page.eval_on_selector(".sbx-viewer canvas", COLOURED))


def test_app_runs_lists_the_example_apps_run_and_opens_its_segmentation_over_the_ct(browser: Any, nodes: Nodes):
    """Issue 19: what ran, on what, how it went; "Open the result" shows the SEG over its CT; so does the Viewer."""
    sbx = slicebox_lab.connect(nodes.hospital.url, token=nodes.hospital.token)
    thorax = sbx.flat_series(SeriesDescription="Thorax 5 mm*")
    if "body-and-lungs" not in set(sbx.apps()["name"]):
        sbx.register_app("body-and-lungs", "slicebox_lab.apps.examples.body_and_lungs:segment", version="1.0")
    job = sbx.run_app("body-and-lungs", thorax, wait=True, progress=False, timeout=300)
    assert job["state"] == "SUCCEEDED", job
    page = open_dashboard(browser, nodes, nodes.hospital, "app-runs")
    no_problem_shown(page)
    text = page.inner_text("body")
    for expected in ("body-and-lungs 1.0", "Andersson^Anna", "SUCCEEDED", "1 DICOM object stored", "Ran on"):
        assert expected in text, expected
    assert not RAW.search(text), RAW.search(text)
    page.get_by_role("button", name="Open the result").click()
    coloured = wait_overlay(page)
    assert coloured > 1000, coloured  # a 256×256 chest: the body and the lungs, in colour
    page.locator(".sbx-viewer").scroll_into_view_if_needed()
    legend = page.inner_text(".sbx-viewer .sbx-overlay")
    assert "Body" in legend and "Lungs" in legend, legend
    no_problem_shown(page)
    shoot(page, "app-runs-result")
    close(page)

    # the viewer dashboard: the CT chosen in the table comes with its segmentation over it, which can be hidden
    page = open_dashboard(browser, nodes, nodes.hospital, "viewer")
    row_checkbox(page, "Thorax 5 mm").check()
    assert wait_overlay(page) > 1000
    page.locator(".sbx-viewer").scroll_into_view_if_needed()
    shoot(page, "viewer-segmentation")
    page.locator(".sbx-viewer .sbx-overlay-toggle").uncheck()
    page.wait_for_function("() => document.querySelector('.sbx-viewer').dataset.overlayPixels === '0'",
                           timeout=30_000)  # fmt: skip
    assert int(page.eval_on_selector(".sbx-viewer canvas", COLOURED)) == 0
    close(page)


def _ready(page: Any) -> None:
    """Wait until a dashboard has drawn its data (tables, or the viewer's table of series)."""
    page.wait_for_function("() => document.body.innerText.length > 200", timeout=60_000)
    page.wait_for_timeout(1000)  # widgets settle (fonts, layout) before the picture


def test_every_page_at_two_sizes_reads_like_a_product(browser: Any, nodes: Nodes):
    """Landing page, dashboards and API docs at 1280×800 and 1920×1080: screenshots of the whole page, no
    API column name, Python boolean or microsecond timestamp on screen, nothing in the console. Each page is
    loaded once at the smaller size and then shown in the larger window."""
    hospital, university = nodes.hospital, nodes.university
    pages = [("landing", hospital, "slicebox/"), ("api-docs", hospital, "slicebox/api-docs/")]
    pages += [(f"dashboard-{name}", university if name == "incoming" else hospital, f"slicebox/dashboards/{name}")
              for name in DASHBOARDS]  # fmt: skip
    for name, node, path in pages:
        width, height = SIZES[0]
        page = new_page(browser, nodes, width, height)
        page.goto(f"{node.url}{path}?token={node.token}", timeout=180_000)
        if name.startswith("dashboard-"):
            wait_rendered(page)
            _ready(page)
        elif name == "api-docs":
            page.wait_for_selector(".opblock", timeout=60_000)
        else:
            page.wait_for_selector("text=What this node holds")
        for width, height in SIZES:
            if page.viewport_size != {"width": width, "height": height}:
                page.set_viewport_size({"width": width, "height": height})
                page.wait_for_timeout(500)  # the layout follows the window
            if name.startswith("dashboard-"):
                no_problem_shown(page)
                text = page.inner_text("body")
                assert not RAW.search(text), (name, width, RAW.search(text))
                assert "anonymous" not in text, (name, width)
                # nothing wider than the window: no horizontal scrolling
                assert page.evaluate("() => document.documentElement.scrollWidth") <= width, (name, width)
            shots.save(page, f"{name}-{width}")
        close(page)
        assert nodes.console == [], nodes.console


def test_a_console_warning_or_error_fails_the_check(browser: Any, nodes: Nodes):
    """What ``pages_are_clean`` fails on: any warning or error in a page's console, uncaught exceptions too,
    including the "Unsatisfied version" warnings a mismatched Voila and jupyterlab_widgets print."""
    node = nodes.hospital
    page = new_page(browser, nodes)
    page.goto(f"{node.url}slicebox/?token={node.token}")
    page.wait_for_selector("text=What this node holds")
    assert nodes.console == []
    page.evaluate(
        "() => { console.warn('Unsatisfied version 4.2.5 from _JUPYTERLAB.CORE_OUTPUT of shared singleton module "
        "@jupyterlab/services (required ^4.6.2)'); console.error('a failing widget');"
        " setTimeout(() => { throw new Error('uncaught'); }); }"
    )
    page.wait_for_function("() => new Promise(resolve => setTimeout(() => resolve(true), 200))")
    assert [line.split(": ", 1)[1] for line in nodes.console] == [
        "warning: Unsatisfied version 4.2.5 from _JUPYTERLAB.CORE_OUTPUT of shared singleton module "
        "@jupyterlab/services (required ^4.6.2)",
        "error: a failing widget",
        "uncaught: uncaught",
    ], nodes.console
    close(page)
    nodes.console.clear()  # recorded as they must be: this test's own, not a page's problem
