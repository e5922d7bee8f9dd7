"""Anonymization throughput: our node against Orthanc, on the same CT instances in the same run.

Generates ``--count`` CT instances of ``--size``×``--size`` 16-bit pixels (≈0.5 MB at 512) in ONE
patient, study and series, in memory before any timing. Each of ``--rounds`` rounds starts a fresh,
empty instance of each system (order alternating between rounds), loads the instances (untimed, two
uploaders), then times, one after the other:

1. **download, 1 client**: the anonymized file of every instance, one request after the other over
   ONE keep-alive session (ours: ``POST /slicebox/api/images/{id}/anonymized`` body ``{}``, the basic
   profile; Orthanc: ``POST /instances/{id}/anonymize`` body ``{}``); storage is unchanged;
2. **download, 4 clients**: the same with four concurrent sessions, each a quarter of the instances;
3. **anonymize and store** the whole study. Orthanc: ``POST /studies/{id}/anonymize`` body ``{}``,
   which answers when the anonymized copy of the study is stored. Ours, ``--store-mode``:
   ``bulk``: ``POST /slicebox/api/anonymization/anonymize`` ``{"imageIds": [...], "options": []}`` → a
   job, followed with ``GET /slicebox/api/jobs/{id}?wait=5`` (a long poll, answered as soon as the job
   has finished, as the Python client waits) until it has finished (each image replaced by its anonymized
   version; the job's result lists the new image ids);
   ``per-image``: ``PUT /slicebox/api/images/{id}/anonymize`` body ``{}`` for every image from four
   concurrent clients (each image replaced in place by its anonymized version);
   ``auto`` (default): ``bulk`` when the node has that route, else ``per-image``.

Every request sends ``Accept-Encoding: identity`` (Orthanc gzips DICOM answers when it may). Both
systems run their default durability (see ``bench/README.md``). Afterwards each system's instance
count is checked, and one anonymized file of each is parsed and compared with its original.

    python bench/anonymize.py [--count 1000] [--rounds 3] [--size 512] [--store-mode auto|bulk|per-image]
                              [--json out.json] [--profile out-prefix]

``--profile`` adds one extra, untimed run of our node with ``py-spy record`` attached during each
of the three phases (needs ``pip install py-spy``), writes ``<prefix>.<phase>.raw`` and prints the
top costs per phase.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import ingest_rest
import requests
from ingest_rest import generate, print_profile
from pydicom import dcmread

# the job manager's workers waiting for a job are idle too (a C-level queue wait: the leaf is _work)
ingest_rest.IDLE_LEAVES = (*ingest_rest.IDLE_LEAVES, "JobManager._work (")  # type: ignore[assignment]

OURS = "slicebox_lab"
ORTHANC = "Orthanc"
PHASES = ("download 1 client", "download 4 clients", "anonymize+store")
CLIENTS = 4
#: seconds a GET /jobs/{id}?wait=... may hold its answer back (the node answers as soon as the job finishes);
#: polling without it every 0.2 s made a job of 1.5 s look up to 0.2 s longer, and polling every 20 ms took
#: CPU from the job being measured (each answer carries the job's parameters: every image id)
JOB_WAIT = 5
JSON = {"Content-Type": "application/json"}
EMPTY = b"{}"  # the basic profile, on both systems

# The node is started as `jupyter-slicebox`; make sure it imports the package of this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(harness.REPO), os.environ.get("PYTHONPATH")) if p)


def _check(r: requests.Response, status: int, what: str) -> requests.Response:
    if r.status_code != status:
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.text[:500]}")
    return r


@dataclass
class System:
    """A running system: how to open sessions, upload, download anonymized, anonymize-and-store."""

    name: str
    pid: int
    new_session: Callable[[], requests.Session]
    upload: Callable[[requests.Session, bytes], str]  # → instance id
    download: Callable[[requests.Session, str], bytes]  # anonymized Part-10 bytes
    count_instances: Callable[[], int]
    store: Callable[[list[str]], int] = field(default=lambda ids: 0)  # → number of new instances


@contextmanager
def started(name: str, work_dir: Path, store_mode: str) -> Iterator[System]:
    if name == OURS:
        with harness.running_node(work_dir) as node:

            def ours_session() -> requests.Session:
                s = node.session()
                s.headers["Accept-Encoding"] = "identity"
                return s

            main = ours_session()

            def upload(s: requests.Session, data: bytes) -> str:
                return str(
                    _check(s.post(node.api + "/images", data=data, headers=harness.DICOM), 201, "upload").json()["id"]
                )

            def download(s: requests.Session, image_id: str) -> bytes:
                r = s.post(f"{node.api}/images/{image_id}/anonymized", data=EMPTY, headers=JSON)
                return _check(r, 200, "anonymized download").content

            def count() -> int:
                return int(main.get(node.api + "/system/information").json()["counts"]["images"])

            def store_bulk(ids: list[str]) -> int:
                body = {"imageIds": [int(i) for i in ids], "options": []}
                job = _check(main.post(node.api + "/anonymization/anonymize", json=body), 201, "bulk anonymize").json()
                while job["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    r = main.get(f"{node.api}/jobs/{job['id']}", params={"wait": JOB_WAIT})
                    job = _check(r, 200, "job").json()
                result = job.get("result") or {}
                if job["state"] != "SUCCEEDED" or result.get("failed"):
                    raise RuntimeError(f"anonymization job ended {job['state']}: {json.dumps(job)[:1000]}")
                return len(set(result.get("images", [])))  # the new image ids

            def store_per_image(ids: list[str]) -> int:
                def one(s: requests.Session, image_id: str) -> int:
                    r = s.put(f"{node.api}/images/{image_id}/anonymize", data=EMPTY, headers=JSON)
                    return int(_check(r, 200, "anonymize in place").json()["id"])

                return len(set(parallel(ours_session, ids, one, CLIENTS)))

            store = store_bulk if store_mode == "bulk" else store_per_image
            try:
                yield System(OURS, node.process.pid, ours_session, upload, download, count, store)
            except Exception:
                print(f"--- our node's log, last lines ---\n{node.log_path.read_text()[-4000:]}", file=sys.stderr)
                raise
    else:
        with harness.running_orthanc(work_dir) as orthanc:
            main = orthanc.session()
            studies: set[str] = set()

            def upload(s: requests.Session, data: bytes) -> str:
                answer = _check(
                    s.post(orthanc.url + "/instances", data=data, headers=harness.DICOM), 200, "upload"
                ).json()
                studies.add(answer["ParentStudy"])
                return str(answer["ID"])

            def download(s: requests.Session, image_id: str) -> bytes:
                r = s.post(f"{orthanc.url}/instances/{image_id}/anonymize", data=EMPTY)
                return _check(r, 200, "anonymized download").content

            def count() -> int:
                return int(main.get(orthanc.url + "/statistics").json()["CountInstances"])

            def store(ids: list[str]) -> int:
                study = _study_of(main, orthanc.url, ids[0])
                r = main.post(f"{orthanc.url}/studies/{study}/anonymize", data=EMPTY, timeout=3600)
                new_study = _check(r, 200, "study anonymize").json()["ID"]
                return len(main.get(f"{orthanc.url}/studies/{new_study}/instances").json())

            try:
                yield System(ORTHANC, orthanc.process.pid, orthanc.session, upload, download, count, store)
            except Exception:
                print(f"--- Orthanc's log, last lines ---\n{orthanc.log_path.read_text()[-4000:]}", file=sys.stderr)
                raise


def _study_of(s: requests.Session, url: str, instance_id: str) -> str:
    return str(s.get(f"{url}/instances/{instance_id}/study").json()["ID"])


def parallel(
    new_session: Callable[[], requests.Session],
    items: Sequence[Any],
    work: Callable[[requests.Session, Any], Any],
    clients: int,
) -> list[Any]:
    """``work(session, item)`` for every item, by ``clients`` threads with one session each; results in order."""
    local = threading.local()

    def run(item: Any) -> Any:
        if not hasattr(local, "session"):
            local.session = new_session()
        return work(local.session, item)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(run, items))


def parallel_chunks(
    new_session: Callable[[], requests.Session],
    items: Sequence[Any],
    work: Callable[[requests.Session, Any], Any],
    clients: int,
) -> list[Any]:
    """``clients`` threads, each with its own session and its own contiguous quarter of the items."""
    chunks = [items[i * len(items) // clients : (i + 1) * len(items) // clients] for i in range(clients)]

    def run(chunk: Sequence[Any]) -> list[Any]:
        s = new_session()
        return [work(s, item) for item in chunk]

    with ThreadPoolExecutor(clients) as pool:
        return [result for chunk_results in pool.map(run, chunks) for result in chunk_results]


def _is_dicom(data: bytes) -> int:
    if data[128:132] != b"DICM":
        raise RuntimeError(f"not a DICOM file: {data[:200]!r}")
    return len(data)


def load(system: System, blobs: list[bytes]) -> list[str]:
    """Upload every instance (untimed) with two uploaders; the ids in the order of ``blobs``."""
    return parallel(system.new_session, blobs, system.upload, 2)


def timed_phases(system: System, ids: list[str], on_phase: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run the three timed phases; ``on_phase(name)`` may return a context manager wrapping each."""

    def wrap(phase: str) -> Any:
        return on_phase(phase) if on_phase else _nothing()

    s = system.new_session()
    _is_dicom(system.download(s, ids[0]))  # warm-up: connection, first-request costs
    out: dict[str, Any] = {}
    with wrap(PHASES[0]):
        t0 = time.perf_counter()
        sizes = [_is_dicom(system.download(s, i)) for i in ids]
        seconds = time.perf_counter() - t0
    out[PHASES[0]] = {"seconds": seconds, "inst_per_s": len(ids) / seconds, "mb_per_s": sum(sizes) / seconds / 1e6}
    with wrap(PHASES[1]):
        t0 = time.perf_counter()
        sizes = parallel_chunks(system.new_session, ids, lambda s, i: _is_dicom(system.download(s, i)), CLIENTS)
        seconds = time.perf_counter() - t0
    out[PHASES[1]] = {"seconds": seconds, "inst_per_s": len(ids) / seconds, "mb_per_s": sum(sizes) / seconds / 1e6}
    with wrap(PHASES[2]):
        t0 = time.perf_counter()
        stored = system.store(ids)
        seconds = time.perf_counter() - t0
    if stored != len(ids):
        raise RuntimeError(f"{system.name}: anonymize-and-store made {stored} instances, expected {len(ids)}")
    out[PHASES[2]] = {"seconds": seconds, "inst_per_s": len(ids) / seconds}
    return out


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def verify_anonymized(system: System, blob: bytes, image_id: str) -> None:
    """One anonymized download, parsed: a new identity, same pixels."""
    original = dcmread(io.BytesIO(blob))
    anonymized = dcmread(io.BytesIO(system.download(system.new_session(), image_id)))
    if (
        str(anonymized.get("PatientName", "")) == str(original.PatientName)
        or anonymized.get("SOPInstanceUID") == original.SOPInstanceUID
    ):
        raise RuntimeError(f"{system.name}: the anonymized download still has the original identity")
    if anonymized.PixelData != original.PixelData:
        raise RuntimeError(f"{system.name}: the anonymized download has different pixels")


