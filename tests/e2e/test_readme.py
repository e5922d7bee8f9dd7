"""Every ```bash block of README.md, in order, in one shell's state, on fresh nodes: each must succeed.

What a reader does: start the node (the first block, in the background here), then paste the blocks one
after the other; variables and functions carry over from block to block, as in one terminal.  Only the
ports change (to free ones: other tests and engineers share this machine), the data lives in fresh
folders, and every request must succeed: ``curl`` runs with ``--fail-with-body`` and the blocks with
``set -euo pipefail``, so a 404 or a 400 anywhere fails the test with the block and its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from labproc import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
PORTS = ("8890", "8891", "11112")

pytestmark = pytest.mark.timeout(900)


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _wait_healthy(url: str, token: str, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the README's node exited: {log.read_text()[-3000:]}")
        try:
            r = requests.get(url + "slicebox/api/system/health", headers={"Authorization": f"token {token}"}, timeout=5)
            if r.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the README's node did not start: {log.read_text()[-3000:]}")


def test_the_readme_blocks_work_in_order(tmp_path: Path):
    for program in ("curl", "storescu", "jupyter-slicebox"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (dcmtk gives storescu; pip install -e . gives jupyter-slicebox)")
    # not `--help`, nor the README's test command: this test is part of that run (in this shell its `pip install
    # -e` would only fail, in a folder without the project, and `set -e` does not stop an `&&` list for that)
    blocks = [b for b in bash_blocks() if "--help" not in b and "python -m pytest" not in b]
    assert len(blocks) >= 7, "the README lost its shell examples"
    ports = {port: str(free_port()) for port in PORTS}
    env = dict(
        os.environ,
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),  # the default data folder, fresh
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        PYTHONUNBUFFERED="1",
    )
    state = tmp_path / "state.sh"
    state.write_text("")
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for number, block in enumerate(blocks, 1):
            for port, free in ports.items():
                block = block.replace(port, free)
            script = []
            for line in block.splitlines():
                line = re.sub(r"^pip install \S+ && ", "", line)  # installed already: the test runs from it
                if line.startswith("jupyter slicebox "):
                    # a node: in the background (a reader has it in its own terminal), fsync off for speed
                    log = tmp_path / f"node-{len(nodes)}.log"
                    process = subprocess.Popen(
                        f"exec {line} --SliceboxApp.fsync=False",
                        shell=True, cwd=tmp_path, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                    )  # fmt: skip
                    nodes.append(process)
                    port = re.search(r"--port=(\d+)", line).group(1)  # type: ignore[union-attr]
                    token = re.search(r"--token=(\S+)", line).group(1)  # type: ignore[union-attr]
                    _wait_healthy(f"http://127.0.0.1:{port}/", token, log, process)
                    continue
                script.append(line)
            if not "".join(script).strip():
                continue
            program = "\n".join(
                [
                    f"source {state}",
                    "set -euo pipefail -o allexport",
                    'curl() { command curl --fail-with-body --show-error "$@"; }',
                    *script,
                    "unset -f curl",
                    f"{{ export -p | grep -v '^declare -[a-z]*r'; declare -f; }} > {state}.new",
                ]
            )
            done = subprocess.run(
                ["bash", "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, (
                f"README block {number} failed:\n{block}\n--- out:\n{done.stdout}\n{done.stderr}"
            )
            Path(f"{state}.new").replace(state)
    finally:
        for process in nodes:
            process.terminate()
        for process in nodes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    # the nodes stopped cleanly (SIGTERM)
    assert all(process.returncode == 0 for process in nodes), [p.returncode for p in nodes]
