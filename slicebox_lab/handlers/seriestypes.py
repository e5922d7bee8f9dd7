"""/slicebox/api/seriestypes (types and their rules) and /metadata/series/{id}/seriestypes."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..organize import seriestypes
from .base import API, SliceboxHandler


class SeriesTypesHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        found = await self.blocking(
            seriestypes.list_types,
            self.context.index,
            self.int_argument("startindex", 0, minimum=0),
            self.int_argument("count", 20, minimum=0),
        )
        self.write_json([t.to_json() for t in found])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name"}`` → 201; a taken name → 409."""
        created = await self.blocking(seriestypes.create_type, self.context.index, self.json_body())
        self.write_json(created.to_json(), status=201)


class SeriesTypeHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, type_id: str) -> None:
        self.write_json((await self.blocking(seriestypes.get_type, self.context.index, int(type_id))).to_json())

    @web.authenticated
    @authorized
    async def put(self, type_id: str) -> None:
        """Rename: ``{"name"}``."""
        updated = await self.blocking(seriestypes.update_type, self.context.index, int(type_id), self.json_body())
        self.write_json(updated.to_json())

    @web.authenticated
    @authorized
    async def delete(self, type_id: str) -> None:
        """Delete the type with its rules and assignments; 204 also for an unknown id."""
        await self.blocking(seriestypes.delete_type, self.context, int(type_id))
        self.set_status(204)
        await self.finish()


class RulesHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, type_id: str) -> None:
        found = await self.blocking(seriestypes.list_rules, self.context.index, int(type_id))
        self.write_json([r.to_json() for r in found])

    @web.authenticated
    @authorized
    async def post(self, type_id: str) -> None:
        """``{"attributes": [{"tag", "values"}]}`` → 201; every series is re-classified (a job)."""
        rule = await self.blocking(seriestypes.create_rule, self.context, int(type_id), self.json_body())
        self.write_json(rule.to_json(), status=201)


class RuleHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, type_id: str, rule_id: str) -> None:
        rule = await self.blocking(seriestypes.get_rule, self.context.index, int(type_id), int(rule_id))
        self.write_json(rule.to_json())

    @web.authenticated
    @authorized
    async def put(self, type_id: str, rule_id: str) -> None:
        """Replace the rule's attributes; every series is re-classified (a job)."""
        rule = await self.blocking(seriestypes.update_rule, self.context, int(type_id), int(rule_id), self.json_body())
        self.write_json(rule.to_json())

    @web.authenticated
    @authorized
    async def delete(self, type_id: str, rule_id: str) -> None:
        await self.blocking(seriestypes.delete_rule, self.context, int(type_id), int(rule_id))
        self.set_status(204)
        await self.finish()


class UpdateStatusHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """``{"running", "job"}``: whether series are being classified, and the latest re-classification."""
        status = await self.blocking(seriestypes.classifier(self.context).status)
        self.write_json(seriestypes.status_json(status))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Re-classify every series now → 202 with the job."""
        run = seriestypes.classifier(self.context).reclassify
        self.write_json(await self.blocking(run, self.user_name()), status=202)


class SeriesQueryHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """The types of many series at once: ``{"series_ids": [...]}`` → ``[{"series_id", "series_type"}]``."""
        found = await self.blocking(seriestypes.types_of_many_series, self.context.index, self.json_body())
        self.write_json(found)


class SeriesSeriesTypesHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def get(self, series_id: str) -> None:
        found = await self.blocking(seriestypes.types_of_series, self.context.index, int(series_id))
        self.write_json([t.to_json() for t in found])

    @web.authenticated
    @authorized
    async def delete(self, series_id: str) -> None:
        await self.blocking(seriestypes.unassign_types, self.context.index, int(series_id))
        self.set_status(204)
        await self.finish()


class SeriesSeriesTypeHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def put(self, series_id: str, type_id: str) -> None:
        """Manual assignment, kept by re-classification; unknown series or type → 404."""
        await self.blocking(seriestypes.assign_type, self.context.index, int(series_id), int(type_id))
        self.set_status(204)
        await self.finish()

    @web.authenticated
    @authorized
    async def delete(self, series_id: str, type_id: str) -> None:
        await self.blocking(seriestypes.unassign_types, self.context.index, int(series_id), int(type_id))
        self.set_status(204)
        await self.finish()


_T = rf"{API}/seriestypes"
_ID = r"(\d+)"

default_handlers = [
    (_T, SeriesTypesHandler),
    (rf"{_T}/updatestatus", UpdateStatusHandler),
    (rf"{_T}/series/query", SeriesQueryHandler),
    (rf"{_T}/{_ID}", SeriesTypeHandler),
    (rf"{_T}/{_ID}/rules", RulesHandler),
    (rf"{_T}/{_ID}/rules/{_ID}", RuleHandler),
    (rf"{API}/metadata/series/{_ID}/seriestypes", SeriesSeriesTypesHandler),
    (rf"{API}/metadata/series/{_ID}/seriestypes/{_ID}", SeriesSeriesTypeHandler),
]
