"""Series tags: free-form labels on series ("cohort-A", "T1 reviewed"), many-to-many.

A tag is a unique name (surrounding whitespace dropped, case kept: "T1" and "t1" are two tags, as
Orthanc labels are).  Links cascade with the series: deleting the images of a series removes its
links, the tag stays (listed with ``series_count`` 0) until it is deleted explicitly.  Decisions
differing from Slicebox: a duplicate name is a 409 conflict (not 400), an unknown tag id is a 404
(not a 500), and a selection of series is tagged or untagged in one transaction (unknown series
ids fail the whole request with 404 naming them, so a typo never tags half a cohort).

The statements are ``index/seriestags.py``; listing and querying series by tag is in
``index/query.py`` (``series_tags``, any or all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slicebox_lab.errors import Conflict, InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index import seriestags as rows
from slicebox_lab.index.query import MAX_COUNT, row_id
from slicebox_lab.index.unique import writing_unique

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SELECTION",
    "SeriesTag",
    "add_series_to_tag",
    "create_tag",
    "delete_tag",
    "get_tag",
    "list_tags",
    "remove_series_from_tag",
    "rename_tag",
    "tag_series",
    "tags_of_series",
    "untag_series",
]

MAX_NAME_LENGTH = 200
#: series one bulk request may tag or untag
MAX_SELECTION = 100_000
_ORDERS = ("id", "name")


@dataclass(frozen=True)
class SeriesTag:
    id: int
    name: str
    #: how many series carry the tag now
    series_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "series_count": self.series_count}


def tag_name(value: Any) -> str:
    """A valid tag name from client input (400 otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput('a series tag needs a non-empty "name" (a string)')
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"a series tag name has at most {MAX_NAME_LENGTH} characters")
    if "\x00" in name:
        raise InvalidInput("a series tag name must not contain NUL characters")
    return name


def _key(value: Any, what: str) -> int:
    key = row_id(value, what)
    if key is None:
        raise NotFound(f"{what} {value} not found")
    return key


def _found(row: rows.TagRow | None, tag_id: int) -> SeriesTag:
    if row is None:
        raise NotFound(f"series tag {tag_id} not found")
    return SeriesTag(*row)


