"""Shared machinery of the benchmarks: our node and a private Orthanc, both on 127.0.0.1.

Our node is started with ``tests/e2e/nodeproc.py`` (a real ``jupyter slicebox`` process on port 0);
Orthanc is Debian's ``/usr/sbin/Orthanc`` with its own configuration, storage and index in a
temporary folder, on free ports, never the system service on 8042.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO / "tests", REPO / "tests" / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from generators import ct_bytes  # noqa: E402
from nodeproc import NodeProcess, start_node  # noqa: E402

__all__ = [
    "NodeProcess",
    "OrthancProcess",
    "ct_bytes",
    "exit_on_sigterm",
    "free_port",
    "loadavg",
    "machine_info",
    "orthanc_version",
    "percentile",
    "py_spy",
    "running_node",
    "running_orthanc",
    "summary",
]

ORTHANC = os.environ.get("ORTHANC", "/usr/sbin/Orthanc")
DICOM = {"Content-Type": "application/dicom"}


PY_SPY_RATE = 250


@contextmanager
def py_spy(pid: int, out: Path, rate: int = PY_SPY_RATE) -> Iterator[None]:
    """Sample process ``pid`` with py-spy (raw format, all threads, idle included) while the block runs.

    ``PY_SPY_ON_CPU=1`` in the environment leaves out ``--idle`` (threads py-spy thinks are running);
    ``PY_SPY_ON_CPU=gil``: only the thread holding the GIL, i.e. where the Python CPU goes."""
    idle = {"1": [], "gil": ["--gil"]}.get(os.environ.get("PY_SPY_ON_CPU", ""), ["--idle"])
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
         "--threads", *idle, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(2)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not out.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-1000:]}")


_HANDED_OUT: set[int] = set()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and every process below it (a node's worker processes), all
    their threads, from /proc/<pid>/stat."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        ticks[child] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now and that this run has not handed out before.

    The kernel may give the same free port to two binds in a row: Orthanc's DICOM and HTTP ports, both
    chosen before it starts, were once the same and it refused to start."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def exit_on_sigterm() -> None:
    """SIGTERM → SystemExit and SIGINT → KeyboardInterrupt, even when started in the background
    (where the shell ignores SIGINT), so that every ``finally`` (process shutdown, cleanup) runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------
# our node


@contextmanager
def running_node(work_dir: Path, *extra: str) -> Iterator[NodeProcess]:
    """A fresh ``jupyter slicebox`` (default settings: SQLite, fsync on) with its data in work_dir.

    Stopped with SIGTERM (a clean stop that, unlike SIGINT, never asks for confirmation on a tty).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    node = start_node(work_dir / "node", work_dir, "bench-token", *extra)
    try:
        yield node
    finally:
        _terminate(node.process)


# ---------------------------------------------------------------------------------------------------
# Orthanc


@dataclass
class OrthancProcess:
    process: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path

    def session(self) -> requests.Session:
        s = requests.Session()
        # Orthanc gzips its answers unless told not to; we want the raw cost of each side
        s.headers["Accept-Encoding"] = "identity"
        return s


def orthanc_version() -> str:
    out = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def orthanc_config(work_dir: Path, http_port: int) -> dict[str, Any]:
    """Orthanc's configuration for a private instance.

    Durability settings are left at Orthanc's defaults (not written here): ``SyncStorageArea``
    true (fsync of every stored file, default since 1.7.4), and the SQLite index in WAL mode with
    ``PRAGMA SYNCHRONOUS=NORMAL`` (hard-coded by Orthanc). Orthanc 1.10 has no bind-address option:
    its HTTP server listens on all interfaces, and ``RemoteAccessAllowed: false`` refuses every
    connection that is not from the loopback. The DICOM server is disabled (no port opened).
    """
    return {
        "Name": "bench-orthanc",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "index"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "LuaScripts": [],
        "TcpNoDelay": True,
        "KeepAlive": True,
    }


@contextmanager
def running_orthanc(work_dir: Path, **overrides: Any) -> Iterator[OrthancProcess]:
    """A fresh Orthanc with an empty store in work_dir, answering on 127.0.0.1.

    ``overrides`` replace or add configuration options (e.g. ``DicomServerEnabled=True``).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = work_dir / "orthanc.json"
    config_path.write_text(json.dumps({**orthanc_config(work_dir, port), **overrides}, indent=2))
    log_path = work_dir / "orthanc.log"
    env = dict(os.environ, TCP_NODELAY="1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work_dir
        )
    orthanc = OrthancProcess(process, f"http://127.0.0.1:{port}", config_path, log_path)
    try:
        _wait_for_orthanc(orthanc)
        yield orthanc
    finally:
        _terminate(process)


def _wait_for_orthanc(orthanc: OrthancProcess) -> None:
    s = orthanc.session()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if orthanc.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {orthanc.log_path.read_text()[-3000:]}")
        try:
            if s.get(orthanc.url + "/system", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Orthanc did not start in 60 s: {orthanc.log_path.read_text()[-3000:]}")


# ---------------------------------------------------------------------------------------------------
# numbers and conditions


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "min": min(values),
        "max": max(values),
    }


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().strip() if path.exists() else ""


def machine_info() -> dict[str, Any]:
    """What the README's results table needs about the conditions of a run."""
    return {
        "date_utc": _run(["date", "-u"]),
        "nproc": _run(["nproc"]),
        "free_h": _run(["free", "-h"]),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "orthanc": orthanc_version(),
        "slicebox_lab": _slicebox_version(),
    }


def _slicebox_version() -> str:
    try:
        from slicebox_lab import __version__
    except ImportError:
        return "unknown"
    return str(__version__)
