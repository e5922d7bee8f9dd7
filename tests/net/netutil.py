"""Helpers and fixtures of the DICOM network tests: a node context, a running SCP on 127.0.0.1,
dcmtk peers, free ports, generated series.

Not a ``conftest.py``: the test modules of other folders import ``tests/conftest.py`` as
``conftest``, which a second ``conftest`` module would shadow.  Test modules import the
fixtures they use from here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slicebox_lab.context import SliceboxContext
from slicebox_lab.net.nodes import ScpConfig
from slicebox_lab.net.scp import ScpService

SCP_AE = "SBX-TEST"
#: dcmtk peers get TCP_NODELAY too (dcmtk reads it from the environment)
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def dcmtk(tool: str) -> str:
    """The absolute path of a Debian dcmtk tool (pip packages put other storescp/storescu on PATH)."""
    path = f"/usr/bin/{tool}"
    if not os.access(path, os.X_OK):
        pytest.skip(f"dcmtk {tool} is not installed at {path} (apt-get install dcmtk)")
    return path


def run_dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk(tool), *args], capture_output=True, text=True, timeout=timeout, env=DCMTK_ENV, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port`` (a peer process starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                if probe.getsockname() != probe.getpeername():  # not a TCP self-connect to a port nobody holds
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


def write_series(folder: Path, count: int, **attributes: object) -> list[Path]:
    """``count`` small CT files of one series in ``folder``."""
    from generators import ct_dataset
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study = attributes.pop("StudyInstanceUID", None) or generate_uid()
    series = attributes.pop("SeriesInstanceUID", None) or generate_uid()
    paths = []
    for n in range(count):
        ds = ct_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=n + 1, seed=n, **attributes)  # type: ignore[arg-type]
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def context(tmp_path: Path) -> Iterator[SliceboxContext]:
    ctx = SliceboxContext.open(tmp_path / "node", fsync=False)
    yield ctx
    ctx.close()


@pytest.fixture
def scp_service(context: SliceboxContext) -> Iterator[ScpService]:
    service = ScpService(context)
    service.start()
    yield service
    service.stop(5.0)


@pytest.fixture
def scp(scp_service: ScpService) -> ScpConfig:
    return scp_service.add("test scp", SCP_AE, 0, host="127.0.0.1")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (not listening) for the whole test.

    A merely free port may be taken meanwhile, or even become the source port of the connection
    to it (a TCP self-connect, which looks like a peer aborting the association).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp (AE STORESCP) writing what it receives into a folder: (port, folder)."""
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        yield port, out
    finally:
        process.terminate()
        process.wait(10)
