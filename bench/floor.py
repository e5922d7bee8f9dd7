"""How fast can the stack our node must use go at all? Empty servers against Orthanc, same run.

Each *floor* times an empty server of the stack (no storage, no parsing, no index: see
``bench/floor_ext.py``) next to Orthanc doing its full job and next to our node, on the same data,
in the same rounds (order reversed every other round), median over rounds. If the empty stack is
slower than a target ratio to Orthanc, the target is out of reach on this stack; if faster, the
difference is the headroom our own work may use.

* ``rest``: sequential ``POST``s of the 0.5 MB CT files over ONE keep-alive ``requests.Session``
  (``Content-Type: application/dicom``, as ``bench/ingest_rest.py``) into: Orthanc ``POST
  /instances`` (full storage, its defaults); a bare ``jupyter_server`` (only the extension
  ``floor_ext``: an ``APIHandler`` with ``@web.authenticated`` + ``@authorized`` that reads the body
  and answers 201 ``{"bytes": n}``); the same handler writing the body durably first with the
  node's ``FileSystemStorage.write`` (temp file, fsync, rename, folder fsync: what any server that
  answers only durable data must add); our node ``POST /slicebox/api/images``.
* ``cstore``: dcmtk ``storescu`` over ONE association, or ``--associations N`` of them at once each
  sending its share (``-xf`` profile with exactly one context, CT Image Storage / Explicit VR LE, as
  ``bench/cstore.py``) into: Orthanc's DICOM server; an empty pynetdicom SCP (4 MiB PDU,
  ``TCP_NODELAY``, C-STORE answered 0x0000 at once) with pynetdicom's plain 1 ms polling, and the same
  with the node's early wake-ups; the latter writing each Part-10 file durably
  (``FileSystemStorage.write``) before answering; the same in one process per core, all listening on
  the port (``SO_REUSEPORT``, each association served by one of them: the floor of a node whose
  associations run in worker processes); our node's SCP.
* ``box``: node-to-node transfer of the stored instances, as ``bench/box_transfer.py`` (push): Orthanc
  A ``POST /peers/b/store`` (synchronous) into Orthanc B; an empty sending pair: threads of this
  process (8 as the box service, or ``FLOOR_CONCURRENCY``; one ``requests.Session`` each) POST the
  instances held in memory to the bare ``jupyter_server``, which writes each durably
  (``FileSystemStorage.write``) before answering; the same with each thread first de-identifying its
  instance with the node's own anonymizer (pydicom parse, ``anonymize`` with the basic profile,
  pydicom write: the least a sender that anonymizes must do, without the key record or any index);
  the same, the sender also sending the SHA-256 of its bytes and the server checking it before the
  write (the issue's hash verification);
  our nodes A → B (box push, anonymizing, hash-verified, FINISHED when B has every image durable).
  The CPU column is then that of every process of the system (both Orthancs; this process and the
  empty server; both nodes).
* ``download``: one client, one session, one request after the other, for each of the stored
  instances: Orthanc ``POST /instances/{id}/anonymize`` ``{}``; the bare ``jupyter_server``
  answering ``GET`` with a constant body as large as one file (``application/dicom``); our node
  ``POST /slicebox/api/images/{id}/anonymized`` ``{}`` (``bench/anonymize.py``'s 1-client phase).
* ``anonstore``: a whole study (``--count`` instances, one study) anonymized and stored, as
  ``bench/anonymize.py``'s third phase: Orthanc ``POST /studies/{id}/anonymize`` (synchronous); the node's
  own de-identification (``workers.tasks.write_anonymized``, the header alone) of the stored files in a pool
  of two processes per core, each copy written to a new file and flushed (no HTTP, key record, index or
  deletion; CPU: the tasks' own); our node's bulk job (keys recorded, copies ingested, originals deleted).

Data: ``--count`` CT of ``--size``² 16-bit pixels (default 512×512: ``tests/generators.ct_bytes``, 525,316 bytes each)
in 10 patients, generated before any timing. Every request sends ``Accept-Encoding: identity``;
storescu and all servers run with ``TCP_NODELAY=1``. Per system: inst/s, MB/s (10⁶ bytes of DICOM
sent or received), ratio to Orthanc's inst/s, and the server process's CPU time (user + system,
``/proc/<pid>/stat``) per instance during the timed part.

    python bench/floor.py [--which rest,cstore,download,box,anonstore] [--count 1000] [--rounds 3] [--json out.json]
                          [--clients N] [--associations N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
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

import anonymize
import box_transfer
import cstore
import harness
import ingest_rest
import requests

BENCH = Path(__file__).resolve().parent
SIZE = 512
PATIENTS = 10
TOKEN = "floor-token"
HASH_HEADER = "X-Slicebox-SHA256"

OURS = "slicebox_lab (our node)"
ORTHANC = "Orthanc"
EMPTY_JS = "jupyter_server, empty handler"
EMPTY_PN = "pynetdicom, empty SCP (plain polling)"
EMPTY_PN_WAKE = "pynetdicom, empty SCP + slicebox wake-ups"
DURABLE_JS = "jupyter_server, handler + durable file write"
DURABLE_PN = "pynetdicom + wake-ups + durable file write"
ORTHANC_JS = "jupyter_server, handler + file written as Orthanc does"
ORTHANC_PN = "pynetdicom + wake-ups + file written as Orthanc does"
PROCESSES_PN = "the same durable write, one pynetdicom process per core on one port (SO_REUSEPORT)"
ANON_JS = "jupyter_server, handler de-identifying a stored file (the node's anonymizer, in a thread)"
#: images in flight from one sender, as the box service's default ``concurrency`` (``FLOOR_CONCURRENCY``)
CONCURRENCY = int(os.environ.get("FLOOR_CONCURRENCY", "8"))
BOX_DURABLE = f"empty pair: {CONCURRENCY} sending threads → handler + durable file write"
BOX_ANON = "empty pair, each sender thread anonymizing first (pydicom)"
BOX_HASHED = "the same + SHA-256 sent and checked (as a box must)"
ANON_PROCS = "the node's anonymizer in two processes per core, each copy written and flushed once"
FLOORS: dict[str, tuple[str, ...]] = {
    "rest": (ORTHANC, EMPTY_JS, DURABLE_JS, ORTHANC_JS, OURS),
    "cstore": (ORTHANC, EMPTY_PN, EMPTY_PN_WAKE, DURABLE_PN, ORTHANC_PN, PROCESSES_PN, OURS),
    "download": (ORTHANC, EMPTY_JS, ANON_JS, OURS),
    "box": (ORTHANC, BOX_DURABLE, BOX_ANON, BOX_HASHED, OURS),
    "anonstore": (ORTHANC, ANON_PROCS, OURS),
}
#: our display names → the names the reused bench modules use
OURS_MODULE = {OURS: ingest_rest.OURS, ORTHANC: ingest_rest.ORTHANC}
#: what each system is asked to do, per floor (also written to --json)
REQUESTS = {
    "rest": {
        ORTHANC: "POST /instances",
        EMPTY_JS: "POST /floor/images → 201 {bytes: n}",
        DURABLE_JS: "POST /floor/images → body written by FileSystemStorage.write (fsynced), 201",
        ORTHANC_JS: "POST /floor/images → body written to its final name + fsync (no rename, no folder fsync), 201",
        OURS: "POST /slicebox/api/images",
    },
    "cstore": {
        ORTHANC: "C-STORE into Orthanc's DICOM server (stored)",
        EMPTY_PN: "C-STORE → 0x0000 at once, pynetdicom's own 1 ms polling",
        EMPTY_PN_WAKE: "C-STORE → 0x0000 at once, slicebox_lab.net.acceptor.wake_early",
        DURABLE_PN: "C-STORE → Part-10 file written by FileSystemStorage.write (fsynced), 0x0000",
        ORTHANC_PN: "C-STORE → Part-10 file written to its final name + fsync, 0x0000",
        PROCESSES_PN: "as the durable write, in one of N processes (N = cores) each listening on the port",
        OURS: "C-STORE into our node's SCP (stored)",
    },
    "box": {
        ORTHANC: "Orthanc A POST /peers/b/store (synchronous) → Orthanc B",
        BOX_DURABLE: f"{CONCURRENCY} threads POST /floor/images → FileSystemStorage.write (fsynced), 201",
        BOX_ANON: f"{CONCURRENCY} threads: dcmread, anonymize (basic), dcmwrite, POST /floor/images → fsynced, 201",
        BOX_HASHED: "as above, the sender's SHA-256 in X-Slicebox-SHA256, checked before the write",
        OURS: "box push A → B (bench/box_transfer.py), FINISHED",
    },
    "anonstore": {
        ORTHANC: "POST /studies/{id}/anonymize {} (synchronous: the anonymized copy of the study stored)",
        ANON_PROCS: "stored files de-identified (basic profile, the header alone: slicebox_lab.workers.tasks."
        "write_anonymized) by a pool of two processes per core (one's flush overlaps the other's work), each copy "
        "written to a new file and flushed (fdatasync); no HTTP, no key record, no index, nothing deleted",
        OURS: "POST /slicebox/api/anonymization/anonymize (the bulk job: keys recorded, copies ingested, "
        "originals deleted), followed with GET /jobs/{id}?wait= until SUCCEEDED",
    },
    "download": {
        ORTHANC: "POST /instances/{id}/anonymize {}",
        EMPTY_JS: "GET /floor/images/{id}/anonymized → constant body",
        ANON_JS: "GET /floor/images/{id}/anonymized → one stored CT file de-identified (basic profile; no key "
        "record, no index), the header alone as the node's workers do",
        OURS: "POST /slicebox/api/images/{id}/anonymized {}",
    },
}


def _python_path() -> str:
    """bench/ (for ``floor_ext``) and the checkout (for ``slicebox_lab``) first."""
    parts = [str(BENCH), str(harness.REPO), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------
# the empty servers


@dataclass
class EmptyServer:
    """A running bare ``jupyter_server`` with only the ``floor_ext`` extension."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"token {TOKEN}"
        s.headers["Accept-Encoding"] = "identity"
        return s

    def counts(self) -> dict[str, int]:
        r = self.session().get(self.url + "/floor/count", timeout=10)
        r.raise_for_status()
        return {k: int(v) for k, v in r.json().items()}


