"""/slicebox/api/scps and /slicebox/api/scus: this node's SCP listeners and the remote nodes it knows."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import InvalidInput
from ..model import to_json
from ..net import nodes, scu, scu_jobs
from ..net.nodes import ANY_HOST, ScpConfig
from ..net.scp import ScpService
from .base import API, SliceboxHandler


class _ScpHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @property
    def scps(self) -> ScpService:
        return self.service(ScpService)

    def scp_json(self, config: ScpConfig) -> dict[str, Any]:
        return {**to_json(config), "running": self.scps.is_running(config.id)}


def _page(items: list[Any], handler: SliceboxHandler) -> list[Any]:
    start = handler.int_argument("startindex", 0, minimum=0)
    count = handler.int_argument("count", 20, minimum=0)
    return items[start : start + count]


def _object_body(handler: SliceboxHandler, example: str) -> dict[str, Any]:
    body = handler.json_body()
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object {example}")
    return body


class ScpsHandler(_ScpHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        scps = _page(await self.blocking(self.scps.list), self)
        self.write_json([self.scp_json(config) for config in scps])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "ae_title", "port", "host"?}`` → 201 with the port actually listened on."""
        body = _object_body(self, '{"name": ..., "ae_title": ..., "port": ..., "host": "0.0.0.0"}')
        config = await self.blocking(
            self.scps.add, body.get("name"), body.get("ae_title"), body.get("port"), body.get("host", ANY_HOST)
        )
        self.write_json(self.scp_json(config), status=201)


class ScpHandler(_ScpHandler):
    @web.authenticated
    @authorized
    async def get(self, scp_id: str) -> None:
        self.write_json(self.scp_json(await self.blocking(self.scps.get, int(scp_id))))

    @web.authenticated
    @authorized
    async def delete(self, scp_id: str) -> None:
        await self.blocking(self.scps.remove, int(scp_id))
        self.set_status(204)
        self.finish()


class ScusHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(_page(await self.blocking(nodes.list_scus, self.context.index), self))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"name", "ae_title", "host", "port"}`` → 201."""
        body = _object_body(self, '{"name": ..., "ae_title": ..., "host": ..., "port": ...}')
        node = await self.blocking(
            nodes.add_scu,
            self.context.index,
            body.get("name"),
            body.get("ae_title"),
            body.get("host"),
            body.get("port"),
        )
        self.write_json(node, status=201)


class ScuHandler(SliceboxHandler):
    auth_resource = "slicebox-admin"

    @web.authenticated
    @authorized
    async def get(self, scu_id: str) -> None:
        self.write_json(await self.blocking(nodes.get_scu, self.context.index, int(scu_id)))

    @web.authenticated
    @authorized
    async def delete(self, scu_id: str) -> None:
        await self.blocking(nodes.delete_scu, self.context.index, int(scu_id))
        self.set_status(204)
        self.finish()


class ScuEchoHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, scu_id: str) -> None:
        """C-ECHO the remote node: 200 ``{"status": "ok"}``, or 502 naming why it failed."""
        node = await self.blocking(nodes.get_scu, self.context.index, int(scu_id))
        await self.blocking(scu.echo, node)
        self.write_json({"status": "ok"})


class ScuSendHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, scu_id: str) -> None:
        """``{"image_ids": [...]}`` → 201 with the ``scu-send`` job (C-STORE over one association)."""
        body = _object_body(self, '{"image_ids": [1, 2, 3]}')
        job = await self.blocking(
            scu_jobs.submit_send, self.context, int(scu_id), body.get("image_ids"), owner=self.user_name()
        )
        self.write_json(job, status=201)


class ScuQueryHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, scu_id: str) -> None:
        """``{"level", "identifier"}`` → 200 with the C-FIND answers as rows of DICOM keywords; 502 if it fails."""
        body = _object_body(self, '{"level": "STUDY", "identifier": {"PatientName": "A*", "StudyInstanceUID": ""}}')
        node = await self.blocking(nodes.get_scu, self.context.index, int(scu_id))
        scu.identifier_dataset(body.get("level"), body.get("identifier"))  # 400 before any network
        self.write_json(await self.blocking(scu.query, node, body.get("level"), body.get("identifier")))


class ScuRetrieveHandler(SliceboxHandler):
    @web.authenticated
    @authorized
    async def post(self, scu_id: str) -> None:
        """``{"level", "identifier", "method": "move"|"get", "destination_scp_id"?}`` → 201 with the job."""
        body = _object_body(
            self,
            '{"level": "STUDY", "identifier": {"StudyInstanceUID": "..."}, "method": "move", "destination_scp_id": 1}',
        )
        job = await self.blocking(
            scu_jobs.submit_retrieve,
            self.context,
            int(scu_id),
            body.get("level"),
            body.get("identifier"),
            body.get("method", "move"),
            body.get("destination_scp_id"),
            owner=self.user_name(),
        )
        self.write_json(job, status=201)


default_handlers = [
    (rf"{API}/scps", ScpsHandler),
    (rf"{API}/scps/(\d+)", ScpHandler),
    (rf"{API}/scus", ScusHandler),
    (rf"{API}/scus/(\d+)", ScuHandler),
    (rf"{API}/scus/(\d+)/echo", ScuEchoHandler),
    (rf"{API}/scus/(\d+)/send", ScuSendHandler),
    (rf"{API}/scus/(\d+)/query", ScuQueryHandler),
    (rf"{API}/scus/(\d+)/retrieve", ScuRetrieveHandler),
]
