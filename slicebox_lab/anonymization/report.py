"""A review of what a profile will do to a selection, before anything leaves (issue 4, point 5).

For every attribute that occurs in the selection (at any depth) the report says what the profile
does to it, which rule of Table E.1-1 (or which selected option, or which of our own rules) decided
that, and which residual risk stays. It asks :meth:`Profile.action` for every element, exactly as
the anonymizer does, and only translates the action into what the anonymizer writes, so the report
follows the engine. Values are never copied into the report: it names attributes, not contents.

Paths collapse sequence items (``ReferencedSeriesSequence[*].SeriesInstanceUID``), name private
elements by group, element byte and creator (``(0019,xx9E) GEMS_ACQU_01``; a creator itself is
``(0019,00xx) GEMS_ACQU_01``) and name repeating groups by their tag (``(6002,3000) OverlayData``).
One row per path; a path gets a second row only when its fate differs between occurrences (an
element whose private creator is missing in one image, a creator whose block keeps nothing).

Items of a sequence the profile cleans are walked in the anonymizer's cleaning mode (unnamed text
cleaned, unnamed PN/AE/UR emptied). :func:`review` reads no pixels: burned-in images (BurnedInAnnotation
YES, secondary captures, images of the modalities the profile scans) are counted by what the profile's
burned-in policy and pixel masks do with them judged from the header (:func:`header_pixel_fate`), and
named as risks with RecognizableVisualFeatures YES. :func:`review_pixels` reads the pixels of those
images as the anonymizer will (pixeltext.py): the text found (shown masked), what happens to each, a
thumbnail with the boxes drawn; :meth:`Report.with_pixels` puts both together (the REST report does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_has_tag, get_private_entry, keyword_for_tag, repeater_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from . import pixeltext
from .pixels import SECONDARY_CAPTURE_SOP_CLASSES, header_burned_in_reason
from .pixeltext import PixelDecision
from .profile import Action, Option, Profile, element_text, private_creator, resolve_basic, table_row

if TYPE_CHECKING:
    import pandas

__all__ = [
    "COLUMNS",
    "OUTCOMES",
    "PixelReading",
    "PixelReview",
    "Report",
    "ReportRow",
    "element_name",
    "header_pixel_fate",
    "pixel_review",
    "read_pixels",
    "report_frame",
    "review",
    "review_pixels",
]

#: what the anonymizer writes for an attribute, as reported in ``outcome``
OUTCOMES = (
    "kept",
    "removed",
    "emptied",
    "dummy",
    "uid-mapped",
    "pseudonym",
    "date-shifted",
    "cleaned",
    "added",
)
#: the columns of :meth:`Report.to_dataframe` and of :func:`report_frame`
COLUMNS = ("tag", "keyword", "vr", "path", "occurrences", "outcome", "decided_by", "risk")

TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

_PATIENT_NAME = Tag(0x0010, 0x0010)
_PATIENT_ID = Tag(0x0010, 0x0020)
_SOP_CLASS_UID = Tag(0x0008, 0x0016)
_MODALITY = Tag(0x0008, 0x0060)
_SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
_BURNED_IN = Tag(0x0028, 0x0301)
_RECOGNIZABLE = Tag(0x0028, 0x0302)
#: set on every result by the anonymizer, whatever the input held (see anonymizer.anonymize)
_ADDED = {
    Tag(0x0012, 0x0062): ("CS", "set to YES"),
    Tag(0x0012, 0x0063): ("LO", "the profile's and options' titles"),
    Tag(0x0012, 0x0064): ("SQ", "codes of the profile and options (CID 7050)"),
    Tag(0x0028, 0x0303): ("CS", "UNMODIFIED, MODIFIED or REMOVED, after the date options"),
}
_METHOD_CODES = Tag(0x0012, 0x0064)
_METHOD_CODE_ITEM = {Tag(0x0008, 0x0100): "SH", Tag(0x0008, 0x0102): "SH", Tag(0x0008, 0x0104): "LO"}
#: file meta the anonymizer carries over (everything else in group 0002 is dropped)
_META_KEPT = frozenset({Tag(0x0002, 0x0001), Tag(0x0002, 0x0002), Tag(0x0002, 0x0010)})
_META_SOP_INSTANCE = Tag(0x0002, 0x0003)
_META_IMPLEMENTATION = frozenset({Tag(0x0002, 0x0012), Tag(0x0002, 0x0013)})


@dataclass(frozen=True)
class ReportRow:
    """What the profile does to one attribute path of the selection."""

    tag: str  # "(0008,0050)"; private "(0019,xx9E)", creators "(0019,00xx)"
    keyword: str  # DICOM keyword; a private element's dictionary name, "PrivateCreator", or ""
    vr: str
    path: str
    occurrences: int  # images in which the path occurs (for "added": images that get it)
    outcome: str  # one of OUTCOMES
    decided_by: str
    risk: str | None


@dataclass(frozen=True)
class Report:
    """The review of one selection under one profile."""

    images: int
    options: tuple[Option, ...]
    rows: tuple[ReportRow, ...]
    #: burned-in images (flagged YES, or secondary captures the profile counts) by what the profile does
    #: with their pixels: "refused" (the anonymizer refuses them), "masked" (a pixel mask matches), "kept"
    burned_in: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(("refused", "masked", "kept"), 0))
    #: the text found in the pixels (the REST report reads them; review() alone reads headers)
    pixels: PixelReview | None = None

    def with_pixels(self, pixels: PixelReview) -> Report:
        """This report with what reading the pixels found; the burned-in counts of the images read follow
        the decisions instead of their headers."""
        fates = Counter(self.burned_in)
        for header, decision in pixels.decisions.values():
            if header is not None:
                fates[header] -= 1
            if decision.fate is not None:
                fates[decision.fate] += 1
        counts = {fate: max(0, fates.get(fate, 0)) for fate in ("refused", "masked", "kept")}
        return replace(self, burned_in=counts, pixels=pixels)

    @property
    def counts(self) -> dict[str, int]:
        """Rows per outcome (every outcome named, zeros included, in the order of OUTCOMES)."""
        counted = Counter(row.outcome for row in self.rows)
        return {outcome: counted.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def risks(self) -> list[dict[str, str]]:
        return [{"path": row.path, "outcome": row.outcome, "risk": row.risk} for row in self.rows if row.risk]

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {
                "images": self.images,
                "profile": {
                    "options": [option.name for option in self.options],
                    "titles": ["Basic Application Confidentiality Profile", *(o.title for o in self.options)],
                },
                "outcomes": self.counts,
                "burned_in": dict(self.burned_in),
                "risks": self.risks,
            },
            "attributes": [asdict(row) for row in self.rows],
            **({"pixel_text": self.pixels.to_json()} if self.pixels is not None else {}),
        }

    def to_dataframe(self) -> pandas.DataFrame:
        return report_frame(self.to_json())


def report_frame(report_json: Mapping[str, Any]) -> pandas.DataFrame:
    """The attribute rows of a report's JSON (from :meth:`Report.to_json` or the REST route) as a DataFrame."""
    import pandas  # a dependency, imported late: the engine itself needs no pandas

    frame = pandas.DataFrame(list(report_json.get("attributes", [])), columns=list(COLUMNS))
    frame["occurrences"] = frame["occurrences"].astype("int64")
    return frame