@contextmanager
def running_empty_server(
    work_dir: Path, body_bytes: int, store: bool = False, orthanc_like: bool = False, anonymize_file: str = ""
) -> Iterator[EmptyServer]:
    """``python -m jupyter_server`` on a free port with no configuration files (``JUPYTER_NO_CONFIG``:
    none of the extensions enabled in this environment is loaded), only ``floor_ext``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    env = dict(
        os.environ,
        PYTHONPATH=_python_path(),
        JUPYTER_NO_CONFIG="1",
        JUPYTER_RUNTIME_DIR=str(work_dir / "runtime"),
        JUPYTER_DATA_DIR=str(work_dir / "data"),
        TMPDIR=str(work_dir),  # jupyter_core's blank config folder lands here, removed with it
        FLOOR_BODY_BYTES=str(body_bytes),
        FLOOR_STORE_DIR=str(work_dir / "store") if store else "",
        FLOOR_STORE_MODE="orthanc" if orthanc_like else "node",
        FLOOR_ANONYMIZE_FILE=anonymize_file,
        TCP_NODELAY="1",
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "jupyter_server",
        f"--IdentityProvider.token={TOKEN}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ip=127.0.0.1",
        "--no-browser",
        "--allow-root",
        '--ServerApp.jpserver_extensions={"floor_ext": True}',
        f"--ServerApp.root_dir={work_dir}",
    ]  # fmt: skip
    log_path = work_dir / "jupyter_server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work_dir)
    server = EmptyServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter_server exited: {log_path.read_text()[-3000:]}")
            try:
                server.counts()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter_server did not start: {log_path.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield server
    finally:
        harness._terminate(process)


@contextmanager
def running_empty_scp(
    work_dir: Path, wake: bool, store: bool = False, orthanc_like: bool = False, processes: int = 1
) -> Iterator[cstore.Target]:
    """``python bench/floor_ext.py scp`` on a free port; its count comes from SIGUSR1 → ``stored n bytes``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    env = dict(os.environ, PYTHONPATH=_python_path(), TCP_NODELAY="1", PYTHONUNBUFFERED="1")
    env["FLOOR_STORE_MODE"] = "orthanc" if orthanc_like else "node"
    cmd = [sys.executable, str(BENCH / "floor_ext.py"), "scp", "--port", str(port), *(["--wake"] if wake else [])]
    cmd += ["--processes", str(processes)]
    if store:
        cmd += ["--store", str(work_dir / "store")]
    log_path = work_dir / "scp.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work_dir)
    try:
        deadline = time.monotonic() + 60
        while "listening" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the empty SCP did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)

        def count() -> int:
            before = log_path.read_text().count("stored ")
            process.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                lines = [line for line in log_path.read_text().splitlines() if line.startswith("stored ")]
                if len(lines) > before:
                    return int(lines[-1].split()[1])
                time.sleep(0.05)
            raise RuntimeError(f"the empty SCP did not report: {log_path.read_text()[-3000:]}")

        name = (
            (ORTHANC_PN if orthanc_like else PROCESSES_PN if processes > 1 else DURABLE_PN)
            if store
            else (EMPTY_PN_WAKE if wake else EMPTY_PN)
        )
        yield cstore.Target(name, "FLOOR", port, process.pid, count)
    finally:
        harness._terminate(process)


