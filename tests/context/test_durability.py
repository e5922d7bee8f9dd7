"""What a power cut can take and what it cannot: one flush per image, rows derived again from blobs.

The node answers an upload once its blob is flushed; the rows' commit does not wait for the disk.
A power cut may therefore lose the newest row commits (SQLite WAL with ``synchronous=NORMAL``), never
an acknowledged blob.  The simulation: acknowledged images whose rows are deleted behind the node's
back (the commits the cut lost), the running marker left in place (no clean shutdown), then a start:
every acknowledged image must be back, with its source and its bytes.  A deletion removes blobs
durably before rows (whose deletion commits durably), so a deletion cut short never brings an
image back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from generators import ct_bytes

from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import SliceboxError
from slicebox_lab.events import ImageAdded
from slicebox_lab.model import Source

SCANNER = Source("scp", "ct-scanner")
PACS = Source("box", "hospital")


def _drop_rows(data_dir: Path, image_ids: list[int]) -> None:
    """The commits a power cut lost: the images' rows, and parents left without children."""
    with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in image_ids])
        db.execute("DELETE FROM series WHERE id NOT IN (SELECT series_id FROM images)")
        db.execute("DELETE FROM studies WHERE id NOT IN (SELECT study_id FROM series)")
        db.execute("DELETE FROM patients WHERE id NOT IN (SELECT patient_id FROM studies)")


def test_every_acknowledged_image_is_back_after_a_power_cut_lost_its_rows(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=True)
    sent = {
        i: ct_bytes(PatientID=f"PC-{i % 3}", PatientName=f"Cut^{i % 3}", InstanceNumber=i + 1, seed=i)
        for i in range(12)
    }
    acknowledged = {i: context.ingest(data, SCANNER if i % 2 else PACS) for i, data in sent.items()}
    series_uids = {i: context.index.get_series(r.image.series_id).SeriesInstanceUID for i, r in acknowledged.items()}
    lost = [acknowledged[i].image.id for i in range(6, 12)]  # the newest half of the commits
    context.index.engine.dispose()  # no close: the marker stays, as after a power cut
    _drop_rows(data_dir, lost)

    reopened = SliceboxContext.open(data_dir, fsync=True)
    announced: list[ImageAdded] = []
    reopened.events.subscribe(ImageAdded, announced.append)
    try:
        assert reopened.index.counts()["images"] == 12
        for i, data in sent.items():
            uid = acknowledged[i].image.SOPInstanceUID
            image = reopened.index.find_image(series_uids[i], uid)
            assert image is not None, f"acknowledged image {i} was lost"
            assert reopened.image_bytes(image.id) == data
            source = reopened.index.get_source(image.source_id)
            expected = SCANNER if i % 2 else PACS
            assert (source.source_type, source.source_name) == (expected.source_type, expected.source_name)
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("6 blobs indexed again" in m and "0 partial blobs" in m for m in messages), messages
        reopened.announce_reindexed()  # forwarding and series types hear of them once they listen
        assert len(announced) == 6
    finally:
        reopened.close()


def test_a_deletion_cut_short_never_brings_an_image_back(tmp_path: Path):
    data_dir = tmp_path / "node"
    context = SliceboxContext.open(data_dir, fsync=True)
    kept = context.ingest(ct_bytes(PatientID="KEEP", seed=1), SCANNER)
    gone = context.ingest(ct_bytes(PatientID="GONE", seed=2), SCANNER)

    def cut(image_ids: object) -> object:
        raise SliceboxError("injected: the power went after the blobs were deleted, before the rows were")

    context.index.delete_images = cut  # type: ignore[method-assign]
    with pytest.raises(SliceboxError, match="injected"):
        context.delete_images([gone.image.id])
    context.index.engine.dispose()

    reopened = SliceboxContext.open(data_dir, fsync=True)
    try:
        assert reopened.index.counts()["images"] == 1
        assert reopened.image_bytes(kept.image.id)
        messages = [e.message for e in reopened.index.list_log(entry_type="WARN")]
        assert any("0 blobs indexed again" in m and "1 rows without a blob" in m for m in messages), messages
    finally:
        reopened.close()
