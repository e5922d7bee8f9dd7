"""Burned-in text on the project's corpus: how much of it ``mask-detected`` blacks out, at what cost (issue 16).

The corpus is ``tests/ocr_corpus.py`` (seeded: 180 images, 210 frames of ultrasound-like, secondary
capture and screenshot- and document-like images, names, IDs, dates and times of the image's own header
drawn at 10-40 px in 13 fonts, plus annotations that identify nobody). Each image goes through what
the anonymizer does (``pixeltext.decide`` with ``burnedInText`` ``mask-detected``): the rectangles it
would set to zero, per frame, are what is measured.

* **found**: a planted text counts as found when every pixel its glyphs touch (any anti-aliased
  coverage, so stricter than its bounding box) lies inside the masked rectangles of its frame;
  **recall** = found / planted, over the identifying texts (names, IDs, dates, times: the target
  ≥ 99 %) and, apart, over the annotations that identify nobody ("5 cm", "MI 0.9": masked or not,
  they identify nobody).
* **outside**: the masked pixels outside every planted text's bounding box, as a share of all the
  pixels of all the frames (target ≤ 5 %); the worst frame is printed too.
* **time per frame**: wall clock and this process's CPU time of ``decide`` (reading included),
  divided by the frames; on a machine shared with others CPU time is the steadier number.
* with ``--blank N``: the first N images again with nothing drawn on them; a frame where text is
  found is one that ``refuse`` would refuse for nothing (false detections).
* with ``--phi``: ``mask-detected-phi`` too: identifying texts masked, annotations kept.
* with ``--presidio PYTHON``: Presidio's ``DicomImageRedactorEngine`` on the same files, run by that
  interpreter (a venv where ``presidio-image-redactor`` is installed), with its defaults
  (``redact_and_return_bbox``: OCR padding 25, metadata on), measured the same way on the boxes it
  returns (it blacks them out in every frame); its time includes the tesseract processes it starts.
  Its default engine downloads a spaCy model from GitHub when it is made, which cannot work offline:
  it runs with a blank English pipeline (no named-entity model), i.e. on its DICOM-metadata deny
  lists and pattern recognizers.

Run from a checkout (Tesseract and the corpus fonts installed, see README):

    pip install -e ".[test]"
    python bench/ocr.py [--images 180] [--blank 40] [--phi] [--presidio /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ocr_corpus import CorpusImage, corpus, missing_fonts  # noqa: E402

from slicebox_lab.anonymization import Profile, ocr  # noqa: E402
from slicebox_lab.anonymization.pixeltext import decide  # noqa: E402


def masked_frames(image: CorpusImage, rectangles: dict[int, Any]) -> list[np.ndarray]:
    """Per frame (0-based list), the boolean mask of the pixels set to zero."""
    rows, columns = int(image.dataset.Rows), int(image.dataset.Columns)
    frames = []
    for frame in range(1, image.frames + 1):
        mask = np.zeros((rows, columns), dtype=bool)
        for r in (*rectangles.get(0, ()), *rectangles.get(frame, ())):
            mask[r.y : r.y + r.height, r.x : r.x + r.width] = True
        frames.append(mask)
    return frames


def score(image: CorpusImage, masks: list[np.ndarray], counts: Counter[str], misses: list[str], by: dict) -> None:
    """Add ``image``'s found / planted and outside pixels to ``counts``."""
    for frame, mask in enumerate(masks, start=1):
        truth = np.zeros(mask.shape, dtype=bool)
        for text in image.planted:
            if text.frame != frame:
                continue
            truth[text.y : text.y + text.height, text.x : text.x + text.width] = True
            inside = mask[text.y : text.y + text.height, text.x : text.x + text.width][text.ink]
            found = bool(inside.all())
            group = "identifying" if text.identifying else "other"
            counts[f"{group}_planted"] += 1
            counts[f"{group}_found"] += found
            band = "10-14 px" if text.size <= 14 else "15-20 px" if text.size <= 20 else "21-40 px"
            for key in (f"kind {image.kind}", f"size {band}"):
                if text.identifying:
                    by[key][0] += 1
                    by[key][1] += found
            if not found and text.identifying:
                misses.append(
                    f"{image.name} frame {frame}: {text.text!r} ({text.kind}, {text.size} px, {text.font}; "
                    f"{inside.mean():.0%} of its ink masked)"
                )
        outside = int((mask & ~truth).sum())
        counts["outside"] += outside
        counts["pixels"] += mask.size
        counts["worst_outside_permille"] = max(counts["worst_outside_permille"], round(1000 * outside / mask.size))


