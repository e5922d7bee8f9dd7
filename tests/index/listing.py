"""The hierarchy listings of ``index/query.py`` on an ``Index`` (what the REST handlers do in one read)."""

from __future__ import annotations

from typing import Any

from slicebox_lab.index import Index, query


def list_patients(index: Index, *args: Any, **kwargs: Any) -> Any:
    with index.reading() as conn:
        return query.list_patients(conn, *args, **kwargs)


def list_studies(index: Index, *args: Any, **kwargs: Any) -> Any:
    with index.reading() as conn:
        return query.list_studies(conn, *args, **kwargs)


def list_series(index: Index, *args: Any, **kwargs: Any) -> Any:
    with index.reading() as conn:
        return query.list_series(conn, *args, **kwargs)
