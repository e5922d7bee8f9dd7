"""Scale: ingest tiny instances in steps up to 200,000 and time ingest and queries at each step.

Targets: our node on SQLite, our node on PostgreSQL (a throw-away cluster with default durability),
and Orthanc (its SQLite index). Each step posts ``--step-size`` new 8×8 CT instances (20 per series,
5 series per study, 2 studies per patient) with ``--clients`` threads, then times, ``--repeat`` times
each: a patient wildcard query, a page of the study listing, and the metadata of one study.

    python bench/scale.py --steps 1 --step-size 200 --targets sqlite          # a quick smoke run
    python bench/scale.py --targets sqlite,postgresql,orthanc --out bench/results/scale.json
    python bench/scale.py --report bench/results/scale-*.json --plot bench/scale.png   # table + plot of runs
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from generators import ct_dataset  # noqa: E402

#: the hierarchy of the generated data
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 20, 5, 2
PER_STUDY = PER_SERIES * SERIES_PER_STUDY
PER_PATIENT = PER_STUDY * STUDIES_PER_PATIENT
UID_ROOT = "1.2.826.0.1.3680043.10.1149"
#: lower case on purpose (the match is case-insensitive); matches patients 10..19, 10 of them from step 1 on
WILDCARD = "scale00001*"
JSON_HEADERS = {"Content-Type": "application/json"}


def patient_name(p: int) -> str:
    return f"Scale{p:06d}^Test"


class Generator:
    """Part-10 bytes of instance k of the run: one template dataset, its identifying values changed."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.template = ct_dataset(rows=8, columns=8)
        self.lock = threading.Lock()

    def uids(self, k: int) -> tuple[str, str, str]:
        study, series = k // PER_STUDY, k // PER_SERIES
        return (f"{UID_ROOT}.{self.run}.1.{study}", f"{UID_ROOT}.{self.run}.2.{series}", f"{UID_ROOT}.{self.run}.3.{k}")

    def study_uid(self, study: int) -> str:
        return f"{UID_ROOT}.{self.run}.1.{study}"

    def instance(self, k: int) -> bytes:
        patient = k // PER_PATIENT
        study_uid, series_uid, sop_uid = self.uids(k)
        ds = self.template
        ds.PatientName = patient_name(patient)
        ds.PatientID = f"SP{patient:06d}"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SeriesNumber = (k // PER_SERIES) % SERIES_PER_STUDY + 1
        ds.InstanceNumber = k % PER_SERIES + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def batch(self, start: int, count: int) -> list[bytes]:
        return [self.instance(k) for k in range(start, start + count)]


# ---------------------------------------------------------------------------------------------------
# targets


@dataclass
class Target:
    """What a step needs of a system: where to post, and the three timed calls."""

    name: str
    make_session: Callable[[], requests.Session]
    post_url: str
    post_ok: int
    wildcard: Callable[[requests.Session], int]
    study_page: Callable[[requests.Session, int], int]
    study_metadata: Callable[[requests.Session, str], int]
    instances: Callable[[requests.Session], int]
    metadata_call: str = ""
    #: our node: the REST listing of the study's images as well (None: the system has no second call)
    study_images: Callable[[requests.Session, str], int] | None = None
    #: the server processes whose CPU time is counted (PostgreSQL: the node and the whole cluster)
    pids: Callable[[], list[int]] = list


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (gone processes count 0): work per instance, whatever the load."""
    total = 0.0
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def with_children(pid: int) -> list[int]:
    """``pid`` and its direct children (PostgreSQL: the postmaster and its backends)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError):
                continue
    return found


def _check(r: requests.Response, what: str) -> Any:
    if r.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


