"""Group commit of write transactions on SQLite file databases.

An fsynced commit costs ~1 ms, and SQLite has one writer: a
transaction per image would make every concurrent ingest queue behind the previous one's fsync.
Ingests instead hand their work to :class:`GroupCommit`: whoever finds no transaction running
becomes the leader and writes every ingest waiting at that moment in ONE transaction, each in its
own SAVEPOINT (a failing one is rolled back alone), with one fsynced commit; each caller returns
only after the commit that holds its rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import sqlalchemy as sa

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Pending:
    """One ingest waiting for a group commit: its work, and then its result or error."""

    __slots__ = ("work", "durable", "result", "error", "done")

    def __init__(self, work: Callable[[sa.Connection], Any], durable: bool) -> None:
        self.work = work
        self.durable = durable
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Leader/follower batching of write transactions (see the module docstring)."""

    #: the most ingests one transaction takes (bounds the latency of the first of them)
    max_batch = 64

    def __init__(self, writing: Callable[[bool], AbstractContextManager[sa.Connection]]) -> None:
        self._writing = writing
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._leader = False

    def run(self, work: Callable[[sa.Connection], T], durable: bool = True) -> T:
        """``work(conn)`` inside a shared transaction; returns after that transaction committed (durably,
        when this or any other work of the batch asked for it)."""
        pending = _Pending(work, durable)
        with self._cond:
            self._queue.append(pending)
        while True:
            with self._cond:
                while self._leader and not pending.done:
                    self._cond.wait()
                if pending.done:
                    break
                # lead: take what waits now (ours may lie beyond a full batch: then lead again)
                self._leader = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leader = False
                    self._cond.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self._writing(any(item.durable for item in batch)) as conn:
                for item in batch:
                    savepoint = conn.begin_nested() if len(batch) > 1 else None
                    try:
                        item.result = item.work(conn)
                    except BaseException as error:  # this ingest's own failure: roll back it alone
                        item.error = error
                        if savepoint is None:
                            raise
                        savepoint.rollback()
                    else:
                        if savepoint is not None:
                            savepoint.commit()
        except BaseException as error:  # BEGIN or COMMIT failed: nothing of the batch is stored
            for item in batch:
                if item.error is None:
                    item.result, item.error = None, error
        finally:
            for item in batch:
                item.done = True
