"""A real JupyterLab (with the node inside) on 127.0.0.1 and Debian's chromium through Playwright.

Shared by tests/e2e/test_jupyterlab_viewer.py and bench/viewer.py. Everything is local: JupyterLab
serves its own assets and the prebuilt labextensions (anywidget, ipywidgets) from the Python
environment; the browser's requests to anything but 127.0.0.1 are refused and recorded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import requests
from generators import ct_dataset, to_bytes
from nodeproc import NodeProcess
from pydicom.uid import generate_uid

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DICOM = {"Content-Type": "application/dicom"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabProcess(NodeProcess):
    """A ``jupyter lab`` with the node: as a ``jupyter slicebox`` node process, plus the notebook root."""

    root_dir: Path = Path()


def start_lab(
    work_dir: Path,
    token: str = "lab-test-token",
    *,
    app: str = "lab",
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    enable_extension: bool = True,
) -> LabProcess:
    """`jupyter lab` (or ``app="notebook"``: Notebook 7) with the slicebox extension, its data, config, settings
    and runtime all under ``work_dir``. ``command``/``env``: another installation's (tests/e2e/wheelenv.py);
    ``enable_extension=False``: only as that installation enables it (the wheel's own config does)."""
    root = work_dir / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    config = work_dir / "config"
    config.mkdir(exist_ok=True)
    # no news, no update check
    settings: dict[str, Any] = {
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    }
    if enable_extension:  # explicitly on: CI's editable install may lack the shared-data file
        settings["ServerApp"] = {"jpserver_extensions": {"slicebox_lab": True}}
    (config / "jupyter_server_config.json").write_text(json.dumps(settings))
    # no "get Jupyter news?" toast over the notebook, and no news fetched
    notification = work_dir / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    runtime = work_dir / "runtime"
    log_path = work_dir / "lab.log"
    port = free_port()
    env = dict(
        os.environ if env is None else env,
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_RUNTIME_DIR=str(runtime),  # the kernels inherit it: slicebox_lab.connect() finds this server
        JUPYTERLAB_SETTINGS_DIR=str(work_dir / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(work_dir / "lab-workspaces"),
        PYTHONUNBUFFERED="1",
    )
    if command is None:
        exe = shutil.which(f"jupyter-{app}")
        command = [exe] if exe else [sys.executable, "-m", {"lab": "jupyterlab"}.get(app, app)]
    cmd = [
        *command,
        "--ip=127.0.0.1",
        f"--port={port}",
        "--no-browser",
        "--allow-root",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--SliceboxApp.data_dir={work_dir / 'node'}",
    ]
    log = open(log_path, "wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    lab = LabProcess(process, f"http://127.0.0.1:{port}/", token, runtime, log_path, root_dir=root)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter {app} exited: {log_path.read_text()[-3000:]}")
        try:
            if lab.session().get(lab.api + "/system/health", timeout=5).status_code == 200:
                return lab
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    lab.stop()
    raise RuntimeError(f"jupyter {app} did not start in 90 s: {log_path.read_text()[-3000:]}")


def phantom_series(n: int, size: int, *, reverse_instances: bool = False, **attributes: Any) -> list[bytes]:
    """A CT series: a disk of soft tissue with a bone ring and lung holes that move along z."""
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size] - size / 2
    r = np.hypot(x, y)
    files = []
    for z in range(n):
        hu = np.full((size, size), -1000, np.int32)
        hu[r < size * 0.45] = 40 + z % 20
        hu[(r > size * 0.38) & (r < size * 0.42)] = 700
        hu[np.hypot(x - size * 0.15, y + (z - n / 2) * size / (2 * n)) < size * 0.1] = -800
        hu[np.hypot(x + size * 0.15, y) < size * (0.04 + 0.08 * z / n)] = -600
        ds = ct_dataset(
            rows=size,
            columns=size,
            SeriesInstanceUID=series_uid,
            StudyInstanceUID=study_uid,
            InstanceNumber=(n - z) if reverse_instances else z + 1,
            **attributes,
        )
        ds.FrameOfReferenceUID = frame_uid
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-size * 0.35, -size * 0.35, -100 + 2.5 * z]
        ds.SliceThickness = 2.5
        ds.PixelSpacing = [0.7, 0.7]
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        files.append(to_bytes(ds))
    return files


def upload_series(api: str, session: requests.Session, files: list[bytes]) -> int:
    """Upload in a shuffled order (viewers must sort by position, not by arrival); returns the series id."""
    ids = set()
    for data in random.Random(7).sample(files, len(files)):
        r = session.post(api + "/images", data=data, headers=DICOM, timeout=60)
        assert r.status_code == 201, r.text
        ids.add(r.json()["series_id"])
    assert len(ids) == 1, ids
    return ids.pop()


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of code cells with the python3 kernel (no kernel picker dialog)."""
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(cells)
        ],  # fmt: skip
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


@dataclass
class Browser:
    page: Any
    blocked: list[str] = field(default_factory=list)  # requests beyond 127.0.0.1 the page tried
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def chromium(width: int = 1500, height: int = 1100) -> Iterator[Browser]:
    """Debian's chromium under Playwright; every request to anything but 127.0.0.1 is aborted and recorded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            result = Browser(page)

            def route(r: Any) -> None:
                host = urlparse(r.request.url).hostname
                if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                    r.continue_()
                else:
                    result.blocked.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page.on("console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None)
            yield result
        finally:
            browser.close()


def open_notebook(page: Any, lab: LabProcess, name: str) -> None:
    """Open a notebook and wait until its kernel has started and the page is connected to it."""
    page.goto(f"{lab.url}lab/tree/{name}?token={lab.token}", wait_until="domcontentloaded", timeout=90_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        accept_kernel_dialog(page)
        sessions = lab.session().get(lab.url + "api/sessions", timeout=10).json()
        if any(x["path"].endswith(name) and x["kernel"]["execution_state"] == "idle" for x in sessions):
            break
        page.wait_for_timeout(250)
    else:
        raise AssertionError(f"no idle kernel for {name}")
    wait_kernel_idle(page)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator", timeout=30_000)
    page.wait_for_timeout(500)  # the page's kernel connection settles after the session is idle
    accept_kernel_dialog(page)


def accept_kernel_dialog(page: Any) -> None:
    """JupyterLab asks for a kernel when a cell runs before the session is ready: take the default."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator("button.jp-mod-accept").click()


def wait_kernel_idle(page: Any, timeout: float = 120_000) -> None:
    page.wait_for_selector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=timeout)  # fmt: skip


def run_all_cells(page: Any) -> None:
    """Run → Run All Cells, from the menu bar as a user would (again if the kernel was not connected yet)."""
    prompt = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-prompt").first
    for _attempt in range(5):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                return
            page.wait_for_timeout(200)
    raise AssertionError("Run All Cells did not start the cells")


def run_cell(page: Any, index: int) -> None:
    """Select cell ``index`` (0-based) and run it with Shift+Enter."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_timeout(300)
    accept_kernel_dialog(page)


def canvas_data_url(page: Any, selector: str = ".sbx-viewer canvas") -> str:
    return str(page.eval_on_selector(selector, "c => c.toDataURL('image/png')"))
