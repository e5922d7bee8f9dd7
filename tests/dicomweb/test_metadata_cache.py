"""The WADO-RS metadata cache: served text equals a fresh conversion, follows replaced images, stays bounded."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pydicom
from generators import ct_bytes

from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicomweb import wado
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

ROOT = "http://node:8888/slicebox/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.1001"


def _context(tmp_path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


def test_cached_text_equals_a_fresh_conversion_for_any_root(tmp_path: Path) -> None:
    context = _context(tmp_path)
    try:
        for n in range(3):
            context.ingest(ct_bytes(StudyInstanceUID=STUDY, InstanceNumber=n + 1), Source("user", "t"))
        study = STUDY
        instances = wado.locate(context.index, study)
        cache = wado.MetadataCache()
        first = json.loads("[" + cache.texts(context.storage, instances, ROOT) + "]")
        fresh = [wado.metadata(context.storage, i, ROOT) for i in instances]
        assert first == fresh
        other = 'http://other"host/dicom-web'  # a root that needs JSON escaping
        again = json.loads("[" + cache.texts(context.storage, instances, other) + "]")
        assert again == [wado.metadata(context.storage, i, other) for i in instances]
        assert all(other in item["7FE00010"]["BulkDataURI"] for item in again)
    finally:
        context.close()


def test_a_replaced_image_is_served_with_its_new_attributes(tmp_path: Path) -> None:
    context = _context(tmp_path)
    try:
        data = ct_bytes(StudyInstanceUID=STUDY, ImageComments="before")
        context.ingest(data, Source("user", "t"))
        study = STUDY
        cache = wado.MetadataCache()
        before = json.loads("[" + cache.texts(context.storage, wado.locate(context.index, study), ROOT) + "]")
        assert before[0]["00204000"]["Value"] == ["before"]
        ds = pydicom.dcmread(BytesIO(data))
        ds.ImageComments = "after"
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        context.ingest(out.getvalue(), Source("user", "t"))
        after = json.loads("[" + cache.texts(context.storage, wado.locate(context.index, study), ROOT) + "]")
        assert len(after) == 1
        assert after[0]["00204000"]["Value"] == ["after"]
    finally:
        context.close()


def test_the_cache_stays_within_its_byte_bound(tmp_path: Path) -> None:
    context = _context(tmp_path)
    try:
        for n in range(6):
            context.ingest(ct_bytes(StudyInstanceUID=STUDY, InstanceNumber=n + 1), Source("user", "t"))
        study = STUDY
        instances = wado.locate(context.index, study)
        one = len(json.dumps(wado.metadata(context.storage, instances[0], "x")))
        cache = wado.MetadataCache(max_bytes=3 * one + one // 2)
        cache.texts(context.storage, instances, ROOT)
        assert cache._bytes <= cache.max_bytes
        assert len(cache._entries) == 3
    finally:
        context.close()