# ---------------------------------------------------------------------------------------------------
# the three floors: one timed run of one system


def _result(count: int, total_bytes: int, seconds: float, cpu: float) -> dict[str, float]:
    return {
        "seconds": seconds,
        "inst_per_s": count / seconds,
        "mb_per_s": total_bytes / seconds / 1e6,
        "server_cpu_ms_per_inst": cpu * 1000 / count,
    }


@contextmanager
def rest_target(name: str, work_dir: Path, body_bytes: int) -> Iterator[ingest_rest.Target]:
    if name in (EMPTY_JS, DURABLE_JS, ORTHANC_JS):
        store, orthanc_like = name in (DURABLE_JS, ORTHANC_JS), name == ORTHANC_JS
        with running_empty_server(work_dir, body_bytes, store, orthanc_like) as server:
            yield ingest_rest.Target(
                name,
                server.session(),
                server.url + "/floor/images",
                201,
                server.process.pid,
                lambda: server.counts()["uploads"],
                server.session,
            )
    else:
        with ingest_rest.started(OURS_MODULE[name], work_dir) as target:
            target.session.headers["Accept-Encoding"] = "identity"
            yield target


def run_rest(name: str, blobs: list[bytes], work_dir: Path, clients: int = 1) -> dict[str, float]:
    with rest_target(name, work_dir, len(blobs[0])) as target:
        cpu0 = harness.tree_cpu_seconds(target.pid)
        seconds = ingest_rest.timed_ingest(target, blobs, clients)  # posts the warm-up image first
        cpu = harness.tree_cpu_seconds(target.pid) - cpu0
        held = target.count_instances()
    # an empty handler counts every warm-up upload; an index stores the warm-up instance once
    expected = {len(blobs) + 1, len(blobs) + 1 + (clients if clients > 1 else 0)}
    if held not in expected:
        raise RuntimeError(f"{name} took {held} uploads, expected {sorted(expected)}")
    return _result(len(blobs), sum(map(len, blobs)), seconds, cpu)


