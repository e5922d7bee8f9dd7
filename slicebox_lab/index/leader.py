"""One leader among the servers sharing a database, for the work that must run once per database.

Several Jupyter servers (one per user under JupyterHub) may share one PostgreSQL index.  Most of
what a server does is per request or per image it received, and safe side by side.  Some services
sweep the whole database periodically, and two servers doing so at once would do the work twice:

* the box loop (``box/service.py``): pushing our outgoing transactions and polling partners;
* the forwarding worker (``routing/forwarding.py``): batching the queues and sending the batches.

Those rounds run only on the leader (:meth:`Leadership.is_leader`).  What feeds them stays on every
server (an image received anywhere is queued for forwarding; a send asked anywhere is stored), so
nothing is lost on a non-leader: the leader picks it up at its next round.

PostgreSQL: the leader holds a session advisory lock (``pg_try_advisory_lock``) on a connection of
its own; the others try again every ``retry_interval`` seconds.  A leader that dies or loses its
connection releases the lock with its session, and another server takes over.  A leader cut off
from the database notices at its next check and stops leading, so two leaders overlap at most
``retry_interval`` seconds (the swept work tolerates that: sends are idempotent at the partner).
SQLite: servers sharing one file share one host; every server leads (this guard is for PostgreSQL).
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

log = logging.getLogger(__name__)

#: advisory lock key of the leader (index/database.py and repository.py hold 0x5B0C_0001 and _0002)
PG_LEADER_LOCK = 0x5B0C_0003


class Leadership:
    """Whether this server leads the once-per-database work; thread-safe, blocking."""

    def __init__(self, engine: sa.Engine, retry_interval: float = 2.0, key: int = PG_LEADER_LOCK) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"
        self._retry = retry_interval
        self._key = key
        self._lock = threading.Lock()
        self._conn: sa.Connection | None = None
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        """True while this server holds the leadership (the first call tries at once)."""
        if not self._pg:
            return True
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._check()
                self._thread = threading.Thread(target=self._run, name="slicebox-leader", daemon=True)
                self._thread.start()
            return self._leading

    def close(self) -> None:
        """Give the leadership up (another server takes over at its next try)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self._retry + 5)
        with self._lock:
            self._release()

    def _run(self) -> None:
        while not self._stop.wait(self._retry):
            with self._lock:
                if not self._stop.is_set():
                    self._check()

    def _check(self) -> None:
        """Take the lock if free, or make sure our session (and so the lock) is still there."""
        try:
            if self._conn is None:
                self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self._leading:
                self._conn.execute(sa.select(sa.literal(1))).one()
                return
            got = bool(self._conn.execute(sa.select(sa.func.pg_try_advisory_lock(self._key))).scalar())
            if got:
                log.info("slicebox: this server now leads the once-per-database work (boxes, forwarding)")
            self._leading = got
        except sa.exc.SQLAlchemyError:
            if self._leading:
                log.warning("slicebox: lost the database connection holding the leadership", exc_info=True)
            self._leading = False
            self._drop()

    def _release(self) -> None:
        if self._conn is not None and self._leading:
            try:
                self._conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone, and the lock with it
        self._leading = False
        self._drop()

    def _drop(self) -> None:
        """Close our connection for good: the pool must never hand out a session holding the lock."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except sa.exc.SQLAlchemyError:
                pass
            self._conn = None
