"""The Sender widget between two real `jupyter slicebox` nodes connected as a box pair: review first,
then send, the progress bar runs to the end, the partner holds the images de-identified; an SCU send
follows its job; a refused send shows the server's message."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from generators import ct_bytes
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from nodeproc import NodeProcess, start_node  # noqa: E402

from slicebox_lab.client import connect  # noqa: E402
from slicebox_lab.ui import Browser, Sender  # noqa: E402

DICOM = {"Content-Type": "application/dicom"}
N = 12
FAST = ("--SliceboxApp.box_poll_interval=0.2", "--SliceboxApp.fsync=False")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Node A (sender, N images of one series of `Secret^Name`) pushing to node B through box `partner`."""
    work = tmp_path_factory.mktemp("sender")
    a = start_node(work / "a", work, "secret-token", *FAST)
    b = start_node(work / "b", work, "secret-token", *FAST)
    try:
        client_a, client_b = connect(a.url, token=a.token), connect(b.url, token=b.token)
        created = client_b.create_box_connection("partner")
        box = client_a.connect_box("partner", created["base_url"])
        study, series = generate_uid(), generate_uid()
        s = a.session()
        for n in range(N):
            data = ct_bytes(PatientName="Secret^Name", PatientID="SECRET-ID-77", StudyInstanceUID=study,
                            SeriesInstanceUID=series, InstanceNumber=n + 1, seed=n)  # fmt: skip
            r = s.post(a.api + "/images", data=data, headers=DICOM, timeout=30)
            assert r.status_code == 201, r.text
        series_id = int(client_a.flat_series().iloc[0]["series_id"])
        yield {"a": a, "b": b, "client_a": client_a, "client_b": client_b, "box_id": int(box["id"]),
               "series_id": series_id}  # fmt: skip
    finally:
        a.stop()
        b.stop()


def test_review_then_send_to_a_box_arrives_de_identified(pair: dict[str, Any]):
    client_a, client_b = pair["client_a"], pair["client_b"]
    sender = Sender(client_a, selection=[pair["series_id"]])
    assert sender.status.level != "error", sender.status.message
    assert "1 series" in sender.selection_label.value
    assert sender.destination.value == ("box", pair["box_id"]), "the one partner is preselected"
    sender.select_destination("box", "partner")
    assert sender.destination.value == ("box", pair["box_id"])
    assert "RETAIN_UIDS" in sender.option_boxes
    assert sender.send_button.disabled, "no send before the review"

    sender.review_button.click()
    assert sender.reviewed and not sender.send_button.disabled, sender.status.message
    assert "<table" in sender.review_html.value and "PatientName" in sender.review_html.value
    frame = sender.review_frame
    assert frame is not None and len(frame) > 10
    outcome = dict(zip(frame["keyword"], frame["outcome"], strict=False))
    assert outcome["PatientName"] != "kept"

    sender.option_boxes["RETAIN_UIDS"].value = True  # another profile: the review must be seen again
    assert not sender.reviewed and sender.send_button.disabled and sender.review_html.value == ""
    sender.option_boxes["RETAIN_UIDS"].value = False
    sender.review_button.click()
    assert not sender.send_button.disabled

    sender.send_button.click()
    assert sender.watcher is not None
    result = sender.wait(120)
    assert result is not None and result["status"] == "FINISHED", (sender.state, sender.status.message)
    assert sender.state == "FINISHED"
    assert (sender.progress.value, sender.progress.max) == (N, N)
    assert sender.progress.bar_style == "success"
    assert "FINISHED" in sender.state_line.message and sender.state_line.level == "ok"
    assert not sender.send_button.disabled

    images = client_b.images()
    assert len(images) == N
    for image_id in images["id"]:
        ds = pydicom.dcmread(io.BytesIO(client_b.image_bytes(int(image_id))))
        assert ds.PatientIdentityRemoved == "YES"
        assert "Secret" not in str(ds.PatientName) and ds.PatientID != "SECRET-ID-77"


def test_send_to_an_scu_follows_the_job(pair: dict[str, Any]):
    client_a, client_b = pair["client_a"], pair["client_b"]
    scp = client_b.add_scp("ui-scp", "UISCP", 0)
    scu = client_a.add_scu("b-scp", "UISCP", "127.0.0.1", int(scp["port"]))
    sender = Sender(client_a)
    assert sender.selection_label.value == "No series chosen to send yet" and sender.send_button.disabled
    browser = Browser(client_a)
    sender.set_selection(browser)  # follows the browser from now on
    browser.select([pair["series_id"]])
    assert sender.selection is not None and sender.selection.series_ids == [pair["series_id"]]
    sender.select_destination("scu", "b-scp")
    assert sender.destination.value == ("scu", int(scu["id"]))
    assert all(box.disabled for box in sender.option_boxes.values())
    sender.review_button.click()
    assert "not de-identified" in sender.review_html.value
    sender.send_button.click()
    result = sender.wait(120)
    assert result is not None and result["state"] == "SUCCEEDED", (sender.state, sender.status.message)
    assert (sender.progress.value, sender.progress.max) == (N, N)
    assert sender.state == "SUCCEEDED"