# ---------------------------------------------------------------------------------------- naming


def _names(tag: BaseTag, creator: str | None) -> tuple[str, str, str]:
    """(path segment, tag column, keyword) of one element."""
    group, element = tag.group, tag.element
    if group % 2:
        if 0x0010 <= element <= 0x00FF:
            masked = f"({group:04X},00xx)"
            return f"{masked} {creator}", masked, "PrivateCreator"
        if creator is None or element < 0x1000:
            plain = f"({group:04X},{element:04X})"
            return plain, plain, ""
        masked = f"({group:04X},xx{element & 0xFF:02X})"
        try:
            keyword = str(get_private_entry(tag, creator)[2])
        except KeyError:
            keyword = ""
        return f"{masked} {creator}", masked, keyword
    plain = f"({group:04X},{element:04X})"
    keyword = keyword_for_tag(tag) or ""
    if not keyword:
        return plain, plain, ""
    if repeater_has_tag(tag) and not dictionary_has_tag(tag):
        return f"{plain} {keyword}", plain, keyword
    return keyword, plain, keyword


def _sort_key(tag: BaseTag, creator: str | None) -> tuple[int, int, str]:
    """Rows in tag order; a private block's elements after the creators of their group."""
    if tag.group % 2 and creator is not None:
        if 0x0010 <= tag.element <= 0x00FF:
            return tag.group, 0x0010, creator
        return tag.group, 0x10000 | (tag.element & 0xFF), creator
    return tag.group, tag.element, ""


