"""Tag paths: name an attribute anywhere in a dataset, and set or remove it there.

Syntax (one string, so it fits JSON bodies and CSV cells)::

    PatientName                                   a top-level attribute by keyword
    (0010,0010)  or  00100010                     the same by tag
    ReferencedSeriesSequence[0].SeriesInstanceUID  item 0 of a sequence (items count from 0)
    ReferencedSeriesSequence[*].SeriesInstanceUID  every item
    (0019,1010)                                   a private element (give the block's creator too)

Setting a value creates the attribute (VR from the dictionary; a private or unknown tag needs the
VR passed explicitly) and, for an item index one past the end, the item; a ``[*]`` path only changes
items that exist.  A value of ``None`` removes the attribute.  Used by ``PUT /images/{id}/modify``
and by the tag values of anonymization and box sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from slicebox_lab.errors import InvalidInput

__all__ = ["TagPath", "TagPathSet", "TagValue", "apply_tag_values", "parse_tag_values"]

_STEP = re.compile(
    r"^(?:(?P<keyword>[A-Za-z][A-Za-z0-9]*)|\((?P<g>[0-9A-Fa-f]{4}),(?P<e>[0-9A-Fa-f]{4})\)|(?P<hex>[0-9A-Fa-f]{8}))"
    r"(?:\[(?P<item>\d+|\*)\])?$"
)
_MAX_ITEM = 100_000


@dataclass(frozen=True)
class _Step:
    tag: BaseTag
    item: int | None  # None: the element itself; -1: every item


@dataclass(frozen=True)
class TagPath:
    """A parsed tag path: sequence steps (each with an item) then the target tag."""

    text: str
    steps: tuple[_Step, ...]
    tag: BaseTag

    @classmethod
    def parse(cls, text: Any) -> TagPath:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput('a tag path must be a non-empty string like "PatientName" or "(0010,0010)"')
        parts = text.strip().split(".")
        steps: list[_Step] = []
        for position, part in enumerate(parts):
            match = _STEP.match(part.strip())
            if match is None:
                raise InvalidInput(f"tag path {text!r}: {part!r} is not a keyword, (gggg,eeee) or gggggggg")
            if match["keyword"]:
                number = tag_for_keyword(match["keyword"])
                if number is None:
                    raise InvalidInput(f"tag path {text!r}: {match['keyword']!r} is not a DICOM keyword")
                tag = Tag(number)
            elif match["hex"]:
                tag = Tag(int(match["hex"], 16))
            else:
                tag = Tag(int(match["g"], 16), int(match["e"], 16))
            item = match["item"]
            last = position == len(parts) - 1
            if last and item is not None:
                raise InvalidInput(f"tag path {text!r} must end with an attribute, not a sequence item")
            if not last and item is None:
                raise InvalidInput(f"tag path {text!r}: sequence step {part!r} needs an item, like [0] or [*]")
            if item is None:
                return cls(text.strip(), tuple(steps), tag)
            index = -1 if item == "*" else int(item)
            if index > _MAX_ITEM:
                raise InvalidInput(f"tag path {text!r}: item index {index} is too large")
            steps.append(_Step(tag, index))
        raise AssertionError("unreachable")

    @property
    def canonical(self) -> str:
        """One spelling per path (keywords where the dictionary has one, else ``(gggg,eeee)``), so that a path
        stored by tag filters or series type rules is found again however the client wrote it."""

        def name(tag: BaseTag) -> str:
            keyword = "" if tag.is_private else keyword_for_tag(tag)
            return keyword or f"({tag.group:04X},{tag.element:04X})"

        steps = [f"{name(s.tag)}[{'*' if s.item == -1 else s.item}]" for s in self.steps]
        return ".".join([*steps, name(self.tag)])

    def _targets(self, ds: Dataset, create: bool) -> Iterator[Dataset]:
        """The datasets that hold (or will hold) the target attribute."""
        current = [ds]
        for step in self.steps:
            following: list[Dataset] = []
            for holder in current:
                if step.tag not in holder:
                    if not create or step.item == -1:
                        continue
                    holder[step.tag] = DataElement(step.tag, "SQ", Sequence())
                elem = holder[step.tag]
                if elem.VR != "SQ":
                    raise InvalidInput(f"tag path {self.text!r}: {step.tag} is not a sequence in this dataset")
                items = elem.value
                if step.item == -1:
                    following.extend(items)
                elif step.item is not None and step.item < len(items):
                    following.append(items[step.item])
                elif create and step.item == len(items):
                    items.append(Dataset())
                    following.append(items[-1])
            current = following
        yield from current

    def set(self, ds: Dataset, value: Any, vr: str | None = None) -> int:
        """Set (or with ``value=None`` remove) the attribute; the number of places changed."""
        changed = 0
        for holder in self._targets(ds, create=value is not None):
            if value is None:
                if self.tag in holder:
                    del holder[self.tag]
                    changed += 1
                continue
            element_vr = vr or (holder[self.tag].VR if self.tag in holder else _dictionary_vr(self.tag, self.text))
            if element_vr == "SQ":
                raise InvalidInput(f"tag path {self.text!r} names a sequence: set the attributes inside its items")
            holder[self.tag] = DataElement(self.tag, element_vr, _coerce(value, element_vr, self.text))
            changed += 1
        return changed


def _dictionary_vr(tag: BaseTag, text: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise InvalidInput(f'tag path {text!r}: {tag} is not in the DICOM dictionary; give its "vr"') from None
    return vr.split(" or ")[0]


_NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
_FLOAT_VRS = {"FL", "FD"}


def _coerce(value: Any, vr: str, text: str) -> Any:
    """A JSON value (string, number, or list of them) as a value for ``vr``."""
    values = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise InvalidInput(f"tag path {text!r}: values must be strings or numbers")
        if vr in _NUMBER_VRS:
            try:
                out.append(int(v))
            except ValueError:
                raise InvalidInput(f"tag path {text!r}: {v!r} is not an integer (VR {vr})") from None
        elif vr in _FLOAT_VRS:
            try:
                out.append(float(v))
            except ValueError:
                raise InvalidInput(f"tag path {text!r}: {v!r} is not a number (VR {vr})") from None
        elif vr.startswith("O") or vr == "UN":
            raise InvalidInput(f"tag path {text!r}: binary attributes (VR {vr}) cannot be set from JSON")
        else:
            out.append(str(v))
    return out[0] if len(out) == 1 else out


@dataclass(frozen=True)
class TagValue:
    """A value to write at a tag path (``None``: remove), as in Slicebox's ``tagValues``."""

    path: TagPath
    value: Any
    vr: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"tagPath": self.path.text, "value": self.value}
        if self.vr:
            out["vr"] = self.vr
        return out


