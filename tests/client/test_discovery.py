"""connect() without arguments inside a kernel finds the Jupyter server that started the kernel."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest
from clientnode import client_of, running_node
from generators import ct_bytes
from jupyter_client import BlockingKernelClient
from nodeproc import NodeProcess

import slicebox_lab
from slicebox_lab.client import NodeUnreachable, discover_server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("client-discovery")) as n:
        yield n


def _ready(client: BlockingKernelClient, timeout: float = 60) -> None:
    """kernel_info answered on shell and a message seen on iopub (so no output is missed); jupyter_client's
    wait_for_ready would also require a heartbeat, which a client without a kernel manager does not get."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.kernel_info()
        try:
            reply = client.get_shell_msg(timeout=2)
        except Empty:
            continue
        if reply["msg_type"] != "kernel_info_reply":
            continue
        try:
            client.get_iopub_msg(timeout=0.5)
        except Empty:
            continue
        return
    raise AssertionError("the kernel did not answer")


def _run_in_kernel(node: NodeProcess, code: str, timeout: float = 120) -> str:
    """Start a kernel through the node's own /api/kernels, run ``code``, return its stdout."""
    session = node.session()
    r = session.post(node.url + "api/kernels", json={"name": "python3"}, timeout=30)
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        connection_file = node.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + 30
        while not connection_file.exists():
            assert time.monotonic() < deadline, f"no connection file in {node.runtime_dir}"
            time.sleep(0.1)
        client = BlockingKernelClient()
        client.load_connection_info(json.loads(connection_file.read_text()))
        client.start_channels()
        try:
            _ready(client)
            out: list[str] = []

            def collect(message: dict) -> None:  # type: ignore[type-arg]
                if message["msg_type"] == "stream":
                    out.append(message["content"]["text"])
                elif message["msg_type"] == "error":
                    out.append("\n".join(message["content"]["traceback"]))

            reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
            text = "".join(out)
            assert reply["content"]["status"] == "ok", text
            return text
        finally:
            client.stop_channels()
    finally:
        session.delete(node.url + f"api/kernels/{kernel_id}", timeout=30)


def test_connect_in_a_kernel_finds_its_server(node: NodeProcess) -> None:
    sbx = client_of(node)
    for n in range(2):
        sbx.upload_bytes(ct_bytes(PatientID=f"KERNEL-{n}"))
    code = (
        "import os, slicebox_lab\n"
        "sbx = slicebox_lab.connect()\n"
        "print('patients', len(sbx.patients()))\n"
        "print('url', sbx.url)\n"
        "print('pid', os.getppid())\n"
    )
    lines = dict(line.split(" ", 1) for line in _run_in_kernel(node, code).strip().splitlines())
    assert lines["patients"] == "2"
    assert lines["url"] == node.url
    assert int(lines["pid"]) == node.process.pid


def test_environment_overrides_discovery(node: NodeProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))  # no server listed there
    with pytest.raises(NodeUnreachable, match="no running Jupyter server"):
        slicebox_lab.connect()
    monkeypatch.setenv("SLICEBOX_URL", node.url)
    monkeypatch.setenv("SLICEBOX_TOKEN", node.token)
    assert slicebox_lab.connect().information()["version"] == slicebox_lab.__version__


def test_discovery_picks_the_parent_server_or_refuses_to_guess(node: NodeProcess) -> None:
    servers = [{"pid": 11, "url": "http://a/"}, {"pid": node.process.pid, "url": node.url, "token": node.token}]
    assert discover_server(servers, ppid=node.process.pid)["url"] == node.url
    assert discover_server(servers[:1], ppid=99999999)["url"] == "http://a/"  # the only one
    with pytest.raises(NodeUnreachable, match="2 Jupyter servers"):
        discover_server([{"pid": 11, "url": "http://a/"}, {"pid": 12, "url": "http://b/"}], ppid=99999999)
