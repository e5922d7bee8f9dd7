"""Fixtures shared by the browser tests: the package installed from a wheel, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheelenv import Installed, install


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """slicebox_lab from a wheel of this checkout, in a fresh venv under /tmp (tests/e2e/wheelenv.py)."""
    return install(Path(tmp_path_factory.mktemp("wheel")))
