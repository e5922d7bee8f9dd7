"""Helpers shared by the REST tests (a module of its own: several folders have a conftest.py,
and ``from conftest import`` would pick whichever pytest loaded first)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any


def body_json(response: Any) -> Any:
    return json.loads(response.body)


def stored_state(node_dir: Path) -> tuple[list[str], dict[str, int]]:
    """(blob file names, row counts per table) of a node's data folder: what a test can assert on."""
    blobs = sorted(p.name for p in (node_dir / "dicom").rglob("*") if p.is_file())
    with sqlite3.connect(node_dir / "slicebox.sqlite") as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("patients", "studies", "series", "images")
        }
    return blobs, counts


async def finished_job(api: Any, job_id: int, timeout: float = 60) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job is SUCCEEDED, FAILED or CANCELLED; its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        job = body_json(await api("jobs", job_id))
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.02)


def serve_with(serverapp: Any, service: Any) -> None:
    """Make ``service`` the one the server's handlers use in place of the app's own of its type
    (a test's service with its own settings, e.g. a short tick)."""
    settings = serverapp.web_app.settings
    others = tuple(s for s in settings.get("slicebox_services", ()) if not isinstance(s, type(service)))
    settings["slicebox_services"] = (*others, service)