def _require_series(found: set[int], series_ids: Sequence[int]) -> None:
    """``found``: those of ``series_ids`` that exist."""
    missing = [i for i in series_ids if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise NotFound(f"series not found: {shown}")


def _series_selection(value: Any) -> list[int]:
    """``[1, 2]`` or ``{"series_ids": [1, 2]}`` → ids (order kept, duplicates dropped)."""
    if isinstance(value, dict):
        value = value.get("series_ids")
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise InvalidInput('give the series as a JSON array of integer ids, or {"series_ids": [1, 2, 3]}')
    if len(value) > MAX_SELECTION:
        raise InvalidInput(f"one request tags at most {MAX_SELECTION} series")
    ids = list(dict.fromkeys(value))
    bad = [i for i in ids if row_id(i, "series id") is None]
    if bad:
        raise NotFound(f"series not found: {', '.join(str(i) for i in bad[:10])}")
    return ids


# ---------------------------------------------------------------------------------------------- tags


def list_tags(
    index: Index,
    start_index: int = 0,
    count: int = 20,
    order_by: str | None = None,
    order_ascending: bool = True,
    filter: str = "",
) -> list[SeriesTag]:
    """Tags, ``filter`` a case-insensitive substring of the name; ordered by ``id`` or ``name``."""
    if order_by not in (None, *_ORDERS):
        raise InvalidInput(f"Property {order_by} does not exist: order series tags by id or name")
    found = rows.tags_page(index, start_index, min(count, MAX_COUNT), order_by or "id", order_ascending, filter)
    return [SeriesTag(*row) for row in found]


def get_tag(index: Index, tag_id: int) -> SeriesTag:
    key = _key(tag_id, "series tag")
    with index.reading() as conn:
        return _found(rows.tag_by_id(conn, key), key)


def create_tag(index: Index, body: Any) -> SeriesTag:
    """``{"name"}`` → the new tag; an existing name → 409."""
    name = tag_name(body.get("name") if isinstance(body, dict) else None)
    # a tag created concurrently (PostgreSQL) is refused by the database: also a conflict
    with writing_unique(index, f"a series tag named {name!r} already exists") as conn:
        if rows.tag_id_named(conn, name) is not None:
            raise Conflict(f"a series tag named {name!r} already exists")
        tag_id = rows.insert_tag(conn, name, datetime.now(UTC))
    return SeriesTag(tag_id, name, 0)


def rename_tag(index: Index, tag_id: int, body: Any) -> SeriesTag:
    """``{"name"}``: rename; its series keep it.  Another tag's name → 409."""
    key = _key(tag_id, "series tag")
    name = tag_name(body.get("name") if isinstance(body, dict) else None)
    with index.writing() as conn:
        other = rows.tag_id_named(conn, name)
        if other is not None and other != key:
            raise Conflict(f"a series tag named {name!r} already exists")
        if not rows.rename_tag(conn, key, name):
            raise NotFound(f"series tag {tag_id} not found")
        return _found(rows.tag_by_id(conn, key), key)


def delete_tag(index: Index, tag_id: int) -> None:
    """Delete the tag and its links (idempotent: an unknown id is not an error)."""
    key = row_id(tag_id, "series tag id")
    if key is None:
        return
    rows.delete_tag(index, key)


# ---------------------------------------------------------------------------------------------- links


def tags_of_series(index: Index, series_id: int) -> list[SeriesTag]:
    key = _key(series_id, "series")
    with index.reading() as conn:
        _require_series(rows.existing_series(conn, [key]), [key])
        return [SeriesTag(*row) for row in rows.tags_of_series(conn, key)]


def tag_series(index: Index, series_id: int, body: Any) -> SeriesTag:
    """Tag one series with ``{"name"}`` (the tag is created if new) or ``{"id"}`` (an existing tag).

    Idempotent: tagging twice keeps one link.  Unknown series or tag id → 404.
    """
    key = _key(series_id, "series")
    if not isinstance(body, dict) or ("name" not in body and "id" not in body):
        raise InvalidInput('give the tag as {"name": "cohort-A"} or {"id": 3}')
    with index.writing() as conn:
        _require_series(rows.existing_series(conn, [key]), [key])
        if body.get("name") is not None:
            name = tag_name(body["name"])
            found = rows.tag_id_named(conn, name)
            tag_id = found if found is not None else rows.insert_tag(conn, name, datetime.now(UTC))
        else:
            tag_id = _key(body.get("id"), "series tag")
            _found(rows.tag_by_id(conn, tag_id), tag_id)
        rows.link(conn, tag_id, [key])
        return _found(rows.tag_by_id(conn, tag_id), tag_id)


def untag_series(index: Index, series_id: int, tag_id: int) -> None:
    """Remove one tag from one series; the tag stays.  Idempotent."""
    series_key, tag_key = row_id(series_id, "series id"), row_id(tag_id, "series tag id")
    if series_key is None or tag_key is None:
        return
    rows.untag(index, series_key, tag_key)


def add_series_to_tag(index: Index, tag_id: int, body: Any) -> dict[str, int]:
    """Bulk tagging: all the series of the selection, or none (unknown ids → 404)."""
    key = _key(tag_id, "series tag")
    ids = _series_selection(body)
    with index.writing() as conn:
        _found(rows.tag_by_id(conn, key), key)
        _require_series(rows.existing_series(conn, ids), ids)
        added = rows.link(conn, key, ids)
    return {"series_tag_id": key, "added": added, "already_tagged": len(ids) - added}


def remove_series_from_tag(index: Index, tag_id: int, body: Any) -> dict[str, int]:
    """Bulk untagging; series that do not carry the tag (or no longer exist) are skipped."""
    key = _key(tag_id, "series tag")
    if isinstance(body, dict):
        body = body.get("series_ids")
    if not isinstance(body, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in body):
        raise InvalidInput('give the series as a JSON array of integer ids, or {"series_ids": [1, 2, 3]}')
    ids = [i for i in dict.fromkeys(body) if row_id(i, "series id") is not None]
    with index.writing() as conn:
        _found(rows.tag_by_id(conn, key), key)
        removed = rows.unlink(conn, key, ids)
    return {"series_tag_id": key, "removed": removed}
