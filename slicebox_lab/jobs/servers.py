"""Servers sharing one database: their ids, their registration and heartbeats, and when one is gone.

Several servers, one database (e.g. one Jupyter server per user of a JupyterHub on one PostgreSQL
index).  Every job manager has a server id, ``host:pid:random``, recorded on the jobs it accepts; it
registers its server in the ``servers`` table (beating with its jobs, removed at shutdown), so
:meth:`JobManager.live_servers` tells whether other servers use the database now.  Gone means: a
process of our host whose pid is not alive and that missed a beat, or a heartbeat older than
``stale_after`` seconds (other hosts, or a reused pid); a live server is never taken for gone.
Heartbeats use each host's clock: ``stale_after`` must exceed the clock skew.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..index import Index
from ..index import jobs as rows


def now() -> datetime:
    return datetime.now(UTC)


def server_id() -> str:
    """``host:pid:random``: names this server process among all that share the database."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def host_and_pid(server: str) -> tuple[str, int | None]:
    """The host and pid of a server id (None for a malformed or empty one)."""
    parts = server.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return server, None
    return parts[0], int(parts[1])


def _alive(server: str) -> bool:
    """Whether the process of a server id of this host exists."""
    pid = host_and_pid(server)[1]
    return pid is not None and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 delivers nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Liveness:
    """When a server counts as gone, from its last heartbeat."""

    heartbeat_interval: float
    stale_after: float

    def gone(self, server: str, beat: datetime | None, now: datetime) -> bool:
        if beat is None:
            return True
        age = now - beat
        if age > timedelta(seconds=self.stale_after):
            return True
        # a dead pid of our host counts only once a beat or two were missed: containers sharing a
        # host name (host networking) have pid namespaces of their own
        host, pid = host_and_pid(server)
        missed = age > timedelta(seconds=2 * self.heartbeat_interval)
        return missed and host == socket.gethostname() and pid is not None and not _pid_alive(pid)


def register(index: Index, server: str) -> None:
    host, pid = host_and_pid(server)
    stamp = now()
    rows.register_server(index, server, host, pid or 0, stamp)


def live_servers(index: Index, server: str, liveness: Liveness) -> list[str]:
    """The servers other than ``server`` using this database now (registered and not gone), by id."""
    others = rows.other_servers(index, server)
    stamp = now()
    return sorted(other for other, beat in others if not liveness.gone(other, beat, stamp))


def settled_live_servers(index: Index, server: str, liveness: Liveness) -> list[str]:
    """:func:`live_servers`, once servers of this host whose process is dead have missed their beats.

    Right after a crash the dead server's last beat is still fresh, so it would count as live for
    up to two heartbeat intervals; the crash repair waits that out rather than leave the dead
    server's half-written files for ever.
    """
    deadline = time.monotonic() + 2 * liveness.heartbeat_interval + 1
    while True:
        live = live_servers(index, server, liveness)
        doubtful = [s for s in live if host_and_pid(s)[0] == socket.gethostname() and not _alive(s)]
        if not doubtful or time.monotonic() > deadline:
            return live
        time.sleep(0.25)


def forget_gone_servers(index: Index, server: str, liveness: Liveness) -> None:
    """Unregister the other servers that are gone (unless one beat since we looked)."""
    others = rows.other_servers(index, server)
    stamp = now()
    for other, beat in others:
        if liveness.gone(other, beat, stamp):
            rows.forget_server(index, other, beat)
