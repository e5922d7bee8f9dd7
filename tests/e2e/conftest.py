"""Fixtures shared by the browser tests: the package installed from a wheel, built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from wheelenv import Installed, install


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """slicebox_lab from a wheel of this checkout, in a fresh venv under /tmp (tests/e2e/wheelenv.py)."""
    installed = install(Path(tmp_path_factory.mktemp("wheel")))
    yield installed
    shutil.rmtree(installed.venv, ignore_errors=True)  # some 600 MB: not kept with pytest's last three sessions
