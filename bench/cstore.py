"""DICOM C-STORE throughput: dcmtk ``storescu`` into our node's SCP and into Orthanc's DICOM server.

Generates ``--count`` CT instances of ``--size``×``--size`` 16-bit pixels (≈0.5 MB at 512) in
``--patients`` patients into a temporary folder before any timing, split into ``--parallel`` (4)
sub-folders of consecutive instances. In each of ``--rounds`` rounds, for each system (the order
alternates between rounds) and each mode, a fresh, empty instance is started, one tiny warm-up
instance is sent over its own association, and then the clock runs:

* ``1 assoc``: ONE ``storescu`` process sends all files over ONE association;
* ``N assoc``: N ``storescu`` processes, started together, each sends one sub-folder over its own
  association; the time is until the last one has finished.

Afterwards each system must hold every instance in its index (ours: ``/slicebox/api/system/information``
counts; Orthanc: ``/statistics`` ``CountInstances``). ``storescu`` proposes exactly one presentation
context (CT Image Storage, Explicit VR Little Endian, from a generated ``-xf`` profile), so that the
negotiation is the same for both systems; it and both servers run with ``TCP_NODELAY=1`` (our SCP
also sets it on every socket). While the clock runs, the resident memory (``VmRSS``, summed over the
server process and its children) is sampled every 0.2 s; the peak is reported.

Our node: ``jupyter slicebox`` (fresh data folder, default durability: each file flushed once after it
is named, image rows in SQLite WAL ``synchronous=NORMAL``; README "Durability") with one SCP created
over REST (``POST /slicebox/api/scps``, host 127.0.0.1, port 0). Orthanc: a private instance
(``bench/harness.py``) with its DICOM server enabled on a free port, its own AE title,
``DicomCheckCalledAet: true`` (ours checks the called AE title too), other settings at their defaults
(``SyncStorageArea`` true).

    python bench/cstore.py [--count 1000] [--rounds 3] [--size 512] [--parallel 4] [--json out.json]
                           [--profile out.txt [--profile-mode "N assoc"]]

``--profile`` adds one extra, untimed run of our node (sequential by default) under ``py-spy record``
and prints the top costs per image (as ``bench/ingest_rest.py --profile`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from ingest_rest import generate as generate_series
from ingest_rest import print_profile

OURS = "slicebox_lab"
ORTHANC = "Orthanc"
STORESCU = os.environ.get("STORESCU", "/usr/bin/storescu")  # absolute: a pip package shadows it on PATH
CALLING_AET = "BENCHSCU"
OURS_AET = "SLICEBOX"
ORTHANC_AET = "ORTHANC"
MODES = ("1 assoc", "N assoc")
RSS_INTERVAL = 0.2

#: storescu's association profile: one presentation context, CT Image Storage in Explicit VR LE
STORESCU_CFG = """\
[[TransferSyntaxes]]
[ExplicitLE]
TransferSyntax1 = LittleEndianExplicit

[[PresentationContexts]]
[CTExplicit]
PresentationContext1 = CTImageStorage\\ExplicitLE

[[Profiles]]
[Bench]
PresentationContexts = CTExplicit
"""


# ---------------------------------------------------------------------------------------------------
# resident memory


def _rss_kb(pid: int) -> int:
    """VmRSS of pid and all its descendants, in kB (0 for processes that are gone)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread; ``peak_mb`` (MiB)."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(_rss_kb(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(_rss_kb(self.pid))

    @property
    def peak_mb(self) -> float:
        return max(self.samples, default=0) / 1024

    @property
    def start_mb(self) -> float:
        return (self.samples[0] if self.samples else 0) / 1024


# ---------------------------------------------------------------------------------------------------
# the two systems


@dataclass
class Target:
    """A running system with a listening DICOM server."""

    name: str
    ae_title: str
    port: int
    pid: int
    count_instances: Callable[[], int]


@contextmanager
def started(name: str, work_dir: Path) -> Iterator[Target]:
    if name == OURS:
        with harness.running_node(work_dir) as node:
            s = node.session()
            try:
                port = _create_scp(s, node.api)
            except RuntimeError as error:
                raise RuntimeError(f"{error}\nnode log: {node.log_path.read_text()[-3000:]}") from None

            def count_ours() -> int:
                return int(s.get(node.api + "/system/information").json()["counts"]["images"])

            yield Target(OURS, OURS_AET, port, node.process.pid, count_ours)
    else:
        port = harness.free_port()
        overrides = {
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AET,
            "DicomPort": port,
            "DicomCheckCalledAet": True,
        }
        with harness.running_orthanc(work_dir, **overrides) as orthanc:
            s = orthanc.session()

            def count_orthanc() -> int:
                return int(s.get(orthanc.url + "/statistics").json()["CountInstances"])

            _wait_for_port(port, orthanc.process)
            yield Target(ORTHANC, ORTHANC_AET, port, orthanc.process.pid, count_orthanc)