def parse_tag_values(body: Any, what: str = "tagValues") -> tuple[TagValue, ...]:
    """``[{"tagPath": ..., "value": ..., "vr"?: ...}]`` from a JSON body, InvalidInput naming what is wrong."""
    if body is None:
        return ()
    if not isinstance(body, list):
        raise InvalidInput(f'"{what}" must be a JSON array of {{"tagPath": ..., "value": ...}} objects')
    out = []
    for entry in body:
        if not isinstance(entry, Mapping) or "tagPath" not in entry or "value" not in entry:
            raise InvalidInput(f'each entry of "{what}" must be an object with "tagPath" and "value"')
        vr = entry.get("vr")
        if vr is not None and (not isinstance(vr, str) or not re.fullmatch(r"[A-Z]{2}", vr)):
            raise InvalidInput(f'"vr" must be a two-letter value representation like "LO", not {vr!r}')
        path = TagPath.parse(entry["tagPath"])
        value = entry["value"]
        if value is not None:
            _coerce(value, vr or _vr_for_check(path), path.text)
        out.append(TagValue(path, value, vr))
    return tuple(out)


def _vr_for_check(path: TagPath) -> str:
    try:
        return dictionary_VR(path.tag).split(" or ")[0]
    except KeyError:
        return "LO"  # a private or unknown tag: the VR of the element found (or "vr") decides when applied


def apply_tag_values(ds: Dataset, values: Iterable[TagValue]) -> int:
    """Apply every tag value in order; the number of places changed."""
    return sum(value.path.set(ds, value.value, value.vr) for value in values)


# ------------------------------------------------------------------ path patterns (tag filters)


@dataclass
class _Node:
    """One tag of a :class:`TagPathSet` level: named whole, and/or a way into some of its items."""

    whole: bool = False
    items: dict[int, dict[BaseTag, _Node]] = field(default_factory=dict)  # item index (-1: every item) → level