def expected_count(name: str, count: int) -> int:
    """Instances held at the end: Orthanc stores an anonymized copy of the study next to the original;
    ours (bulk job and per-image PUT alike) replaces every image by its anonymized version."""
    return count if name == OURS else 2 * count


def run_one(name: str, blobs: list[bytes], work_dir: Path, store_mode: str) -> dict[str, Any]:
    with started(name, work_dir, store_mode) as system:
        ids = load(system, blobs)
        verify_anonymized(system, blobs[0], ids[0])
        result = timed_phases(system, ids)
        held = system.count_instances()
    result["instances_held_after"] = held
    return result


def detect_store_mode() -> str:
    """``bulk`` when the node routes ``/anonymization/anonymize`` (GET on a POST-only route: 405), else per-image."""
    with tempfile.TemporaryDirectory(prefix="bench-anon-probe-") as tmp, harness.running_node(Path(tmp)) as node:
        status = node.session().get(node.api + "/anonymization/anonymize").status_code
    return "bulk" if status == 405 else "per-image"


def profile_ours(blobs: list[bytes], work_dir: Path, prefix: Path, store_mode: str) -> None:
    """One more (untimed) run of our node with py-spy attached during each phase; print the top costs."""
    with started(OURS, work_dir, store_mode) as system:
        ids = load(system, blobs)

        def spy(phase: str) -> Any:
            return harness.py_spy(system.pid, _profile_path(prefix, phase))

        result = timed_phases(system, ids, spy)
    for phase in PHASES:
        print(f"\n=== profiled phase {phase!r} (py-spy attached): {result[phase]['inst_per_s']:.1f} inst/s ===")
        path = _profile_path(prefix, phase)
        if path.exists():
            print_profile(path, len(ids))


