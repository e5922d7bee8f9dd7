"""Cross-check of de-identifiers on the planted corpus: ours, ``dicognito`` and ``deid`` (PyPI).

The corpus is ``tests/anonymization/planted.py``'s dataset: a small CT image with a unique marker in
every attribute of PS3.15 Table E.1-1 that pydicom's dictionary knows (every VR), inside sequences
two levels deep, in private blocks (a safe and an unsafe creator) and in curves and overlays. Under
the basic profile every one of these markers must go. Each tool gets its own fresh copy of the
dataset with its default configuration:

* ours: ``slicebox_lab.anonymization.anonymize(ds, Profile(), PseudonymKeys.generate())``;
* dicognito: ``dicognito.anonymizer.Anonymizer().anonymize(ds)`` (in place);
* deid: ``deid.dicom.get_identifiers`` then ``replace_identifiers`` with deid's default recipe
  (``deid/data/deid.dicom``, used when no recipe is given), on a file written for it.

A marker counts as leaked when its text is still in the written output file or in any decoded
string value at any depth (binary numbers, which have no text: when the element still holds the
planted number). Leaks are counted by kind: top-level standard attributes (curves and overlays
included), attributes nested in sequences, and private elements (or anything under a private
sequence). Run from a checkout:

    pip install -e ".[bench]"
    python bench/crosscheck.py [--examples 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests", REPO / "tests" / "anonymization"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from planted import Plant, planted_dataset, plants_for  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from slicebox_lab.anonymization import Profile, PseudonymKeys, anonymize  # noqa: E402

KINDS = ("top-level", "nested", "private")


def kind(plant: Plant) -> str:
    if plant.tag.group % 2 or any(seq.group % 2 for seq in plant.path):
        return "private"
    return "nested" if plant.path else "top-level"


def write(ds: Dataset) -> bytes:
    """The dataset as a Part-10 file; as it stands when a tool removed required file meta (deid does)."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except (AttributeError, ValueError):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def strings(ds: Dataset) -> str:
    """Every decoded non-sequence value, as text, at every depth."""
    out: list[str] = []
    for elem in ds.iterall():
        if elem.VR != "SQ" and elem.value is not None:
            value = elem.value
            out.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return "\n".join(out)


def element(ds: Dataset, plant: Plant) -> Any:
    target = ds
    for tag in plant.path:
        if tag not in target or not target[tag].value:
            return None
        target = target[tag].value[0]
    return target.get(plant.tag)


# ---------------------------------------------------------------------------------------------------
# the tools: each takes a fresh copy of the planted dataset and returns the de-identified one


def run_nothing(ds: Dataset, _tmp: Path) -> Dataset:
    """The control: the corpus as planted, to show the search finds every marker."""
    return ds


def run_ours(ds: Dataset, _tmp: Path) -> Dataset:
    out: Dataset = anonymize(ds, Profile(), PseudonymKeys.generate())
    return out


def run_dicognito(ds: Dataset, _tmp: Path) -> Dataset:
    from dicognito.anonymizer import Anonymizer

    Anonymizer().anonymize(ds)
    return ds


def run_deid(ds: Dataset, tmp: Path) -> Dataset:
    from deid.dicom import get_identifiers, replace_identifiers

    path = tmp / "planted-for-deid.dcm"
    path.write_bytes(write(ds))
    ids = get_identifiers([str(path)])
    out = replace_identifiers([str(path)], ids=ids)  # no recipe: deid's default deid.dicom
    result: Dataset = out[0]
    return result


TOOLS: dict[str, tuple[str, Callable[[Dataset, Path], Dataset]]] = {
    "control": ("pydicom", run_nothing),
    "slicebox_lab": ("slicebox_lab", run_ours),
    "dicognito": ("dicognito", run_dicognito),
    "deid": ("deid", run_deid),
}


def tool_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------------------


