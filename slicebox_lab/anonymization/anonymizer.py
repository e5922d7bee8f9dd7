"""De-identify one dataset with a :class:`~.profile.Profile`: the one way to anonymize (house rule 3).

The input is never modified; the result is a new dataset that shares only immutable values (bytes,
strings) with it, so pixel data is not copied.

Values written (chosen to be valid for the VR and to carry no information):

* D (dummy): PN and text VRs ``ANONYMOUS``; DA ``19000101``; TM ``000000``; DT ``19000101000000``;
  AS ``000D``; DS/IS ``0``; binary numbers 0; OB/OW/UN… eight zero bytes; UI the deterministic UID
  (as U); a sequence gets no items (inventing coded items would be guesswork, and keeping them
  would keep their content).
* Z: zero length; X: removed; K: kept (sequence items de-identified); U: ``keys.uid(original)``
  for every value, so a UID maps identically wherever it occurs (references, frames of reference)
  and on every run of this node.
* C: under Modified Dates, DA and the date part of DT move back by the patient's offset (times of
  day kept, TM kept); a value that cannot be parsed becomes zero-length. Free text (CS LO LT SH ST
  UC UT) keeps only allow-listed tokens and never a word of this dataset's names, IDs and
  institutions (``clean.clean_text`` with ``clean.identifying_tokens`` of the input); a CodeValue
  pydicom knows for the item's CodingSchemeDesignator and a known ContextIdentifier are kept whole.
  A value cleaned to nothing is zero-length, or the VR's dummy where the basic action is D. A
  sequence is kept and its items are de-identified in cleaning mode (see profile.py, which also
  says which C is which).
* The root's PatientName and PatientID are always replaced by pseudonyms derived from the real pair,
  so one patient is one pseudonym across runs; nested ones follow the table.
* Data already flagged PatientIdentityRemoved=YES is de-identified again: whether to skip it is the
  caller's decision (a re-run maps pseudonyms and UIDs again and shifts dates again).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from .clean import clean_text, identifying_tokens, known_code, known_context_group
from .keys import PseudonymKeys
from .pixels import CLEAN_PIXEL_DATA_CODE, CLEAN_PIXEL_DATA_TITLE, clean_pixels
from .pixeltext import check_pixels
from .profile import (
    BASIC_PROFILE_CODE,
    BASIC_PROFILE_TITLE,
    CLEAN_TEXT_VRS,
    TEXT_CLEANING_OPTIONS,
    Action,
    Option,
    Profile,
    dictionary_vr,
    element_text,
    private_creator,
)

__all__ = ["DUMMY_TEXT", "anonymize", "deidentification_method"]

DUMMY_TEXT = "ANONYMOUS"
_DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "DS": "0",
    "IS": "0",
    **{vr: 0 for vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "US or SS", "US or SS or OW")},
    **{vr: b"\x00" * 8 for vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW")},
}
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_LO_MAX = 64
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class _Run:
    profile: Profile
    keys: PseudonymKeys
    date_offset: datetime.timedelta | None
    banned: frozenset[str] = frozenset()  # tokens cleaned text never keeps: this dataset's names and IDs


def anonymize(ds: Dataset, profile: Profile, keys: PseudonymKeys) -> Dataset:
    """A de-identified copy of ``ds`` (with file meta if ``ds`` has it); ``ds`` is left untouched.

    Images that may carry text in their pixels are read, then masked, refused
    (:class:`~slicebox_lab.errors.AnonymizationRefused`) or kept by the profile's burned-in policy:
    see pixeltext.py.
    """
    pixels = check_pixels(ds, profile)
    real_name = element_text(ds.get(Tag(0x0010, 0x0010)))
    real_id = element_text(ds.get(Tag(0x0010, 0x0020)))
    offset = None
    if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile.options:
        offset = datetime.timedelta(days=keys.date_offset_days(real_name, real_id))
    banned = identifying_tokens(ds) if profile.options & TEXT_CLEANING_OPTIONS else frozenset()
    out = _dataset(ds, _Run(profile, keys, offset, banned))

    out.PatientName, out.PatientID = keys.patient_pseudonym(real_name, real_id)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = deidentification_method(profile, pixels_cleaned=pixels.cleans)
    out.DeidentificationMethodCodeSequence = _method_codes(profile, pixels_cleaned=pixels.cleans)
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in profile.options:
        out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif offset is not None:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        out.LongitudinalTemporalInformationModified = "REMOVED"

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = _file_meta(meta, out)
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        out.set_original_encoding(implicit, little, ds.original_character_set)
    if pixels.cleans:  # after file meta and encoding: it writes the pixel data anew
        clean_pixels(ds, out, pixels.masks, pixels.rectangles)
    return out


def deidentification_method(profile: Profile, pixels_cleaned: bool = False) -> str | list[str]:
    """Profile and option titles joined by " - ", split into several values where LO's 64 characters end."""
    values: list[str] = []
    titles = [BASIC_PROFILE_TITLE, *(option.title for option in profile.ordered_options)]
    for title in [*titles, CLEAN_PIXEL_DATA_TITLE] if pixels_cleaned else titles:
        if values and len(values[-1]) + 3 + len(title) <= _LO_MAX:
            values[-1] = f"{values[-1]} - {title}"
        else:
            values.append(title)
    return values[0] if len(values) == 1 else values