def element_name(ds: Dataset, elem: DataElement) -> str:
    """The path segment of ``elem`` in ``ds``: its keyword, or a tag form for private and repeating groups."""
    tag = elem.tag
    creator = private_creator(ds, elem) if tag.group % 2 else None
    return _names(tag, creator)[0]


# ---------------------------------------------------------------------------------------- deciding


def _titles(options: Iterable[Option], code: str) -> str:
    return " + ".join(f"{option.title} ({code})" for option in options)


def _public_decision(
    tag: BaseTag, vr: str, action: Action, outcome: str, profile: Profile, cleaning: bool
) -> tuple[str, bool]:
    """(decided_by, kept by an option) for a public attribute, from its table row and the selected options."""
    row = table_row(tag)
    if row is None:
        if action is Action.X:
            return "unknown public attribute: removed", False
        if cleaning:
            return f"not in Table E.1-1, inside a cleaned sequence: {outcome}", False
        return f"not in Table E.1-1: {outcome}", False
    code = row["basicProfile"]
    same = (keyword_for_tag(tag) or "").lower() == row["name"].replace(" ", "").replace("-", "").lower()
    label = "" if same or row["id"] == f"{tag.group:04x}{tag.element:04x}" else f" as {row['name']}"
    selected = profile.ordered_options
    deciders = [option for option in selected if row.get(option.column) == action.value]
    if action is Action.C and Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in deciders and vr in ("DA", "DT", "TM"):
        deciders = [Option.RETAIN_LONGITUDINAL_MODIFIED_DATES]
    if action in (Action.K, Action.C) and deciders:
        decided = _titles(deciders, action.value) + label
        if action is Action.C and vr == "TM" and deciders == [Option.RETAIN_LONGITUDINAL_MODIFIED_DATES]:
            decided += ": times of day kept"
        return decided, action is Action.K
    decided = f"basic profile ({code}){label}"
    if action is not resolve_basic(code):
        return f"{decided}, resolved to {action.value}", False
    unapplied = [option for option in selected if row.get(option.column) == "C"]
    if unapplied:
        decided += f"; {_titles(unapplied, 'C')} not applied to {vr or 'this VR'}: the basic action is stricter"
    return decided, False


def _outcome(action: Action, vr: str, profile: Profile) -> str:
    """What the anonymizer writes for ``action`` on an element of ``vr`` (see anonymizer.py)."""
    if action is Action.X:
        return "removed"
    if vr == "SQ":
        if action in (Action.Z, Action.D):
            return "emptied"  # a dummy sequence has no items
        return "cleaned" if action is Action.C else "kept"  # K, U: kept, items de-identified
    if action is Action.Z:
        return "emptied"
    if action is Action.U or (action is Action.D and vr == "UI"):
        return "uid-mapped"
    if action is Action.D:
        return "dummy"
    if action is Action.C:
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile.options and vr in ("DA", "DT", "TM"):
            return "kept" if vr == "TM" else "date-shifted"
        return "cleaned"
    return "kept"


# ---------------------------------------------------------------------------------------- walking


@dataclass
class _Entry:
    sort: tuple[Any, ...]
    tag: str
    keyword: str
    vr: str
    path: str
    outcome: str
    decided_by: str
    images: set[int] = field(default_factory=set)
    risks: set[str] = field(default_factory=set)