@contextmanager
def cstore_target(name: str, work_dir: Path) -> Iterator[cstore.Target]:
    if name in (EMPTY_PN, EMPTY_PN_WAKE, DURABLE_PN, ORTHANC_PN, PROCESSES_PN):
        store, orthanc_like = name in (DURABLE_PN, ORTHANC_PN, PROCESSES_PN), name == ORTHANC_PN
        processes = default_processes() if name == PROCESSES_PN else 1
        with running_empty_scp(work_dir, name != EMPTY_PN, store, orthanc_like, processes) as target:
            yield target
    else:
        with cstore.started(OURS_MODULE[name], work_dir) as target:
            yield target


def default_processes() -> int:
    """One per core this process may use, as the node's ``workers`` default."""
    return max(1, len(os.sched_getaffinity(0)))


def run_cstore(name: str, data: Path, cfg: Path, work_dir: Path, associations: int = 1) -> dict[str, float]:
    files = sorted((data / "parts").rglob("*.dcm"))
    parts = sorted(p for p in (data / "parts").iterdir() if p.is_dir())
    groups = [[data / "parts"]] if associations == 1 else [[p] for p in parts]
    log_path = work_dir / "storescu.log"
    with cstore_target(name, work_dir) as target:
        cstore.send(target, cfg, [[data / "warmup"]], log_path)
        cpu0 = harness.tree_cpu_seconds(target.pid)
        seconds = cstore.send(target, cfg, groups, log_path)
        cpu = harness.tree_cpu_seconds(target.pid) - cpu0
        held = target.count_instances()
    if held != len(files) + 1:
        raise RuntimeError(f"{name} received {held} instances, expected {len(files) + 1}")
    return _result(len(files), sum(f.stat().st_size for f in files), seconds, cpu)


