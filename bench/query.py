"""Patient-level query latency: our node (``POST /slicebox/api/metadata/patients/query``) against Orthanc
(``POST /tools/find``, ``Level: Patient``, ``Expand: true``).

Loads ``--patients`` patients × ``--per-patient`` small (16×16) CT instances into a fresh instance of
each system (untimed, ``--clients`` concurrent uploaders), checks both hold them all, then times each
query shape ``--repeat`` times per system, interleaved (ours, Orthanc, Orthanc, ours, ...), after a
few untimed warm-up queries. Both answers must have the same number of patients as the generated data
predicts. Latency is the client-side time of one request until its whole answer is received.

    python bench/query.py [--patients 1000] [--per-patient 10] [--repeat 50] [--json out.json]

``--tags``: our node only (Orthanc 1.10 has no labels): ``--patients`` (default 10,000) one-image
series, every 10th tagged ``cohort`` (bulk, ``POST /metadata/seriestags/{id}/series``) and 3 tagged
``rare``; times the metadata listings filtered by tag (``GET /metadata/flatseries?seriestags=...``).

    python bench/query.py --tags [--patients 10000] [--repeat 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import requests
from pydicom.uid import generate_uid

OURS = "slicebox_lab"
ORTHANC = "Orthanc"


@dataclass(frozen=True)
class Shape:
    """One query: a DICOM attribute and a wildcard pattern (``*`` and ``?``)."""

    label: str
    attribute: str
    pattern: str

    def ours_body(self) -> dict[str, Any]:
        return {
            "count": 10000,
            "query_properties": [
                {"property_name": self.attribute, "operator": "wildcard", "property_value": self.pattern}
            ],
        }

    def orthanc_body(self) -> dict[str, Any]:
        return {"Level": "Patient", "Query": {self.attribute: self.pattern}, "Expand": True}


SHAPES = (
    Shape("PatientName *12*", "PatientName", "*12*"),
    Shape("PatientID P00*", "PatientID", "P00*"),
)


def patient_name(n: int) -> str:
    return f"Name{n:04d}^Given"


def patient_id(n: int) -> str:
    return f"P{n:04d}"


def expected_matches(shape: Shape, patients: int) -> int:
    value = patient_name if shape.attribute == "PatientName" else patient_id
    return sum(fnmatch.fnmatchcase(value(n), shape.pattern) for n in range(patients))


def generate(patients: int, per_patient: int) -> list[bytes]:
    """patients × per_patient 16×16 CT instances: one study and one series per patient."""
    blobs: list[bytes] = []
    for n in range(patients):
        study_uid, series_uid = generate_uid(), generate_uid()
        for i in range(per_patient):
            blobs.append(
                harness.ct_bytes(
                    PatientName=patient_name(n),
                    PatientID=patient_id(n),
                    StudyInstanceUID=study_uid,
                    SeriesInstanceUID=series_uid,
                    SOPInstanceUID=generate_uid(),
                    InstanceNumber=i + 1,
                    seed=n * per_patient + i,
                )
            )
    return blobs


def load(
    name: str,
    make_session: Callable[[], requests.Session],
    url: str,
    ok: int,
    blobs: list[bytes],
    clients: int,
) -> float:
    """Upload every blob with `clients` concurrent keep-alive sessions; the seconds it took."""
    local = threading.local()

    def post(data: bytes) -> None:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = make_session()
        r = s.post(url, data=data, headers=harness.DICOM, timeout=120)
        if r.status_code != ok:
            raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:500]}")

    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=clients)
    try:
        for future in [pool.submit(post, b) for b in blobs]:
            future.result()
    finally:  # on an error or ^C, drop the uploads not yet started
        pool.shutdown(wait=True, cancel_futures=True)
    return time.perf_counter() - t0


@dataclass
class QueryTarget:
    name: str
    session: requests.Session
    url: str
    body: Callable[[Shape], dict[str, Any]]

    def query(self, shape: Shape) -> tuple[float, int]:
        """(seconds until the whole answer is in, number of patients in it)."""
        body = json.dumps(self.body(shape))
        headers = {"Content-Type": "application/json"}
        t0 = time.perf_counter()
        r = self.session.post(self.url, data=body, headers=headers)
        seconds = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{self.name}: HTTP {r.status_code} {r.text[:500]}")
        return seconds, len(r.json())


def run_tags(args: argparse.Namespace, machine: dict[str, Any]) -> int:
    """Listing by series tag at ``args.patients`` series (one patient, study and series each)."""
    print(f"generating {args.patients} one-image series ...", flush=True)
    blobs = generate(args.patients, 1)
    latencies: dict[str, list[float]] = {}
    found: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tags-") as tmp, harness.running_node(Path(tmp) / "ours") as node:
        loaded = load(OURS, node.session, node.api + "/images", 201, blobs, args.clients)
        print(f"  loaded in {loaded:.1f} s", flush=True)
        s = node.session()
        md = node.api + "/metadata"
        # series id by patient number (loading is concurrent: ids are not in patient order)
        rows = s.get(md + "/flatseries", params={"count": 10000}).json()
        by_number = {int(f["patient"]["PatientID"][1:]): f["series"]["id"] for f in rows}
        if len(by_number) != args.patients:
            raise RuntimeError(f"{len(by_number)} series stored, expected {args.patients}")
        tagged = [i for n, i in by_number.items() if n % 10 == 0]  # patients 0, 10, 20, ...
        few = [by_number[n] for n in (0, 1, 2)]
        cohort = s.post(md + "/seriestags", json={"name": "cohort"}).json()["id"]
        rare = s.post(md + "/seriestags", json={"name": "rare"}).json()["id"]
        s.post(md + f"/seriestags/{cohort}/series", json={"series_ids": tagged}).raise_for_status()
        s.post(md + f"/seriestags/{rare}/series", json={"series_ids": few}).raise_for_status()
        both = {"seriestags": f"{cohort},{rare}", "seriestagsmatch": "all"}
        shapes: dict[str, tuple[str, dict[str, Any], int]] = {  # label: (path, params, expected rows)
            "flatseries, tag of 10%, page of 20": ("/flatseries", {"seriestags": cohort}, 20),
            "flatseries, tag of 10%, all": ("/flatseries", {"seriestags": cohort, "count": 10000}, len(tagged)),
            "flatseries, tag of 3 series": ("/flatseries", {"seriestags": rare}, 3),
            "flatseries, both tags (all)": ("/flatseries", both, 1),
            # Name0000 ... Name0099, of which 0, 10, ..., 90 are tagged
            "flatseries, tag + filter": ("/flatseries", {"seriestags": cohort, "filter": "Name00"}, 10),
            "patients, tag of 10%, page of 20": ("/patients", {"seriestags": cohort}, 20),
            # reference: the same number of rows without a tag filter (JSON of 1000 flat series dominates)
            "flatseries, no filter, 1000 rows": ("/flatseries", {"count": len(tagged)}, len(tagged)),
        }
        for label, (path, params, expected) in shapes.items():
            latencies[label] = []
            for i in range(args.warmup + args.repeat):
                t0 = time.perf_counter()
                r = s.get(md + path, params=params)
                seconds = time.perf_counter() - t0
                if r.status_code != 200 or len(r.json()) != expected:
                    raise RuntimeError(f"{label}: HTTP {r.status_code}, {len(r.json())} rows, expected {expected}")
                if i >= args.warmup:
                    latencies[label].append(seconds * 1000)
            found[label] = expected
    results: dict[str, dict[str, Any]] = {
        label: {"rows": found[label], "ms": harness.summary(v)} for label, v in latencies.items()
    }
    machine["loadavg_end"] = harness.loadavg()
    if args.json:
        report = {"benchmark": "query --tags", "params": {"series": args.patients, "repeat": args.repeat},
                  "machine": machine, "results": results, "raw_ms": latencies}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print("| date (UTC) | series | listing | rows | ours median ms | ours p90 ms | ours max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        ms = r["ms"]
        print(
            f"| {machine['date_utc']} | {args.patients} | {label} | {r['rows']} "
            f"| {ms['median']:.2f} | {ms['p90']:.2f} | {ms['max']:.2f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=None, help="patients (default 1000; --tags: 10000)")
    parser.add_argument("--per-patient", type=int, default=10, help="instances per patient (default 10)")
    parser.add_argument("--repeat", type=int, default=50, help="timed queries per shape and system (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed queries first (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploaders for loading (default 4)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--tags", action="store_true", help="time the listings by series tag instead (ours only)")
    args = parser.parse_args(argv)
    harness.exit_on_sigterm()
    machine = harness.machine_info()  # before any work: the load the machine had without us
    if args.patients is None:
        args.patients = 10000 if args.tags else 1000
    if args.tags:
        return run_tags(args, machine)
    if args.patients > 10000:
        parser.error("--patients: at most 10000 (a query page holds at most 10000 patients)")

    print(f"generating {args.patients} × {args.per_patient} instances of 16x16 ...", flush=True)
    t0 = time.perf_counter()
    blobs = generate(args.patients, args.per_patient)
    print(f"  {len(blobs)} instances in {time.perf_counter() - t0:.1f} s", flush=True)

    latencies: dict[str, dict[str, list[float]]] = {s.label: {OURS: [], ORTHANC: []} for s in SHAPES}
    matches: dict[str, int] = {}
    loading: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        with (
            harness.running_node(Path(tmp) / "ours") as node,
            harness.running_orthanc(Path(tmp) / "orthanc") as orth,
        ):
            loading[OURS] = load(OURS, node.session, node.api + "/images", 201, blobs, args.clients)
            print(f"  loaded into {OURS} in {loading[OURS]:.1f} s", flush=True)
            loading[ORTHANC] = load(ORTHANC, orth.session, orth.url + "/instances", 200, blobs, args.clients)
            print(f"  loaded into {ORTHANC} in {loading[ORTHANC]:.1f} s", flush=True)

            ours_s, orth_s = node.session(), orth.session()
            images = ours_s.get(node.api + "/system/information").json()["counts"]["images"]
            stats = orth_s.get(orth.url + "/statistics").json()
            if images != len(blobs) or stats["CountInstances"] != len(blobs):
                raise RuntimeError(f"stored: ours {images}, Orthanc {stats['CountInstances']}, sent {len(blobs)}")
            if stats["CountPatients"] != args.patients:
                raise RuntimeError(f"Orthanc holds {stats['CountPatients']} patients, expected {args.patients}")

            targets = {
                OURS: QueryTarget(OURS, ours_s, node.api + "/metadata/patients/query", Shape.ours_body),
                ORTHANC: QueryTarget(ORTHANC, orth_s, orth.url + "/tools/find", Shape.orthanc_body),
            }
            for shape in SHAPES:
                expected = expected_matches(shape, args.patients)
                for target in targets.values():
                    for _ in range(args.warmup):
                        _, n = target.query(shape)
                        assert n == expected, f"{target.name} {shape.label}: {n} patients, expected {expected}"
                matches[shape.label] = expected
            for i in range(args.repeat):
                order = (OURS, ORTHANC) if i % 2 == 0 else (ORTHANC, OURS)
                for shape in SHAPES:
                    for name in order:
                        seconds, n = targets[name].query(shape)
                        assert n == matches[shape.label], f"{name} {shape.label}: {n} patients"
                        latencies[shape.label][name].append(seconds * 1000)

    results: dict[str, Any] = {}
    for shape in SHAPES:
        ours = harness.summary(latencies[shape.label][OURS])
        theirs = harness.summary(latencies[shape.label][ORTHANC])
        results[shape.label] = {
            "matches": matches[shape.label],
            "ms": {OURS: ours, ORTHANC: theirs},
            "ratio_orthanc_over_ours": theirs["median"] / ours["median"],
        }
        print(
            f"{shape.label:>18} ({matches[shape.label]} patients): ours median {ours['median']:.2f} ms "
            f"p90 {ours['p90']:.2f} ms | Orthanc median {theirs['median']:.2f} ms p90 {theirs['p90']:.2f} ms"
        )

    machine["loadavg_end"] = harness.loadavg()
    report = {
        "benchmark": "query",
        "params": {
            "patients": args.patients,
            "per_patient": args.per_patient,
            "instances": len(blobs),
            "repeat": args.repeat,
            "warmup": args.warmup,
            "clients": args.clients,
        },
        "machine": machine,
        "loading_seconds": loading,
        "results": results,
        "raw_ms": latencies,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(
        "| date (UTC) | data | query | patients found | ours median ms | ours p90 ms "
        "| Orthanc median ms | Orthanc p90 ms | Orthanc/ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        ours, theirs = r["ms"][OURS], r["ms"][ORTHANC]
        print(
            f"| {machine['date_utc']} | {args.patients} × {args.per_patient} | `{label}` | {r['matches']} "
            f"| {ours['median']:.2f} | {ours['p90']:.2f} | {theirs['median']:.2f} | {theirs['p90']:.2f} "
            f"| {r['ratio_orthanc_over_ours']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
