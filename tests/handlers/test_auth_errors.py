"""Authentication failures answer JSON that says what is wrong (issue 20): a token that is not the server's is
``"reason": "InvalidToken"`` with a message naming the token, never ``"reason": null`` or jupyter's XSRF complaint."""

from __future__ import annotations

import pytest
from generators import ct_bytes
from helpers import body_json


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_wrong_token_is_a_403_that_says_so(jp_serverapp, http_server_client, jp_base_url, method, where):
    """Not ``"reason": null``, nor "'_xsrf' argument missing" (what jupyter's XSRF check tells a POST)."""
    url = jp_base_url.rstrip("/") + "/slicebox/api/images/1"
    url = {"GET": url, "POST": jp_base_url.rstrip("/") + "/slicebox/api/images", "DELETE": url}[method]
    headers = {"Authorization": "token not-the-token"} if where == "header" else {}
    if where == "query":
        url += "?token=not-the-token"
    body = ct_bytes() if method == "POST" else None
    r = await http_server_client.fetch(url, method=method, body=body, headers=headers, raise_error=False)
    assert r.code == 403, (r.code, r.body)
    error = body_json(r)
    assert error["reason"] == "InvalidToken"
    assert "not this server's token" in error["message"] and "xsrf" not in error["message"].lower()


async def test_every_error_has_a_reason(jp_serverapp, http_server_client, jp_base_url, api):
    base = jp_base_url.rstrip("/") + "/slicebox/api"
    none = await http_server_client.fetch(base + "/images/1", raise_error=False)
    assert (none.code, body_json(none)["reason"]) == (403, "Forbidden")
    assert "no valid credentials" in body_json(none)["message"]
    not_allowed = await api("images", method="GET")  # the collection takes POST only
    assert (not_allowed.code, body_json(not_allowed)) == (405, {"message": "Method Not Allowed",
                                                                "reason": "MethodNotAllowed"})  # fmt: skip
    missing = await api("images", 999)
    assert (missing.code, body_json(missing)["reason"]) == (404, "NotFound")