def _create_scp(s: Any, api: str, timeout: float = 30) -> int:
    """POST /slicebox/api/scps (port 0) → the port listened on; retried while the node's services
    are still starting (they start after the server answers)."""
    body = {"name": "bench", "ae_title": OURS_AET, "port": 0, "host": "127.0.0.1"}
    deadline = time.monotonic() + timeout
    while True:
        r = s.post(api + "/scps", json=body)
        if r.status_code == 201:
            return int(r.json()["port"])
        if "not running" not in r.text or time.monotonic() > deadline:
            raise RuntimeError(f"creating the SCP: HTTP {r.status_code} {r.text[:500]}")
        time.sleep(0.1)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# ---------------------------------------------------------------------------------------------------
# storescu


def storescu(target: Target, cfg: Path, inputs: list[Path], log_path: Path) -> subprocess.Popen[bytes]:
    """One storescu process: one association, every file below `inputs` (directories are scanned)."""
    cmd = [
        STORESCU,
        "-xf", str(cfg), "Bench",
        "-aet", CALLING_AET,
        "-aec", target.ae_title,
        "+sd", "+r",
        "127.0.0.1", str(target.port),
        *map(str, inputs),
    ]  # fmt: skip
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
    finally:
        log.close()


def send(target: Target, cfg: Path, groups: list[list[Path]], log_path: Path) -> float:
    """Start one storescu per group together, wait for all; seconds from start to the last exit."""
    t0 = time.perf_counter()
    procs = [storescu(target, cfg, g, log_path) for g in groups]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - t0
    if any(codes):
        raise RuntimeError(f"{target.name}: storescu exit codes {codes}: {log_path.read_text()[-2000:]}")
    return seconds


def run_one(name: str, mode: str, data: Path, parts: list[Path], cfg: Path, work_dir: Path) -> dict[str, float]:
    count = sum(1 for p in parts for _ in p.iterdir())
    total_bytes = sum(f.stat().st_size for p in parts for f in p.iterdir())
    groups = [[data / "parts"]] if mode == MODES[0] else [[p] for p in parts]
    log_path = work_dir / "storescu.log"
    with started(name, work_dir) as target:
        send(target, cfg, [[data / "warmup"]], log_path)
        cpu0 = harness.tree_cpu_seconds(target.pid)
        with RssSampler(target.pid) as rss:
            seconds = send(target, cfg, groups, log_path)
        cpu = harness.tree_cpu_seconds(target.pid) - cpu0
        stored = target.count_instances()
    if stored != count + 1:
        raise RuntimeError(f"{name} ({mode}) holds {stored} instances, expected {count + 1}")
    return {
        "seconds": seconds,
        "inst_per_s": count / seconds,
        "mb_per_s": total_bytes / seconds / 1e6,
        "rss_start_mb": rss.start_mb,
        "rss_peak_mb": rss.peak_mb,
        "server_cpu_ms_per_inst": cpu * 1000 / count,
        "associations": len(groups),
    }


