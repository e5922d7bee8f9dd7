"""The Basic Application Level Confidentiality Profile and its options (DICOM PS3.15 Annex E).

The tables are the standard's own, shipped as package data and never edited by hand:
``confidentiality_profile_attributes_2024e.json`` is Table E.1-1 of PS3.15 2024e and
``safe_private_attributes_2018d.json`` is Table E.3.10-1 (Safe Private Attributes).

Resolution rules (one place, so the anonymizer and the tests agree):

* Compound basic-profile codes exist because the right action depends on the attribute's Type in
  the IOD, which a generic de-identifier does not know. We take the **last alternative**, which the
  standard gives for the most constrained Type, so it keeps any IOD valid and is still
  non-identifying: ``X/Z`` → Z, ``X/D`` → D, ``X/Z/D`` → D, ``Z/D`` → D, ``X/Z/U*`` → U (keep the
  sequence, replace the UIDs inside it; its items are de-identified like the top level).
* Options only ever say K or C. Among the selected options a K wins over the basic action (a
  selected "retain" is an explicit request), with one exception: under Modified Dates a date that
  column marks C is shifted even if another option (Retain Device Identity: calibration dates and
  the like) says K, so no real date leaves next to shifted ones. Full Dates and Modified Dates are
  alternatives and refused together.
* C (clean: "replace with values of similar meaning known not to contain identifying
  information") depends on what the value is. The anonymizer does the cleaning (clean.py):

  - a date or date-time (DA, DT) whose Modified Dates column says C, with that option selected,
    is shifted by a per-patient offset; a TM is kept (times of day are kept). This wins even over
    a K of another option (see above).
  - free text (CS LO LT SH ST UC UT) whose Clean Descriptors, Clean Structured Content, Clean
    Graphics or Retain Patient Characteristics column says C, with that option selected, is
    scrubbed with an allow-list: only vocabulary words, small numbers with units and punctuation
    stay, and never a word of the dataset's names, IDs or institutions (clean.py). A K of another
    selected option still wins (an explicit retain keeps the text unchanged). A value cleaned to
    nothing becomes zero-length, or the VR's dummy where the basic action is D.
  - a sequence (SQ) in the same case is kept and its items are de-identified element by element
    with their own rows, *in cleaning mode*: there, a text attribute the table does not name
    (TextValue, UnformattedTextValue, CodeMeaning...) is cleaned as above instead of kept (known
    codes and context groups stay), and an unnamed PN, AE or UR is emptied. The mode holds at every
    depth below the sequence.
  - any other C (AE, PN, binary, numbers; the C of Modified Dates on a value that is not a date)
    falls back to the K of another selected option or else to the basic-profile action, which
    removes or dummies the value — stricter than cleaning, never less safe. Curves and overlays
    follow their Curve Data / Overlay Data (binary): a C there removes the whole group, comments
    and labels included, since a plane without its data is invalid.
* Attributes not in Table E.1-1 are kept (K), except group lengths (removed), private attributes
  (removed unless Retain Safe Private and the (group, creator, element byte) is in Table E.3.10-1),
  curves (50xx,xxxx) and overlays: the table names (60xx,3000) and (60xx,4000); we give every
  other element of an overlay group the action of Overlay Data, because a plane without its data is
  invalid and its label and description are free text.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, repeater_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from ..errors import InvalidInput
from .pixels import BURNED_IN_POLICIES, SCANNED_MODALITIES, PixelMask, pixel_masks_from_json

__all__ = [
    "BASIC_PROFILE_CODE",
    "BASIC_PROFILE_TITLE",
    "Action",
    "Option",
    "Profile",
    "confidentiality_table",
    "element_text",
    "private_creator",
    "safe_private_table",
    "table_key",
    "table_row",
]

BASIC_PROFILE_CODE = "113100"
BASIC_PROFILE_TITLE = "Basic Application Confidentiality Profile"

PROFILE_TABLE = "confidentiality_profile_attributes_2024e.json"
SAFE_PRIVATE_TABLE = "safe_private_attributes_2018d.json"

DATE_VRS = frozenset({"DA", "DT", "TM"})
#: VRs whose values C cleans with the allow-list of clean.py (AE, PN and UR name hosts and people: never)
CLEAN_TEXT_VRS = frozenset({"CS", "LO", "LT", "SH", "ST", "UC", "UT"})


class Action(enum.Enum):
    """One de-identification action of Table E.1-1a, after compound codes are resolved."""

    D = "D"  # replace with a non-zero-length dummy value consistent with the VR
    Z = "Z"  # replace with a zero-length value (a sequence: no items)
    X = "X"  # remove (a sequence: with all its items)
    K = "K"  # keep (a sequence: keep, and de-identify its items)
    C = "C"  # clean: dates shifted, text scrubbed, sequences kept with cleaned items (module docstring)
    U = "U"  # replace a UID with a deterministic one (a sequence: keep, de-identify its items)


class Option(enum.Enum):
    """The option columns of Table E.1-1, each with its CID 7050 code for DeidentificationMethodCodeSequence."""

    RETAIN_SAFE_PRIVATE = (
        "rtnSafePrivOpt",
        "113111",
        "Retain Safe Private Option",
        "Keeps private attributes listed in Table E.3.10-1 as known to be safe.",
    )
    RETAIN_UIDS = (
        "rtnUIDsOpt",
        "113110",
        "Retain UIDs Option",
        "Keeps the original UIDs, so results can be matched to the originals.",
    )
    RETAIN_DEVICE_IDENTITY = (
        "rtnDevIdOpt",
        "113109",
        "Retain Device Identity Option",
        "Keeps device names, serial numbers and similar identifiers of the equipment.",
    )
    RETAIN_INSTITUTION_IDENTITY = (
        "rtnInstIdOpt",
        "113112",
        "Retain Institution Identity Option",
        "Keeps the institution's name, address and code.",
    )
    RETAIN_PATIENT_CHARACTERISTICS = (
        "rtnPatCharsOpt",
        "113108",
        "Retain Patient Characteristics Option",
        "Keeps sex, age, size, weight and similar physical characteristics of the patient.",
    )
    RETAIN_LONGITUDINAL_FULL_DATES = (
        "rtnLongFullDatesOpt",
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
        "Keeps dates and times unchanged.",
    )
    RETAIN_LONGITUDINAL_MODIFIED_DATES = (
        "rtnLongModifDatesOpt",
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
        "Shifts dates by a per-patient offset so intervals are kept; times of day are kept.",
    )
    CLEAN_DESCRIPTORS = (
        "cleanDescOpt",
        "113105",
        "Clean Descriptors Option",
        "Descriptions and comments keep only known non-identifying words (allow-list), the rest is removed.",
    )
    CLEAN_STRUCTURED_CONTENT = (
        "cleanStructContOpt",
        "113104",
        "Clean Structured Content Option",
        "Structured reports and acquisition context are kept, with their text reduced to known words.",
    )
    CLEAN_GRAPHICS = (
        "cleanGraphOpt",
        "113103",
        "Clean Graphics Option",
        "Graphic annotations are kept, with their text reduced to known words; curves and overlays go.",
    )

    def __init__(self, column: str, code: str, title: str, description: str) -> None:
        self.column = column
        self.code = code
        self.title = title
        self.description = description


#: the options whose C cleans free text and sequences (Modified Dates' C shifts dates instead)
TEXT_CLEANING_OPTIONS = frozenset(
    {
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.CLEAN_GRAPHICS,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
    }
)


def _read_table(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("tables").joinpath(name).read_text(encoding="utf-8"))


@cache
def confidentiality_table() -> tuple[Mapping[str, str], ...]:
    """Rows of Table E.1-1 (keys: name, tag, id, basicProfile and one key per option column)."""
    return tuple(_read_table(PROFILE_TABLE))


@cache
def safe_private_table() -> tuple[tuple[str, str, str, str, str], ...]:
    """Rows of Table E.3.10-1: (data element like "(0019,xx23)", private creator, VR, VM, meaning)."""
    return tuple(tuple(row) for row in _read_table(SAFE_PRIVATE_TABLE)["rows"])


def resolve_basic(code: str) -> Action:
    """The last alternative of a (compound) basic-profile code: valid for any IOD Type, see module docstring."""
    return Action(code.split("/")[-1].rstrip("*"))


@cache
def _rows_by_id() -> dict[str, Mapping[str, str]]:
    return {row["id"]: row for row in confidentiality_table()}


def table_key(tag: BaseTag) -> str:
    """The id of the row of Table E.1-1 that names a public ``tag``: curves (50xx) and overlays (60xx) by
    mask; the anonymizer decides by it and the review report explains by it, so both must read it alike."""
    group, element = tag.group, tag.element
    if 0x5000 <= group <= 0x50FF:
        return "50xxxxxx"
    if 0x6000 <= group <= 0x60FF:
        return "60xx4000" if element == 0x4000 else "60xx3000"
    return f"{group:04x}{element:04x}"


def table_row(tag: BaseTag) -> Mapping[str, str] | None:
    """The row of Table E.1-1 the profile applies to a public ``tag``, None for one it does not name."""
    return _rows_by_id().get(table_key(tag))


@cache
def _safe_private() -> tuple[frozenset[tuple[int, str, int]], frozenset[tuple[int, str]]]:
    elements: set[tuple[int, str, int]] = set()
    creators: set[tuple[int, str]] = set()
    for data_element, creator, *_ in safe_private_table():
        group, element = data_element.strip("()").split(",")
        elements.add((int(group, 16), creator.strip(), int(element[-2:], 16)))
        creators.add((int(group, 16), creator.strip()))
    return frozenset(elements), frozenset(creators)


def dictionary_vr(tag: BaseTag) -> str | None:
    """The VR the data dictionary gives ``tag`` (what decoding an implicit-VR element gives it), None if unknown."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


