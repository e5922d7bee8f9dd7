"""/slicebox/api/jobs: follow, cancel and resume long operations (sends, moves, exports, ...)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, SliceboxHandler


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
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.context.jobs.get, int(job_id)))


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