class _Review:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.entries: dict[tuple[str, str, str, str], _Entry] = {}
        self.images = 0
        self.burned_in = 0
        self.recognizable = 0
        self.secondary_capture = 0
        #: images counted burned-in only for their modality (the flag is not trusted there)
        self.scanned = 0
        self.pixel_fates: Counter[str] = Counter()

    def add(
        self,
        image: int,
        sort: tuple[Any, ...],
        names: tuple[str, str, str],
        vr: str,
        path: str,
        outcome: str,
        decided_by: str,
        risk: str | None = None,
    ) -> None:
        key = (path, vr, outcome, decided_by)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry(sort, names[1], names[2], vr, path, outcome, decided_by)
        entry.images.add(image)
        if risk:
            entry.risks.add(risk)

    def image(self, ds: Dataset) -> None:
        image = self.images
        self.images += 1
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self.file_meta(image, meta)
        self.dataset(image, ds, (), "", None, root=True)
        flag = element_text(ds.get(_BURNED_IN)).upper()
        secondary_capture = element_text(ds.get(_SOP_CLASS_UID)) in SECONDARY_CAPTURE_SOP_CLASSES
        self.burned_in += flag == "YES"
        self.recognizable += element_text(ds.get(_RECOGNIZABLE)).upper() == "YES"
        self.secondary_capture += secondary_capture
        profile = self.profile
        reason = header_burned_in_reason(ds, profile.secondary_capture_burned_in, profile.burned_in_modalities)
        if reason is not None:
            self.scanned += flag != "YES" and not (secondary_capture and profile.secondary_capture_burned_in)
            self.pixel_fates[self.pixel_fate(ds)] += 1

    def pixel_fate(self, ds: Dataset) -> str:
        return header_pixel_fate(ds, self.profile)

    def file_meta(self, image: int, meta: Dataset) -> None:
        for elem in meta:
            tag = elem.tag
            if tag.element == 0x0000:
                continue  # the group length is recomputed by the writer
            names = _names(tag, None)
            if tag in _META_KEPT:
                outcome, decided = "kept", "file meta: carried over"
            elif tag == _META_SOP_INSTANCE:
                outcome = _outcome(self.profile.action(_SOP_INSTANCE_UID, "UI"), "UI", self.profile)
                decided = "file meta: the result's SOPInstanceUID"
            elif tag in _META_IMPLEMENTATION:
                outcome, decided = "dummy", "file meta: the writer's own implementation"
            else:
                outcome, decided = "removed", "file meta: not carried over (source AE titles and the like)"
            self.add(image, (_sort_key(tag, None),), names, elem.VR, names[0], outcome, decided)

    def dataset(
        self,
        image: int,
        ds: Dataset,
        sort: tuple[Any, ...],
        prefix: str,
        inside: str | None,
        root: bool = False,
        cleaning: bool = False,
    ) -> None:
        """Every element of ``ds``; ``inside`` names the removed or emptied sequence ``ds`` belongs to,
        ``cleaning`` says ``ds`` is an item of a sequence being cleaned (as the anonymizer's ``cleaning``)."""
        decided: list[tuple[DataElement, str | None, Action | None]] = []
        kept_blocks: set[tuple[int, int]] = set()
        for elem in ds:
            tag = elem.tag
            creator = private_creator(ds, elem) if tag.group % 2 else None
            if inside is not None or (root and tag in _ADDED):
                decided.append((elem, creator, None))
                continue
            found = self.profile.action(tag, elem.VR, creator, cleaning)
            decided.append((elem, creator, found))
            if tag.group % 2 and tag.element >= 0x1000 and found is not Action.X:
                kept_blocks.add((tag.group, tag.element >> 8))
        for elem, creator, action in decided:
            tag = elem.tag
            names = _names(tag, creator)
            path = f"{prefix}{names[0]}"
            position = (*sort, _sort_key(tag, creator))
            if action is None:
                if inside is None:
                    continue  # an element the anonymizer sets anew: reported once as "added"
                outcome, decided_by, risk = "removed", f"inside {inside}", None
            else:
                outcome, decided_by, risk = self.decide(elem, creator, action, kept_blocks, root, cleaning)
            self.add(image, position, names, elem.VR, path, outcome, decided_by, risk)
            if elem.VR == "SQ" and elem.value:
                below = inside
                if below is None and outcome in ("removed", "emptied"):
                    below = f"{path} ({outcome})"
                below_cleaning = cleaning or action is Action.C
                for item in elem.value:
                    self.dataset(image, item, position, f"{path}[*].", below, cleaning=below_cleaning)

    def decide(
        self,
        elem: DataElement,
        creator: str | None,
        action: Action,
        kept_blocks: set[tuple[int, int]],
        root: bool,
        cleaning: bool,
    ) -> tuple[str, str, str | None]:
        tag, vr = elem.tag, elem.VR
        if tag.element == 0x0000:
            return "removed", "group length", None
        if root and tag in (_PATIENT_NAME, _PATIENT_ID):
            return "pseudonym", "pseudonym (the root PatientName and PatientID always get one)", None
        if tag.group % 2:
            return self.private(tag, creator, action, kept_blocks)
        outcome = _outcome(action, vr, self.profile)
        decided_by, by_option = _public_decision(tag, vr, action, outcome, self.profile, cleaning)
        risk = None
        if outcome == "kept" and vr in TEXT_VRS:
            if by_option:
                risk = f"free text kept by {decided_by}: it can identify"
            elif decided_by.startswith("not in Table E.1-1") and vr != "CS":
                risk = "free text the table does not name is kept unchanged: check it carries no identifiers"
        elif outcome == "cleaned" and vr in TEXT_VRS:
            risk = "free text cleaned heuristically: review the result"
        return outcome, decided_by, risk

    def private(
        self, tag: BaseTag, creator: str | None, action: Action, kept_blocks: set[tuple[int, int]]
    ) -> tuple[str, str, str | None]:
        safe_option = Option.RETAIN_SAFE_PRIVATE in self.profile.options
        if 0x0010 <= tag.element <= 0x00FF:
            if action is Action.X:
                why = "private creator: not in Table E.3.10-1" if safe_option else "basic profile (X): private"
                return "removed", why, None
            if (tag.group, tag.element) not in kept_blocks:
                return "removed", "private creator: nothing of its block is kept", None
            return (
                "kept",
                "safe private creator (Table E.3.10-1)",
                "private creator kept: it names the vendor and software of the block",
            )
        if creator is None:
            return "removed", "private: no private creator", None
        if action is Action.X:
            if not safe_option:
                return "removed", "basic profile (X): private", None
            if tag.group <= 0x0007:
                return "removed", "private: group 0001-0007 is never private data", None
            return "removed", "private: not in Table E.3.10-1", None
        return (
            "kept",
            "safe private attribute (Table E.3.10-1)",
            "private attribute kept: Table E.3.10-1 lists it as safe, but a vendor may use it otherwise",
        )

    def report(self) -> Report:
        if self.images:
            self.added()
        self.flags()
        entries = sorted(self.entries.values(), key=lambda e: (e.sort, e.outcome, e.decided_by))
        rows = tuple(
            ReportRow(
                e.tag,
                e.keyword,
                e.vr,
                e.path,
                len(e.images),
                e.outcome,
                e.decided_by,
                " ".join(sorted(e.risks)) or None,
            )
            for e in entries
        )
        fates = {fate: self.pixel_fates.get(fate, 0) for fate in ("refused", "masked", "kept")}
        return Report(self.images, tuple(self.profile.ordered_options), rows, fates)

    def added(self) -> None:
        """The elements every result gets, whatever the input held (see anonymizer.anonymize)."""
        for tag, (vr, what) in _ADDED.items():
            self.add_everywhere((tag,), vr, f"set by the anonymizer: {what}")
        for tag, vr in _METHOD_CODE_ITEM.items():
            self.add_everywhere((_METHOD_CODES, tag), vr, "set by the anonymizer: one item per profile and option")
        for tag, vr in ((_PATIENT_NAME, "PN"), (_PATIENT_ID, "LO")):
            name = _names(tag, None)[0]
            if not any(e.path == name and e.outcome == "pseudonym" for e in self.entries.values()):
                self.add_everywhere((tag,), vr, "pseudonym (the root PatientName and PatientID always get one)")

    def add_everywhere(self, tags: tuple[BaseTag, ...], vr: str, decided_by: str) -> None:
        names = [_names(tag, None) for tag in tags]
        path = "[*].".join(name[0] for name in names)
        sort = tuple(_sort_key(tag, None) for tag in tags)
        entry = _Entry(sort, names[-1][1], names[-1][2], vr, path, "added", decided_by)
        entry.images = set(range(self.images))
        self.entries[(path, vr, "added", decided_by)] = entry

    def flags(self) -> None:
        """Risks of the pixels, on the attribute that shows them."""
        flags = [
            (
                _BURNED_IN,
                self.burned_in,
                "BurnedInAnnotation is YES in {n} image(s): the pixels may show identifying text",
            ),
            (
                _RECOGNIZABLE,
                self.recognizable,
                "RecognizableVisualFeatures is YES in {n} image(s): a face or body may be recognized",
            ),
            (
                _SOP_CLASS_UID,
                self.secondary_capture,
                "{n} secondary capture image(s): their pixels often carry burned-in text",
            ),
            (
                _MODALITY,
                self.scanned,
                "{n} image(s) of a modality whose pixels commonly carry text (ultrasound, captures, "
                "photographs, documents, endoscopy): burned-in whatever BurnedInAnnotation says",
            ),
        ]
        fates = self.pixel_fates
        outcome = ", ".join(
            f"{fates[fate]} {what}"
            for fate, what in (
                ("refused", "refused by the anonymizer (no pixel mask matches)"),
                ("masked", "cleaned by a pixel mask (check it covers all the text)"),
                ("kept", "sent with their pixels as they are"),
            )
            if fates[fate]
        )
        for tag, n, sentence in flags:
            if not n:
                continue
            name = _names(tag, None)[0]
            risk = sentence.format(n=n)
            if outcome and tag != _RECOGNIZABLE:
                risk += f"; burned-in images under this profile: {outcome}"
            for entry in self.entries.values():
                if entry.path == name:
                    entry.risks.add(risk)


