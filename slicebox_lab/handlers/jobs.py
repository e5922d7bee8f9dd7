"""/slicebox/api/jobs: follow, cancel and resume long operations (sends, moves, exports, ...)."""

from __future__ import annotations

import asyncio
import contextlib

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from .base import API, SliceboxHandler

#: the longest a GET /jobs/{id}?wait=... holds its answer back
MAX_WAIT = 60.0


class JobsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(
            await self.blocking(
                self.context.jobs.list,
                start_index=self.int_argument("startindex", 0, minimum=0),
                count=self.int_argument("count", 20, minimum=0),
                state=self.get_argument("state", None) or None,
                kind=self.get_argument("kind", None) or None,
            )
        )


class JobHandler(SliceboxHandler):
    """``?wait=S`` (seconds, at most 60): a long poll, answered as soon as the job has finished, or as it is
    after S seconds; a client sees the end of a job at once without asking again and again."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        key, wait = int(job_id), self.float_argument("wait") or 0.0
        if not 0 <= wait <= MAX_WAIT:
            raise InvalidInput(f"query parameter wait must be between 0 and {MAX_WAIT} seconds")
        if not wait:
            self.write_json(await self.blocking(self.context.jobs.get, key))
            return
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # in the thread that finished the job
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile (the server stopped)
                loop.call_soon_threadsafe(_settle, finished)

        forget = self.context.jobs.when_finished(key, wake)
        try:
            job = await self.blocking(self.context.jobs.get, key)
            if not job.is_finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished, wait)
                job = await self.blocking(self.context.jobs.get, key)
        finally:
            forget()
        self.write_json(job)


def _settle(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)


class JobCancelHandler(SliceboxHandler):
    """A pending job is cancelled at once; a running one stops at its next check (still RUNNING here)."""

    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.context.jobs.cancel, int(job_id)))


class JobResumeHandler(SliceboxHandler):
    """A failed or cancelled job runs again as a new job that skips what the old one did."""

    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        owner = self.user_source().source_name
        self.write_json(await self.blocking(self.context.jobs.resume, int(job_id), owner=owner), status=201)


default_handlers = [
    (rf"{API}/jobs", JobsHandler),
    (rf"{API}/jobs/(\d+)", JobHandler),
    (rf"{API}/jobs/(\d+)/cancel", JobCancelHandler),
    (rf"{API}/jobs/(\d+)/resume", JobResumeHandler),
]