def node_target(name: str, node: harness.NodeProcess) -> Target:
    api = node.api
    base = node.url.rstrip("/")
    study_ids: dict[str, int] = {}

    def wildcard(s: requests.Session) -> int:
        body: dict[str, Any] = {"count": 10000, "query_properties": [
            {"property_name": "PatientName", "operator": "wildcard", "property_value": WILDCARD}]}  # fmt: skip
        return len(_check(s.post(f"{api}/metadata/patients/query", json=body), "patient query"))

    def study_page(s: requests.Session, start: int) -> int:
        body: dict[str, Any] = {"start_index": start, "count": 20}
        return len(_check(s.post(f"{api}/metadata/studies/query", json=body), "study page"))

    def dicomweb(s: requests.Session, uid: str) -> int:
        return len(_check(s.get(f"{base}/slicebox/dicom-web/studies/{uid}/metadata"), "WADO-RS metadata"))

    def rest(s: requests.Session, uid: str) -> int:
        if uid not in study_ids:
            body: dict[str, Any] = {"count": 1, "query_properties": [
                {"property_name": "StudyInstanceUID", "operator": "=", "property_value": uid}]}  # fmt: skip
            study_ids[uid] = _check(s.post(f"{api}/metadata/studies/query", json=body), "study lookup")[0]["id"]
        return len(_check(s.get(f"{api}/metadata/studies/{study_ids[uid]}/images"), "images of study"))

    def instances(s: requests.Session) -> int:
        return int(_check(s.get(f"{api}/system/information"), "information")["counts"]["images"])

    target = Target(name, node.session, f"{api}/images", 201, wildcard, study_page, dicomweb, instances)
    target.study_images = rest
    target.pids = lambda: [node.process.pid]

    def probe(s: requests.Session, uid: str) -> int:
        """WADO-RS when the node has it (the DICOMweb routes), else the REST images of the study."""
        if not target.metadata_call:
            r = s.get(f"{base}/slicebox/dicom-web/studies/{uid}/metadata")
            if r.status_code == 200:
                target.metadata_call = "GET /slicebox/dicom-web/studies/{uid}/metadata (WADO-RS)"
            else:
                target.metadata_call = "GET /slicebox/api/metadata/studies/{id}/images (REST; no WADO-RS yet)"
        return dicomweb(s, uid) if target.metadata_call.endswith("(WADO-RS)") else rest(s, uid)

    target.study_metadata = probe
    return target


def orthanc_target(orthanc: harness.OrthancProcess) -> Target:
    url = orthanc.url
    study_ids: dict[str, str] = {}

    def wildcard(s: requests.Session) -> int:
        body: dict[str, Any] = {"Level": "Patient", "Query": {"PatientName": WILDCARD}, "Expand": True}
        return len(_check(s.post(f"{url}/tools/find", json=body), "tools/find"))

    def study_page(s: requests.Session, start: int) -> int:
        params = {"expand": "", "since": str(start), "limit": "20"}
        return len(_check(s.get(f"{url}/studies", params=params), "studies"))

    def study_metadata(s: requests.Session, uid: str) -> int:
        if uid not in study_ids:
            found = _check(s.post(f"{url}/tools/lookup", data=uid), "tools/lookup")
            study_ids[uid] = next(f["ID"] for f in found if f["Type"] == "Study")
        return len(_check(s.get(f"{url}/studies/{study_ids[uid]}/instances"), "instances of study"))

    def instances(s: requests.Session) -> int:
        return int(_check(s.get(f"{url}/statistics"), "statistics")["CountInstances"])

    return Target(
        "orthanc", orthanc.session, f"{url}/instances", 200, wildcard, study_page, study_metadata, instances,
        metadata_call="GET /studies/{id}/instances (expanded MainDicomTags; no DICOMweb plugin)",
        pids=lambda: [orthanc.process.pid],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# PostgreSQL


@contextmanager
def running_postgresql(work_dir: Path) -> Iterator[tuple[str, int]]:
    """A throw-away PostgreSQL cluster with default durability (fsync, synchronous_commit on): URL, postmaster pid."""
    import pg  # tests/pg.py: finds Debian's server binaries

    bin_dir = pg._find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="slicebox-scale-pg-"))  # not under work_dir: 0700, root's
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    as_postgres = os.geteuid() == 0

    def run(*args: str) -> None:
        command = [str(bin_dir / args[0]), *args[1:]]
        if as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8")
    port = harness.free_port()
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets}"
    run("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start")
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        yield url, int((data / "postmaster.pid").read_text().split()[0])
    finally:
        try:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running_target(name: str, work_dir: Path) -> Iterator[Target]:
    if name == "sqlite":
        with harness.running_node(work_dir / "sqlite") as node:
            yield node_target("node-sqlite", node)
    elif name == "postgresql":
        with running_postgresql(work_dir) as (url, postmaster):
            with harness.running_node(work_dir / "postgresql", f"--SliceboxApp.database_url={url}") as node:
                target = node_target("node-postgresql", node)
                target.pids = lambda: [node.process.pid, *with_children(postmaster)]
                yield target
    elif name == "orthanc":
        with harness.running_orthanc(work_dir / "orthanc") as orthanc:
            yield orthanc_target(orthanc)
    else:
        raise SystemExit(f"unknown target {name!r}: use sqlite, postgresql, orthanc")