@contextmanager
def download_system(name: str, work_dir: Path, body_bytes: int, source: bytes = b"") -> Iterator[anonymize.System]:
    if name in (EMPTY_JS, ANON_JS):
        stored = ""
        if name == ANON_JS:
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / "stored.dcm").write_bytes(source)
            stored = str(work_dir / "stored.dcm")
        with running_empty_server(work_dir, body_bytes, anonymize_file=stored) as server:

            def download(s: requests.Session, image_id: str) -> bytes:
                r = s.get(f"{server.url}/floor/images/{image_id}/anonymized")
                if r.status_code != 200:
                    raise RuntimeError(f"{EMPTY_JS}: HTTP {r.status_code} {r.text[:500]}")
                return r.content

            def no_upload(s: requests.Session, data: bytes) -> str:
                raise AssertionError("the empty server stores nothing")

            yield anonymize.System(
                name, server.process.pid, server.session, no_upload, download, lambda: server.counts()["downloads"]
            )
    else:
        with anonymize.started(OURS_MODULE[name], work_dir, "bulk") as system:
            yield system


def run_download(name: str, blobs: list[bytes], work_dir: Path) -> dict[str, float]:
    with download_system(name, work_dir, len(blobs[0]), blobs[0]) as system:
        if name in (EMPTY_JS, ANON_JS):
            ids = [str(i) for i in range(len(blobs))]
        else:
            ids = anonymize.load(system, blobs)  # untimed, two uploaders
        s = system.new_session()
        anonymize._is_dicom(system.download(s, ids[0]))  # warm-up: connection, first-request costs
        cpu0 = harness.tree_cpu_seconds(system.pid)
        t0 = time.perf_counter()
        sizes = [anonymize._is_dicom(system.download(s, i)) for i in ids]
        seconds = time.perf_counter() - t0
        cpu = harness.tree_cpu_seconds(system.pid) - cpu0
        held = system.count_instances()
    expected = len(ids) + 1 if name in (EMPTY_JS, ANON_JS) else len(blobs)  # downloads answered / instances stored
    if held != expected:
        raise RuntimeError(f"{name}: count {held} after the downloads, expected {expected}")
    return _result(len(ids), sum(sizes), seconds, cpu)


def run_anonstore(name: str, blobs: list[bytes], work_dir: Path) -> dict[str, float]:
    """The whole study (``blobs``: one study) anonymized and stored, as ``bench/anonymize.py``'s third phase."""
    total = sum(map(len, blobs))
    if name == ANON_PROCS:
        return _anonymize_in_processes(blobs, work_dir)
    with anonymize.started(OURS_MODULE[name], work_dir, "bulk") as system:
        ids = anonymize.load(system, blobs)  # untimed, two uploaders
        cpu0 = harness.tree_cpu_seconds(system.pid)
        t0 = time.perf_counter()
        made = system.store(ids)
        seconds = time.perf_counter() - t0
        cpu = harness.tree_cpu_seconds(system.pid) - cpu0
    if made != len(blobs):
        raise RuntimeError(f"{name}: {made} anonymized instances stored, expected {len(blobs)}")
    return _result(len(blobs), total, seconds, cpu)


