"""/slicebox/api/forwarding/rules: forward what a source delivers to a box or a remote node (admin only).

Thin adapters over :mod:`slicebox_lab.routing.forwarding`, which validates every body; the node's
forwarding service queues, batches, sends and (keepImages=false) deletes.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..routing import forwarding
from .base import ADMIN_RESOURCE, API, SliceboxHandler

#: configuration routes are for administrators (the role model keys on this name)


class _ForwardingHandler(SliceboxHandler):
    auth_resource = ADMIN_RESOURCE

    def page(self) -> tuple[int, int]:
        return self.int_argument("startindex", 0, minimum=0), min(self.int_argument("count", 20, minimum=0), 10000)


class RulesHandler(_ForwardingHandler):
    auth_resource = ADMIN_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """A page of rules (``startindex``, ``count``), oldest first."""
        start, count = self.page()
        self.write_json(await self.blocking(forwarding.list_rules, self.context.index, start, count))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"source": {"sourceType", "sourceName"}, "destination": {"type", "id"}, "keepImages", "quietSeconds"}``."""
        created = await self.blocking(forwarding.create_rule, self.context.index, self.json_body())
        self.write_json(created, status=201)


class RuleHandler(_ForwardingHandler):
    auth_resource = ADMIN_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, rule_id: str) -> None:
        self.write_json(await self.blocking(forwarding.get_rule, self.context.index, int(rule_id)))

    @web.authenticated
    @authorized
    async def delete(self, rule_id: str) -> None:
        """Delete the rule, its queue and its batches; nothing more is queued for it."""
        await self.blocking(forwarding.delete_rule, self.context.index, int(rule_id))
        self.set_status(204)
        await self.finish()


class BatchesHandler(_ForwardingHandler):
    auth_resource = ADMIN_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, rule_id: str) -> None:
        """A page of the rule's batches, newest first, with their states."""
        start, count = self.page()
        self.write_json(await self.blocking(forwarding.list_batches, self.context.index, int(rule_id), start, count))


_ID = r"(\d+)"

default_handlers = [
    (rf"{API}/forwarding/rules", RulesHandler),
    (rf"{API}/forwarding/rules/{_ID}", RuleHandler),
    (rf"{API}/forwarding/rules/{_ID}/batches", BatchesHandler),
]
