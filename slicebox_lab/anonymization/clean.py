"""The C (clean) action of PS3.15 Table E.1-1 for free text: an allow-list scrubber.

C means "replace with values of similar meaning known not to contain identifying information". No
de-identifier can recognise every name or number in free text, so we keep only what is *known* to
be harmless and drop everything else:

* A text is split on whitespace into tokens. A token is kept when (case-insensitively) it is a word
  of the vocabulary, a number with a unit (``5mm``, ``2.0``, ``1.5T``, ``3D``), a word with a small
  number (``LAYER1``), or made only of such parts joined by punctuation (``W/O``, ``follow-up``,
  ``T1/T2``); surrounding brackets and commas are ignored for the check. Every other token is
  dropped and whitespace is collapsed.
* Digits are identifiers' favourite material: a token with more than 3 digits is dropped even if it
  looks like a measurement, and so is a run of adjacent bare numbers with more than 3 digits in all
  (``123 456 789``).
* ``banned`` tokens are always dropped, vocabulary or not: :func:`identifying_tokens` collects them
  from the dataset being anonymized (every word of every person name, words of institution,
  address, telephone and station values, and ID/accession values), so a patient called "White^Brain"
  disappears from "BRAIN WHITE MATTER" too.
* The vocabulary (``tables/clean_vocabulary.txt``, one lower-case word a line) is generated, never
  edited by hand: ``python -m slicebox_lab.anonymization.clean --build`` writes the words of the names
  and keywords of pydicom's data dictionary, the words of the code meanings pydicom ships for DICOM
  context groups (``pydicom.sr``) and the short hand-kept list of imaging words below. A word of a
  SNOMED, LOINC... meaning enters only if it is seen in lower case or as an acronym somewhere: those
  meanings are in sentence case, so a word only ever Capitalised is a proper noun (the eponyms,
  "Hodgkin", "Paget"). DCM meanings are in title case and give all their words. A word ever seen
  as a possessive ("Smith's fracture") never enters. The file follows pydicom's version: rebuild it
  when pydicom is upgraded (a test compares it with a fresh build).
* Coded values (CodeValue with its CodingSchemeDesignator, ContextIdentifier) are kept when pydicom
  knows the code or context group (:func:`known_code`, :func:`known_context_group`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = [
    "VOCABULARY_FILE",
    "build_vocabulary",
    "clean_text",
    "identifying_tokens",
    "known_code",
    "known_context_group",
    "vocabulary",
]

VOCABULARY_FILE = "clean_vocabulary.txt"
MAX_DIGITS = 3

# Imaging words that neither the data dictionary nor the code meanings are sure to hold: modalities,
# sequence names, planes, contrast phases, common report abbreviations, and the defined terms of SR
# and presentation state attributes (ValueType, RelationshipType, GraphicType...). Lower case.
HAND_WORDS = """
ct mr mri pt pet spect us xa rf cr dx mg nm ot sr seg rtstruct rtplan rtdose rtimage io px ecg
cta mra mrv ctp ctu pet/ct pet-ct spect/ct scout topogram localizer localiser survey
t1 t2 t1w t2w t1-w t2-w pd pdw flair dwi adc dti swi gre tse fse se ir epi stir mprage mp-rage spgr
fiesta truefisp trufi haste vibe blade propeller tof pc fat sat fatsat fs water dixon bold asl
perfusion diffusion tensor trace ep2d tra tr te ti fa nex etl
axial ax sagittal sag coronal cor oblique obl transverse tra 2d 3d 4d mip minip mpr vr reformat
reformatted recon reconstruction thin thick slice slices kernel soft tissue bone lung window
w/ w/o with without w wo contrast c+ c- iv oral rectal enhanced unenhanced non-contrast noncontrast
pre post delayed arterial venous portal phase late early equilibrium nephrographic excretory
bolus tracking test dose gad gado gadolinium iodine
head neck brain skull face facial sinus sinuses orbit orbits temporal iac pituitary sella
cervical thoracic lumbar sacral spine c-spine t-spine l-spine chest thorax lungs heart cardiac
coronary aorta abdomen abdominal pelvis pelvic liver kidney kidneys renal pancreas spleen
bladder prostate breast shoulder elbow wrist hand hip knee ankle foot extremity upper lower
left right bilateral lt rt bil l r ap pa lat lateral frontal routine protocol standard
low high res resolution helical spiral sequential angio angiography venography perfusion
screening follow-up followup follow up study series exam examination scan images image
and or of the a an in on for to at by no not without per plus only
contains has properties obs acq concept mod inferred selected from container text code num pname date time
datetime uidref composite image waveform scoord scoord3d tcoord table separate continuous point polyline
interpolated circle ellipse ellipsoid multipoint polygon pixel display matrix center centre partial complete
verified unverified preliminary final multisegment outlined dashed yes
""".split()

UNITS = (
    "mm|cm|m|um|µm|ms|s|sec|min|h|hr|d|kv|kvp|ma|mas|t|mt|mg|g|kg|ml|cc|l|mgy|gy|cgy|msv|mcgy|mci|mbq|"
    "bq|ci|hz|khz|mhz|deg|°|%|x|mm2|cm2|mm3|cm3|mm/s|cm/s|ml/s|s/mm2|mmol|mol|ppm|b|bpm|slices?|sl|iu|ml/kg"
)
_NUMBER_UNIT = re.compile(rf"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:{UNITS})?|x\d+(?:[.,]\d+)?|b\d+")
_BARE_NUMBER = re.compile(r"\d+")
_NUMBERED_WORD = re.compile(r"([a-z]{2,})\d{1,3}")
_EDGES = "()[]{}<>,;:\"'!?"
_JOINERS = re.compile(r"[-/_+:;,.()=&*#\\|~]+")
_WORD = re.compile(r"[A-Za-z0-9]+")
# Keywords of text attributes whose values name a person, a place or a record: their words are banned.
_BANNED_KEYWORD = re.compile(r"Institution|Address|Telephone|Station|AETitle|Email|Residence|ResponsibleOrganization")
_ID_KEYWORD = re.compile(r"(?:[a-z]ID|IDs|Accession\w*|SerialNumber|OrderNumber\w*)$")
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"})


def _digits(token: str) -> int:
    return sum(c.isdigit() for c in token)


def _allowed(part: str, vocab: frozenset[str], banned: frozenset[str]) -> bool:
    low = part.lower()
    if low in banned:
        return False
    if low in vocab or _NUMBER_UNIT.fullmatch(low) is not None:
        return True
    numbered = _NUMBERED_WORD.fullmatch(low)  # "LAYER1", "SERIES12": a known word with a small number
    return numbered is not None and numbered.group(1) in vocab and numbered.group(1) not in banned


def _keep(token: str, vocab: frozenset[str], banned: frozenset[str]) -> bool:
    core = token.strip(_EDGES)
    if not core:
        return True  # punctuation only: carries no information
    if _digits(core) > MAX_DIGITS or core.lower() in banned:
        return False
    if _allowed(core, vocab, banned):
        return True
    parts = [part for part in _JOINERS.split(core) if part]
    return bool(parts) and all(_allowed(part, vocab, banned) for part in parts)


def clean_text(value: str, banned: frozenset[str] = frozenset(), vocab: frozenset[str] | None = None) -> str:
    """``value`` with every token that is not known to be harmless removed (see the module docstring)."""
    words = vocabulary() if vocab is None else vocab
    tokens = value.split()
    keep = [_keep(token, words, banned) for token in tokens]
    # a run of adjacent bare numbers must not spell an identifier 3 digits at a time
    start = 0
    while start < len(tokens):
        end = start
        while end < len(tokens) and keep[end] and _BARE_NUMBER.fullmatch(tokens[end].strip(_EDGES)):
            end += 1
        if end - start > 1 and sum(_digits(tokens[i]) for i in range(start, end)) > MAX_DIGITS:
            for i in range(start, end):
                keep[i] = False
        start = end + 1 if end == start else end
    return " ".join(token for token, kept in zip(tokens, keep, strict=True) if kept)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").split("\\")
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def identifying_tokens(ds: Dataset) -> frozenset[str]:
    """Lower-case tokens that name this dataset's people, places and records, at any depth.

    Every word of every PN value; every word of institution, address, telephone, station and AE title
    values; ID and accession values whole and their words that are not vocabulary words.
    """
    vocab = vocabulary()
    banned: set[str] = set()
    for elem in ds.iterall():
        vr = elem.VR
        if vr == "PN":
            words = [w.lower() for v in _values(elem.value) for w in _WORD.findall(v)]
            banned.update(words)
            continue
        if vr not in _TEXT_VRS or elem.tag.group % 2:
            continue
        keyword = elem.keyword
        if not keyword:
            continue
        if _BANNED_KEYWORD.search(keyword):
            banned.update(w.lower() for v in _values(elem.value) for w in _WORD.findall(v))
        elif _ID_KEYWORD.search(keyword):
            for v in _values(elem.value):
                if v.strip():
                    banned.add(v.strip().lower())
                banned.update(w.lower() for w in _WORD.findall(v) if w.lower() not in vocab)
    return frozenset(banned)


@cache
def vocabulary() -> frozenset[str]:
    """The shipped allow-list (lower case)."""
    text = resources.files(__package__).joinpath("tables").joinpath(VOCABULARY_FILE).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@cache
def _codes() -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    from pydicom.sr._cid_dict import cid_concepts

    codes = {(scheme, value) for scheme, by_keyword in _concepts().items() for c in by_keyword.values() for value in c}
    return frozenset(codes), frozenset(str(cid) for cid in cid_concepts)


def _concepts() -> dict[str, dict[str, dict[str, tuple[str, list[int]]]]]:
    """pydicom's code dictionary: scheme -> keyword -> code value -> (meaning, context groups)."""
    from pydicom.sr._concepts_dict import concepts

    return cast("dict[str, dict[str, dict[str, tuple[str, list[int]]]]]", concepts)