#: the resolved (action, action-for-non-dates) tables of each option set, shared by every Profile of it
_RESOLVED: dict[frozenset[Option], tuple[Mapping[str, Action], Mapping[str, Action]]] = {}


@dataclass(frozen=True)
class Profile:
    """The basic profile plus a set of options; :meth:`action` says what to do with one attribute."""

    options: frozenset[Option] = frozenset()
    #: the burnedInText policy for the images that may carry text in their pixels: "refuse" those flagged
    #: or in which text is found, "mask-detected", "mask-detected-phi", or "keep" (see pixeltext.py)
    burned_in: str = "refuse"
    #: Secondary Capture images count as burned-in, whatever their BurnedInAnnotation says
    secondary_capture_burned_in: bool = True
    #: images of these modalities count as burned-in, whatever their BurnedInAnnotation says
    burned_in_modalities: frozenset[str] = SCANNED_MODALITIES
    #: masks that blank burned-in text; they apply before the text is read
    pixel_masks: tuple[PixelMask, ...] = ()
    #: read the pixels of those images with Tesseract (SliceboxApp.burned_in_text_detection); off: refuse
    #: them unless a mask matches or the policy keeps them
    detect_text: bool = True
    #: read every image with pixels, not only flagged ones, Secondary Captures and burned_in_modalities
    scan_all: bool = False
    _actions: Mapping[str, Action] = field(init=False, repr=False, compare=False)
    _not_dates: Mapping[str, Action] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        options = frozenset(self.options)
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= options:
            raise ValueError(
                "Retain Longitudinal Temporal Information with Full Dates and with Modified Dates are "
                "alternatives; choose one"
            )
        object.__setattr__(self, "options", options)
        if self.burned_in not in BURNED_IN_POLICIES:
            raise ValueError(f"burned_in must be one of {', '.join(BURNED_IN_POLICIES)}, not {self.burned_in!r}")
        object.__setattr__(self, "pixel_masks", tuple(self.pixel_masks))
        modalities = frozenset(m.strip().upper() for m in self.burned_in_modalities)
        object.__setattr__(self, "burned_in_modalities", modalities)
        tables = _RESOLVED.get(options)
        if tables is None:  # resolving the table costs about as much as anonymizing an image: once per option set
            actions: dict[str, Action] = {}
            not_dates: dict[str, Action] = {}  # for a C that meets a value which is not a date or time
            for row in confidentiality_table():
                basic = resolve_basic(row["basicProfile"])
                actions[row["id"]] = self._resolve(row, basic)
                retained = any(row.get(option.column) == "K" for option in self.options)
                not_dates[row["id"]] = Action.K if retained else basic
            tables = _RESOLVED.setdefault(options, (MappingProxyType(actions), MappingProxyType(not_dates)))
        object.__setattr__(self, "_actions", tables[0])
        object.__setattr__(self, "_not_dates", tables[1])

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled by its settings (worker processes get the profile; the resolved tables are rebuilt there)."""
        return _profile_from_fields, ({f.name: getattr(self, f.name) for f in fields(self) if f.init},)

    def _resolve(self, row: Mapping[str, str], basic: Action) -> Action:
        if (
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options
            and row.get(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.column) == "C"
        ):
            return Action.C  # only for DA/DT/TM; action() gives other VRs the K or basic action
        if any(row.get(option.column) == "K" for option in self.options):
            return Action.K
        if self._cleans(row):
            return Action.C  # only for text and sequences; action() gives other VRs the basic action
        return basic

    def _cleans(self, row: Mapping[str, str]) -> bool:
        """Whether a selected option cleans free text and sequences of ``row`` (and none retains it)."""
        options = self.options & TEXT_CLEANING_OPTIONS
        return any(row.get(option.column) == "C" for option in options) and not any(
            row.get(option.column) == "K" for option in self.options
        )

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Profile:
        """The profile a REST body asks for: ``{"options": [...], "burnedInText": "refuse"|"mask-detected"|
        "mask-detected-phi"|"keep", "pixelMasks": [...]}``, every key optional; raises :class:`InvalidInput`
        with what to fix.

        ``burnedInAnnotation`` is the older name of ``burnedInText`` (it took "refuse" and "keep") and
        takes the same values; a body that gives both must give one value."""
        if not isinstance(body, Mapping):
            raise InvalidInput('the body must be a JSON object like {"options": ["RETAIN_UIDS"]}')
        names = body.get("options", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidInput('"options" must be a JSON array of option names')
        unknown = [name for name in names if name not in Option.__members__]
        if unknown:
            known = ", ".join(Option.__members__)
            raise InvalidInput(f"unknown anonymization option(s) {', '.join(unknown)}; known options: {known}")
        given = {key: body[key] for key in ("burnedInText", "burnedInAnnotation") if key in body}
        for key, value in given.items():
            if value not in BURNED_IN_POLICIES:
                raise InvalidInput(
                    f'"{key}" must be "refuse" (the default: refuse images flagged burned-in or in which text is '
                    'found), "mask-detected" (black out all text found), "mask-detected-phi" (only identifying '
                    f'text) or "keep" (accept the pixels), not {json.dumps(value)}'
                )
        if len(set(given.values())) > 1:
            raise InvalidInput('"burnedInText" and "burnedInAnnotation" (its older name) disagree: give one of them')
        burned_in = next(iter(given.values()), "refuse")
        masks = pixel_masks_from_json(body.get("pixelMasks", []))
        try:
            return cls(frozenset(Option[name] for name in names), burned_in=burned_in, pixel_masks=masks)
        except ValueError as e:
            raise InvalidInput(str(e)) from None

    def with_pixel_masks(self, masks: Iterable[PixelMask]) -> Profile:
        """A copy that also applies ``masks`` (after its own), e.g. the node's configured masks.

        No masks: the profile itself (it is frozen)."""
        extra = tuple(masks)
        if not extra:
            return self
        return replace(self, pixel_masks=(*self.pixel_masks, *extra))

    @property
    def ordered_options(self) -> list[Option]:
        """The selected options in the order of :class:`Option` (stable output)."""
        return [option for option in Option if option in self.options]

    def action(
        self, tag: int | BaseTag, vr: str | None = None, private_creator: str | None = None, cleaning: bool = False
    ) -> Action:
        """What to do with the attribute ``tag`` (``vr`` as found in the data; ``private_creator`` for odd groups;
        ``cleaning`` inside the items of a sequence that is being cleaned).

        Every branch is explained in the module docstring.
        """
        tag = Tag(tag)
        group, element = tag.group, tag.element
        if element == 0x0000:
            return Action.X  # group length: recomputed by writers if at all
        if group % 2:
            return self._private_action(group, element, private_creator)
        key = table_key(tag)
        action = self._actions.get(key)
        if action is None:
            # a standard attribute the table does not name is kept; one no dictionary knows (a
            # vendor's misuse of a public group, a future attribute) could hold anything: removed
            if not (dictionary_has_tag(tag) or repeater_has_tag(tag)):
                return Action.X
            if cleaning:
                kind = vr or dictionary_vr(tag)
                if kind in CLEAN_TEXT_VRS:
                    return Action.C
                if kind in ("PN", "AE", "UR"):
                    return Action.Z
            return Action.K
        if action is Action.C:
            kind = vr or dictionary_vr(tag)
            row = _rows_by_id()[key]
            if kind in DATE_VRS:
                modified = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES
                if modified in self.options and row.get(modified.column) == "C":
                    return action
            elif (kind in CLEAN_TEXT_VRS or kind == "SQ") and not 0x5000 <= group <= 0x60FF and self._cleans(row):
                return action
            return self._not_dates[key]
        return action

    def basic_action(self, tag: int | BaseTag) -> Action | None:
        """The basic-profile action of a standard attribute Table E.1-1 names (resolved), else None."""
        tag = Tag(tag)
        row = _rows_by_id().get(f"{tag.group:04x}{tag.element:04x}")
        return None if row is None else resolve_basic(row["basicProfile"])

    def _private_action(self, group: int, element: int, private_creator: str | None) -> Action:
        if Option.RETAIN_SAFE_PRIVATE not in self.options or private_creator is None or group <= 0x0007:
            return Action.X
        elements, creators = _safe_private()
        creator = private_creator.strip()
        if 0x0010 <= element <= 0x00FF:
            return Action.K if (group, creator) in creators else Action.X
        if element >= 0x1000 and (group, creator, element & 0xFF) in elements:
            return Action.K
        return Action.X

    @staticmethod
    def private_creator_tag(tag: int | BaseTag) -> BaseTag | None:
        """The tag of the private creator that reserves the block of a private data element."""
        tag = Tag(tag)
        if tag.group % 2 and tag.element >= 0x1000:
            return Tag(tag.group, tag.element >> 8)
        return None


def element_text(elem: DataElement | None) -> str:
    """The value of a text element as the rules compare it (bytes as Latin-1, padding stripped; "" when absent)."""
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    return str(value).strip()


def private_creator(ds: Dataset, elem: DataElement) -> str | None:
    """The private creator of ``elem`` (of an odd group) in ``ds``, as :meth:`Profile.action` is asked with it
    by the anonymizer and by the review report alike; a creator element names itself."""
    tag = elem.tag
    if 0x0010 <= tag.element <= 0x00FF:
        return element_text(elem)
    creator_tag = Profile.private_creator_tag(tag)
    if creator_tag is None or creator_tag not in ds:
        return None
    return element_text(ds[creator_tag])


def _profile_from_fields(values: dict[str, Any]) -> Profile:
    return Profile(**values)
