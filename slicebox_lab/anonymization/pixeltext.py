"""What leaves the node of the text in an image's pixels: the ``burnedInText`` policy (issue 16).

Which images are scanned: those :func:`~.pixels.burned_in_reason` names (flagged
``BurnedInAnnotation=YES``, Secondary Captures, the modalities of ``SliceboxApp.burned_in_modalities``),
or every image with pixels when the node scans all (``SliceboxApp.burned_in_scan_all``). For a scanned
image, the configured pixel masks that match it apply first; then, unless the policy is ``keep``,
Tesseract reads what is left (:func:`~.ocr.detect_text`) and the policy decides:

* ``refuse`` (the default): an image flagged YES that no mask cleans, or in which text is found, is
  refused; one in which no text is found leaves as it is (that is the point of reading it);
* ``mask-detected``: every text found is blacked out (its box, padded by :func:`mask_rectangle`);
* ``mask-detected-phi``: only text that identifies (:func:`identifying_reason`: a part of the image's
  own names, IDs, dates and times in any common format, or what looks like a name, date, time or ID);
  "5 cm", "L", "MI 0.9" and depth marks stay;
* ``keep``: the pixels leave as they are (after any matching mask); nothing is read.

Detection is on by default (``SliceboxApp.burned_in_text_detection``); a node where it is on but
Tesseract is missing refuses every scanned image it would have to read, saying what to install (it
never sends such an image unread and unmasked); an image a configured mask cleans still leaves under
``refuse``, masked, as before text could be read (only what the mask leaves goes unchecked). With
detection off, the old rule holds: refuse unless a mask matches or the policy is ``keep``.

:func:`check_pixels` is the one call site of detection for every outgoing path (the anonymizer calls
it), so moving detection into worker processes means moving this call.
"""

from __future__ import annotations

import base64
import datetime
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..errors import AnonymizationRefused, SliceboxError
from . import ocr
from .pixels import _TEXT_CRITERIA_NAMES, PixelMask, Rectangle, _describe, burned_in_reason, has_pixel_data

if TYPE_CHECKING:
    from .profile import Profile

__all__ = [
    "DECISIONS",
    "FoundText",
    "PixelDecision",
    "check_pixels",
    "decide",
    "identifying_reason",
    "mask_rectangle",
    "scan_reason",
    "thumbnail_png",
]

#: what happens to one text found: blacked out, left in the pixels, or the reason the image is refused
DECISIONS = ("masked", "kept", "refused")

_SCAN_ALL = "every image is scanned (SliceboxApp.burned_in_scan_all)"
_HOW_TO_SEND = (
    'send "burnedInText": "mask-detected" (black out all text found) or "mask-detected-phi" (only text '
    "that identifies), in the request or the box's profile; or configure a pixel mask that matches it (by "
    f'{_TEXT_CRITERIA_NAMES}; in a request\'s "pixelMasks" or SliceboxApp.anonymization_pixel_masks); or send '
    '"burnedInAnnotation": "keep" to accept its pixels as they are'
)


