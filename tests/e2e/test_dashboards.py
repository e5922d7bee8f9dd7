"""The Voila dashboards in a real browser: Debian chromium (Playwright) opens each one through Voila served
by a real `jupyter slicebox` node on a loopback port, performs its main action, and saves a screenshot
under tests/e2e/screenshots/dashboard-*.png.

*Send to partner* sends a patient to a second real node through a box and waits for FINISHED on the page;
*Incoming* on that partner then lists the transaction; *Node status* shows the SCP and the partner online;
*Viewer* draws a series. Every request the pages make must go to 127.0.0.1: a CDN request fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from labproc import CHROMIUM, CHROMIUM_ARGS
from nodeproc import NodeProcess, start_node

import slicebox_lab
from slicebox_lab.sample import make_sample_files

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium ({CHROMIUM}) is not installed"),
    pytest.mark.timeout(900),
]


@dataclass
class Nodes:
    hospital: NodeProcess  # has the patients, sends
    university: NodeProcess  # the partner, receives
    outside_requests: list[str] = field(default_factory=list)


def _node(work: Path, token: str) -> NodeProcess:
    # the node serves notebooks/ (a copy) from its root: /voila/render/notebooks/dashboards/<name>.ipynb
    shutil.copytree(NOTEBOOKS, work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return start_node(work / "data", work, token, "--SliceboxApp.fsync=False")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    hospital = _node(tmp_path_factory.mktemp("hospital"), "hospital-token")
    try:
        university = _node(tmp_path_factory.mktemp("university"), "university-token")
    except BaseException:
        hospital.stop()
        raise
    try:
        sbx = slicebox_lab.connect(hospital.url, token=hospital.token)
        partner = slicebox_lab.connect(university.url, token=university.token)
        summary = sbx.upload(make_sample_files(tmp_path_factory.mktemp("sample")), progress=False)
        assert not summary.refused
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


@pytest.fixture
def browser(nodes: Nodes) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    # no dashboard may make the browser fetch anything from outside the node (CDN fonts, MathJax, ...)
    assert nodes.outside_requests == []


def open_dashboard(browser: Any, nodes: Nodes, node: NodeProcess, name: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith("data:") or host == "127.0.0.1":
            route.continue_()
        else:
            nodes.outside_requests.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{node.url}voila/render/notebooks/dashboards/{name}.ipynb?token={node.token}", timeout=180_000)
    # Voila renders cell by cell; the page is done when its widgets are on screen and no cell is running
    page.wait_for_selector(".jupyter-widgets", timeout=180_000)
    assert "cdn.jsdelivr" not in page.content() and "cdnjs" not in page.content()  # our Voila template
    page.wait_for_function("() => !document.querySelector('#loading') || "
                           "getComputedStyle(document.querySelector('#loading')).display === 'none'",
                           timeout=180_000)  # fmt: skip
    return page


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


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
    page.close()


def test_incoming_on_the_partner_lists_the_transaction(browser: Any, nodes: Nodes):
    partner = slicebox_lab.connect(nodes.university.url, token=nodes.university.token)
    if not len(partner.transactions("incoming")):  # this test alone: send first, without the browser
        sbx = slicebox_lab.connect(nodes.hospital.url, token=nodes.hospital.token)
        sbx.select(sbx.flat_series(PatientName="Berg^Erik")).send(box="university", wait=True, progress=False)
    page = open_dashboard(browser, nodes, nodes.university, "incoming")
    no_problem_shown(page)
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.body.innerText.includes('1 transfer received')", timeout=60_000)
    text = page.inner_text("body")
    assert "FINISHED" in text and "hospital (box)" in text
    shoot(page, "incoming")
    page.close()


def test_node_status_shows_the_scp_and_the_partner(browser: Any, nodes: Nodes):
    page = open_dashboard(browser, nodes, nodes.hospital, "node-status")
    no_problem_shown(page)
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.body.innerText.includes('Node up')", timeout=60_000)
    text = page.inner_text("body")
    for expected in ("DICOM listeners (SCPs)", "HOSPITAL", "Partners (boxes)", "university", "Recent log"):
        assert expected in text, expected
    shoot(page, "node-status")
    page.close()


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
    page.close()
