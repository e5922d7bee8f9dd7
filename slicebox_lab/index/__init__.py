"""The metadata index: what is stored, by patient → study → series → image (no file knowledge).

``Index(create_engine(url))`` after ``upgrade(engine)``; see ``repository.py`` for the
concurrency rules and ``query.py`` for filters, paging and ordering.  The statements of the node's
other tables are small stores named for their feature (``users.py``, ``jobs.py``, ``boxes.py``, ...):
code outside the index composes their statements in one transaction by handing them the
:data:`Connection` of ``Index.writing()``, and imports no SQLAlchemy itself.
"""

from __future__ import annotations

from sqlalchemy import Connection

from slicebox_lab.index.database import create_engine, sqlite_url, upgrade
from slicebox_lab.index.query import MAX_COUNT, Query, QueryProperty
from slicebox_lab.index.repository import LOG_ENTRY_TYPES, Index
from slicebox_lab.index.schema import metadata

__all__ = [
    "LOG_ENTRY_TYPES",
    "MAX_COUNT",
    "Connection",
    "Index",
    "Query",
    "QueryProperty",
    "create_engine",
    "metadata",
    "sqlite_url",
    "upgrade",
]
