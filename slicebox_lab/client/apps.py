"""The apps area of the client: register a function or a notebook as an app, run it, read its runs.

``sbx.register_app(my_function, series_types=["CT"])`` sends the function's source: what it imports must be
imported inside it (or in its own module, sent whole when the function lives in a ``.py`` file).  An app is
code that runs with the node's rights, so only an administrator registers one.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .base import ClientBase, frame
from .selection import series_ids_of

__all__ = ["AppsMixin"]

APP_COLUMNS = ["id", "name", "version", "kind", "series_types", "level", "enabled", "parameters", "updated"]
RUN_COLUMNS = ["id", "app", "version", "level", "subject_id", "state", "attempt", "trigger", "started", "finished",
               "outputs", "values", "error", "job_id", "batch_id"]  # fmt: skip


def _code_of(fn: Callable[..., Any]) -> tuple[str, str]:
    """(source, entry name) of a function: its whole module when it has a file, else the function alone."""
    module = sys.modules.get(fn.__module__)
    path = getattr(module, "__file__", None)
    if module is not None and path and fn.__module__ != "__main__" and Path(path).suffix == ".py":
        return Path(path).read_text(encoding="utf-8"), fn.__name__
    return textwrap.dedent(inspect.getsource(fn)), fn.__name__


class AppsMixin(ClientBase):
    """``apps`` routes."""

    def apps(self) -> pd.DataFrame:
        return frame(self.get_all("apps"), APP_COLUMNS)

    def _app_id(self, app: int | str) -> int:
        return self._id_by_name(app, self.apps, "app")

    def app(self, app: int | str) -> dict[str, Any]:
        return dict(self.get(f"apps/{self._app_id(app)}"))

    def register_app(
        self,
        name: str,
        function: Callable[..., Any] | str | None = None,
        *,
        notebook: str | Mapping[str, Any] | None = None,
        series_types: Sequence[str] = (),
        rule: Any = None,
        level: str = "series",
        parameters: Mapping[str, Any] | None = None,
        version: str = "1",
        **options: Any,
    ) -> dict[str, Any]:
        """Register an app: a Python function (its source is sent), ``"package.module:function"`` or a
        ``"/path/file.py:function"`` on the node, or a ``notebook`` (a path on the node, a local ``.ipynb``
        path whose content is sent, or its JSON).  ``options``: ``rerun_on_growth``, ``retries``,
        ``retry_seconds``, ``timeout_seconds``, ``enabled``."""
        body: dict[str, Any] = {"name": name, "version": version, "series_types": list(series_types),
                                "level": level, "parameters": dict(parameters or {}), **options}  # fmt: skip
        if rule is not None:
            body["rule"] = (
                [{"tag": k, "values": [v] if isinstance(v, str) else list(v)} for k, v in rule.items()]
                if isinstance(rule, Mapping)
                else list(rule)
            )
        if callable(function):
            body["code"], body["function"] = _code_of(function)
        elif function is not None:
            body["function"] = function
        if notebook is not None:
            if isinstance(notebook, str) and Path(notebook).is_file():
                notebook = json.loads(Path(notebook).read_text(encoding="utf-8"))
            body["notebook"] = notebook
        return dict(self.post("apps", json=body))

    def update_app(self, app: int | str, **changes: Any) -> dict[str, Any]:
        """Change an app: ``enabled=False``, ``version="2"`` with its ``function``, ``series_types``, ..."""
        return dict(self.put(f"apps/{self._app_id(app)}", json=changes))

    def delete_app(self, app: int | str) -> None:
        self.delete(f"apps/{self._app_id(app)}")

    def run_app(
        self,
        app: int | str,
        series: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        wait: bool = False,
        progress: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run an app on demand on series (ids, a DataFrame of series, a Selection) or a flat-series ``query``
        body, as one job (progress per series, cancel with ``cancel_job``); ``wait``: until it ends."""
        body: dict[str, Any] = {"parameters": dict(parameters or {})}
        if query is not None:
            body["query"] = dict(query)
        else:
            body["series_ids"] = series_ids_of(getattr(series, "series_ids", series))
        job = dict(self.post(f"apps/{self._app_id(app)}/runs", json=body))
        if wait:
            return self.wait_job(int(job["id"]), progress=progress, timeout=timeout)  # type: ignore[attr-defined]
        return job

    def app_runs(
        self,
        app: int | str | None = None,
        *,
        job: int | None = None,
        series: int | None = None,
        state: str | None = None,
        limit: int | None = 100,
    ) -> pd.DataFrame:
        """Runs with their provenance, newest first (the log and notebook: ``app_run``, ``app_run_notebook``)."""
        params = {"app": None if app is None else self._app_id(app), "job": job, "series": series, "state": state}
        return frame(self.get_all("apps/runs", {k: v for k, v in params.items() if v is not None}, limit=limit),
                     RUN_COLUMNS)  # fmt: skip

    def app_run(self, run_id: int) -> dict[str, Any]:
        """One run with its log and the SOPInstanceUIDs it ran on."""
        return dict(self.get(f"apps/runs/{int(run_id)}"))

    def app_run_notebook(self, run_id: int) -> dict[str, Any]:
        """The executed notebook of a notebook app's run, as notebook JSON (``nbformat.from_dict`` reads it)."""
        return dict(json.loads(self.get_bytes(f"apps/runs/{int(run_id)}/notebook")))