def _merged(a: dict[BaseTag, _Node] | None, b: dict[BaseTag, _Node] | None) -> dict[BaseTag, _Node]:
    """The union of two levels (an item reached both by ``[i]`` and by ``[*]``)."""
    if not a or not b:
        return a or b or {}
    out = dict(a)
    for tag, node in b.items():
        if tag not in out:
            out[tag] = node
            continue
        mine = out[tag]
        items = dict(mine.items)
        for key, level in node.items.items():
            items[key] = _merged(items.get(key), level)
        out[tag] = _Node(mine.whole or node.whole, items)
    return out


def _is_private_creator(tag: BaseTag) -> bool:
    return tag.is_private and 0x10 <= tag.element <= 0xFF


def _is_private_data(tag: BaseTag) -> bool:
    return tag.is_private and tag.element >= 0x1000


class TagPathSet:
    """Several tag paths as one tree, to remove (blacklist) or keep (whitelist) what they name in one walk.

    Paths are rooted: ``PatientName`` names the top-level element only; ``Seq[*].PatientName`` names it
    in every item of ``Seq``; a path ending at a sequence names the whole sequence with its items.
    Unlike :meth:`TagPath.set`, matching never raises on the data: an element that a path expects to
    be a sequence but is not simply does not match (a tag filter must never reject a file).
    """

    def __init__(self, paths: Iterable[TagPath]) -> None:
        self.paths: tuple[TagPath, ...] = tuple(paths)
        self._root: dict[BaseTag, _Node] = {}
        for path in self.paths:
            level = self._root
            for step in path.steps:
                node = level.setdefault(step.tag, _Node())
                level = node.items.setdefault(step.item if step.item is not None else -1, {})
            level.setdefault(path.tag, _Node()).whole = True

    def __bool__(self) -> bool:
        return bool(self._root)

    def names_whole(self, tag: int) -> bool:
        """Whether a path names the top-level element ``tag`` with everything in it."""
        node = self._root.get(Tag(tag))
        return node is not None and node.whole

    def remove_from(self, ds: Dataset) -> int:
        """Remove every element a path names (a private creator takes its block along); how many went."""
        return self._remove(ds, self._root)

    def keep_only(self, ds: Dataset, always: Iterable[int] = ()) -> int:
        """Remove every element no path leads to or into, except the top-level tags in ``always``.

        Kept: the elements the paths name (whole), the sequences and items on the way to them, and
        the private creator of every kept private element (without it the element is unreadable).
        Items not on any path stay as empty items, so item positions (``[1]``) keep their meaning.
        Returns how many elements were removed.
        """
        return self._keep(ds, self._root, frozenset(Tag(t) for t in always))

    @classmethod
    def _remove(cls, ds: Dataset, level: dict[BaseTag, _Node]) -> int:
        removed = 0
        for tag, node in level.items():
            if tag not in ds:
                continue
            if node.whole:
                del ds[tag]
                removed += 1
                if _is_private_creator(tag):
                    block = [t for t in ds.keys() if t.group == tag.group and t.element >> 8 == tag.element]
                    for t in block:
                        del ds[t]
                    removed += len(block)
                continue
            element = ds[tag]
            if element.VR != "SQ":
                continue
            for position, item in enumerate(element.value):
                inner = _merged(node.items.get(position), node.items.get(-1))
                if inner:
                    removed += cls._remove(item, inner)
        return removed

    @classmethod
    def _keep(cls, ds: Dataset, level: dict[BaseTag, _Node], always: frozenset[BaseTag]) -> int:
        blocks = {(t.group, t.element >> 8) for t in level if _is_private_data(t)}
        removed = 0
        for tag in list(ds.keys()):
            node = level.get(tag)
            if node is None:
                if tag in always or (_is_private_creator(tag) and (tag.group, tag.element) in blocks):
                    continue
                del ds[tag]
                removed += 1
                continue
            if node.whole:
                continue
            element = ds[tag]
            if element.VR != "SQ":  # a path goes into its items, but it has none
                del ds[tag]
                removed += 1
                continue
            for position, item in enumerate(element.value):
                removed += cls._keep(item, _merged(node.items.get(position), node.items.get(-1)), frozenset())
        return removed