def header_pixel_fate(ds: Dataset, profile: Profile) -> str:
    """What the anonymizer does with a burned-in image's pixels under the profile, judged from the header
    alone (pixeltext.py reads the pixels): masked when a mask matches, kept under keep, else refused
    (the pessimistic reading: an image of a scanned modality in which no text is found leaves)."""
    if any(mask.matches(ds) for mask in profile.pixel_masks):
        return "masked"
    return "kept" if profile.burned_in == "keep" else "refused"


@dataclass(frozen=True)
class PixelReview:
    """The text found in the pixels of the scanned images of a selection, and what leaves of it."""

    #: image id → (what the header alone says, what reading the pixels decided)
    decisions: Mapping[int, tuple[str | None, PixelDecision]]
    #: image id → (frame, base64 PNG) of the images with text found (at most MAX_THUMBNAILS)
    thumbnails: Mapping[int, tuple[int, str]]
    #: scanned images whose pixels were not read (over the limit of one review)
    not_read: int = 0

    def to_json(self) -> dict[str, Any]:
        counts = pixeltext.summary(decision for _, decision in self.decisions.values())
        rows = [
            {"image_id": image_id, **text.to_json()}
            for image_id, (_, decision) in self.decisions.items()
            for text in decision.texts
        ]
        images = []
        for image_id, (_, decision) in self.decisions.items():
            thumbnail = self.thumbnails.get(image_id)
            images.append(
                {
                    "image_id": image_id,
                    "fate": decision.fate,
                    "scanned": decision.scanned,
                    "detection": decision.detection,
                    "texts": len(decision.texts),
                    "refusal": decision.refusal,
                    "thumbnail": {"frame": thumbnail[0], "png": thumbnail[1]} if thumbnail else None,
                }
            )
        return {"summary": {**counts, "images_not_read": self.not_read}, "rows": rows, "images": images}


