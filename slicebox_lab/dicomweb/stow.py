"""STOW-RS (PS3.18 §10.5): store the parts of a multipart/related body, answer per instance.

Every part goes through the one ingest path (``context.Upload``, house rule 3) on its own, as soon as
it has arrived (the body is streamed into storage, ``handlers/upload.py``): a part that fails is
reported in ``FailedSOPSequence`` and the others are still stored.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydicom

from slicebox_lab.errors import InvalidInput, SliceboxError
from slicebox_lab.model import IndexedAttributes
from slicebox_lab.upload import Upload

__all__ = ["CANNOT_UNDERSTAND", "PROCESSING_FAILURE", "STUDY_MISMATCH", "StowResponse", "store_part"]

#: FailureReason values (PS3.4 Annex GG.4, PS3.18 Table 10.5.3-2)
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
#: WarningReason: the node changed attributes on the way in (tag filter, re-identification)
COERCION = 0xB000
_PART_TYPES = ("application/dicom", "")


@dataclass
class StowResponse:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-1), filled part by part."""

    root: str
    stored: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def to_json(self, study: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        uid = study or (next(iter(self.studies)) if len(self.studies) == 1 else None)
        if uid:
            out["00081190"] = {"vr": "UR", "Value": [f"{self.root}studies/{uid}"]}
        if self.failed:
            out["00081198"] = {"vr": "SQ", "Value": self.failed}
        if self.stored:
            out["00081199"] = {"vr": "SQ", "Value": self.stored}
        return out


def _uids(data: bytes) -> tuple[str, str, str]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID) from the header; empty strings when unreadable."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data),
            force=True,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
    except Exception:
        return "", "", ""


def _reference(sop_class: str, sop_instance: str) -> dict[str, Any]:
    out: dict[str, Any] = {"00081150": {"vr": "UI"}, "00081155": {"vr": "UI"}}
    if sop_class:
        out["00081150"]["Value"] = [sop_class]
    if sop_instance:
        out["00081155"]["Value"] = [sop_instance]
    return out


def store_part(
    upload: Upload,
    content_type: str,
    study: str | None,
    series_uids: Callable[[int], tuple[str, str]],
    response: StowResponse,
) -> None:
    """Store one part as it ended (blocking: in the body's writer thread) and record the outcome in ``response``.

    ``series_uids`` gives (StudyInstanceUID, SeriesInstanceUID) of a series id, for RetrieveURL.
    """
    sop_class, sop_instance, study_uid = _uids(upload.head)
    reason: int | None = None
    media = content_type.split(";")[0].strip().lower()
    if media not in _PART_TYPES:
        reason = CANNOT_UNDERSTAND
    elif study is not None and study_uid and study_uid != study:
        reason = STUDY_MISMATCH

    def same_study(attributes: IndexedAttributes) -> None:
        if study is not None and attributes.study.get("StudyInstanceUID") != study:
            raise _WrongStudy(f"the instance belongs to study {attributes.study.get('StudyInstanceUID')}")

    if reason is not None:
        upload.discard()
    else:
        try:
            result = upload.store(accept=same_study)
        except _WrongStudy:
            reason = STUDY_MISMATCH
        except InvalidInput:
            reason = CANNOT_UNDERSTAND
        except SliceboxError:
            reason = PROCESSING_FAILURE
        else:
            image = result.image
            stored_study, stored_series = series_uids(image.series_id)
            response.studies.add(stored_study)
            item = _reference(image.SOPClassUID, image.SOPInstanceUID)
            url = f"{response.root}studies/{stored_study}/series/{stored_series}/instances/{image.SOPInstanceUID}"
            item["00081190"] = {"vr": "UR", "Value": [url]}
            if (image.SOPInstanceUID, image.SOPClassUID) != (sop_instance, sop_class):
                item["00081196"] = {"vr": "US", "Value": [COERCION]}
            response.stored.append(item)
            return
    item = _reference(sop_class, sop_instance)
    item["00081197"] = {"vr": "US", "Value": [reason]}
    response.failed.append(item)


class _WrongStudy(SliceboxError):
    """A part of another study than the request's (STOW-RS answers A900 for it)."""
