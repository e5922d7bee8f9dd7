"""The app registry: what an app declares, checked once when it is registered or changed.

An app is ``{"name", "version", "function": "package.module:function" | "/path/file.py:function"}`` (or
``"code"``: the Python source, with ``"function"`` naming the entry point in it), or ``{"notebook":
"/path/app.ipynb" | <the notebook's JSON>}``, with what triggers it: ``"series_types"`` (names) and/or
``"rule"`` (conditions as series types have them: ``[{"tag": "Modality", "values": ["CT"]}]``), the
``"level"`` it runs at (``series`` or ``study``), its ``"parameters"`` with their defaults, whether it runs
again on a series that grew after its run (``"rerun_on_growth"``), and its retries (``"retries"``, with a
back-off from ``"retry_seconds"`` doubling each time) and ``"timeout_seconds"``.  An app without series
types or rule runs on demand only.  The statements are ``index/apps.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..index import Index
from ..index import apps as rows
from ..index._records import iso
from ..index.query import MAX_COUNT, row_id
from ..index.unique import writing_unique
from ..organize.seriestypes import Condition, conditions_of, stored_conditions
from .examples import FOLDER as EXAMPLES
from .execute import FUNCTION, NOTEBOOK

__all__ = ["LEVELS", "App", "create_app", "delete_app", "get_app", "list_apps", "update_app"]

LEVELS = ("series", "study")
MAX_NAME_LENGTH = 200
MAX_RETRIES = 10
MAX_CODE = 5_000_000


@dataclass(frozen=True)
class App:
    id: int
    name: str
    version: str
    kind: str
    target: str
    code: str
    series_types: tuple[str, ...]
    rule: tuple[Condition, ...]
    level: str
    parameters: dict[str, Any]
    enabled: bool
    rerun_on_growth: bool
    retries: int
    retry_seconds: float
    timeout_seconds: float | None
    created: str
    updated: str

    @property
    def triggered(self) -> bool:
        """Whether arriving series trigger it (else it runs on demand only)."""
        return bool(self.series_types or self.rule)

    def to_json(self, code: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            self.kind: self.target if self.kind == FUNCTION or not self.code else "(registered with its code)",
            "has_code": bool(self.code),
            "series_types": list(self.series_types),
            "rule": [c.to_json() for c in self.rule],
            "level": self.level,
            "parameters": dict(self.parameters),
            "enabled": self.enabled,
            "rerun_on_growth": self.rerun_on_growth,
            "retries": self.retries,
            "retry_seconds": self.retry_seconds,
            "timeout_seconds": self.timeout_seconds,
            "created": self.created,
            "updated": self.updated,
        }
        if code:
            out["code"] = self.code
        return out


def _app(row: rows.AppRow) -> App:
    return App(
        id=row.id, name=row.name, version=row.version, kind=row.kind, target=row.target, code=row.code,
        series_types=tuple(json.loads(row.series_types or "[]")), rule=stored_conditions(row.rule),
        level=row.level, parameters=dict(json.loads(row.parameters or "{}")), enabled=row.enabled,
        rerun_on_growth=row.rerun_on_growth, retries=row.retries, retry_seconds=row.retry_seconds,
        timeout_seconds=row.timeout_seconds, created=iso(row.created), updated=iso(row.updated),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- checks


def _text(body: Mapping[str, Any], key: str, default: str | None = None, maximum: int = MAX_NAME_LENGTH) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value.strip() or len(value) > maximum or "\x00" in value:
        raise InvalidInput(f'"{key}" must be a non-empty string of at most {maximum} characters')
    return value.strip()


def _number(body: Mapping[str, Any], key: str, default: float | None, low: float, high: float) -> float | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput(f'"{key}" must be a number from {low:g} to {high:g}')
    return float(value)


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f'"{key}" must be true or false')
    return value


def _what_runs(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, target, code) of the app: a function (by name, file or code) or a notebook (path or JSON)."""
    function, notebook, code = body.get("function"), body.get("notebook"), body.get("code", "")
    if (function is None) == (notebook is None):
        raise InvalidInput(
            'an app is either {"function": "package.module:function"} (or a "/path/file.py:function", or '
            '"code" with "function" naming its entry point) or {"notebook": "/path/app.ipynb" | <notebook JSON>}'
        )
    if not isinstance(code, str) or len(code) > MAX_CODE:
        raise InvalidInput(f'"code" must be Python source of at most {MAX_CODE} characters')
    if function is not None:
        target = _text(body, "function", maximum=4096)
        if code:
            if not target.isidentifier():
                raise InvalidInput('with "code", "function" names the entry point in it (an identifier)')
            try:
                compile(code, "<app>", "exec")
            except SyntaxError as error:
                raise InvalidInput(f"the app's code does not compile: {error}") from None
            return FUNCTION, target, code
        where, colon, attribute = target.rpartition(":")
        if not colon or not where or not attribute.isidentifier():
            raise InvalidInput('"function" must be "package.module:function" or "/path/file.py:function"')
        if where.endswith(".py") and not Path(where).is_file():
            raise InvalidInput(f"the app's file {where} does not exist on the node")
        return FUNCTION, target, ""
    if isinstance(notebook, Mapping):
        if not isinstance(notebook.get("cells"), list):
            raise InvalidInput('"notebook" given as JSON must be a notebook (with "cells")')
        text = json.dumps(notebook)
        if len(text) > MAX_CODE:
            raise InvalidInput(f"the notebook must be at most {MAX_CODE} characters of JSON")
        return NOTEBOOK, "", text
    path = _text(body, "notebook", maximum=4096)
    if not Path(path).is_file() and (EXAMPLES / path).is_file():
        path = str(EXAMPLES / path)  # a shipped example, by its name
    if not path.endswith(".ipynb") or not Path(path).is_file():
        raise InvalidInput(f"the app's notebook {path} does not exist on the node (give a .ipynb path or its JSON)")
    return NOTEBOOK, path, ""