def mask_rectangle(box: ocr.TextBox) -> Rectangle:
    """The rectangle that blacks out ``box``: padded by a quarter of its height above and below (at least 2
    pixels), so the anti-aliased edges of its glyphs go too, and by half its height (at least 3) at its
    ends, where the first and last letters' serifs and fringes are fainter than their stems."""
    pad, end = max(2, box.height // 4), max(3, box.height // 2)
    x, y = max(0, box.x - end), max(0, box.y - pad)
    return Rectangle(x, y, box.x + box.width + end - x, box.y + box.height + pad - y)


@dataclass(frozen=True)
class FoundText:
    """One text found in the pixels and what the policy does with it (``decision`` of :data:`DECISIONS`)."""

    box: ocr.TextBox
    decision: str
    why: str

    def to_json(self) -> dict[str, Any]:
        """The box with its text masked (``J*** D**``), the decision and why."""
        return {**self.box.to_json(), "decision": self.decision, "why": self.why}


@dataclass(frozen=True)
class PixelDecision:
    """What leaves of one image's pixels: masks and texts to black out, or why it is refused."""

    #: why the image is scanned (flagged, Secondary Capture, modality, all); None: its pixels leave as they are
    scanned: str | None = None
    policy: str = "refuse"
    masks: tuple[PixelMask, ...] = ()
    texts: tuple[FoundText, ...] = ()
    #: the message of the refusal, None when the image may leave
    refusal: str | None = None
    #: "read" (Tesseract read it), "unavailable" (it could not), or "not read" (not scanned, keep, detection off)
    detection: str = "not read"
    rectangles: Mapping[int, tuple[Rectangle, ...]] = field(default_factory=dict)

    @property
    def cleans(self) -> bool:
        """Whether pixels are blacked out (a mask matches or a text is masked)."""
        return bool(self.masks) or any(text.decision == "masked" for text in self.texts)

    @property
    def fate(self) -> str | None:
        """refused, masked or kept (sent with its pixels as they are); None for an image not scanned."""
        if self.scanned is None:
            return None
        if self.refusal is not None:
            return "refused"
        return "masked" if self.cleans else "kept"


def check_pixels(ds: Dataset, profile: Profile) -> PixelDecision:
    """:func:`decide`, raising :class:`AnonymizationRefused` when the image may not leave."""
    decision = decide(ds, profile)
    if decision.refusal is not None:
        raise AnonymizationRefused(decision.refusal)
    return decision


def scan_reason(ds: Dataset, profile: Profile, has_pixels: bool | None = None) -> str | None:
    """Why the profile's burned-in policy reads (and may clean or refuse) ``ds``'s pixels, or None: it leaves
    them as they are.  ``has_pixels=True``: ``ds`` is a header read without its pixels, which it has."""
    pixels = has_pixel_data(ds) if has_pixels is None else has_pixels
    scanned = burned_in_reason(ds, profile.secondary_capture_burned_in, profile.burned_in_modalities, has_pixels=pixels)
    return _SCAN_ALL if scanned is None and profile.scan_all and pixels else scanned


def decide(ds: Dataset, profile: Profile) -> PixelDecision:
    """What the profile's burned-in policy does with ``ds``'s pixels (reads them when it has to)."""
    scanned = scan_reason(ds, profile)
    if scanned is None:
        return PixelDecision()
    policy = profile.burned_in
    masks = tuple(mask for mask in profile.pixel_masks if mask.matches(ds))
    result = PixelDecision(scanned, policy, masks, rectangles={0: tuple(r for m in masks for r in m.rectangles)})
    flagged = str(ds.get("BurnedInAnnotation") or "").strip().upper() == "YES"
    if "PixelData" not in ds and (masks or policy.startswith("mask")):
        return _refused(result, f"{_describe(ds)} may show burned-in text ({scanned}) and its float pixel data "
                        'cannot be masked; send "burnedInAnnotation": "keep" to accept its pixels')  # fmt: skip
    if policy == "keep":
        return result
    if not profile.detect_text:
        if masks:
            return result
        return _refused(
            result,
            f"{_describe(ds)} was not anonymized: its pixels may show identifying text ({scanned}) and text "
            "detection is off (SliceboxApp.burned_in_text_detection). Configure a pixel mask that matches it (by "
            f'{_TEXT_CRITERIA_NAMES}; in a request\'s "pixelMasks" or SliceboxApp.anonymization_pixel_masks), '
            'or send "burnedInAnnotation": "keep" to accept its pixels as they are',
        )
    if policy == "refuse" and flagged and not masks:
        return _refused(result, f"{_describe(ds)} was not anonymized: its pixels may show identifying text "
                        f"({scanned}), whatever can be read in them. To send it, {_HOW_TO_SEND}")  # fmt: skip
    unavailable = ocr.ocr_unavailable_reason()
    if unavailable is not None and masks and policy == "refuse":
        return result  # the configured masks clean it, as before text could be read: not checked further
    if unavailable is not None:
        return _refused(
            result,
            f"{_describe(ds)} was not anonymized: its pixels may show identifying text ({scanned}) and cannot be "
            f"read: text detection (SliceboxApp.burned_in_text_detection) needs Tesseract, and {unavailable}. "
            f"Until it is installed, configure a pixel mask that matches it (by {_TEXT_CRITERIA_NAMES}; in a "
            'request\'s "pixelMasks" or SliceboxApp.anonymization_pixel_masks), or send "burnedInAnnotation": '
            '"keep" to accept its pixels as they are',
            detection="unavailable",
        )
    blank = [(r.x, r.y, r.width, r.height) for m in masks for r in m.rectangles]
    try:
        boxes = ocr.detect_text(ds, blank=blank, known=lambda text: own_identifier(text, ds) is not None)
    except SliceboxError as e:
        return _refused(result, f"{_describe(ds)} was not anonymized: its pixels cannot be read ({e.message})")
    texts = tuple(_found(box, ds, policy) for box in boxes)
    rectangles: dict[int, list[Rectangle]] = {0: list(result.rectangles[0])}
    for text in texts:
        if text.decision == "masked":
            rectangles.setdefault(text.box.frame, []).append(mask_rectangle(text.box))
    frozen = {frame: tuple(found) for frame, found in rectangles.items()}
    decision = PixelDecision(scanned, policy, masks, texts, detection="read", rectangles=frozen)
    if policy == "refuse" and texts:
        listed = "; ".join(
            f"frame {t.box.frame} at x {t.box.x}, y {t.box.y}: {ocr.masked_text(t.box.text)!r}" for t in texts[:5]
        )
        more = f" and {len(texts) - 5} more" if len(texts) > 5 else ""
        return _refused(
            decision,
            f"{_describe(ds)} was not anonymized: text was found in its pixels ({listed}{more}); it was read "
            f"because {scanned}. To send it, {_HOW_TO_SEND}",
        )
    return decision


def _refused(decision: PixelDecision, message: str, detection: str | None = None) -> PixelDecision:
    texts = tuple(FoundText(t.box, "refused", "the image is refused") for t in decision.texts)
    return PixelDecision(
        decision.scanned,
        decision.policy,
        decision.masks,
        texts,
        message,
        detection or decision.detection,
        decision.rectangles,
    )


def _found(box: ocr.TextBox, ds: Dataset, policy: str) -> FoundText:
    why = identifying_reason(box.text, ds)
    if policy == "refuse":
        return FoundText(box, "refused", why or "text: the image is refused under burnedInText refuse")
    if policy == "mask-detected":
        return FoundText(box, "masked", why or "text (mask-detected masks all text found)")
    if why is not None:
        return FoundText(box, "masked", why)
    return FoundText(box, "kept", "identifies nobody (no name, ID, date or time)")


# ------------------------------------------------------------------------------------------- identifying


#: names of people, and of the institution and station (PS3.15 removes them too)
_NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                  "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
                  "NameOfPhysiciansReadingStudy", "InstitutionName", "InstitutionalDepartmentName",
                  "StationName")  # fmt: skip
_ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "MedicalRecordLocator")
_DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                  "InstanceCreationDate")  # fmt: skip
_TIME_KEYWORDS = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "PatientBirthTime")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: words that label an identifier: the whole line goes with them
_LABELS = frozenset({"NAME", "PATIENT", "PAT", "PT", "DOB", "BORN", "BIRTH", "ID", "PID", "MRN", "ACC", "ACCESSION",
                     "SSN", "NHS", "PERSONNUMMER"})  # fmt: skip
_LOOKS_LIKE = (
    ("a date", re.compile(r"\b\d{1,4}[./-]\d{1,2}[./-]\d{2,4}\b")),
    ("a date", re.compile(r"\b\d{1,2}[ .-]?(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*[ .,-]*\d{2,4}\b")),
    ("a date", re.compile(r"\b(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\b")),
    ("a time", re.compile(r"\b\d{1,2}:\d{2}(:\d{2})?\b|\b\d{1,2}\.\d{2}\.\d{2}\b|\b\d{1,2}[:.]\d{2} ?[AP]\.?M\b")),
    ("an ID", re.compile(r"\d{5,}")),
    ("a name", re.compile(r"\b[A-Z][A-Z'-]+ ?[,^] ?[A-Z][A-Z'-]+\b")),
)


def identifying_reason(text: str, ds: Dataset) -> str | None:
    """Why ``text`` (as read in ``ds``'s pixels) identifies someone, or None.

    It names a part of the image's own names (of people, institution, station), IDs, dates or times
    (in any common format, allowing one misread letter in words of five or more), has a label of an
    identifier ("Name:", "DOB", "MRN"), or looks like a date, a time, an ID (five digits or more) or a
    "LAST, FIRST" name.
    """
    own = own_identifier(text, ds)
    if own is not None:
        return own
    upper = text.upper()
    tokens = re.findall(r"[A-Z0-9]+", upper)
    if _LABELS.intersection(tokens):
        return f"a label of an identifier ({sorted(_LABELS.intersection(tokens))[0]})"
    for what, pattern in _LOOKS_LIKE:
        if pattern.search(upper):
            return f"looks like {what}"
    return None