def _anonymize_in_processes(blobs: list[bytes], work_dir: Path) -> dict[str, float]:
    """De-identify stored files with the node's own worker code in two processes per core (one waits for its
    flush while the other works), each copy flushed once: what anonymize-and-store costs on this machine
    before any HTTP, key record, index or deletion.  CPU: the processes' own, per task."""
    import multiprocessing

    stored, out = work_dir / "stored", work_dir / "anonymized"
    stored.mkdir(parents=True)
    out.mkdir()
    paths = []
    for i, data in enumerate(blobs):
        path = stored / f"{i}.dcm"
        path.write_bytes(data)
        paths.append((str(path), str(out / f"{i}.dcm")))
    processes = 2 * default_processes()
    with multiprocessing.get_context("forkserver").Pool(processes, initializer=_anonymizer_process) as pool:
        pool.map(_sleep, [0.05] * processes)  # every process started and warm
        t0 = time.perf_counter()
        done = pool.map(_anonymize_stored, paths, chunksize=2)
        seconds = time.perf_counter() - t0
    return _result(len(blobs), sum(size for size, _ in done), seconds, sum(cpu for _, cpu in done))


_HOW: Any = None


def _anonymizer_process() -> None:
    global _HOW
    from slicebox_lab.anonymization import Profile, PseudonymKeys, keystore
    from slicebox_lab.workers import tasks

    _HOW = tasks.Deidentification(Profile(), PseudonymKeys.generate(), (), keystore.DEFAULT_KEY_ATTRIBUTES)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _anonymize_stored(paths: tuple[str, str]) -> tuple[int, float]:
    """One stored file de-identified into a new file, flushed: (its size, the CPU seconds it took)."""
    from slicebox_lab.workers import tasks

    cpu0 = time.process_time()
    source, target = paths
    with open(target, "wb") as f:
        tasks.write_anonymized(f, source, None, _HOW)
        f.flush()
        os.fdatasync(f.fileno())
        size = f.tell()
    return size, time.process_time() - cpu0


def _anonymizer() -> Callable[[bytes], bytes]:
    """The node's de-identification of one Part-10 file, without key record or index (basic profile)."""
    from slicebox_lab import dicom
    from slicebox_lab.anonymization import Profile, PseudonymKeys
    from slicebox_lab.anonymization import anonymize as deidentify

    profile, keys = Profile(), PseudonymKeys.generate()

    def run(data: bytes) -> bytes:
        return dicom.write_part10(deidentify(dicom.parse_part10(data).dataset, profile, keys))

    return run


def _send_all(
    url: str,
    session: Callable[[], requests.Session],
    blobs: list[bytes],
    make: Callable[[bytes], bytes],
    hashed: bool = False,
) -> None:
    """``CONCURRENCY`` threads, each with its own session, POST ``make(blob)`` for every blob (with its
    SHA-256 in the header if ``hashed``); 201 each."""
    local = threading.local()

    def one(blob: bytes) -> None:
        s = getattr(local, "s", None) or session()
        local.s = s
        data = make(blob)
        headers = {**harness.DICOM, **({HASH_HEADER: hashlib.sha256(data).hexdigest()} if hashed else {})}
        r = s.post(url, data=data, headers=headers)
        if r.status_code != 201:
            raise RuntimeError(f"empty server: HTTP {r.status_code} {r.text[:500]}")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for _ in pool.map(one, blobs):
            pass