#: scanned images whose pixels one review reads (about a second each), and thumbnails it returns
MAX_PIXEL_REVIEW = 50
MAX_THUMBNAILS = 24


@dataclass(frozen=True)
class PixelReading:
    """One scanned image's pixels read as the anonymizer will read them: what the header alone says (None
    when the header does not flag it), what reading the pixels decided, and its thumbnail when asked for."""

    header_fate: str | None
    decision: PixelDecision
    thumbnail: tuple[int, str] | None = None


def read_pixels(ds: Dataset, profile: Profile, thumbnail: bool = True) -> PixelReading:
    """Read ``ds``'s pixels as the anonymizer will (pixeltext.decide): Tesseract's work, so the node runs
    it in a worker process (``workers.tasks.read_pixels``)."""
    decision = pixeltext.decide(ds, profile)
    flagged = header_burned_in_reason(ds, profile.secondary_capture_burned_in, profile.burned_in_modalities)
    found = pixeltext.thumbnail_png(ds, decision) if thumbnail and decision.texts else None
    return PixelReading(header_pixel_fate(ds, profile) if flagged else None, decision, found)


def pixel_review(readings: Iterable[tuple[int, PixelReading]], total: int | None = None) -> PixelReview:
    """The review of ``readings`` (image id, :func:`read_pixels`), in order; ``total`` scanned images in the
    selection (the rest were not read). At most :data:`MAX_THUMBNAILS` thumbnails are kept."""
    decisions: dict[int, tuple[str | None, PixelDecision]] = {}
    thumbnails: dict[int, tuple[int, str]] = {}
    for image_id, reading in readings:
        decisions[image_id] = (reading.header_fate, reading.decision)
        if reading.thumbnail is not None and len(thumbnails) < MAX_THUMBNAILS:
            thumbnails[image_id] = reading.thumbnail
    read = len(decisions)
    return PixelReview(decisions, thumbnails, max(0, (total if total is not None else read) - read))


def review_pixels(images: Iterable[tuple[int, Dataset]], profile: Profile, total: int | None = None) -> PixelReview:
    """Read the pixels of ``images`` (id, full dataset) in this process, for the review; ``total`` scanned
    images in the selection (the rest were not read)."""
    return pixel_review(((image_id, read_pixels(ds, profile)) for image_id, ds in images), total)


def review(datasets: Iterable[Dataset], profile: Profile) -> Report:
    """What ``profile`` does to every attribute of ``datasets`` (headers are enough: no pixel data needed)."""
    run = _Review(profile)
    for ds in datasets:
        run.image(ds)
    return run.report()