def check(name: str, plants: list[Plant], original: Dataset, tmp: Path) -> dict[str, Any]:
    """Run one tool on a copy of the corpus and list the markers that survived."""
    _, runner = TOOLS[name]
    t0 = time.perf_counter()
    out = runner(copy.deepcopy(original), tmp)
    seconds = time.perf_counter() - t0
    data = write(out)
    decoded = dcmread(io.BytesIO(data))
    text = strings(decoded)
    leaks: list[dict[str, str]] = []
    for plant in plants:
        if plant.search is None:  # binary numbers: leaked while the planted value is still there
            elem = element(decoded, plant)
            found = elem is not None and elem.value == plant.value
        else:
            found = plant.search in data or plant.search.decode() in text
        if found:
            where = "/".join([*(str(seq) for seq in plant.path), str(plant.tag)])
            leaks.append({"kind": kind(plant), "name": plant.name, "vr": plant.vr, "where": where,
                          "value": str(plant.value)})  # fmt: skip
    by_kind = {k: sum(leak["kind"] == k for leak in leaks) for k in KINDS}
    by_vr = Counter(leak["vr"] for leak in leaks)
    planted = {k: sum(kind(p) == k for p in plants) for k in KINDS}
    return {
        "tool": name,
        "version": tool_version(TOOLS[name][0]),
        "seconds": seconds,
        "planted": planted,
        "leaks_by_kind": by_kind,
        "leaks_total": len(leaks),
        "leaks_by_vr": dict(by_vr.most_common()),
        "leaks": leaks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS), metavar="TOOL", help="tools to run"
    )
    parser.add_argument("--examples", type=int, default=8, help="leaked attributes to show per tool and kind")
    parser.add_argument("--json", type=Path, help="write the results (every leak) as JSON to this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # deid warns about its default recipe and every removed element
    warnings.simplefilter("ignore", UserWarning)  # pydicom, about deid's recipe keywords it does not know

    original, raw_plants = planted_dataset()
    plants = plants_for(raw_plants, frozenset())
    gone = [p for p in plants if p.fate == "gone"]  # under the basic profile: all of them
    print(f"planted corpus: {len(plants)} markers, {len(gone)} that the basic profile must remove or replace")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-crosscheck-") as tmp:
        for name in args.tools:
            try:
                results.append(check(name, gone, original, Path(tmp)))
            except Exception as e:  # a tool that fails on the corpus is a result too
                results.append({"tool": name, "version": tool_version(TOOLS[name][0]), "error": repr(e)[:500]})
    date = time.strftime("%a %b %d %H:%M %Y", time.gmtime())
    planted = {k: sum(kind(p) == k for p in gone) for k in KINDS}
    print(f"\ndate (UTC): {date}; markers planted: " + ", ".join(f"{k} {planted[k]}" for k in KINDS))
    print("\n| tool | version | leaks, top-level | leaks, nested | leaks, private | leaks, total |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['tool']} | {r['version']} | failed: {r['error'][:80]} | | | |")
            continue
        cells = " | ".join(f"{r['leaks_by_kind'][k]} / {planted[k]}" for k in KINDS)
        print(f"| {r['tool']} | {r['version']} | {cells} | **{r['leaks_total']} / {len(gone)}** |")
    for r in results:
        if "error" in r or not r["leaks"]:
            continue
        if r["tool"] == "control":
            continue
        vrs = ", ".join(f"{vr} {n}" for vr, n in r["leaks_by_vr"].items())
        print(f"\n{r['tool']}: leaks by VR: {vrs}\n{r['tool']}: examples of leaked attributes")
        for k in KINDS:
            rows = [leak for leak in r["leaks"] if leak["kind"] == k]
            if rows:
                shown = ", ".join(f"{leak['name']} ({leak['vr']})" for leak in rows[: args.examples])
                more = f", … (+{len(rows) - args.examples})" if len(rows) > args.examples else ""
                print(f"  {k}: {shown}{more}")
    if args.json:
        args.json.write_text(json.dumps({"date_utc": date, "planted": planted, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