def run_ours(images: list[CorpusImage], policy: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    misses: list[str] = []
    by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wall = cpu = 0.0
    frames = 0
    kept_other = other = 0
    profile = Profile(burned_in=policy)
    for image in images:
        start, start_cpu = time.perf_counter(), time.process_time()
        decision = decide(image.dataset, profile)
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        frames += image.frames
        masks = masked_frames(image, dict(decision.rectangles))
        score(image, masks, counts, misses, by)
        for text in image.planted:  # annotations left untouched (no pixel of their ink masked)
            if not text.identifying:
                other += 1
                ink = masks[text.frame - 1][text.y : text.y + text.height, text.x : text.x + text.width][text.ink]
                kept_other += not ink.any()
    return {
        "policy": policy,
        "frames": frames,
        "counts": dict(counts),
        "by": {k: v for k, v in sorted(by.items())},
        "misses": misses,
        "wall_ms_per_frame": 1000 * wall / frames,
        "cpu_ms_per_frame": 1000 * cpu / frames,
        "other_untouched": (kept_other, other),
    }


def run_blank(count: int) -> dict[str, Any]:
    """Text found in the first ``count`` images with nothing drawn on them (refuse would refuse them)."""
    frames = flagged = boxes = 0
    examples: list[str] = []
    for image in itertools.islice(corpus(text=False), count):
        found = ocr.detect_text(image.dataset)
        frames += image.frames
        with_text = {box.frame for box in found}
        flagged += len(with_text)
        boxes += len(found)
        examples.extend(f"{image.name}: {box.text!r} ({box.confidence:.0f})" for box in found[:2])
    return {"frames": frames, "frames_with_text": flagged, "boxes": boxes, "examples": examples[:12]}


_PRESIDIO = r"""
import json, resource, sys, tempfile, time, numpy as np, pydicom, spacy
from importlib.metadata import version
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

# Presidio's default engine downloads the spaCy model en_core_web_lg from GitHub when it is made, which
# fails offline: a blank English pipeline instead (no named-entity model), so the redactor runs on its
# DICOM-metadata deny lists and its pattern recognizers (dates, phone numbers, IDs ...)
path = tempfile.mkdtemp() + "/blank_en"
spacy.blank("en").to_disk(path)
nlp = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy",
                                           "models": [{"lang_code": "en", "model_name": path}]}).create_engine()
analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
engine = DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))
out = {"version": version("presidio-image-redactor")}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    wall, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        _, boxes = engine.redact_and_return_bbox(ds, use_metadata=True)
        error = None
    except Exception as e:
        boxes, error = [], f"{type(e).__name__}: {e}"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = {"wall": time.perf_counter() - wall,
             "cpu": time.process_time() - cpu + after.ru_utime - children.ru_utime + after.ru_stime - children.ru_stime}
    out[path] = {"boxes": [[int(b["left"]), int(b["top"]), int(b["width"]), int(b["height"])] for b in boxes], **spent}
    if error:
        out[path]["error"] = error
json.dump(out, sys.stdout)
"""


def run_presidio(images: list[CorpusImage], python: str) -> dict[str, Any]:
    """Presidio's DICOM redactor in another interpreter; the boxes it redacts are its masked area."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for image in images:
            path = Path(folder) / f"{image.name}.dcm"
            buffer = io.BytesIO()
            image.dataset.save_as(buffer, enforce_file_format=True)
            path.write_bytes(buffer.getvalue())
            paths.append(str(path))
        done = subprocess.run([python, "-c", _PRESIDIO, *paths], capture_output=True, text=True, timeout=7200)
        if done.returncode != 0:
            return {"error": done.stderr.strip()[-2000:]}
        results = json.loads(done.stdout)
    counts: Counter[str] = Counter()
    misses: list[str] = []
    by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cpu = wall = 0.0
    errors = []
    frames = 0
    for image, written in zip(images, paths, strict=True):
        result = results[written]
        cpu += result["cpu"]
        wall += result["wall"]
        frames += image.frames
        rows, columns = int(image.dataset.Rows), int(image.dataset.Columns)
        if "error" in result:
            errors.append(f"{image.name}: {result['error']}")
        mask = np.zeros((rows, columns), dtype=bool)
        for left, top, width, height in result["boxes"]:  # Presidio blacks its boxes out in every frame
            mask[max(0, top) : top + height, max(0, left) : left + width] = True
        masks = [mask] * image.frames
        score(image, masks, counts, misses, by)
    return {"counts": dict(counts), "by": dict(by), "misses": misses, "wall_ms_per_frame": 1000 * wall / frames,
            "cpu_ms_per_frame": 1000 * cpu / frames, "errors": errors, "version": results["version"]}  # fmt: skip


def report(name: str, result: dict[str, Any]) -> None:
    c = result["counts"]
    ident = c["identifying_found"] / max(1, c["identifying_planted"])
    other = c.get("other_found", 0) / max(1, c.get("other_planted", 0))
    print(f"== {name}" + (f" {result['version']}" if "version" in result else ""))
    print(
        f"recall, identifying texts: {c['identifying_found']}/{c['identifying_planted']} = {ident:.1%}; "
        f"annotations: {c.get('other_found', 0)}/{c.get('other_planted', 0)} = {other:.1%}"
    )
    print(
        f"masked outside the planted texts: {100 * c['outside'] / c['pixels']:.2f} % of all pixels "
        f"(worst frame {c['worst_outside_permille'] / 10:.1f} %)"
    )
    if "wall_ms_per_frame" in result:
        print(f"time per frame: {result['wall_ms_per_frame']:.0f} ms wall, {result['cpu_ms_per_frame']:.0f} ms CPU")
    elif "cpu_ms_per_frame" in result:
        print(f"time per frame: {result['cpu_ms_per_frame']:.0f} ms CPU")
    if "other_untouched" in result:
        kept, total = result["other_untouched"]
        print(f"annotations left untouched: {kept}/{total}")
    for key, (planted, found) in result["by"].items():
        print(f"  {key}: {found}/{planted} = {found / max(1, planted):.1%}")
    for miss in result["misses"]:
        print(f"  missed {miss}")
    for error in result.get("errors", [])[:5]:
        print(f"  error {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=180, help="images of the corpus to use (180: all, 210 frames)")
    parser.add_argument("--blank", type=int, default=0, help="also read this many images with nothing drawn")
    parser.add_argument("--phi", action="store_true", help="also measure mask-detected-phi")
    parser.add_argument("--presidio", metavar="PYTHON", help="an interpreter with presidio-image-redactor")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if ocr.ocr_unavailable_reason() or missing_fonts():
        sys.exit(f"cannot run: {ocr.ocr_unavailable_reason() or ''} {missing_fonts() or ''}")
    images = list(itertools.islice(corpus(), args.images))
    results: dict[str, Any] = {"ours mask-detected": run_ours(images, "mask-detected")}
    report("ours, burnedInText mask-detected", results["ours mask-detected"])
    if args.phi:
        results["ours mask-detected-phi"] = run_ours(images, "mask-detected-phi")
        report("ours, burnedInText mask-detected-phi", results["ours mask-detected-phi"])
    if args.blank:
        results["blank"] = blank = run_blank(args.blank)
        print(f"== the first {args.blank} images without text: text found in {blank['frames_with_text']} of "
              f"{blank['frames']} frames ({blank['boxes']} boxes): {blank['examples']}")  # fmt: skip
    if args.presidio:
        results["presidio"] = presidio = run_presidio(images, args.presidio)
        if "error" in presidio:
            print(f"== Presidio did not run: {presidio['error']}")
        else:
            report("Presidio DicomImageRedactorEngine", presidio)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