# ---------------------------------------------------------------------------------------------------
# one run


def ingest(target: Target, blobs: list[bytes], clients: int) -> float:
    """Post every blob with ``clients`` threads, each with its keep-alive session; seconds taken."""
    local = threading.local()

    def post(data: bytes) -> None:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = target.make_session()
        r = s.post(target.post_url, data=data, headers=harness.DICOM, timeout=300)
        if r.status_code != target.post_ok:
            raise RuntimeError(f"{target.name}: HTTP {r.status_code} {r.text[:300]}")

    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=clients)
    try:
        for future in [pool.submit(post, b) for b in blobs]:
            future.result()
    finally:  # on an error, ^C or SIGTERM: drop the uploads not yet started
        pool.shutdown(wait=True, cancel_futures=True)
    return time.perf_counter() - t0


def timed(call: Callable[[], int], repeat: int, expected: int | None = None) -> dict[str, float]:
    """Median and p90 of ``repeat`` calls in ms, after 3 untimed warm-ups; checks the answer's length."""
    for _ in range(3):
        call()
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = call()
        seconds.append(time.perf_counter() - t0)
        if expected is not None and n != expected:
            raise RuntimeError(f"expected {expected} results, got {n}")
    return {"median_ms": statistics.median(seconds) * 1000, "p90_ms": harness.percentile(seconds, 90) * 1000}


