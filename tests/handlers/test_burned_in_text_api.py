"""REST: text found in the pixels, in the review report and on the way out (real Tesseract, real server)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pydicom
import pytest
from generators import ct_bytes, to_bytes, ultrasound_with_burned_name
from helpers import body_json
from PIL import Image

from slicebox_lab.anonymization import ocr

pytestmark = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason=f"OCR unavailable: {ocr.ocr_unavailable_reason()}"
)
DICOM = {"Content-Type": "application/dicom"}
JSON = {"Content-Type": "application/json"}


async def upload(api, data: bytes) -> dict:
    r = await api("images", method="POST", body=data, headers=DICOM)
    assert r.code in (200, 201), r.body
    return body_json(r)


async def report(api, body: object):
    r = await api("anonymization", "report", method="POST", body=json.dumps(body).encode(), headers=JSON)
    assert r.code == 200, r.body
    return body_json(r)


async def test_the_report_has_a_row_per_text_found_shown_masked_and_a_thumbnail(api):
    us = await upload(api, to_bytes(ultrasound_with_burned_name()))
    blank = ultrasound_with_burned_name(PatientName="Nyberg^Ebba", PatientID="US-PID-2")
    blank.PixelData = np.random.default_rng(2).integers(0, 60, size=(120, 320), dtype=np.uint8).tobytes()
    quiet = await upload(api, to_bytes(blank))
    ct = await upload(api, ct_bytes(PatientName="Roe^Richard", PatientID="P2"))

    data = await report(api, {"imageIds": [us["id"], quiet["id"], ct["id"]]})
    pixel_text = data["pixel_text"]
    assert pixel_text["summary"]["images_read"] == 2  # the two ultrasound images, not the CT
    rows = pixel_text["rows"]
    assert rows and {row["image_id"] for row in rows} == {us["id"]}
    for row in rows:
        assert set(row) >= {"image_id", "frame", "x", "y", "width", "height", "text", "confidence", "decision", "why"}
        assert row["frame"] == 1 and row["decision"] == "refused" and row["y"] < 32
    assert any(row["text"].startswith("L******** M***") for row in rows)
    assert "Lindqvist" not in json.dumps(data) and "US-PID-1" not in json.dumps(data)  # never the text itself
    images = {image["image_id"]: image for image in pixel_text["images"]}
    assert images[us["id"]]["fate"] == "refused" and "text was found" in images[us["id"]]["refusal"]
    assert images[quiet["id"]]["fate"] == "kept" and images[quiet["id"]]["thumbnail"] is None
    assert data["summary"]["burned_in"] == {"refused": 1, "masked": 0, "kept": 1}  # read, not guessed

    thumbnail = images[us["id"]]["thumbnail"]
    png = Image.open(io.BytesIO(base64.b64decode(thumbnail["png"])))
    assert thumbnail["frame"] == 1 and png.format == "PNG" and png.height <= 192
    red = np.asarray(png.convert("RGB"))[..., 0] > 200
    assert red[: png.height // 3].any()  # the boxes are drawn where the text is

    data = await report(api, {"imageIds": [us["id"]], "burnedInText": "mask-detected"})
    assert {row["decision"] for row in data["pixel_text"]["rows"]} == {"masked"}
    assert data["summary"]["burned_in"] == {"refused": 0, "masked": 1, "kept": 0}
    png = Image.open(io.BytesIO(base64.b64decode(data["pixel_text"]["images"][0]["thumbnail"]["png"])))
    top = np.asarray(png.convert("L"))[: png.height // 4]
    assert (top == 0).mean() > 0.2  # the preview shows the text blacked out


async def test_the_anonymized_download_masks_the_text_and_keeps_the_original(api):
    data = to_bytes(ultrasound_with_burned_name())
    us = await upload(api, data)
    r = await api("images", us["id"], "anonymized", method="POST", body=b"{}", headers=JSON)
    assert r.code == 422 and "text was found" in body_json(r)["message"]
    body = json.dumps({"burnedInText": "mask-detected"}).encode()
    r = await api("images", us["id"], "anonymized", method="POST", body=body, headers=JSON)
    assert r.code == 200, r.body
    out = pydicom.dcmread(io.BytesIO(r.body))
    assert out.BurnedInAnnotation == "NO" and out.pixel_array[:32].max() < 128
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert ocr.detect_text(out) == ()  # nothing readable is left
    assert (await api("images", us["id"])).body == data


async def test_the_reviews_pixel_reading_runs_in_the_worker_processes(api, jp_serverapp, monkeypatch):
    """Tesseract's work for the review (about a second a frame) never runs in the server process."""
    from slicebox_lab.workers import tasks

    context = jp_serverapp.web_app.settings["slicebox_context"]
    assert context.workers.workers >= 1
    started = []
    start = context.workers.start

    def recording(fn, *args, **kwargs):
        started.append(fn)
        return start(fn, *args, **kwargs)

    monkeypatch.setattr(context.workers, "start", recording)
    monkeypatch.setattr(tasks.report, "read_pixels", lambda *a, **k: pytest.fail("read in the server process"))
    us = await upload(api, to_bytes(ultrasound_with_burned_name()))
    data = await report(api, {"imageIds": [us["id"]], "burnedInText": "mask-detected"})
    assert tasks.read_pixels in started
    assert {row["decision"] for row in data["pixel_text"]["rows"]} == {"masked"}