def _values(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(
            'an app is a JSON object like {"name": "lungs", "version": "1", "function": "package.module:function", '
            '"series_types": ["CT"]}'
        )
    kind, target, code = _what_runs(body)
    types = body.get("series_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) and t.strip() for t in types):
        raise InvalidInput('"series_types" must be a list of series type names')
    rule = conditions_of(body.get("rule", []))
    level = body.get("level", "series")
    if level not in LEVELS:
        raise InvalidInput(f'"level" must be one of {", ".join(LEVELS)}, not {level!r}')
    parameters = body.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise InvalidInput('"parameters" must be an object of names and default values')
    try:
        parameters_text = json.dumps(dict(parameters), allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput('"parameters" must be JSON values') from None
    retries = body.get("retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise InvalidInput(f'"retries" must be an integer from 0 to {MAX_RETRIES}')
    return {
        "name": _text(body, "name"),
        "version": _text(body, "version", "1"),
        "kind": kind,
        "target": target,
        "code": code,
        "series_types": json.dumps(sorted({t.strip() for t in types})),
        "rule": json.dumps([c.to_json() for c in rule]),
        "level": level,
        "parameters": parameters_text,
        "enabled": _flag(body, "enabled", True),
        "rerun_on_growth": _flag(body, "rerun_on_growth", False),
        "retries": retries,
        "retry_seconds": _number(body, "retry_seconds", 10.0, 0.0, 24 * 3600.0),
        "timeout_seconds": _number(body, "timeout_seconds", None, 0.001, 7 * 24 * 3600.0),
    }


def _key(app_id: Any) -> int:
    key = row_id(app_id, "app id")
    if key is None:
        raise NotFound(f"app {app_id} not found")
    return key


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- registry


def list_apps(index: Index, start_index: int = 0, count: int = 100) -> list[App]:
    return [_app(row) for row in rows.apps_page(index, start_index, min(count, MAX_COUNT))]


def enabled_apps(index: Index) -> list[App]:
    return [_app(row) for row in rows.enabled_apps(index)]


def get_app(index: Index, app_id: Any) -> App:
    """By id, or by name (a string that is not a number)."""
    with index.reading() as conn:
        if isinstance(app_id, str) and not app_id.isdigit():
            found = rows.app_id_named(conn, app_id)
            if found is None:
                raise NotFound(f"no app named {app_id!r}")
            key = found
        else:
            key = _key(int(app_id) if isinstance(app_id, str) else app_id)
        row = rows.app_by_id(conn, key)
    if row is None:
        raise NotFound(f"app {app_id} not found")
    return _app(row)


def create_app(index: Index, body: Any) -> App:
    """Register an app; a taken name → 409."""
    values = _values(body)
    stamp = _now()
    with writing_unique(index, f"an app named {values['name']!r} already exists") as conn:
        if rows.app_id_named(conn, values["name"]) is not None:
            raise Conflict(f"an app named {values['name']!r} already exists: change it (PUT) or delete it")
        app_id = rows.insert_app(conn, {**values, "created": stamp, "updated": stamp})
        row = rows.app_by_id(conn, app_id)
    assert row is not None
    return _app(row)


def update_app(index: Index, app_id: Any, body: Any) -> App:
    """Change what is given (``{"enabled": false}``, a new ``"version"`` with its ``"function"``, ...)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the body must be a JSON object of the app's fields to change")
    current = get_app(index, app_id)
    merged = current.to_json(code=True)
    merged.pop(NOTEBOOK if current.kind == FUNCTION else FUNCTION, None)
    if current.kind == NOTEBOOK:
        merged["notebook"] = json.loads(current.code) if current.code else current.target
        merged.pop("code", None)
    if "function" in body or "notebook" in body:
        for key in ("function", "notebook", "code"):
            merged.pop(key, None)
    merged.update(body)
    values = _values(merged)
    with writing_unique(index, f"an app named {values['name']!r} already exists") as conn:
        other = rows.app_id_named(conn, values["name"])
        if other is not None and other != current.id:
            raise Conflict(f"an app named {values['name']!r} already exists")
        rows.update_app(conn, current.id, {**values, "updated": _now()})
        row = rows.app_by_id(conn, current.id)
    assert row is not None
    return _app(row)


def delete_app(index: Index, app_id: Any) -> None:
    """Delete the app (its runs stay, with its name and version); unknown → 404."""
    app = get_app(index, app_id)
    rows.delete_app(index, app.id)
