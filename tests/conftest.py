"""Shared fixtures: a real Jupyter server with the extension (pytest-jupyter), PostgreSQL, test data."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pg import index_engine, pg_engine, postgresql_url  # noqa: F401  (fixtures)

# tests/e2e's process helpers (nodeproc, labproc) for any test module, also when run on its own
sys.path.insert(0, str(Path(__file__).parent / "e2e"))

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def jp_server_config(node_dir: Path) -> dict[str, Any]:
    # a fixed token: linking an ExtensionApp re-applies config to the ServerApp, which makes the
    # IdentityProvider generate a new random token after pytest-jupyter read the old one
    return {
        "ServerApp": {"jpserver_extensions": {"slicebox_lab": True}},
        "IdentityProvider": {"token": "slicebox-test-token"},
        "SliceboxApp": {"data_dir": str(node_dir)},
    }


Fetch = Callable[..., Awaitable[Any]]


@pytest.fixture
def api(jp_fetch: Fetch) -> Fetch:
    """``await api("images", 3, "png", params=...)``: jp_fetch under slicebox/api, errors returned, not raised."""

    async def fetch(*parts: object, **kwargs: Any) -> Any:
        kwargs.setdefault("raise_error", False)
        return await jp_fetch("slicebox", "api", *(str(p) for p in parts), **kwargs)

    return fetch