def run_box(name: str, blobs: list[bytes], work_dir: Path) -> dict[str, float]:
    total = sum(map(len, blobs))
    if name in (BOX_DURABLE, BOX_ANON, BOX_HASHED):
        make = (lambda data: data) if name == BOX_DURABLE else _anonymizer()
        hashed = name == BOX_HASHED
        with running_empty_server(work_dir, len(blobs[0]), store=True) as server:
            url = server.url + "/floor/images"
            _send_all(url, server.session, [ingest_rest.warm_up_instance()], make, hashed)
            cpu0 = harness.tree_cpu_seconds(server.process.pid) + time.process_time()
            t0 = time.perf_counter()
            _send_all(url, server.session, blobs, make, hashed)
            seconds = time.perf_counter() - t0
            cpu = harness.tree_cpu_seconds(server.process.pid) + time.process_time() - cpu0
            held = server.counts()["uploads"]
        if held != len(blobs) + 1:
            raise RuntimeError(f"{name} took {held} uploads, expected {len(blobs) + 1}")
        return _result(len(blobs), total, seconds, cpu)
    if name == OURS:
        with box_transfer.our_pair(work_dir, "push") as (a, b, box_id):
            ids: list[Any] = box_transfer._upload_ours(a, blobs)
            pids = (a.process.pid, b.process.pid)
            cpu0 = sum(map(harness.tree_cpu_seconds, pids))
            seconds = box_transfer._transfer_ours(a, box_id, ids)
            cpu = sum(map(harness.tree_cpu_seconds, pids)) - cpu0
            held = box_transfer._count_ours(b)
    else:
        with harness.running_orthanc(work_dir / "b") as ob:
            with harness.running_orthanc(work_dir / "a", OrthancPeers={"b": {"Url": ob.url + "/"}}) as oa:
                s = oa.session()
                ids = [box_transfer._post_orthanc(s, oa.url, data) for data in blobs]
                pids = (oa.process.pid, ob.process.pid)
                cpu0 = sum(map(harness.tree_cpu_seconds, pids))
                t0 = time.perf_counter()
                r = s.post(oa.url + "/peers/b/store", json={"Resources": ids, "Synchronous": True}, timeout=3600)
                seconds = time.perf_counter() - t0
                cpu = sum(map(harness.tree_cpu_seconds, pids)) - cpu0
                if r.status_code != 200:
                    raise RuntimeError(f"Orthanc peers/store: HTTP {r.status_code} {r.text[:500]}")
                held = int(ob.session().get(ob.url + "/statistics").json()["CountInstances"])
    if held != len(blobs):
        raise RuntimeError(f"{name}: B holds {held} instances, expected {len(blobs)}")
    return _result(len(blobs), total, seconds, cpu)


# ---------------------------------------------------------------------------------------------------


