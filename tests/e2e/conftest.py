"""Fixtures shared by the browser tests: the package installed from a wheel, built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from wheelenv import Installed, install


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """None here. pytest-jupyter (tests/conftest.py loads its plugin) makes and closes an asyncio loop around
    every test, and cleans up an in-process ServerApp with it (``jp_server_cleanup``); these tests run servers as
    processes, and a browser test's module-wide Playwright (sync API) keeps its own loop running across tests,
    which closing that loop fails on."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """Nothing to clean: no in-process ServerApp here (see ``jp_asyncio_loop``)."""
    yield


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """slicebox_lab from a wheel of this checkout, in a fresh venv under /tmp (tests/e2e/wheelenv.py)."""
    installed = install(Path(tmp_path_factory.mktemp("wheel")))
    yield installed
    shutil.rmtree(installed.venv, ignore_errors=True)  # some 600 MB: not kept with pytest's last three sessions