def _method_codes(profile: Profile, pixels_cleaned: bool = False) -> Sequence:
    items = []
    for code, meaning in [
        (BASIC_PROFILE_CODE, BASIC_PROFILE_TITLE),
        *((option.code, option.title) for option in profile.ordered_options),
        *([(CLEAN_PIXEL_DATA_CODE, CLEAN_PIXEL_DATA_TITLE)] if pixels_cleaned else []),
    ]:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return Sequence(items)


def _file_meta(meta: FileMetaDataset, out: Dataset) -> FileMetaDataset:
    """Only what identifies the object's class, instance and encoding; source AE titles and the like go."""
    new = FileMetaDataset()
    if "FileMetaInformationVersion" in meta:
        new.FileMetaInformationVersion = meta.FileMetaInformationVersion
    if "MediaStorageSOPClassUID" in meta:
        new.MediaStorageSOPClassUID = meta.MediaStorageSOPClassUID
    if "SOPInstanceUID" in out:
        new.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    if "TransferSyntaxUID" in meta:
        new.TransferSyntaxUID = meta.TransferSyntaxUID
    new.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return new


def _dataset(src: Dataset, run: _Run, cleaning: bool = False) -> Dataset:
    """``src`` de-identified; ``cleaning`` below a sequence a C keeps (unnamed text is cleaned, not kept).

    A public element copied unchanged (:func:`_copied`) that pydicom has not decoded yet goes over as read
    (:func:`_kept_as_read`): the writer then copies its bytes instead of decoding and encoding them again,
    which was half of a CT header's de-identification."""
    out = Dataset()
    has_private = False
    for tag in src.keys():
        raw = _kept_as_read(src, tag, run, cleaning)
        if raw is not None:
            out[tag] = raw
            continue
        elem = src[tag]
        creator = None
        if tag.group % 2:
            has_private = True
            creator = private_creator(src, elem)
        new = _apply(elem, run.profile.action(tag, elem.VR, creator, cleaning), run, src, cleaning)
        if new is not None:
            out.add(new)
    if has_private:
        _drop_unused_creators(out)
    return out


def _kept_as_read(src: Dataset, tag: BaseTag, run: _Run, cleaning: bool) -> RawDataElement | None:
    """``src``'s element at ``tag`` as read, when it is still undecoded and :func:`_apply` would copy it: a public
    element of a VR the data names (explicit VR) or the dictionary gives (implicit VR, as decoding would), not a
    sequence (its items are de-identified), not UN (decoding may give it the dictionary's VR, which the profile
    decides by), of defined length.  None otherwise: the element is decoded and de-identified by :func:`_apply`."""
    elem = src.get_item(tag)
    if not isinstance(elem, RawDataElement) or tag.group % 2 or elem.length == _UNDEFINED_LENGTH:
        return None
    vr = elem.VR or dictionary_vr(tag)
    if vr in (None, "SQ", "UN"):
        return None
    return elem if _copied(run.profile.action(tag, elem.VR, None, cleaning), str(vr), run) else None


