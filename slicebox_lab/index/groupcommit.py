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

    __slots__ = ("work", "durable", "result", "error", "done", "wake")

    def __init__(self, work: Callable[[sa.Connection], Any], durable: bool) -> None:
        self.work = work
        self.durable = durable
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        #: held until this caller is woken: its work is done, or it is to lead the next batch
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Leader/follower batching of write transactions (see the module docstring).

    A commit wakes exactly the callers it finished, and the next leader if more wait: not every waiter. With
    a box's eight images in flight, waking all of them after each commit (to see whose work was done) was
    most of the thread switches of a key record, each a hand-over of the GIL."""

    #: the most ingests one transaction takes (bounds the latency of the first of them)
    max_batch = 64

    def __init__(self, writing: Callable[[bool], AbstractContextManager[sa.Connection]]) -> None:
        self._writing = writing
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leader = False

    def run(self, work: Callable[[sa.Connection], T], durable: bool = True) -> T:
        """``work(conn)`` inside a shared transaction; returns after that transaction committed (durably,
        when this or any other work of the batch asked for it)."""
        pending = _Pending(work, durable)
        with self._lock:
            self._queue.append(pending)
            follow = self._leader
            self._leader = True
        if follow:
            pending.wake.acquire()  # done by a leader, or made the leader
        while not pending.done:  # lead: take what waits now (ours may lie beyond a full batch: then again)
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._lock:
                    for item in batch:
                        if item is not pending:
                            item.wake.release()
                    if pending.done or not self._queue:
                        successor = self._queue[0] if self._queue else None
                        self._leader = successor is not None
                        if successor is not None:
                            successor.wake.release()  # it finds its work not done: it leads
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