def generate(data: Path, count: int, size: int, patients: int, parallel: int) -> list[Path]:
    """Write the instances to data/parts/partK/NNNNN.dcm (consecutive instances per part), and one
    tiny warm-up instance to data/warmup; returns the part folders.  The instances are ``ingest_rest.generate``'s
    (one study, series and frame of reference per patient)."""
    parallel = max(1, min(parallel, count))
    parts = [data / "parts" / f"part{k}" for k in range(parallel)]
    for part in parts:
        part.mkdir(parents=True)
    for i, blob in enumerate(generate_series(count, size, patients, "Store", "CST")):
        (parts[i * parallel // count] / f"{i:05d}.dcm").write_bytes(blob)
    (data / "warmup").mkdir()
    (data / "warmup" / "warmup.dcm").write_bytes(harness.ct_bytes(PatientName="Warm^Up", PatientID="WARMUP"))
    return parts


# ---------------------------------------------------------------------------------------------------
# profile


def profile_ours(data: Path, parts: list[Path], cfg: Path, work_dir: Path, out: Path, mode: str) -> None:
    """One more run (`mode`) into a fresh node while py-spy samples it; print the top costs."""
    count = sum(1 for p in parts for _ in p.iterdir())
    groups = [[data / "parts"]] if mode == MODES[0] else [[p] for p in parts]
    log_path = work_dir / "storescu.log"
    with started(OURS, work_dir) as target:
        send(target, cfg, [[data / "warmup"]], log_path)
        with harness.py_spy(target.pid, out):
            seconds = send(target, cfg, groups, log_path)
    print(f"\nprofiled {mode} run (py-spy attached, not part of the results): {count / seconds:.1f} inst/s")
    if out.exists():
        print_profile(out, count)


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="instances per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system and mode once a round (default 3)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each image (default 512)")
    parser.add_argument("--patients", type=int, default=10, help="patients (= studies = series) (default 10)")
    parser.add_argument("--parallel", type=int, default=4, help="associations of the parallel mode (default 4)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--profile", type=Path, help="also profile one run of our node with py-spy (raw stacks)")
    parser.add_argument(
        "--profile-mode", choices=MODES, default=MODES[0], help="the run --profile profiles (default '1 assoc')"
    )
    args = parser.parse_args(argv)
    if not os.access(STORESCU, os.X_OK):
        parser.error(f"{STORESCU} not found: apt-get install dcmtk (or STORESCU=/path/to/storescu)")
    if args.profile and not shutil.which("py-spy"):
        parser.error("--profile needs py-spy on PATH: pip install py-spy")
    harness.exit_on_sigterm()
    machine = harness.machine_info()  # before any work: the load the machine had without us
    machine["storescu"] = subprocess.run([STORESCU, "--version"], capture_output=True, text=True).stdout.split("\n")[0]

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cstore-") as tmp:
        data = Path(tmp) / "data"
        print(f"generating {args.count} CT instances of {args.size}x{args.size} into {data} ...", flush=True)
        t0 = time.perf_counter()
        parts = generate(data, args.count, args.size, args.patients, args.parallel)
        total_bytes = sum(f.stat().st_size for p in parts for f in p.iterdir())
        print(f"  {total_bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
        cfg = Path(tmp) / "storescu.cfg"
        cfg.write_text(STORESCU_CFG)
        for r in range(args.rounds):
            order = [OURS, ORTHANC] if r % 2 == 0 else [ORTHANC, OURS]
            result: dict[str, Any] = {"round": r + 1, "order": order}
            for mode in MODES:
                result[mode] = {}
                for name in order:
                    work_dir = Path(tmp) / f"round{r + 1}-{mode.replace(' ', '')}-{name}"
                    res = run_one(name, mode, data, parts, cfg, work_dir)
                    result[mode][name] = res
                    shutil.rmtree(work_dir, ignore_errors=True)
                    print(
                        f"round {r + 1} {mode} ×{res['associations']} {name:>12}: {res['seconds']:7.2f} s  "
                        f"{res['inst_per_s']:7.1f} inst/s  {res['mb_per_s']:6.1f} MB/s  "
                        f"RSS {res['rss_start_mb']:6.0f} → peak {res['rss_peak_mb']:6.0f} MiB  "
                        f"server CPU {res['server_cpu_ms_per_inst']:5.2f} ms/inst",
                        flush=True,
                    )
            rounds.append(result)
        if args.profile:
            profile_ours(data, parts, cfg, Path(tmp) / "profile", args.profile, args.profile_mode)

    keys = ("seconds", "inst_per_s", "mb_per_s", "rss_peak_mb")
    medians = {
        mode: {name: {k: statistics.median(r[mode][name][k] for r in rounds) for k in keys} for name in (OURS, ORTHANC)}
        for mode in MODES
    }
    peak = {
        mode: {name: max(r[mode][name]["rss_peak_mb"] for r in rounds) for name in (OURS, ORTHANC)} for mode in MODES
    }
    ratios = {mode: medians[mode][OURS]["inst_per_s"] / medians[mode][ORTHANC]["inst_per_s"] for mode in MODES}
    per_round = {mode: [r[mode][OURS]["inst_per_s"] / r[mode][ORTHANC]["inst_per_s"] for r in rounds] for mode in MODES}
    machine["loadavg_end"] = harness.loadavg()
    report = {
        "benchmark": "cstore",
        "params": {
            "count": args.count,
            "rounds": args.rounds,
            "size": args.size,
            "patients": args.patients,
            "parallel": args.parallel,
            "total_mb": total_bytes / 1e6,
            "mean_instance_bytes": total_bytes / args.count,
            "storescu_profile": STORESCU_CFG,
        },
        "machine": machine,
        "rounds": rounds,
        "median": medians,
        "peak_rss_mb": peak,
        "ratio_ours_over_orthanc": ratios,
        "ratio_per_round": per_round,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(
        "| date (UTC) | associations | rounds | ours inst/s | ours MB/s | Orthanc inst/s | Orthanc MB/s "
        "| ours/Orthanc | per round | ours peak RSS MiB | Orthanc peak RSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in MODES:
        m = medians[mode]
        n = 1 if mode == MODES[0] else args.parallel
        print(
            f"| {machine['date_utc']} | {n} | {args.rounds} "
            f"| {m[OURS]['inst_per_s']:.1f} | {m[OURS]['mb_per_s']:.1f} "
            f"| {m[ORTHANC]['inst_per_s']:.1f} | {m[ORTHANC]['mb_per_s']:.1f} | **{ratios[mode]:.2f}** "
            f"| {', '.join(f'{x:.2f}' for x in per_round[mode])} "
            f"| {peak[mode][OURS]:.0f} | {peak[mode][ORTHANC]:.0f} |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
