"""A write transaction in which a unique-key violation is a :class:`~slicebox_lab.errors.Conflict`.

Features check for a duplicate before they insert, but two requests can both pass the check; the
database then refuses the second insert (or its commit).  The feature names the duplicate in
``conflict``; how the database says it stays here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from ..errors import Conflict
from .repository import Index

__all__ = ["writing_unique"]


@contextmanager
def writing_unique(index: Index, conflict: str) -> Iterator[sa.Connection]:
    """``index.writing()``; an integrity error of any statement or of the commit is ``Conflict(conflict)``."""
    try:
        with index.writing() as conn:
            yield conn
    except sa.exc.IntegrityError:
        raise Conflict(conflict) from None