def known_code(scheme: str, value: str) -> bool:
    """Whether pydicom knows ``value`` as a code of the coding scheme ``scheme`` (SRT is SCT's old name)."""
    scheme = scheme.strip()
    codes = _codes()[0]
    return (scheme, value.strip()) in codes or (scheme == "SRT" and ("SCT", value.strip()) in codes)


def known_context_group(value: str) -> bool:
    """Whether ``value`` is the number of a context group (CID) pydicom knows."""
    return value.strip() in _codes()[1]


def _meaning_words() -> set[str]:
    lower: set[str] = set()
    acronyms: set[str] = set()
    title_case: set[str] = set()
    possessive: set[str] = set()
    for scheme, by_keyword in _concepts().items():
        for codes in by_keyword.values():
            for meaning, _cids in codes.values():
                possessive.update(w.lower() for w in re.findall(r"([A-Za-z]+)'s\b", meaning))
                for word in _WORD.findall(meaning):
                    if word.isupper() and len(word) <= 8:
                        acronyms.add(word.lower())
                    elif word.islower():
                        lower.add(word)
                    elif scheme == "DCM":  # DCM meanings are in title case: no case evidence
                        title_case.add(word.lower())
    return (lower | acronyms | title_case) - possessive


def build_vocabulary() -> list[str]:
    """The vocabulary from pydicom's dictionary and code meanings plus :data:`HAND_WORDS` (sorted)."""
    from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary

    words: set[str] = set(HAND_WORDS)
    for _vr, _vm, name, _retired, keyword in [*DicomDictionary.values(), *RepeatersDictionary.values()]:
        words.update(w.lower() for w in _WORD.findall(name))
        words.update(w.lower() for w in re.findall(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|\d+", keyword))
    words |= _meaning_words()
    words.update(scheme.lower() for scheme in _concepts())
    return sorted(w for w in words if w and _digits(w) <= MAX_DIGITS)


def _write(path: Path, words: Iterable[str]) -> None:
    header = (
        "# generated by: python -m slicebox_lab.anonymization.clean --build (do not edit)\n"
        f"# from pydicom {pydicom.__version__}\n"
    )
    path.write_text(header + "".join(f"{w}\n" for w in words), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build", action="store_true", help=f"regenerate tables/{VOCABULARY_FILE}")
    parser.add_argument("text", nargs="*", help="texts to clean (for a quick look)")
    args = parser.parse_args(argv)
    if args.build:
        path = Path(__file__).with_name("tables") / VOCABULARY_FILE
        words = build_vocabulary()
        _write(path, words)
        print(f"{path}: {len(words)} words")
    for text in args.text:
        print(clean_text(text))


if __name__ == "__main__":
    main()
