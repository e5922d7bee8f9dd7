"""/slicebox/api/apps: the app registry (ADMINISTRATOR registers, changes, deletes), runs on demand (any role)
and the runs with their provenance, log and executed notebook."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..apps import registry, runs
from ..apps.service import AppService
from ..errors import InvalidInput, NotFound
from ..index import MAX_COUNT
from .base import ADMIN_RESOURCE, API, SliceboxHandler
from .metadata import query_from_json


class _AppsBase(SliceboxHandler):
    """Reading is open to every role; registering, changing and deleting need an ADMINISTRATOR."""

    auth_resource = ADMIN_RESOURCE

    def _changed(self) -> None:
        try:
            self.service(AppService).apps_changed()
        except Exception:  # noqa: BLE001 - a node without the service (secondary) reads the apps when it runs one
            pass


class AppsHandler(_AppsBase):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        found = await self.blocking(
            registry.list_apps,
            self.context.index,
            self.int_argument("startindex", 0, minimum=0),
            self.int_argument("count", 100, minimum=0),
        )
        self.write_json([a.to_json() for a in found])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Register an app → 201; a taken name → 409. An app is code that runs with the node's rights."""
        created = await self.blocking(registry.create_app, self.context.index, self.json_body())
        self._changed()
        self.audit_detail = f"app {created.name} {created.version}"
        self.write_json(created.to_json(), status=201)


class AppHandler(_AppsBase):
    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        found = await self.blocking(registry.get_app, self.context.index, int(app_id))
        self.write_json(found.to_json(code=True))

    @web.authenticated
    @authorized
    async def put(self, app_id: str) -> None:
        """Change an app (enable, disable, a new version, its triggers, its parameters)."""
        updated = await self.blocking(registry.update_app, self.context.index, int(app_id), self.json_body())
        self._changed()
        self.audit_detail = f"app {updated.name} {updated.version}"
        self.write_json(updated.to_json())

    @web.authenticated
    @authorized
    async def delete(self, app_id: str) -> None:
        await self.blocking(registry.delete_app, self.context.index, int(app_id))
        self._changed()
        self.set_status(204)
        await self.finish()


class AppRunsHandler(SliceboxHandler):
    """Any role lists an app's runs and runs it on demand."""

    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        found = await self.blocking(
            runs.list_runs,
            self.context.index,
            self.int_argument("startindex", 0, minimum=0),
            min(self.int_argument("count", 100, minimum=0), MAX_COUNT),
            app_id=int(app_id),
        )
        self.write_json([r.to_json() for r in found])

    @web.authenticated
    @authorized
    async def post(self, app_id: str) -> None:
        """``{"series_ids": [...]}`` or ``{"query": <a flat-series query>}``, with ``"parameters"`` → 202, the job."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('give {"series_ids": [1, 2]} or {"query": {...}}, with "parameters" if any')
        series_ids: Any = body.get("series_ids")
        if body.get("query") is not None:
            query = query_from_json({**body["query"], "start_index": 0, "count": MAX_COUNT})
            found = await self.blocking(self.context.index.query_flat_series, query)
            series_ids = [f.id for f in found]
        service = self.service(AppService)
        job = await self.blocking(
            service.submit_batch, int(app_id), series_ids, body.get("parameters"), self.user_name()
        )
        self.write_json(job, status=202)


class RunsHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        filters: dict[str, Any] = {}
        for name, key in (("app", "app_id"), ("job", "job_id"), ("batch", "batch_id"), ("series", "subject_id")):
            value = self.get_argument(name, None)
            if value:
                filters[key] = self.int_argument(name, minimum=1)
        if self.get_argument("state", None):
            filters["state"] = self.get_argument("state")
        found = await self.blocking(
            runs.list_runs,
            self.context.index,
            self.int_argument("startindex", 0, minimum=0),
            min(self.int_argument("count", 100, minimum=0), MAX_COUNT),
            **filters,
        )
        self.write_json([r.to_json() for r in found])


class RunHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """One run with its log and the SOPInstanceUIDs it ran on."""
        row = await self.blocking(runs.get_run, self.context.index, int(run_id))
        self.write_json(runs.RunRecord(row).to_json(full=True))


class RunNotebookHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """The executed notebook of a notebook app's run (``.ipynb``: open it in JupyterLab)."""
        row = await self.blocking(runs.get_run, self.context.index, int(run_id))
        if not row.notebook:
            raise NotFound(f"app run {run_id} has no executed notebook (a function app, or it never started)")
        self.set_header("Content-Type", "application/x-ipynb+json")
        if self.bool_argument("download", False):
            self.set_header("Content-Disposition", f'attachment; filename="{row.app_name}-run-{row.id}.ipynb"')
        self.finish(json.dumps(json.loads(row.notebook)))


_A = rf"{API}/apps"
default_handlers = [
    (_A, AppsHandler),
    (rf"{_A}/runs", RunsHandler),
    (rf"{_A}/runs/(\d+)", RunHandler),
    (rf"{_A}/runs/(\d+)/notebook", RunNotebookHandler),
    (rf"{_A}/(\d+)", AppHandler),
    (rf"{_A}/(\d+)/runs", AppRunsHandler),
]