def own_identifier(text: str, ds: Dataset) -> str | None:
    """Which of ``ds``'s own names (of people, institution, station), IDs, dates or times ``text`` names, in
    any common format (one misread letter allowed in words of five or more), or None."""
    upper = text.upper()
    tokens = re.findall(r"[A-Z0-9]+", upper)
    if not tokens:
        return None
    joined = "".join(tokens)
    digits = "".join(re.findall(r"\d", upper))
    for keyword in _NAME_KEYWORDS:
        for part in _name_parts(ds.get(keyword)):
            if any(_similar(token, part) for token in tokens):
                return f"a part of {keyword}"
    for keyword in _ID_KEYWORDS:
        for value in _values(ds.get(keyword)):
            whole = re.sub(r"[^A-Z0-9]", "", value.upper())
            pieces = [p for p in re.findall(r"[A-Z0-9]+", value.upper()) if len(p) >= 4]
            if len(whole) >= 3 and (whole in joined or any(_similar(t, whole) for t in tokens)):
                return keyword
            if any(piece in joined for piece in pieces):
                return f"a part of {keyword}"
    for keyword in _DATE_KEYWORDS:
        for value in _values(ds.get(keyword)):
            if any(form in (digits if form.isdigit() else joined) for form in _date_forms(value)):
                return keyword
    for keyword in _TIME_KEYWORDS:
        for value in _values(ds.get(keyword)):
            hhmm = re.sub(r"\D", "", value)[:4]
            if len(hhmm) == 4 and hhmm != "0000" and hhmm in digits:
                return keyword
    return None


def _values(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


def _name_parts(value: Any) -> list[str]:
    parts: list[str] = []
    for name in _values(value):
        parts.extend(p for p in re.findall(r"[A-Z0-9]+", name.upper()) if len(p) >= 2)
    return parts


def _similar(token: str, part: str) -> bool:
    """Equal, or (five letters or more) one edit apart, or (eight or more) two: OCR misreads a letter."""
    if token == part:
        return True
    if len(part) >= 4 and part in token and len(token) - len(part) <= 2:
        return True
    if len(part) < 5 or abs(len(token) - len(part)) > 2:
        return False
    return _edits(token, part, 2 if len(part) >= 8 else 1)


def _edits(a: str, b: str, limit: int) -> bool:
    """Whether the Levenshtein distance of ``a`` and ``b`` is at most ``limit``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return False
        previous = current
    return previous[-1] <= limit


def _date_forms(value: str) -> set[str]:
    """A DA value (YYYYMMDD) written the common ways: digits only (compared with the text's digits) and
    with the month's name (compared with the text's letters and digits)."""
    digits = re.sub(r"\D", "", value)[:8]
    try:
        day = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return set()
    y, yy, m, d = f"{day.year:04d}", f"{day.year % 100:02d}", f"{day.month:02d}", f"{day.day:02d}"
    month = _MONTHS[day.month - 1]
    forms = {y + m + d, d + m + y, m + d + y, d + m + yy, m + d + yy, yy + m + d}
    forms |= {f"{d}{month}{y}", f"{day.day}{month}{y}", f"{d}{month}{yy}", f"{month}{d}{y}", f"{month}{day.day}{y}"}
    return forms


# ------------------------------------------------------------------------------------------- review


def thumbnail_png(ds: Dataset, decision: PixelDecision, height: int = 192) -> tuple[int, str] | None:
    """(frame, base64 PNG) of the first frame with text found, as it would leave: masked boxes black with a
    red outline, kept ones outlined in yellow, those of a refused image outlined in red; None without text."""
    from PIL import ImageDraw

    from ..dicom.render import render_frame

    if not decision.texts:
        return None
    frame = decision.texts[0].box.frame
    try:
        image = render_frame(ds, frame).convert("RGB")
    except SliceboxError:
        return None
    draw = ImageDraw.Draw(image)
    width = max(1, round(image.height / 160))
    for rectangle in (*decision.rectangles.get(0, ()), *decision.rectangles.get(frame, ())):
        draw.rectangle(_corners(rectangle), fill=(0, 0, 0), outline=(255, 40, 40), width=width)
    for text in decision.texts:
        if text.box.frame != frame or text.decision == "masked":
            continue
        colour = (255, 210, 0) if text.decision == "kept" else (255, 40, 40)
        draw.rectangle(_corners(mask_rectangle(text.box)), outline=colour, width=width)
    if image.height > height:
        image = image.resize((max(1, round(image.width * height / image.height)), height))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return frame, base64.b64encode(out.getvalue()).decode("ascii")


def _corners(rectangle: Rectangle) -> tuple[int, int, int, int]:
    return rectangle.x, rectangle.y, rectangle.x + rectangle.width - 1, rectangle.y + rectangle.height - 1


def summary(decisions: Iterable[PixelDecision]) -> dict[str, int]:
    """Counts of a selection: images read, texts found by decision."""
    counts = {"images_read": 0, "images_unreadable": 0, "texts": 0, **dict.fromkeys(DECISIONS, 0)}
    for decision in decisions:
        counts["images_read"] += decision.detection == "read"
        counts["images_unreadable"] += decision.detection == "unavailable"
        for text in decision.texts:
            counts["texts"] += 1
            counts[text.decision] += 1
    return counts