def _copied(action: Action, vr: str, run: _Run) -> bool:
    """Whether an element of ``vr`` is copied unchanged (by :func:`_apply`, or as read by :func:`_kept_as_read`):
    K, and a C that neither moves a date nor cleans text (times, numbers, codes of other VRs)."""
    if action is Action.K:
        return True
    shifted = run.date_offset is not None and vr in ("DA", "DT")
    return action is Action.C and not shifted and vr not in CLEAN_TEXT_VRS


def _drop_unused_creators(ds: Dataset) -> None:
    used = {(tag.group, tag.element >> 8) for tag in ds.keys() if tag.group % 2 and tag.element >= 0x1000}
    for tag in [t for t in ds.keys() if t.group % 2 and 0x0010 <= t.element <= 0x00FF]:
        if (tag.group, tag.element) not in used:
            del ds[tag]


def _apply(
    elem: DataElement, action: Action, run: _Run, src: Dataset | None = None, cleaning: bool = False
) -> DataElement | None:
    vr = elem.VR
    if action is Action.X:
        return None
    if vr == "SQ":
        if action in (Action.Z, Action.D):
            return DataElement(elem.tag, "SQ", Sequence())
        cleaning = cleaning or action is Action.C
        return DataElement(elem.tag, "SQ", Sequence([_dataset(item, run, cleaning) for item in elem.value]))
    if action is Action.Z:
        return DataElement(elem.tag, vr, None)
    if action is Action.U or (action is Action.D and vr == "UI"):
        return DataElement(elem.tag, "UI", _map_values(elem.value, run.keys.uid))
    if action is Action.D:
        return DataElement(elem.tag, vr, _DUMMY_BY_VR.get(vr, DUMMY_TEXT if vr in _TEXT_VRS else None))
    if _copied(action, vr, run):
        return _copy(elem)  # K, and a C that neither moves a date nor cleans text (times of day are kept)
    if vr in CLEAN_TEXT_VRS:
        return _clean(elem, run, src)
    offset = run.date_offset  # what is left: a C of a DA or DT under Modified Dates
    assert offset is not None and vr in ("DA", "DT"), (action, vr)
    return DataElement(elem.tag, vr, _map_values(elem.value, lambda v: _shift(v, offset)))


_CodeValue, _LongCodeValue, _ContextIdentifier = Tag(0x0008, 0x0100), Tag(0x0008, 0x0119), Tag(0x0008, 0x010F)
_CodingSchemeDesignator = Tag(0x0008, 0x0102)


def _clean(elem: DataElement, run: _Run, src: Dataset | None) -> DataElement:
    """Free text reduced to allow-listed tokens; known codes and context groups kept whole."""
    tag, vr = elem.tag, elem.VR
    scheme = element_text(src.get(_CodingSchemeDesignator)) if src is not None else ""

    def clean(value: str) -> str:
        if value.strip().lower() not in run.banned:
            if tag in (_CodeValue, _LongCodeValue) and scheme and known_code(scheme, value):
                return value
            if tag == _ContextIdentifier and known_context_group(value):
                return value
        return clean_text(value, run.banned)

    value = _map_values(elem.value, clean)
    if not value or (isinstance(value, list) and not any(value)):
        basic = run.profile.basic_action(tag)
        value = _DUMMY_BY_VR.get(vr, DUMMY_TEXT) if basic is Action.D else None
    return DataElement(tag, vr, value)


def _copy(elem: DataElement) -> DataElement:
    value = elem.value
    if isinstance(value, MultiValue):
        value = list(value)
    return DataElement(elem.tag, elem.VR, value, is_undefined_length=elem.is_undefined_length)


def _map_values(value: Any, function: Callable[[str], str]) -> str | list[str] | None:
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").rstrip("\x00 ").split("\\")
    if isinstance(value, (MultiValue, list, tuple)):
        return [function(str(v)) if str(v) else "" for v in value]
    return function(str(value))


def _shift(value: str, offset: datetime.timedelta) -> str:
    """DA or DT value moved back by ``offset`` (time part and UTC offset of a DT kept); "" if not a full date."""
    value = value.strip()
    try:
        day = datetime.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
        shifted = day - offset
    except (ValueError, OverflowError):
        return ""
    if len(value) < 8 or not value[:8].isdigit():
        return ""
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}{value[8:]}"
