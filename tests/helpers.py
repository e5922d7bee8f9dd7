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


async def raw_post(
    port: int,
    path: str,
    token: str,
    headers: dict[str, str],
    body_parts: list[bytes],
    close_early: bool = False,
    pause: float = 0.01,
) -> str:
    """A request written by hand (chunked, sent in parts or cut short, which no client library does); its
    status line ("" when ``close_early``: the connection is closed after the parts, unanswered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode())
    for part in body_parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(pause)
    if close_early:
        writer.close()
        await asyncio.sleep(0.5)  # the server notices and cleans up
        return ""
    status = (await reader.readline()).decode()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    writer.close()
    return status
