"""REST: /slicebox/api/scps and /slicebox/api/scus through a real Jupyter server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import netutil
import pytest
from helpers import serve_with

from slicebox_lab.context import SliceboxContext
from slicebox_lab.net.scp import ScpService, scp_service_factory

refused_port = netutil.refused_port


def body(response: Any) -> Any:
    return json.loads(response.body)


def post(api: Any, *parts: object, payload: Any) -> Any:
    return api(*parts, method="POST", body=json.dumps(payload))


@pytest.fixture
def scp_service(jp_serverapp: Any) -> Iterator[ScpService]:
    """An SCP service of the server's context, the one its handlers use."""
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    service = scp_service_factory(context)
    service.start()
    serve_with(jp_serverapp, service)
    yield service
    service.stop(5.0)


async def test_scps_add_list_get_delete(api: Any, scp_service: ScpService):
    r = await post(api, "scps", payload={"name": "pacs in", "ae_title": "SBX-IN", "port": 0, "host": "127.0.0.1"})
    assert r.code == 201, r.body
    scp = body(r)
    assert scp["id"] > 0 and scp["port"] > 0 and scp["running"] is True
    assert {k: scp[k] for k in ("name", "ae_title", "host")} == {
        "name": "pacs in",
        "ae_title": "SBX-IN",
        "host": "127.0.0.1",
    }
    assert body(await api("scps")) == [scp]
    assert body(await api("scps", scp["id"])) == scp
    with socket.create_connection(("127.0.0.1", scp["port"]), timeout=2):
        pass  # listening

    again = await post(api, "scps", payload={"name": "pacs in", "ae_title": "OTHER", "port": 0, "host": "127.0.0.1"})
    assert again.code == 409 and "already exists" in body(again)["message"]
    same_port = await post(
        api, "scps", payload={"name": "other", "ae_title": "OTHER", "port": scp["port"], "host": "127.0.0.1"}
    )
    assert same_port.code == 409 and f"Port {scp['port']} is already in use" in body(same_port)["message"]

    assert (await api("scps", scp["id"], method="DELETE")).code == 204
    assert (await api("scps", scp["id"])).code == 404
    assert (await api("scps", scp["id"], method="DELETE")).code == 404
    assert body(await api("scps")) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", scp["port"]), timeout=2).close()


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"name": "x", "ae_title": "A" * 17, "port": 0}, "at most 16"),
        ({"name": "x", "ae_title": "", "port": 0}, "empty"),
        ({"name": "x", "ae_title": "BAD\\AE", "port": 0}, "backslash"),
        ({"name": "x", "ae_title": "AE", "port": 65536}, "port"),
        ({"name": "x", "ae_title": "AE", "port": "104"}, "port"),
        ({"name": "", "ae_title": "AE", "port": 0}, "name"),
        ({"name": "x", "ae_title": 7, "port": 0}, "ae_title"),
    ],
)
async def test_scp_bad_input_is_400(api: Any, scp_service: ScpService, payload: dict[str, Any], words: str):
    r = await post(api, "scps", payload={"host": "127.0.0.1", **payload})
    assert r.code == 400, r.body
    assert words in body(r)["message"]
    assert body(await api("scps")) == []


async def test_scp_port_used_by_another_program_is_a_clear_error(api: Any, scp_service: ScpService):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = await post(api, "scps", payload={"name": "x", "ae_title": "AE", "port": port, "host": "127.0.0.1"})
    assert r.code == 409 and f"Port {port} is already in use" in body(r)["message"]
    assert body(await api("scps")) == []


async def test_bad_bodies_are_400(api: Any, scp_service: ScpService):
    for route in ("scps", "scus"):
        assert (await api(route, method="POST", body="not json")).code == 400
        assert (await api(route, method="POST", body="[1]")).code == 400


async def test_scus_add_list_get_echo_delete(api: Any, scp_service: ScpService, refused_port: int, monkeypatch):
    ours = body(await post(api, "scps", payload={"name": "in", "ae_title": "SBX-IN", "port": 0, "host": "127.0.0.1"}))
    r = await post(
        api, "scus", payload={"name": "self", "ae_title": "SBX-IN", "host": "127.0.0.1", "port": ours["port"]}
    )
    assert r.code == 201, r.body
    node = body(r)
    assert node == {"id": node["id"], "name": "self", "ae_title": "SBX-IN", "host": "127.0.0.1", "port": ours["port"]}
    assert body(await api("scus")) == [node]
    assert body(await api("scus", node["id"])) == node

    echo = await api("scus", node["id"], "echo", method="POST", body=b"")
    assert echo.code == 200, echo.body
    assert body(echo) == {"status": "ok"}

    duplicate = await post(api, "scus", payload={"name": "self", "ae_title": "X", "host": "h", "port": 104})
    assert duplicate.code == 409
    same_ae = await post(api, "scus", payload={"name": "other", "ae_title": "SBX-IN", "host": "h", "port": 104})
    assert same_ae.code == 409 and "AE title" in body(same_ae)["message"]
    long_ae = await post(api, "scus", payload={"name": "n", "ae_title": "X" * 17, "host": "h", "port": 104})
    assert long_ae.code == 400
    no_port = await post(api, "scus", payload={"name": "n", "ae_title": "X", "host": "h", "port": 0})
    assert no_port.code == 400

    wrong_ae = body(
        await post(api, "scus", payload={"name": "w", "ae_title": "WRONG", "host": "127.0.0.1", "port": ours["port"]})
    )
    r = await api("scus", wrong_ae["id"], "echo", method="POST", body=b"")
    assert r.code == 502 and "rejected" in body(r)["message"]

    nobody = body(
        await post(api, "scus", payload={"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": refused_port})
    )
    r = await api("scus", nobody["id"], "echo", method="POST", body=b"")
    assert r.code == 502 and "Cannot connect" in body(r)["message"], r.body

    # no DNS query leaves the machine: the resolver answers "unknown" for this one name
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "no-such-host.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    unknown_host = body(
        await post(api, "scus", payload={"name": "u", "ae_title": "U", "host": "no-such-host.invalid", "port": 104})
    )
    r = await api("scus", unknown_host["id"], "echo", method="POST", body=b"")
    assert r.code == 502 and "Unknown host" in body(r)["message"]

    assert (await api("scus", node["id"], method="DELETE")).code == 204
    assert (await api("scus", node["id"])).code == 404
    assert (await api("scus", node["id"], method="DELETE")).code == 404
    assert (await api("scus", 999999, "echo", method="POST", body=b"")).code == 404
