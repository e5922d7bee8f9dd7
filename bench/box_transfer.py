"""Node-to-node transfer: our box (A → B, anonymized with the basic profile) against Orthanc's peers
(A ``POST /peers/b/store`` → B, no anonymization).

Generates ``--count`` CT instances of ``--size``×``--size`` 16-bit pixels (≈0.5 MB at 512) in memory
before any timing. Each round starts two fresh, empty nodes of each system, uploads the images into
A (untimed), then times the transfer: for us from ``POST /boxes/{id}/send`` until A's outgoing
transaction is FINISHED (B confirmed every image durable: stored, fsynced and indexed); for Orthanc
the synchronous ``POST /peers/b/store`` of every instance (Orthanc B answered each C-STORE-like
``POST /instances``). Our box runs in ``--mode`` push (A pushes to B, which made the connection) or
poll (B polls A). The order of the systems alternates between rounds. Both run their default
durability settings (see ``bench/ingest_rest.py``); Orthanc with ``TCP_NODELAY=1`` and
``Accept-Encoding: identity`` on our client side.

    python bench/box_transfer.py [--count 1000] [--rounds 3] [--size 512] [--mode push|poll]
                                 [--json out.json] [--profile out.txt]

``--profile`` adds one extra, untimed transfer of ours with py-spy on both nodes, and prints where
each node's threads spend their busy time (ms per image).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import harness
import requests
from ingest_rest import generate, print_profile

OURS = "slicebox_lab"
ORTHANC = "Orthanc"
NODE_ARGS = ("--SliceboxApp.box_poll_interval=1.0",)


@contextmanager
def our_pair(work_dir: Path, mode: str) -> Iterator[tuple[harness.NodeProcess, harness.NodeProcess, int]]:
    """Nodes A and B connected by a box; yields (A, B, the box id on A)."""
    with ExitStack() as stack:
        a = stack.enter_context(harness.running_node(work_dir / "a", *NODE_ARGS))
        b = stack.enter_context(harness.running_node(work_dir / "b", *NODE_ARGS))
        polled, connecting = (b, a) if mode == "push" else (a, b)
        r = polled.session().post(polled.api + "/boxes/createconnection", json={"name": "partner"})
        r.raise_for_status()
        created = r.json()
        r = connecting.session().post(
            connecting.api + "/boxes/connect", json={"name": "partner", "url": created["base_url"]}
        )
        r.raise_for_status()
        box_on_a = r.json()["id"] if mode == "push" else created["id"]
        yield a, b, int(box_on_a)


def _upload_ours(node: harness.NodeProcess, blobs: list[bytes]) -> list[int]:
    s = node.session()
    ids = []
    for data in blobs:
        r = s.post(node.api + "/images", data=data, headers=harness.DICOM)
        r.raise_for_status()
        ids.append(int(r.json()["id"]))
    return ids


def _poll_delay(sent: int, total: int, elapsed: float) -> float:
    """Seconds until the next look at the transaction: a quarter of the time the rest should take, 20 ms to
    0.5 s. Every look is a request the sending node serves; polling every 20 ms throughout cost node A
    ≈ 2 ms of CPU per image (a fifth of its Python time), while Orthanc's synchronous peer store is not
    polled at all. Near the end the 20 ms resolution stays."""
    if sent <= 0:
        return 0.1
    remaining = (total - sent) * elapsed / sent
    return min(0.5, max(0.02, remaining / 4))


def _transfer_ours(a: harness.NodeProcess, box_id: int, ids: list[int]) -> float:
    s = a.session()
    t0 = time.perf_counter()
    r = s.post(f"{a.api}/boxes/{box_id}/send", json={"imageIds": ids})
    r.raise_for_status()
    transaction_id = r.json()["parameters"]["transaction_id"]
    deadline = time.monotonic() + 3600
    while True:
        transaction = s.get(f"{a.api}/boxes/outgoing/transactions/{transaction_id}").json()
        if transaction["status"] in ("FINISHED", "FAILED"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the box transfer did not finish: {transaction}")
        time.sleep(_poll_delay(int(transaction.get("sent_image_count") or 0), len(ids), time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    if transaction["status"] != "FINISHED" or transaction["sent_image_count"] != len(ids):
        raise RuntimeError(f"the box transfer failed: {transaction}")
    return seconds


def _count_ours(node: harness.NodeProcess) -> int:
    return int(node.session().get(node.api + "/system/information").json()["counts"]["images"])


def run_ours(blobs: list[bytes], work_dir: Path, mode: str) -> float:
    with our_pair(work_dir, mode) as (a, b, box_id):
        ids = _upload_ours(a, blobs)
        seconds = _transfer_ours(a, box_id, ids)
        stored = _count_ours(b)
    if stored != len(blobs):
        raise RuntimeError(f"our node B holds {stored} images, expected {len(blobs)}")
    return seconds


def _post_orthanc(s: requests.Session, url: str, data: bytes) -> str:
    """Store one instance in an Orthanc (untimed loading); its Orthanc id."""
    r = s.post(url + "/instances", data=data, headers=harness.DICOM)
    r.raise_for_status()
    return str(r.json()["ID"])


def run_orthanc(blobs: list[bytes], work_dir: Path) -> float:
    with harness.running_orthanc(work_dir / "b") as b:
        peers = {"b": {"Url": b.url + "/"}}
        with harness.running_orthanc(work_dir / "a", OrthancPeers=peers) as a:
            s = a.session()
            ids = [_post_orthanc(s, a.url, data) for data in blobs]
            t0 = time.perf_counter()
            r = s.post(a.url + "/peers/b/store", json={"Resources": ids, "Synchronous": True}, timeout=3600)
            seconds = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"Orthanc peers/store: HTTP {r.status_code} {r.text[:500]}")
            stored = int(b.session().get(b.url + "/statistics").json()["CountInstances"])
    if stored != len(blobs):
        raise RuntimeError(f"Orthanc B holds {stored} instances, expected {len(blobs)}")
    return seconds


def profile_ours(blobs: list[bytes], work_dir: Path, out: Path, mode: str) -> None:
    """One more (untimed) transfer while py-spy samples both nodes; print the top costs of each."""
    with our_pair(work_dir, mode) as (a, b, box_id):
        ids = _upload_ours(a, blobs)
        out_a, out_b = out.with_suffix(".a" + out.suffix), out.with_suffix(".b" + out.suffix)
        with harness.py_spy(a.process.pid, out_a), harness.py_spy(b.process.pid, out_b):
            seconds = _transfer_ours(a, box_id, ids)
    print(f"\nprofiled run (py-spy attached, not part of the results): {len(blobs) / seconds:.1f} images/s")
    for name, path in (("A (sender)", out_a), ("B (receiver)", out_b)):
        if path.exists():
            print(f"\n===== node {name}: {path}")
            print_profile(path, len(blobs), top=25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="instances per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system once a round (default 3)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each image (default 512)")
    parser.add_argument("--patients", type=int, default=10, help="patients (= studies = series) (default 10)")
    parser.add_argument("--mode", choices=("push", "poll"), default="push", help="our box direction (default push)")
    parser.add_argument("--only", choices=(OURS, ORTHANC), help="run one system only (diagnostics)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--profile", type=Path, help="also profile our nodes with py-spy (collapsed stacks)")
    args = parser.parse_args(argv)
    if args.profile and not shutil.which("py-spy"):
        parser.error("--profile needs py-spy on PATH")
    harness.exit_on_sigterm()
    machine = harness.machine_info()

    print(f"generating {args.count} CT instances of {args.size}x{args.size} ...", flush=True)
    blobs = generate(args.count, args.size, args.patients)
    total_bytes = sum(len(b) for b in blobs)
    print(f"  {total_bytes / 1e6:.1f} MB", flush=True)

    systems = [args.only] if args.only else [OURS, ORTHANC]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-box-") as tmp:
        for r in range(args.rounds):
            order = systems if r % 2 == 0 else systems[::-1]
            result: dict[str, Any] = {"round": r + 1, "order": order}
            for name in order:
                work_dir = Path(tmp) / f"round{r + 1}-{name}"
                seconds = run_ours(blobs, work_dir, args.mode) if name == OURS else run_orthanc(blobs, work_dir)
                shutil.rmtree(work_dir, ignore_errors=True)
                result[name] = {
                    "seconds": seconds,
                    "inst_per_s": len(blobs) / seconds,
                    "mb_per_s": total_bytes / seconds / 1e6,
                    "ms_per_image": 1000 * seconds / len(blobs),
                }
                print(
                    f"round {r + 1} {name:>12}: {seconds:7.2f} s  {result[name]['inst_per_s']:7.1f} inst/s  "
                    f"{result[name]['mb_per_s']:6.1f} MB/s  {result[name]['ms_per_image']:6.2f} ms/image",
                    flush=True,
                )
            rounds.append(result)
        if args.profile:
            profile_ours(blobs, Path(tmp) / "profile", args.profile, args.mode)

    keys = ("seconds", "inst_per_s", "mb_per_s", "ms_per_image")
    medians = {name: {k: statistics.median(r[name][k] for r in rounds) for k in keys} for name in systems}
    ratio = medians[OURS]["mb_per_s"] / medians[ORTHANC]["mb_per_s"] if len(systems) == 2 else None
    machine["loadavg_end"] = harness.loadavg()
    report = {
        "benchmark": "box_transfer",
        "params": {
            "count": args.count,
            "rounds": args.rounds,
            "size": args.size,
            "patients": args.patients,
            "mode": args.mode,
            "total_mb": total_bytes / 1e6,
        },
        "conditions": {
            OURS: "box A→B, basic-profile anonymization on A, deflate level 1, SHA-256 verified, "
            "FINISHED when B has every image durable; default durability (fsync, SQLite WAL FULL)",
            ORTHANC: "POST /peers/b/store (synchronous, no anonymization), default durability, TCP_NODELAY=1",
        },
        "machine": machine,
        "rounds": rounds,
        "median": medians,
        "ratio_ours_over_orthanc": ratio,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    if ratio is not None:
        print(
            "| date (UTC) | instances | MB | mode | rounds | ours MB/s | ours ms/image | Orthanc MB/s | ours/Orthanc |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print(
            f"| {machine['date_utc']} | {args.count} × {args.size}² | {total_bytes / 1e6:.0f} | {args.mode} "
            f"| {args.rounds} | {medians[OURS]['mb_per_s']:.1f} | {medians[OURS]['ms_per_image']:.1f} "
            f"| {medians[ORTHANC]['mb_per_s']:.1f} | {ratio:.2f} |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
