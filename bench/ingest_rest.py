"""REST ingest throughput: our node (``POST /slicebox/api/images``) against Orthanc (``POST /instances``).

Generates ``--count`` CT instances of ``--size``×``--size`` 16-bit pixels (≈0.5 MB at 512) in memory
before any timing, then, in each of ``--rounds`` rounds, posts them one after the other over ONE
keep-alive ``requests.Session`` into a freshly started, empty instance of each system. The order
alternates between rounds (A then B, then B then A, ...). Both systems run their default durability
settings: our node flushes every file once (``fsync`` after it is named; README "Durability") and
commits its image rows (SQLite WAL) with ``synchronous=NORMAL``, before answering; Orthanc fsyncs every
stored file (``SyncStorageArea``, default true) and keeps its SQLite index in WAL with
``SYNCHRONOUS=NORMAL`` (commits not fsynced).

    python bench/ingest_rest.py [--count 1000] [--rounds 3] [--size 512] [--json out.json]
                                [--profile out.txt]

``--profile`` adds one extra, untimed run of our node under ``py-spy record`` (needs ``pip install
py-spy``) and writes the collapsed stacks to that file and a summary of the top costs to stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import requests
from pydicom.uid import generate_uid

OURS = "slicebox_lab"
ORTHANC = "Orthanc"


@dataclass
class Target:
    """A running system ready for uploads: one session, one URL, how to check what it stored."""

    name: str
    session: requests.Session
    post_url: str
    ok_status: int
    pid: int
    count_instances: Callable[[], int]
    new_session: Callable[[], requests.Session]

    def post(self, data: bytes, session: requests.Session | None = None) -> None:
        r = (session or self.session).post(self.post_url, data=data, headers=harness.DICOM)
        if r.status_code != self.ok_status:
            raise RuntimeError(f"{self.name}: HTTP {r.status_code} {r.text[:500]}")
        r.json()  # both answer a small JSON document: read it as a client would


@contextmanager
def started(name: str, work_dir: Path, node_args: Sequence[str] = ()) -> Iterator[Target]:
    if name == OURS:
        with harness.running_node(work_dir, *node_args) as node:
            s = node.session()

            def count_ours() -> int:
                return int(s.get(node.api + "/system/information").json()["counts"]["images"])

            yield Target(OURS, s, node.api + "/images", 201, node.process.pid, count_ours, node.session)
    else:
        with harness.running_orthanc(work_dir) as orthanc:
            s = orthanc.session()

            def count_orthanc() -> int:
                return int(s.get(orthanc.url + "/statistics").json()["CountInstances"])

            yield Target(
                ORTHANC, s, orthanc.url + "/instances", 200, orthanc.process.pid, count_orthanc, orthanc.session
            )


def generate(count: int, size: int, patients: int, name: str = "Ingest", prefix: str = "ING") -> list[bytes]:
    """count CT instances in `patients` patients (one study, one series each), distinct pixels and UIDs; the
    patients are named ``<name>NN^Bench`` with IDs ``<prefix>NN``."""
    patients = max(1, min(patients, count))
    # one study, one series and one frame of reference per patient: a CT series shares its FrameOfReferenceUID
    # (a new one per image, as until 2026-12-08, made every ingest update its series row)
    uids = [(generate_uid(), generate_uid(), generate_uid()) for _ in range(patients)]
    blobs: list[bytes] = []
    for i in range(count):
        p = i * patients // count
        study_uid, series_uid, frame_uid = uids[p]
        blobs.append(
            harness.ct_bytes(
                PatientName=f"{name}{p:02d}^Bench",
                PatientID=f"{prefix}{p:02d}",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                FrameOfReferenceUID=frame_uid,
                SOPInstanceUID=generate_uid(),
                InstanceNumber=i + 1,
                rows=size,
                columns=size,
                seed=i + 1,
            )
        )
    return blobs


@functools.cache
def warm_up_instance() -> bytes:
    """One tiny image posted before the clock starts (by every client: the same instance, stored once):
    connection set-up and first-request costs."""
    data: bytes = harness.ct_bytes(PatientName="Warm^Up", PatientID="WARMUP", seed=0)
    return data


def timed_ingest(target: Target, blobs: list[bytes], clients: int = 1) -> float:
    """Seconds to post every blob: one client in order, or ``clients`` keep-alive clients at once, each
    posting its share one after the other (as several modalities sending to one node)."""
    target.post(warm_up_instance())
    if clients <= 1:
        t0 = time.perf_counter()
        for data in blobs:
            target.post(data)
        return time.perf_counter() - t0
    sessions = [target.new_session() for _ in range(clients)]
    for session in sessions:  # connections open before the clock starts (the same instance again: 200 or 201)
        session.post(target.post_url, data=warm_up_instance(), headers=harness.DICOM).raise_for_status()

    def send(k: int) -> None:
        for data in blobs[k::clients]:
            target.post(data, sessions[k])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(clients)))
    return time.perf_counter() - t0


def run_one(
    name: str, blobs: list[bytes], work_dir: Path, node_args: Sequence[str] = (), clients: int = 1
) -> dict[str, float]:
    total_bytes = sum(len(b) for b in blobs)
    with started(name, work_dir, node_args) as target:
        server_cpu, client_cpu = harness.tree_cpu_seconds(target.pid), time.process_time()
        seconds = timed_ingest(target, blobs, clients)
        server_cpu = harness.tree_cpu_seconds(target.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        stored = target.count_instances()
    if stored != len(blobs) + 1:  # the warm-up image is one instance however often it is posted
        raise RuntimeError(f"{name} holds {stored} instances, expected {len(blobs) + 1}")
    return {
        "seconds": seconds,
        "inst_per_s": len(blobs) / seconds,
        "mb_per_s": total_bytes / seconds / 1e6,
        # CPU of the server and every process it started (workers), and of this client, per image: on a
        # machine of N cores no system can take more than N / (its CPU + the client's) images a second
        "server_cpu_ms": server_cpu / len(blobs) * 1000,
        "client_cpu_ms": client_cpu / len(blobs) * 1000,
    }


def profile_ours(blobs: list[bytes], work_dir: Path, out: Path, node_args: Sequence[str] = ()) -> None:
    """One more (untimed) ingest into a fresh node while py-spy samples it; print the top costs."""
    with started(OURS, work_dir, node_args) as target:
        target.post(warm_up_instance())
        with harness.py_spy(target.pid, out):
            t0 = time.perf_counter()
            for data in blobs:
                target.post(data)
            seconds = time.perf_counter() - t0
    print(f"\nprofiled run (py-spy attached, not part of the results): {len(blobs) / seconds:.1f} inst/s")
    if out.exists():
        print_profile(out, len(blobs))


def _short(frame: str) -> str:
    """``function (path/to/module.py:123)`` → ``function (module.py:123)``."""
    name, sep, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if sep else frame


IDLE_LEAVES = ("EpollSelector.select", "_PollLikeSelector.select", "_worker (thread.py:81)")


def _group(thread: str) -> str:
    """``thread (123): slicebox_1`` → ``slicebox`` (the executor's workers pooled), ``MainThread``."""
    name = thread.rpartition(": ")[2]
    base, _, suffix = name.rpartition("_")
    return base if suffix.isdigit() and base else name


def print_profile(path: Path, images: int, rate: int = harness.PY_SPY_RATE, top: int = 30) -> None:
    """Where the node's threads spend their busy time, in ms per uploaded image, from py-spy's
    collapsed stacks (recorded with ``--idle``: samples waiting in epoll or for work are dropped
    here, samples blocked in a system call such as fsync are kept)."""
    scale = 1000 / rate / images  # samples → ms per image
    busy: Counter[str] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    leaf: Counter[tuple[str, str]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        if not frames or any(_short(frames[-1]).startswith(idle) for idle in IDLE_LEAVES):
            continue
        group, samples = _group(thread), int(count)
        busy[group] += samples
        for frame in {_short(f) for f in frames}:
            inclusive[(group, frame)] += samples
        leaf[(group, _short(frames[-1]))] += samples
    print("\nbusy time per image, by thread group:")
    for group, samples in busy.most_common():
        print(f"  {samples * scale:6.2f} ms  {group}")
    for group, _ in busy.most_common(3):
        for title, counter, limit in (("inclusive", inclusive, top), ("self (leaf)", leaf, 15)):
            print(f"\n{group}: top {title} frames, ms per image")
            rows = sorted(((k[1], v) for k, v in counter.items() if k[0] == group), key=lambda r: -r[1])
            for frame, samples in rows[:limit]:
                print(f"  {samples * scale:6.2f}  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="instances per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system once a round (default 3)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each image (default 512)")
    parser.add_argument("--patients", type=int, default=10, help="patients (= studies = series) (default 10)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent keep-alive clients (default 1)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--profile", type=Path, help="also profile our node with py-spy (collapsed stacks)")
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra argument for `jupyter slicebox`, for diagnostics only, e.g. --node-arg=--SliceboxApp.fsync=False",
    )
    args = parser.parse_args(argv)
    if args.profile and not shutil.which("py-spy"):
        parser.error("--profile needs py-spy on PATH: pip install py-spy")
    harness.exit_on_sigterm()
    machine = harness.machine_info()  # before any work: the load the machine had without us

    print(f"generating {args.count} CT instances of {args.size}x{args.size} ...", flush=True)
    t0 = time.perf_counter()
    blobs = generate(args.count, args.size, args.patients)
    total_bytes = sum(len(b) for b in blobs)
    print(f"  {total_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for r in range(args.rounds):
            order = [OURS, ORTHANC] if r % 2 == 0 else [ORTHANC, OURS]
            result: dict[str, Any] = {"round": r + 1, "order": order}
            for name in order:
                work_dir = Path(tmp) / f"round{r + 1}-{name}"
                result[name] = run_one(name, blobs, work_dir, args.node_arg, args.clients)
                shutil.rmtree(work_dir, ignore_errors=True)
                print(
                    f"round {r + 1} {name:>12}: {result[name]['seconds']:7.2f} s  "
                    f"{result[name]['inst_per_s']:7.1f} inst/s  {result[name]['mb_per_s']:6.1f} MB/s  "
                    f"CPU per image: server {result[name]['server_cpu_ms']:.2f} ms, "
                    f"client {result[name]['client_cpu_ms']:.2f} ms",
                    flush=True,
                )
            rounds.append(result)
        if args.profile:
            profile_ours(blobs, Path(tmp) / "profile", args.profile, args.node_arg)

    keys = ("seconds", "inst_per_s", "mb_per_s", "server_cpu_ms", "client_cpu_ms")
    medians = {name: {k: statistics.median(r[name][k] for r in rounds) for k in keys} for name in (OURS, ORTHANC)}
    ratio = medians[OURS]["inst_per_s"] / medians[ORTHANC]["inst_per_s"]
    machine["loadavg_end"] = harness.loadavg()
    report = {
        "benchmark": "ingest_rest",
        "params": {
            "count": args.count,
            "rounds": args.rounds,
            "size": args.size,
            "patients": args.patients,
            "clients": args.clients,
            "node_args": args.node_arg,
            "total_mb": total_bytes / 1e6,
            "mean_instance_bytes": total_bytes / len(blobs),
        },
        "durability": {
            OURS: "defaults: one fsync per file after it is named (SliceboxApp.fsync=True); image rows in SQLite WAL, "
            "synchronous=NORMAL (a durable blob without a row is re-indexed at start)",
            ORTHANC: "defaults: SyncStorageArea=true (fsync per file); SQLite index WAL, SYNCHRONOUS=NORMAL",
        },
        "machine": machine,
        "rounds": rounds,
        "median": medians,
        "ratio_ours_over_orthanc": ratio,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    if args.node_arg:
        print(f"DIAGNOSTIC run, not default settings: jupyter slicebox {' '.join(args.node_arg)}")
    print(
        "| date (UTC) | instances | MB | rounds | ours inst/s | ours MB/s | Orthanc inst/s | Orthanc MB/s "
        "| ours/Orthanc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {machine['date_utc']} | {args.count} × {args.size}², {args.clients} client(s) "
        f"| {total_bytes / 1e6:.0f} | {args.rounds} "
        f"| {medians[OURS]['inst_per_s']:.1f} | {medians[OURS]['mb_per_s']:.1f} "
        f"| {medians[ORTHANC]['inst_per_s']:.1f} | {medians[ORTHANC]['mb_per_s']:.1f} | {ratio:.2f} |"
    )
    print(
        f"\nCPU per image (medians; server = the server process and its workers): ours "
        f"{medians[OURS]['server_cpu_ms']:.2f} ms, Orthanc {medians[ORTHANC]['server_cpu_ms']:.2f} ms; the client "
        f"{medians[OURS]['client_cpu_ms']:.2f} / {medians[ORTHANC]['client_cpu_ms']:.2f} ms."
        + (
            f" With every core busy (several clients), ours/Orthanc could be at most {_cpu_bound(medians):.2f}"
            if args.clients > 1
            else " (One client waits for each answer: its rate is set by latency, not by CPU.)"
        )
    )
    return 0


def _cpu_bound(medians: dict[str, dict[str, float]]) -> float:
    """The ratio both systems would reach if each used every core fully: the inverse ratio of the CPU one
    image costs the machine (server and client)."""
    ours = medians[OURS]["server_cpu_ms"] + medians[OURS]["client_cpu_ms"]
    theirs = medians[ORTHANC]["server_cpu_ms"] + medians[ORTHANC]["client_cpu_ms"]
    return theirs / ours if ours else float("nan")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
