"""The log: entries newest first, filtered by subject and type, deleted one by one or all."""

from __future__ import annotations

from datetime import datetime

import pytest
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab import errors
from slicebox_lab.index import Index


def test_add_list_filter_delete(index: Index) -> None:
    added = [
        index.add_log("INFO", "System", "started"),
        index.add_log("WARN", "SCP", "association rejected"),
        index.add_log("ERROR", "SCP", "store failed"),
        index.add_log("DEFAULT", "Box", "x' OR '1'='1"),
        index.add_log("INFO", "SCP", "store ok"),
    ]
    assert datetime.fromisoformat(added[0].created).utcoffset() is not None
    assert index.list_log() == list(reversed(added))
    assert index.list_log(start_index=1, count=2) == [added[3], added[2]]
    assert index.list_log(subject="SCP") == [added[4], added[2], added[1]]
    assert index.list_log(subject="SCP", entry_type="ERROR") == [added[2]]
    assert index.list_log(subject="scp") == []
    assert index.list_log(subject="x' OR '1'='1") == []
    index.delete_log(added[2].id)
    index.delete_log(987654)
    index.delete_log(2**40)
    assert [e.id for e in index.list_log(subject="SCP")] == [added[4].id, added[1].id]
    index.delete_log()
    assert index.list_log() == []


def test_invalid_log_input(index: Index) -> None:
    with pytest.raises(errors.InvalidInput, match="log entry type"):
        index.add_log("FATAL", "System", "x")
    with pytest.raises(errors.InvalidInput, match="log entry type"):
        index.list_log(entry_type="FATAL")
    with pytest.raises(errors.InvalidInput, match="startindex must be non-negative"):
        index.list_log(start_index=-1)
    with pytest.raises(errors.InvalidInput, match="count must be non-negative"):
        index.list_log(count=-5)
