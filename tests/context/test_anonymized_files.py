"""``SliceboxContext.anonymized_files``: the images of a box push de-identified by one worker's call into spool files,
hashed as they are written, their keys recorded in one transaction; an image that cannot be done answers its error
in its place, and nothing is left in the spool."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pydicom
import pytest
from generators import ct_bytes

from slicebox_lab.anonymization import Profile, keystore
from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.errors import NotFound
from slicebox_lab.model import Source
from slicebox_lab.workers import tasks

USER = Source("user", "tester")


@pytest.fixture
def context(tmp_path: Path):
    context = SliceboxContext.open(tmp_path / "node", fsync=False, workers=2)
    yield context
    context.close()


def _calls(context: SliceboxContext, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images of each worker call that anonymizes files."""
    sizes: list[int] = []
    run = context.workers.run

    def counting(fn: Any, *args: Any) -> Any:
        if fn is tasks.anonymize_files:
            sizes.append(len(args[0]))
        return run(fn, *args)

    monkeypatch.setattr(context.workers, "run", counting)
    return sizes


def test_several_images_in_one_call_each_with_its_tag_values_hash_and_key(
    context: SliceboxContext, monkeypatch: pytest.MonkeyPatch
):
    images = [context.ingest(ct_bytes(PatientID="REAL", seed=n), USER).image for n in range(4)]
    os.unlink(context.storage.local_path(images[2].storage_key))  # type: ignore[arg-type]  # gone under it
    sizes = _calls(context, monkeypatch)
    chosen = parse_tag_values([{"tagPath": "PatientName", "value": "Chosen^Name"}])
    answers = context.anonymized_files([(images[0], chosen), *((image, ()) for image in images[1:])], Profile(), True)

    assert sizes == [4]  # one worker call for the four
    assert isinstance(answers[2], NotFound)
    made = [a for a in answers if isinstance(a, tasks.Anonymized)]
    assert len(made) == 3
    for answer in made:
        data = Path(answer.path).read_bytes()
        assert answer.size == len(data) and answer.sha256 == hashlib.sha256(data).hexdigest()
    copies = [pydicom.dcmread(a.path) for a in made]
    assert str(copies[0].PatientName) == "Chosen^Name" and all(c.PatientIdentityRemoved == "YES" for c in copies)
    keys = keystore.list_keys(context.index, count=100)
    assert sorted((k.imageId, k.AnonSOPInstanceUID) for k in keys) == sorted(
        (image.id, copy.SOPInstanceUID) for image, copy in zip([images[0], images[1], images[3]], copies, strict=True)
    )
    for answer in made:
        context.release(answer)
    assert list(context.spool.iterdir()) == []


def test_keys_that_cannot_be_recorded_leave_no_copy_behind(context: SliceboxContext, monkeypatch: pytest.MonkeyPatch):
    images = [context.ingest(ct_bytes(PatientID="REAL", seed=n), USER).image for n in range(3)]

    def refuse(*args: Any) -> None:
        raise RuntimeError("the index is gone")

    monkeypatch.setattr(keystore, "store_key_records", refuse)
    with pytest.raises(RuntimeError, match="the index is gone"):
        context.anonymized_files([(image, ()) for image in images], Profile())
    assert list(context.spool.iterdir()) == []  # no copy leaves without its key
    assert keystore.list_keys(context.index, count=100) == []


def test_one_image_is_the_download_path_and_an_unchanged_key_is_not_written_again(context: SliceboxContext):
    image = context.ingest(ct_bytes(PatientID="REAL", seed=1), USER).image
    first = context.anonymized_file(image, Profile())
    again = context.anonymized_file(image, Profile())
    assert Path(first.path).read_bytes() == Path(again.path).read_bytes()
    [key] = keystore.list_keys(context.index, count=100)
    assert key.imageId == image.id
    context.release(first)
    context.release(again)


def test_a_download_that_fails_in_the_worker_leaves_nothing_in_the_spool(context: SliceboxContext):
    """The spool is in RAM (/dev/shm): a copy begun and then refused or cut off must not stay there."""
    image = context.ingest(ct_bytes(PatientID="REAL", seed=1), USER).image
    os.unlink(context.storage.local_path(image.storage_key))  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="is gone"):  # the 404 a missing stored file gives elsewhere, not a 500
        context.anonymized_file(image, Profile())
    assert list(context.spool.iterdir()) == []
