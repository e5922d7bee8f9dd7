"""A real `jupyter slicebox` process on 127.0.0.1, port 0, for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class NodeProcess:
    process: subprocess.Popen[bytes]
    url: str
    token: str
    runtime_dir: Path
    log_path: Path

    @property
    def api(self) -> str:
        return self.url.rstrip("/") + "/slicebox/api"

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"token {self.token}"
        return s

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a power cut or the OOM killer would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_node(
    data_dir: Path,
    work_dir: Path,
    token: str = "secret-token",
    *extra: str,
    port: int = 0,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    root_dir: bool = True,
) -> NodeProcess:
    """Start `jupyter slicebox` on a free port (or ``port``, e.g. to restart a node where its partners know it)
    and wait until its API answers. ``command``/``env``/``cwd``: another installation's (tests/e2e/wheelenv.py);
    ``root_dir=False``: the server's root is its working folder, as for a user who types the command."""
    runtime_dir = work_dir / f"runtime-{time.monotonic_ns()}"
    runtime_dir.mkdir(parents=True)
    log_path = runtime_dir / "server.log"
    env = dict(env if env is not None else os.environ, JUPYTER_RUNTIME_DIR=str(runtime_dir), PYTHONUNBUFFERED="1")
    if command is None:
        exe = shutil.which("jupyter-slicebox")
        command = [exe] if exe else [sys.executable, "-m", "slicebox_lab.app"]
    cmd = [
        *command,
        "--ip=127.0.0.1",
        f"--port={port}",
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--SliceboxApp.data_dir={data_dir}",
        *([f"--ServerApp.root_dir={work_dir}"] if root_dir else []),
        *extra,
    ]
    log = open(log_path, "wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter slicebox exited: {log_path.read_text()[-3000:]}")
        for info_file in runtime_dir.glob("jpserver-*.json"):
            try:
                info = json.loads(info_file.read_text())
            except ValueError:
                continue
            node = NodeProcess(process, info["url"], token, runtime_dir, log_path)
            try:
                if node.session().get(node.api + "/system/health", timeout=5).status_code == 200:
                    return node
            except requests.ConnectionError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"jupyter slicebox did not start in 60 s: {log_path.read_text()[-3000:]}")