HEADER = (
    "| target | instances | ingest inst/s | server CPU ms/inst | wildcard ms | study page ms | study metadata ms "
    "| REST images of study ms | load avg |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def table_row(name: str, row: dict[str, Any]) -> str:
    rest = f"{row['study_images']['median_ms']:.1f}" if "study_images" in row else "–"
    cpu = f"{row['server_cpu_ms_per_instance']:.2f}" if "server_cpu_ms_per_instance" in row else "–"
    return (
        f"| {name} | {row['instances']:,} | {row['ingest_per_s']:.0f} | {cpu} | {row['wildcard']['median_ms']:.1f} "
        f"| {row['study_page']['median_ms']:.1f} | {row['study_metadata']['median_ms']:.1f} | {rest} "
        f"| {row['loadavg']} |"
    )


def run_target(
    name: str, args: argparse.Namespace, work_dir: Path, result: dict[str, Any], save: Callable[[], None]
) -> None:
    generator = Generator(run=str(int(time.time())))
    steps: list[dict[str, Any]] = []
    result["targets"][name] = {"steps": steps}
    with running_target(name, work_dir) as target:
        s = target.make_session()
        first_study = generator.study_uid(0)  # the study whose metadata is timed
        total = 0
        for step in range(1, args.steps + 1):
            blobs = generator.batch(total, args.step_size)
            pids = target.pids()
            cpu_before = cpu_seconds(pids)
            seconds = ingest(target, blobs, args.clients)
            cpu_ms = (cpu_seconds(pids) - cpu_before) * 1000 / len(blobs)
            total += len(blobs)
            held = target.instances(s)
            if held != total:
                raise RuntimeError(f"{target.name} holds {held} instances, expected {total}")
            patients = -(-total // PER_PATIENT)
            middle = -(-total // PER_STUDY) // 2  # the page in the middle of the study listing
            matching = sum(1 for p in range(patients) if patient_name(p).lower().startswith(WILDCARD[:-1]))
            page = min(20, -(-total // PER_STUDY) - middle)
            row = {
                "step": step,
                "instances": total,
                "ingest_per_s": len(blobs) / seconds,
                "server_cpu_ms_per_instance": cpu_ms,
                "wildcard": timed(lambda: target.wildcard(s), args.repeat, matching),
                "study_page": timed(lambda m=middle: target.study_page(s, m), args.repeat, page),  # type: ignore[misc]
                "study_metadata": timed(
                    lambda: target.study_metadata(s, first_study), args.repeat, min(PER_STUDY, total)
                ),
                "loadavg": harness.loadavg(),
            }
            if target.study_images is not None:
                row["study_images"] = timed(
                    lambda f=target.study_images: f(s, first_study),  # type: ignore[misc]
                    args.repeat,
                    min(PER_STUDY, total),
                )
            steps.append(row)
            result["targets"][name]["metadata_call"] = target.metadata_call
            save()
            print(table_row(target.name, row), flush=True)


# ---------------------------------------------------------------------------------------------------
# report


def _value(row: dict[str, Any], key: str) -> float:
    if key == "ingest_per_s":
        return float(row[key])
    if key == "loadavg":
        return float(row[key].split()[0])
    return float(row[key]["median_ms"])


def report(results: list[dict[str, Any]], plot: Path | None) -> None:
    """The markdown table of every target of ``results`` and, with ``plot``, a PNG of it."""
    targets = {name: data for r in results for name, data in r["targets"].items() if data["steps"]}
    print(HEADER)
    for name, data in targets.items():
        for row in data["steps"]:
            print(table_row(name, row))
    print()
    for name, data in targets.items():
        rows = data["steps"]
        ratio = rows[-1]["ingest_per_s"] / rows[0]["ingest_per_s"]
        print(f"* {name}: ingest at {rows[-1]['instances']:,} is {ratio:.0%} of the rate at {rows[0]['instances']:,}; "
              f"metadata call: {data.get('metadata_call', '')}")  # fmt: skip
    if plot is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    panels = (("ingest_per_s", "ingest rate of the step (inst/s)"), ("wildcard", "patient wildcard query (ms)"),
              ("study_page", "study listing page (ms)"), ("study_metadata", "metadata of one study (ms)"),
              ("loadavg", "machine: 1-minute load average (2 cores)"))  # fmt: skip
    colors = {name: f"C{i}" for i, name in enumerate(targets)}
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, data in targets.items():
            xs = [row["instances"] for row in data["steps"]]
            ys = [_value(row, key) for row in data["steps"]]
            ax.plot(xs, ys, marker="o", markersize=3, label=name, color=colors[name])
            if key == "study_metadata" and all("study_images" in row for row in data["steps"]):
                rest = [row["study_images"]["median_ms"] for row in data["steps"]]
                ax.plot(xs, rest, linestyle="--", marker=".", markersize=3, label=f"{name} (REST images)",
                        color=colors[name])  # fmt: skip
                ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("instances held")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=90)
    print(f"plot: {plot}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-size", type=int, default=10_000)
    parser.add_argument("--targets", default="sqlite,postgresql,orthanc")
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploaders (same for every target)")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions of each query per step")
    parser.add_argument("--out", type=Path, help="JSON of the results, rewritten after every step")
    parser.add_argument("--plot", type=Path, help="PNG plot (matplotlib) of the results")
    parser.add_argument("--report", type=Path, nargs="+", help="only print the table (and --plot) of these JSON files")
    args = parser.parse_args(argv)
    if args.report:
        report([json.loads(p.read_text()) for p in args.report], args.plot)
        return 0
    harness.exit_on_sigterm()
    result: dict[str, Any] = {
        "machine": harness.machine_info(),
        "parameters": {k: v for k, v in vars(args).items() if k in ("steps", "step_size", "clients", "repeat")},
        "targets": {},
    }

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))

    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="slicebox-scale-") as tmp:
        for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
            run_target(name, args, Path(tmp) / name, result, save)
    result["finished"] = harness.loadavg()
    save()
    print()
    report([result], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