def test_an_unknown_box_shows_the_servers_message(pair: dict[str, Any]):
    client_a = pair["client_a"]
    created = pair["client_b"].create_box_connection("short-lived")
    box = client_a.connect_box("short-lived", created["base_url"])
    sender = Sender(client_a, selection=[pair["series_id"]])
    sender.select_destination("box", "short-lived")
    sender.review_button.click()
    assert not sender.send_button.disabled
    client_a.delete_box(int(box["id"]))  # gone between the review and the click
    sender.send_button.click()
    assert sender.status.level == "error"
    assert f"box {box['id']} not found" in sender.status.message
    assert sender.state == "FAILED" and sender.watcher is None


def test_an_offline_partner_shows_why_the_transaction_waits(pair: dict[str, Any], tmp_path: Path):
    """A box whose partner is gone: the transaction is not FINISHED and the state line says why (the node's reason)."""
    client_a = pair["client_a"]
    c = start_node(tmp_path / "c", tmp_path, "secret-token", *FAST)
    client_c = connect(c.url, token=c.token)
    created = client_c.create_box_connection("vanishing")
    client_a.connect_box("vanishing", created["base_url"])
    c.stop()
    sender = Sender(client_a, selection=[pair["series_id"]])
    sender.select_destination("box", "vanishing")
    sender.review_button.click()
    watcher = sender.send()
    assert watcher is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (watcher.last and watcher.last.message):
        time.sleep(0.2)
    watcher.stop()
    watcher.join(10)
    assert watcher.last is not None and watcher.last.state in ("WAITING", "PROCESSING", "FAILED")
    assert watcher.last.message, watcher.last
    assert watcher.last.message in sender.state_line.message
    node: NodeProcess = c
    assert node.process.poll() is not None


def test_the_review_shows_the_text_in_the_pixels_and_the_chosen_policy_masks_it(pair: dict[str, Any]):
    """An unflagged ultrasound series with a name in its pixels: the review lists the text (masked) with a
    thumbnail; with "mask all text found" it arrives at the partner with nothing readable in its pixels."""
    from generators import to_bytes, ultrasound_with_burned_name

    from slicebox_lab.anonymization import ocr

    if ocr.ocr_unavailable_reason() is not None:
        pytest.skip(f"OCR unavailable: {ocr.ocr_unavailable_reason()}")
    client_a, client_b, a = pair["client_a"], pair["client_b"], pair["a"]
    study, series = generate_uid(), generate_uid()
    s = a.session()
    for n in range(2):
        ds = ultrasound_with_burned_name(
            PatientName="Ultra^Sound", StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n + 1
        )
        r = s.post(a.api + "/images", data=to_bytes(ds), headers=DICOM, timeout=30)
        assert r.status_code == 201, r.text
    flat = client_a.flat_series()
    series_id = int(flat[flat["SeriesInstanceUID"] == series].iloc[0]["series_id"])
    before = len(client_b.images())

    sender = Sender(client_a, selection=[series_id])
    assert sender.profile is None  # nothing chosen: the box's own profile applies
    sender.select_destination("box", "partner")
    sender.review_button.click()
    shown = sender.review_html.value
    assert "Text in the pixels" in shown and "2 images read" in shown, shown[:500]
    assert "data:image/png;base64," in shown and "U**** S****" in shown and "Ultra" not in shown
    assert "refused" in shown

    sender.text_policy.value = "mask-detected"  # another profile: review again before sending
    assert sender.profile == {"options": [], "burnedInText": "mask-detected"}
    assert not sender.reviewed and sender.send_button.disabled
    sender.review_button.click()
    assert "2 images will have text masked" in sender.review_html.value
    sender.send_button.click()
    result = sender.wait(120)
    assert result is not None and result["status"] == "FINISHED", (sender.state, sender.status.message)
    images = client_b.images()
    assert len(images) == before + 2
    for image_id in images["id"]:
        ds = pydicom.dcmread(io.BytesIO(client_b.image_bytes(int(image_id))))
        if ds.Modality == "US":
            assert ds.BurnedInAnnotation == "NO"
            assert not any("ULTRA" in box.text.upper() for box in ocr.detect_text(ds))
