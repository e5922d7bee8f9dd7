"""The one way to anonymize: keyed by the node secret in the data directory, stable across restarts."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pydicom
import pytest
from generators import ct_bytes

from slicebox_lab.anonymization import Option, Profile
from slicebox_lab.context import PSEUDONYM_KEY_FILE, SliceboxContext
from slicebox_lab.errors import NotFound
from slicebox_lab.events import ImagesDeleted
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

WATCH = Source("directory", "incoming")
BASIC = Profile()


@pytest.fixture
def context(tmp_path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


def test_secret_is_created_once_and_reused_after_a_restart(tmp_path: Path):
    data_dir = tmp_path / "node"
    first = SliceboxContext.open(data_dir, fsync=False)
    try:
        key_file = data_dir / PSEUDONYM_KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        image = first.ingest(ct_bytes(PatientID="RESTART"), WATCH).image
        before = first.anonymized_bytes(image.id, BASIC)
    finally:
        first.close()
    again = SliceboxContext.open(data_dir, fsync=False)
    try:
        assert again.anonymized_bytes(image.id, BASIC) == before
        assert again.pseudonym_keys.secret == key_file.read_bytes()
    finally:
        again.close()


def test_a_context_built_directly_gets_a_random_secret(tmp_path: Path):
    contexts = []
    for name in ("a", "b"):
        engine = create_engine(sqlite_url(tmp_path / f"{name}.sqlite"))
        upgrade(engine)
        contexts.append(SliceboxContext(MemoryStorage(), Index(engine)))
    a, b = contexts
    assert a.pseudonym_keys is a.pseudonym_keys  # created once, on first use
    assert a.pseudonym_keys.secret != b.pseudonym_keys.secret


def test_anonymized_bytes_leave_storage_unchanged(context: SliceboxContext):
    data = ct_bytes(PatientID="STAYS")
    image = context.ingest(data, WATCH).image
    out = pydicom.dcmread(io.BytesIO(context.anonymized_bytes(image.id, Profile(frozenset({Option.RETAIN_UIDS})))))
    assert out.PatientIdentityRemoved == "YES" and out.SOPInstanceUID == image.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == image.TransferSyntaxUID
    assert context.image_bytes(image.id) == data
    with pytest.raises(NotFound):
        context.anonymized_bytes(image.id + 1000, BASIC)


def test_anonymize_in_place_replaces_the_image_under_its_source(context: SliceboxContext):
    image = context.ingest(ct_bytes(PatientID="INPLACE"), WATCH).image
    deleted: list[ImagesDeleted] = []
    context.events.subscribe(ImagesDeleted, deleted.append)
    result = context.anonymize_in_place(image.id, BASIC)
    assert result.image.id != image.id
    assert [e.image_ids for e in deleted] == [(image.id,)]
    with pytest.raises(NotFound):
        context.index.get_image(image.id)
    source = context.index.series_source(result.image.series_id)
    assert (source.source_type, source.source_name) == ("directory", "incoming")
    assert context.dataset(result.image.id).PatientIdentityRemoved == "YES"
    assert context.index.counts()["images"] == 1


def test_anonymize_in_place_keeps_an_image_that_keeps_its_identity(context: SliceboxContext, monkeypatch):
    data = ct_bytes(PatientID="SAME")
    image = context.ingest(data, WATCH).image
    # an anonymization that changes nothing the index keys on: the ingest replaces the image itself
    monkeypatch.setattr(context, "_anonymized", lambda image, profile, tag_values=(): data)
    result = context.anonymize_in_place(image.id, BASIC)
    assert result.image.id == image.id
    assert context.index.get_image(image.id).id == image.id
    assert context.image_bytes(image.id) == data


def test_the_nodes_pixel_masks_and_burned_in_settings_apply_to_every_anonymization(context: SliceboxContext):
    from slicebox_lab.anonymization import PixelMask, Rectangle
    from slicebox_lab.errors import AnonymizationRefused

    burned = context.ingest(ct_bytes(PatientID="BURNED", BurnedInAnnotation="YES"), WATCH).image
    with pytest.raises(AnonymizationRefused):
        context.anonymized_bytes(burned.id, BASIC)
    context.pixel_masks = (PixelMask(rectangles=(Rectangle(0, 0, 4, 2),), Modality="CT"),)
    out = pydicom.dcmread(io.BytesIO(context.anonymized_bytes(burned.id, BASIC)))
    assert out.BurnedInAnnotation == "NO" and not out.pixel_array[0:2, 0:4].any()

    sc = ct_bytes(PatientID="SC", SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="OT")
    sc_image = context.ingest(sc, WATCH).image
    context.burned_in_text_detection = False  # unread, as a node without OCR (what reading does: test_burned_in_text)
    with pytest.raises(AnonymizationRefused):
        context.anonymized_bytes(sc_image.id, BASIC)
    context.secondary_capture_burned_in = False
    with pytest.raises(AnonymizationRefused, match="modality OT"):  # its modality still counts
        context.anonymized_bytes(sc_image.id, BASIC)
    context.burned_in_modalities = frozenset()
    assert pydicom.dcmread(io.BytesIO(context.anonymized_bytes(sc_image.id, BASIC))).PatientIdentityRemoved == "YES"
