"""Every DICOM file bundled with pydicom (and pydicom-data) through the REST API.

Each file pydicom reads with file meta is either stored (201/200) or refused with a 400 that
names the reason; each stored one with pixel data renders as a decodable PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pydicom
from bundled import bundled_part10_files
from helpers import body_json
from PIL import Image as PILImage


async def test_every_bundled_file_is_stored_or_refused_with_a_reason(api):
    files = [Path(p) for p in bundled_part10_files()]
    assert len(files) > 200
    outcomes: Counter[str] = Counter()
    rendered = 0
    for path in files:
        r = await api("images", method="POST", body=path.read_bytes(), headers={"Content-Type": "application/dicom"})
        assert r.code in (200, 201, 400), (path.name, r.code, r.body[:300])
        if r.code == 400:
            message = body_json(r)["message"]
            assert len(message) > 10, (path.name, message)
            outcomes["refused"] += 1
            continue
        outcomes["stored"] += 1
        image = body_json(r)
        ds = pydicom.dcmread(path, stop_before_pixels=False)
        if "PixelData" not in ds:
            continue
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        for frame in sorted({1, frames}):
            png = await api("images", image["id"], "png", params={"framenumber": frame})
            assert png.code == 200, (path.name, frame, png.code, png.body[:300])
            PILImage.open(io.BytesIO(png.body)).load()
            rendered += 1
    print(f"bundled files: {dict(outcomes)}, {rendered} frames rendered")
    assert outcomes["stored"] > 180
    assert rendered > 150
