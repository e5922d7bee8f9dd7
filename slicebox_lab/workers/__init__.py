"""Worker processes for per-image CPU work (house rule 5): parsing, anonymizing, rendering, transcoding.

One Python process has one GIL, so a node that parses, anonymizes and renders in its server
process uses one core whatever the number of senders.  :class:`WorkerPool` runs such work in a
pool of processes (``SliceboxApp.workers``), handing them file paths rather than pickled images;
the server process keeps the event loop, networking, the index commits and the events.  With no
workers (``workers=0``: debugging, tests) the same functions run in the calling thread.
"""

from __future__ import annotations

from .pool import WorkerFailed, WorkerPool

__all__ = ["WorkerFailed", "WorkerPool"]