def print_table(floor: str, rounds: list[dict[str, Any]], medians: dict[str, dict[str, float]], info: str) -> None:
    print(f"\n### floor `{floor}` — {info}\n")
    print("| system | inst/s | MB/s | ratio to Orthanc | server CPU ms/inst | inst/s per round | request |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    orthanc = medians[ORTHANC]["inst_per_s"]
    for name in FLOORS[floor]:
        m = medians[name]
        per_round = ", ".join(f"{r[name]['inst_per_s']:.1f}" for r in rounds)
        print(
            f"| {name} | {m['inst_per_s']:.1f} | {m['mb_per_s']:.1f} | **{m['inst_per_s'] / orthanc:.2f}** "
            f"| {m['server_cpu_ms_per_inst']:.2f} | {per_round} | {REQUESTS[floor][name]} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", default="rest,cstore,download", help="floors, comma-separated (default all)")
    parser.add_argument("--count", type=int, default=1000, help="instances per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each system once a round (default 3)")
    parser.add_argument(
        "--size", type=int, default=SIZE, help="rows and columns of the CTs (default 512; 16: the per-request floor)"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients of the rest floor (default 1)")
    parser.add_argument(
        "--associations", type=int, default=1, help="concurrent storescu associations of the cstore floor (default 1)"
    )
    args = parser.parse_args(argv)
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    if unknown := [w for w in which if w not in FLOORS]:
        parser.error(f"unknown floor(s) {unknown}: choose from {', '.join(FLOORS)}")
    if "cstore" in which and not os.access(cstore.STORESCU, os.X_OK):
        parser.error(f"{cstore.STORESCU} not found: apt-get install dcmtk (or STORESCU=/path/to/storescu)")
    harness.exit_on_sigterm()
    machine = harness.machine_info()  # before any work: the load the machine had without us

    report: dict[str, Any] = {
        "benchmark": "floor",
        "params": {
            "which": which,
            "count": args.count,
            "rounds": args.rounds,
            "size": args.size,
            "patients": PATIENTS,
            "clients": args.clients,
            "associations": args.associations,
        },
        "requests": {w: REQUESTS[w] for w in which},
        "machine": machine,
        "floors": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        blobs: list[bytes] = []
        if "rest" in which or "download" in which or "box" in which:
            print(f"generating {args.count} CT instances of {args.size}x{args.size} in memory ...", flush=True)
            t0 = time.perf_counter()
            blobs = ingest_rest.generate(args.count, args.size, PATIENTS)
            print(f"  {sum(map(len, blobs)) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
        study: list[bytes] = []
        if "anonstore" in which:  # one study, as bench/anonymize.py's anonymize-and-store phase
            study = ingest_rest.generate(args.count, args.size, 1)
        data, cfg = Path(tmp) / "data", Path(tmp) / "storescu.cfg"
        if "cstore" in which:
            print(f"generating {args.count} CT instances of {args.size}x{args.size} into {data} ...", flush=True)
            cstore.generate(data, args.count, args.size, PATIENTS, max(1, args.associations))
            cfg.write_text(cstore.STORESCU_CFG)

        runners: dict[str, Callable[[str, Path], dict[str, float]]] = {
            "rest": lambda name, work: run_rest(name, blobs, work, args.clients),
            "cstore": lambda name, work: run_cstore(name, data, cfg, work, args.associations),
            "download": lambda name, work: run_download(name, blobs, work),
            "box": lambda name, work: run_box(name, blobs, work),
            "anonstore": lambda name, work: run_anonstore(name, study, work),
        }
        for floor in which:
            systems = FLOORS[floor]
            rounds: list[dict[str, Any]] = []
            load_start, date = harness.loadavg(), subprocess.run(["date", "-u"], capture_output=True, text=True)
            for r in range(args.rounds):
                order = list(systems) if r % 2 == 0 else list(reversed(systems))
                result: dict[str, Any] = {"round": r + 1, "order": order}
                for name in order:
                    work_dir = Path(tmp) / f"{floor}-round{r + 1}-{len(result)}"
                    try:
                        result[name] = runners[floor](name, work_dir)
                    finally:
                        shutil.rmtree(work_dir, ignore_errors=True)
                    res = result[name]
                    print(
                        f"{floor} round {r + 1} {name:>42}: {res['seconds']:7.2f} s  {res['inst_per_s']:7.1f} inst/s  "
                        f"{res['mb_per_s']:6.1f} MB/s  server CPU {res['server_cpu_ms_per_inst']:5.2f} ms/inst",
                        flush=True,
                    )
                rounds.append(result)
            keys = ("seconds", "inst_per_s", "mb_per_s", "server_cpu_ms_per_inst")
            medians = {name: {k: statistics.median(r[name][k] for r in rounds) for k in keys} for name in systems}
            ratios = {name: medians[name]["inst_per_s"] / medians[ORTHANC]["inst_per_s"] for name in systems}
            conditions = {
                "date_utc": date.stdout.strip(),
                "loadavg_start": load_start,
                "loadavg_end": harness.loadavg(),
            }
            report["floors"][floor] = {
                "conditions": conditions,
                "rounds": rounds,
                "median": medians,
                "ratio_to_orthanc": ratios,
            }
            if args.json:  # after every floor: a long run keeps what it has
                args.json.write_text(json.dumps(report, indent=2))
            info = (
                f"{conditions['date_utc']}, {args.count} × {args.size}², {args.rounds} round(s), "
                f"{args.clients} client(s), {args.associations} association(s), "
                f"load average {load_start} → {conditions['loadavg_end']}"
            )
            print_table(floor, rounds, medians, info)
            print(flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
