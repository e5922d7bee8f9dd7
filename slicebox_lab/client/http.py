"""The HTTP layer of the client: one ``requests.Session``, typed errors, paging, and server discovery.

Kernels never import the server's objects (house rule): everything the client knows, it learns over
``<base_url>slicebox/api/``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from .errors import ClientError, NodeUnreachable, error_for_response

__all__ = ["PAGE", "HttpClient", "discover_server"]

#: the server's page cap (``count`` is capped at 10000 per page)
PAGE = 10_000


def _param(value: Any) -> Any:
    """Query parameter spelling of the server: booleans lower case, lists comma separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    return value


def clean_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _param(v) for k, v in params.items() if v is not None}


class HttpClient:
    """Low-level access to a node's REST API (paths relative to ``.../slicebox/api``)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the node's URL must start with http:// or https://, not {url!r}")
        self.url = url if url.endswith("/") else url + "/"
        self.api = self.url + "slicebox/api"
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"token {token}"
        if username is not None:
            self.session.auth = (username, password or "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------------ requests

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.api + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> requests.Response:
        """One request; a failure raises the typed :class:`ClientError` carrying the server's message."""
        url = self._url(path)
        try:
            response = self.session.request(
                method,
                url,
                params=clean_params(params or {}),
                json=json,
                data=data,
                headers=dict(headers or {}),
                stream=stream,
                timeout=timeout or self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as e:
            raise NodeUnreachable(f"no answer from the node at {self.url}: {e}", None, None, method, url) from None
        if response.status_code >= 400:
            raise error_for_response(response)
        return response

    @staticmethod
    def decode(response: requests.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        content_type = response.headers.get("Content-Type", "")
        if "json" in content_type:
            return response.json()
        if content_type.startswith("text/"):
            return response.text
        return response.content

    def get(self, path: str, **params: Any) -> Any:
        return self.decode(self.request("GET", path, params=params))

    def post(
        self, path: str, json: Any = None, data: Any = None, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Any:
        return self.decode(self.request("POST", path, params=params, json=json, data=data, headers=headers))

    def put(
        self, path: str, json: Any = None, data: Any = None, headers: Mapping[str, str] | None = None, **params: Any
    ) -> Any:
        return self.decode(self.request("PUT", path, params=params, json=json, data=data, headers=headers))

    def delete(self, path: str, **params: Any) -> None:
        self.request("DELETE", path, params=params)

    def get_bytes(self, path: str, **params: Any) -> bytes:
        return self.request("GET", path, params=params, headers={"Accept": "*/*"}).content

    # ------------------------------------------------------------------ paging

    def get_all(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[Any]:
        """Every row of a paged GET listing (``startindex``/``count``), or the first ``limit``."""

        def page(start: int, count: int) -> list[Any]:
            rows = self.get(path, **dict(params or {}), startindex=start, count=count)
            if not isinstance(rows, list):
                raise ClientError(f"expected a list from {path}, got {type(rows).__name__}")
            return rows

        return _paged(page, limit, offset)

    def query_all(self, level: str, body: Mapping[str, Any], *, limit: int | None = None, offset: int = 0) -> list[Any]:
        """Every row of ``POST /metadata/{level}/query``, paged."""

        def page(start: int, count: int) -> list[Any]:
            rows: list[Any] = self.post(f"metadata/{level}/query", json={**body, "start_index": start, "count": count})
            return rows

        return _paged(page, limit, offset)


def _paged(page: Callable[[int, int], list[Any]], limit: int | None, offset: int) -> list[Any]:
    """Pages of at most :data:`PAGE` rows from ``offset`` until a short page or ``limit`` rows: the one paging
    loop of every listing, whether it is a GET or a POSTed query."""
    rows: list[Any] = []
    start = offset
    while True:
        count = PAGE if limit is None else min(PAGE, limit - len(rows))
        if count <= 0:
            break
        found = page(start, count)
        rows.extend(found)
        start += len(found)
        if len(found) < count:
            break
    return rows


# ---------------------------------------------------------------------- discovery


def _ancestors(pid: int, depth: int = 6) -> list[int]:
    """``pid`` and its parents (Linux /proc): a kernel may be started through a wrapper process."""
    chain = [pid]
    for _ in range(depth):
        try:
            stat = Path(f"/proc/{chain[-1]}/stat").read_text()
        except OSError:
            break
        fields = stat.rsplit(")", 1)[-1].split()
        parent = int(fields[1]) if len(fields) > 1 else 0
        if parent <= 1 or parent in chain:
            break
        chain.append(parent)
    return chain


def _servers() -> list[dict[str, Any]]:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError as e:  # pragma: no cover - jupyter_server is a dependency
        raise NodeUnreachable(f"jupyter_server is not importable ({e}); pass connect(url, token=...)") from None
    return [dict(s) for s in list_running_servers()]


def _kernel_id() -> str | None:
    """This kernel's id, from its connection file name ``kernel-<id>.json`` (None outside a kernel)."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).name
    except Exception:  # not in a running kernel
        return None
    match = re.fullmatch(r"kernel-(.+)\.json", name)
    return match.group(1) if match else None


def _server_has_kernel(server: Mapping[str, Any], kernel_id: str) -> bool:
    url = str(server.get("url") or "")
    if not url.startswith("http"):
        return False
    headers = {"Authorization": f"token {server['token']}"} if server.get("token") else {}
    try:
        response = requests.get(url.rstrip("/") + f"/api/kernels/{kernel_id}", headers=headers, timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200


def discover_server(servers: Iterable[Mapping[str, Any]] | None = None, ppid: int | None = None) -> dict[str, Any]:
    """The Jupyter server that started this kernel: its pid is the kernel's parent (or an ancestor);
    else the only running server; else the one whose /api/kernels knows this kernel's id.
    Raises :class:`NodeUnreachable` when there is none, or several and none of them is ours."""
    found = [dict(s) for s in servers] if servers is not None else _servers()
    if not found:
        raise NodeUnreachable(
            "no running Jupyter server found (jupyter_server's list_running_servers() is empty); "
            "call connect(url, token=...) or set SLICEBOX_URL and SLICEBOX_TOKEN"
        )
    chain = _ancestors(os.getppid() if ppid is None else ppid)
    for position in chain:
        for server in found:
            if server.get("pid") == position:
                return server
    if len(found) == 1:
        return found[0]
    kernel_id = _kernel_id()
    if kernel_id:  # a kernel not started as a child (e.g. a provisioner): ask each server whether it is theirs
        for server in found:
            if _server_has_kernel(server, kernel_id):
                return server
    urls = ", ".join(str(s.get("url")) for s in found)
    raise NodeUnreachable(
        f"{len(found)} Jupyter servers are running ({urls}) and none started this kernel; "
        "call connect(url, token=...) with the one to use"
    )