def _profile_path(prefix: Path, phase: str) -> Path:
    return prefix.with_name(f"{prefix.name}.{phase.replace(' ', '-').replace('+', '-')}.raw")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="instances, all in one study (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system once a round (default 3)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each image (default 512)")
    parser.add_argument("--store-mode", choices=("auto", "bulk", "per-image"), default="auto",
                        help="how our node anonymizes and stores (default auto: bulk if the node has it)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--profile", type=Path, help="also profile our node with py-spy: <prefix>.<phase>.raw")
    args = parser.parse_args(argv)
    if args.profile and not shutil.which("py-spy"):
        parser.error("--profile needs py-spy on PATH: pip install py-spy")
    harness.exit_on_sigterm()
    machine = harness.machine_info()  # before any work: the load the machine had without us

    store_mode = detect_store_mode() if args.store_mode == "auto" else args.store_mode
    ours_store = {
        "bulk": "POST /slicebox/api/anonymization/anonymize (one job, followed with a long poll)",
        "per-image": f"PUT /slicebox/api/images/{{id}}/anonymize per image, {CLIENTS} concurrent clients",
    }[store_mode]
    print(f"our anonymize-and-store: {store_mode}: {ours_store}", flush=True)

    print(f"generating {args.count} CT instances of {args.size}x{args.size} in one study ...", flush=True)
    t0 = time.perf_counter()
    blobs = generate(args.count, args.size, 1)
    total_bytes = sum(len(b) for b in blobs)
    print(f"  {total_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-anonymize-") as tmp:
        for r in range(args.rounds):
            order = [OURS, ORTHANC] if r % 2 == 0 else [ORTHANC, OURS]
            result: dict[str, Any] = {"round": r + 1, "order": order}
            for name in order:
                work_dir = Path(tmp) / f"round{r + 1}-{name}"
                result[name] = run_one(name, blobs, work_dir, store_mode)
                shutil.rmtree(work_dir, ignore_errors=True)
                held = result[name]["instances_held_after"]
                if held != expected_count(name, args.count):
                    raise RuntimeError(f"{name} holds {held} instances after the round")
                cells = "  ".join(f"{phase}: {result[name][phase]['inst_per_s']:6.1f} inst/s" for phase in PHASES)
                print(f"round {r + 1} {name:>12}: {cells}", flush=True)
            rounds.append(result)
        if args.profile:
            profile_ours(blobs, Path(tmp) / "profile", args.profile, store_mode)

    medians: dict[str, dict[str, dict[str, float]]] = {}
    for name in (OURS, ORTHANC):
        medians[name] = {}
        for phase in PHASES:
            keys = rounds[0][name][phase].keys()
            medians[name][phase] = {k: statistics.median(r[name][phase][k] for r in rounds) for k in keys}
    ratios = {phase: medians[OURS][phase]["inst_per_s"] / medians[ORTHANC][phase]["inst_per_s"] for phase in PHASES}
    per_round = {
        phase: [r[OURS][phase]["inst_per_s"] / r[ORTHANC][phase]["inst_per_s"] for r in rounds] for phase in PHASES
    }
    machine["loadavg_end"] = harness.loadavg()
    report = {
        "benchmark": "anonymize",
        "params": {
            "count": args.count,
            "rounds": args.rounds,
            "size": args.size,
            "clients_concurrent": CLIENTS,
            "store_mode": store_mode,
            "total_mb": total_bytes / 1e6,
            "mean_instance_bytes": total_bytes / len(blobs),
        },
        "requests": {
            OURS: {
                PHASES[0]: "POST /slicebox/api/images/{id}/anonymized {}",
                PHASES[2]: ours_store,
            },
            ORTHANC: {PHASES[0]: "POST /instances/{id}/anonymize {}", PHASES[2]: "POST /studies/{id}/anonymize {}"},
        },
        "machine": machine,
        "rounds": rounds,
        "median": medians,
        "ratio_ours_over_orthanc": ratios,
        "ratio_per_round": per_round,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    targets = {PHASES[0]: 1.0, PHASES[1]: 1.0, PHASES[2]: 2.0}
    print(f"\nour anonymize-and-store: {ours_store}")
    print(
        "| date (UTC) | phase | rounds | ours inst/s | ours MB/s | Orthanc inst/s | Orthanc MB/s | ours/Orthanc "
        "| per round | target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for phase in PHASES:
        ours, theirs = medians[OURS][phase], medians[ORTHANC][phase]
        mb = (f"{ours['mb_per_s']:.1f}", f"{theirs['mb_per_s']:.1f}") if "mb_per_s" in ours else ("–", "–")
        label = phase if phase != PHASES[2] else f"{phase} ({store_mode})"
        print(
            f"| {machine['date_utc']} | {label} | {args.rounds} | {ours['inst_per_s']:.1f} | {mb[0]} "
            f"| {theirs['inst_per_s']:.1f} | {mb[1]} | **{ratios[phase]:.2f}** "
            f"| {', '.join(f'{x:.2f}' for x in per_round[phase])} | ≥ {targets[phase]:.1f} |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
