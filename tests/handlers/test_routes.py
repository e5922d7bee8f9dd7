"""Every route is authenticated, and the OpenAPI document and the route table agree."""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from slicebox_lab.handlers import default_handlers as all_handlers
from slicebox_lab.handlers.base import API
from slicebox_lab.handlers.dicomweb import DICOMWEB
from slicebox_lab.handlers.pages import not_found_handlers

# openapi.yaml documents the REST API under /slicebox/api (but for its JSON 404 catch-all); DICOMweb
# (/slicebox/dicom-web) is specified by PS3.18 instead, the pages for people are HTML: their routes are
# checked for authentication below (test_dicomweb_routes_..., tests/handlers/test_pages.py)
CATCH_ALL = {p for p, *_ in not_found_handlers}
default_handlers = [(p, h) for p, h, *_ in all_handlers if p.startswith(API + "/") and p not in CATCH_ALL]
dicomweb_handlers = [(p, h) for p, h, *_ in all_handlers if p.startswith(DICOMWEB)]

OPENAPI = Path(__file__).parents[2] / "server_extension" / "openapi.yaml"
METHODS = ("get", "post", "put", "delete", "patch")


@functools.lru_cache(maxsize=1)
def _spec() -> dict:
    return yaml.safe_load(OPENAPI.read_text())


def _concrete_paths(path: str, item: dict) -> list[str]:
    """Expand an OpenAPI path template into the concrete paths it stands for."""
    params = {p.get("name"): p for p in item.get("parameters", []) if isinstance(p, dict)}
    spec = _spec()
    for ref in item.get("parameters", []):
        if "$ref" in ref:
            p = spec["components"]["parameters"][ref["$ref"].rsplit("/", 1)[1]]
            params[p["name"]] = p
    names = re.findall(r"{(\w+)}", path)
    choices = []
    for name in names:
        schema = params[name]["schema"]
        choices.append(schema.get("enum") or ["7"])
    out = []
    for combo in itertools.product(*choices):
        concrete = path
        for name, value in zip(names, combo, strict=True):
            concrete = concrete.replace("{" + name + "}", str(value), 1)
        out.append("/slicebox/api" + concrete)
    return out


def _handler_for(url: str):
    for pattern, handler in default_handlers:
        if re.fullmatch(pattern, url):
            return handler
    return None


def _handler_methods(handler) -> set[str]:
    return {
        m
        for m in METHODS
        if m in vars(handler)
        or any(m in vars(b) for b in handler.__mro__[:-1] if b.__module__.startswith("slicebox_lab"))
    }


def test_openapi_document_is_valid():
    validate(_spec())


def test_openapi_and_routes_agree():
    spec = _spec()
    covered_patterns = set()
    for path, item in spec["paths"].items():
        documented = {m for m in item if m in METHODS}
        for url in _concrete_paths(path, item):
            handler = _handler_for(url)
            assert handler is not None, f"{url} is documented but no handler serves it"
            # a more specific documented path may be served by the handler of a wildcard one
            assert documented <= _handler_methods(handler), (url, documented, _handler_methods(handler))
            covered_patterns.add(next(p for p, h in default_handlers if re.fullmatch(p, url)))
    missing = [p for p, _ in default_handlers if p not in covered_patterns]
    assert not missing, f"routes missing from openapi.yaml: {missing}"
    # and every method a handler implements is documented for some path it serves
    for pattern, handler in default_handlers:
        implemented = _handler_methods(handler)
        documented = set()
        for path, item in spec["paths"].items():
            if any(re.fullmatch(pattern, u) for u in _concrete_paths(path, item)):
                documented |= {m for m in item if m in METHODS}
        assert implemented <= documented, (pattern, implemented - documented)


def _sample_urls():
    for path, item in _spec()["paths"].items():
        for method in (m for m in item if m in METHODS):
            for url in _concrete_paths(path, item):
                yield method.upper(), url


@pytest.mark.parametrize("method,url", sorted(set(_sample_urls())))
async def test_every_route_requires_authentication(jp_serverapp, http_server_client, jp_base_url, method, url):
    body = b"[]" if method in ("POST", "PUT", "PATCH") else None
    response = await http_server_client.fetch(
        jp_base_url.rstrip("/") + url,
        method=method,
        body=body,
        raise_error=False,
        follow_redirects=False,
    )
    if url == "/slicebox/api/users/login":
        # public (slicebox-behaviour.md §1): a body that is no {"user", "pass"} pair is a 400, no login
        assert response.code == 400 and "Set-Cookie" not in response.headers, (response.code, response.headers)
        return
    # jupyter_server answers API requests without credentials with 403 (or 401/redirect to login);
    # per-role checks of the same table: tests/handlers/test_roles.py
    assert response.code in (401, 403, 302), (method, url, response.code)
    assert b"PatientName" not in (response.body or b"")


def _dicomweb_sample_urls():
    """One concrete URL per DICOMweb route and method (UIDs and paths filled with sample values)."""
    for pattern, handler in dicomweb_handlers:
        url = pattern.replace(r"(\d+)", "1").replace("([^/]+)", "1.2.3").replace("(.+)", "7FE00010")
        assert re.fullmatch(pattern, url), (pattern, url)
        for method in sorted(_handler_methods(handler)):
            yield method.upper(), url


def test_dicomweb_routes_exist():
    assert {m for m, _ in _dicomweb_sample_urls()} == {"GET", "POST"}


@pytest.mark.parametrize("method,url", sorted(set(_dicomweb_sample_urls())))
async def test_every_dicomweb_route_requires_authentication(jp_serverapp, http_server_client, jp_base_url, method, url):
    response = await http_server_client.fetch(
        jp_base_url.rstrip("/") + url,
        method=method,
        body=b"" if method == "POST" else None,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
        raise_error=False,
        follow_redirects=False,
    )
    assert response.code in (401, 403, 302), (method, url, response.code)
