"""The node's pages for people: the landing page, the dashboards, the tutorials and the API documentation.

Everything here is served from files the wheel ships (``slicebox_lab/server/shipped.py``), never from the
server's root folder, so a node started anywhere (``jupyter slicebox`` from ``/tmp``, JupyterLab in a
home folder, Notebook 7) answers the same URLs:

* ``slicebox/``                       the landing page: node, health, counts, links to everything below;
* ``slicebox/dashboards/<name>``      a dashboard rendered by Voila (its template, its kernels);
* ``slicebox/tutorials/<name>.ipynb`` a tutorial to download, or (POST ``.../open``) copied into the
                                      server's folder and opened in JupyterLab or Notebook 7;
* ``slicebox/api/``                   what the API offers (JSON), ``slicebox/api/openapi.{json,yaml}``;
* ``slicebox/api-docs/``              the OpenAPI document rendered by a vendored Swagger UI (no CDN);
* ``slicebox/api/<anything else>``    a JSON 404, like every error of the API.

Every route is authenticated and authorized like the API's (``@web.authenticated`` + ``@authorized``).
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path
from typing import Any

import yaml
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import AuthenticatedFileHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import ensure_async, url_path_join
from tornado import web

from .._version import __version__
from ..errors import NotFound
from ..net.scp import ScpService
from ..server import shipped
from ..server.asyncio_bridge import run_blocking
from .base import API, AUTH_RESOURCE, SliceboxHandler

__all__ = ["default_handlers", "frontends"]

PAGES = r"/slicebox"
#: the folder of the server's root where "open a tutorial" copies it (never overwriting an edited copy)
TUTORIAL_FOLDER = "slicebox-tutorials"


@functools.lru_cache(maxsize=1)
def _openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(shipped.openapi_path().read_text(encoding="utf-8"))
    return document


#: markdown a card shows as plain text: **bold**, *emphasis*, `code`, [links](url)
_MARKUP = re.compile(r"\*\*(.+?)\*\*|\*(.+?)\*|`(.+?)`|\[(.+?)\]\([^)]*\)")
#: the end of a sentence: a full stop and a space, not the one of "e.g." or "i.e."
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.\s+")


def _plain(markdown: str) -> str:
    return _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), markdown)


@functools.lru_cache(maxsize=16)
def _notebook_intro(path: Path) -> tuple[str, str]:
    """(title, what it is about) from a notebook's first markdown cell: its heading, and the first sentence of
    its first paragraph (two when the first is short), as plain text: the page says what the notebook says."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            lines = [line.strip() for line in "".join(cell.get("source", "")).splitlines()]
            title = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), path.stem)
            body = [line for line in lines if not line.startswith("#")]
            while body and not body[0]:
                body.pop(0)
            paragraph = " ".join(body[: body.index("")] if "" in body else body)
            sentences = [s.rstrip(".") + "." for s in _SENTENCE_END.split(_plain(paragraph)) if s.strip()]
            about = " ".join(sentences[:2] if sentences and len(sentences[0]) < 60 else sentences[:1])
            return _plain(title), about
    return path.stem, ""


#: what each front end is, on its card
_FRONT_END_TEXT = {
    "JupyterLab": "Notebooks, files and terminals of this server, side by side in one window.",
    "Notebook": "The same notebooks and files, one document per browser tab (Jupyter Notebook 7).",
}


def frontends(serverapp: Any) -> dict[str, str]:
    """The notebook front ends this server serves, as label → path under base_url (JupyterLab, Notebook 7)."""
    apps = getattr(getattr(serverapp, "extension_manager", None), "extension_apps", {}) or {}
    found = {}
    if "jupyterlab" in apps:
        found["JupyterLab"] = "lab"
    if "notebook" in apps:
        found["Notebook"] = "tree"
    return found


class _PageHandler(ExtensionHandlerMixin, JupyterHandler):
    """An HTML page of the extension: a browser without credentials is sent to the login page."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str = "slicebox", *args: Any, **kwargs: Any) -> None:
        super().initialize(name, *args, **kwargs)

    def url(self, *parts: str) -> str:
        return url_path_join(self.base_url, *parts)


_STYLE = """
:root { --ink:#1f2933; --muted:#52606d; --line:#d9e2ec; --accent:#0b6e99; --ok:#1a7f37; --warn:#b54708;
        --bad:#c62828; --card:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
header { background: #102a43; color: #fff; padding: 18px 32px; display:flex; align-items: baseline; gap: 16px; }
header h1 { margin:0; font-size: 22px; font-weight: 600; }
header .version { color: #9fb3c8; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.health { display:flex; flex-wrap: wrap; gap: 10px; align-items:center; }
.chip { display:inline-block; padding: 2px 10px; border-radius: 999px; font-size: 13px; font-weight: 600; }
.chip.ok { background:#e3f6e8; color: var(--ok); } .chip.warn { background:#fff4e5; color: var(--warn); }
.chip.bad { background:#fdecea; color: var(--bad); } .chip.info { background:#e6f0f7; color: var(--accent); }
.counts { display:flex; gap: 14px; flex-wrap: wrap; }
.count { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 18px;
         min-width: 130px; }
.count b { display:block; font-size: 24px; } .count span { color: var(--muted); font-size: 13px; }
.cards { display:grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.card { display:block; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; color: inherit;
        text-decoration: none; background: #fff; }
a.card:hover { border-color: var(--accent); box-shadow: 0 1px 6px rgba(11,110,153,.15); }
.card b { color: var(--accent); font-size: 16px; } .card p { margin: 6px 0 0; color: var(--muted); font-size: 14px; }
.card form { display:inline; } .card button { font: inherit; font-size: 13px; margin-top: 8px; cursor: pointer;
        background: var(--accent); color: #fff; border: 0; border-radius: 4px; padding: 3px 10px; }
.card .links a { font-size: 13px; margin-right: 12px; }
a { color: var(--accent); }
.note { color: var(--muted); font-size: 13px; }
"""


def _page(title: str, body: str, version: str = __version__) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><span class="version">slicebox_lab {html.escape(version)}</span>'
        f"</header><main>{body}</main></body></html>"
    )


def _chip(text: str, kind: str) -> str:
    return f'<span class="chip {kind}">{html.escape(text)}</span>'


class LandingHandler(_PageHandler):
    """``slicebox/``: what this node is, whether it is well, what it holds, and where to go from here."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        context = self.settings["slicebox_context"]
        status = self.settings.get("slicebox_status") or {}
        try:
            counts = await run_blocking(context.index.counts)
            index_ok = True
        except Exception as error:  # noqa: BLE001 - the page says the index does not answer, and why
            self.log.warning("slicebox: landing page: the index does not answer: %s", error)
            counts, index_ok = {}, False
        # the node's listeners (none on a secondary server: they run on the one that started first)
        scp_service = next((s for s in self.settings.get("slicebox_services", ()) if isinstance(s, ScpService)), None)
        listening = 0
        if scp_service is not None:
            configs = await run_blocking(scp_service.list)
            listening = sum(1 for config in configs if scp_service.is_running(config.id))
        chips = [
            _chip("Healthy", "ok") if index_ok else _chip("The database does not answer", "bad"),
            _chip(f"{listening} DICOM listener{'s' if listening != 1 else ''} running", "info"),
        ]
        if status.get("secondary"):
            chips.append(_chip("Shares its data folder with another server: listeners and repair run there", "warn"))
        names = (("patients", "Patients"), ("studies", "Studies"), ("series", "Series"), ("images", "Images"))
        count_html = "".join(
            f'<div class="count"><b>{counts.get(key, "–")}</b><span>{label}</span></div>' for key, label in names
        )
        dashboards = []
        for name, path in shipped.dashboards().items():
            title, text = _notebook_intro(path)
            dashboards.append(
                f'<a class="card" href="{html.escape(self.url("slicebox", "dashboards", name))}">'
                f"<b>{html.escape(title)}</b><p>{html.escape(text)}</p></a>"
            )
        front = frontends(self.serverapp)
        tutorials = []
        for name, path in shipped.tutorials().items():
            title, text = _notebook_intro(path)
            links = f'<a href="{html.escape(self.url("slicebox", "tutorials", name + ".ipynb"))}">download</a>'
            if front:
                action = html.escape(self.url("slicebox", "tutorials", name, "open"))
                links += (
                    f'<form method="post" action="{action}">'
                    f'<input type="hidden" name="_xsrf" value="{html.escape(self.xsrf_token.decode())}">'
                    f"<button>Open in {html.escape(next(iter(front)))}</button></form>"
                )
            tutorials.append(
                f'<div class="card"><b>{html.escape(title)}</b><p>{html.escape(text)}</p>'
                f'<div class="links">{links}</div></div>'
            )
        tools = [
            f'<a class="card" href="{html.escape(self.url(path))}"><b>{html.escape(label)}</b>'
            f"<p>{html.escape(_FRONT_END_TEXT.get(label, ''))}</p></a>"
            for label, path in front.items()
        ]
        tools.append(
            f'<a class="card" href="{html.escape(self.url("slicebox", "api-docs/"))}"><b>API documentation</b>'
            "<p>Every route of the REST API, with its parameters and answers; try them in the browser.</p></a>"
        )
        tools.append(
            '<div class="card"><b>OpenAPI document</b><p>For code generators and API tools.</p><div class="links">'
            f'<a href="{html.escape(self.url("slicebox", "api", "openapi.json"))}">JSON</a>'
            f'<a href="{html.escape(self.url("slicebox", "api", "openapi.yaml"))}">YAML</a></div></div>'
        )
        node = str(self.settings.get("slicebox_node_name") or "slicebox node")
        body = (
            f'<div class="health">{"".join(chips)}</div>'
            f'<h2>What this node holds</h2><div class="counts">{count_html}</div>'
            f'<h2>Dashboards</h2><div class="cards">{"".join(dashboards)}</div>'
            f'<h2>Tools</h2><div class="cards">{"".join(tools)}</div>'
            f'<h2>Tutorials</h2><div class="cards">{"".join(tutorials)}</div>'
            f'<p class="note">Data folder: {html.escape(str(status.get("data_dir", "")))}</p>'
        )
        self.finish(_page(node, body))


class DashboardIndexHandler(_PageHandler):
    """``slicebox/dashboards``: the landing page lists them."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.redirect(self.url("slicebox/"))


#: the JupyterLab extensions a dashboard page loads (unless Voila is configured with a list of its own): Voila's
#: widget manager, the widgets' models and views, and anywidget (the Viewer). Not every extension installed
#: beside JupyterLab (Notebook 7's, jupyterlab-git, ...): built against other JupyterLab versions than the core
#: Voila serves, each would fill the page's console with "does not satisfy the requirement" warnings.
DASHBOARD_EXTENSIONS = ("@voila-dashboards/widgets-manager8", "@jupyter-widgets/jupyterlab-manager", "anywidget")


def _dashboard_handler() -> type:
    """A Voila page handler that renders a shipped dashboard, defined only where Voila is installed."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from voila.configuration import VoilaConfiguration
    from voila.paths import collect_template_paths
    from voila.server_extension import load_config_file
    from voila.tornado.handler import TornadoVoilaHandler

    class DashboardHandler(TornadoVoilaHandler):
        """``slicebox/dashboards/<name>``: Voila renders the packaged notebook; the kernel starts in the
        server's root folder, as under ``voila/render``."""

        auth_resource = AUTH_RESOURCE

        def initialize(self, **kwargs: Any) -> None:
            cached = self.settings.get("slicebox_voila")
            if cached is None:
                configuration = VoilaConfiguration(config=self.settings["config"])
                local = load_config_file()
                if local is not None:
                    configuration.update_config(local)
                if not configuration.extension_allowlist and not configuration.extension_denylist:
                    configuration.extension_allowlist = list(DASHBOARD_EXTENSIONS)
                cached = {
                    "config": self.settings["config"],
                    "voila_configuration": configuration,
                    "template_paths": collect_template_paths(["voila", "nbconvert"], configuration.template),
                }
                self.settings["slicebox_voila"] = cached
            super().initialize(**cached)

        @property
        def contents_manager(self) -> Any:
            """The packaged dashboards folder, not the server's root: the URL works wherever the server started."""
            manager = self.settings.get("slicebox_dashboard_contents")
            if manager is None:
                folder = shipped.notebooks_dir() / "dashboards"
                manager = FileContentsManager(root_dir=str(folder), parent=self.settings.get("serverapp"))
                self.settings["slicebox_dashboard_contents"] = manager
            return manager

        @web.authenticated
        @authorized
        async def get(self, name: str = "") -> None:
            if name not in shipped.dashboards():
                raise web.HTTPError(404, f"no dashboard called {name!r}")
            if "voila_jinja2_env" not in self.settings:
                raise web.HTTPError(503, "Voila is installed but not enabled: jupyter server extension enable voila")
            async for chunk in self.get_generator(path=f"{name}.ipynb"):
                self.write(chunk)
                self.flush()

    return DashboardHandler


def _tutorial(name: str) -> Path:
    """The packaged tutorial of that name; 404 when there is none."""
    path = shipped.tutorials().get(name)
    if path is None:
        raise web.HTTPError(404, f"no tutorial called {name!r}")
    return path


class TutorialHandler(_PageHandler):
    """``slicebox/tutorials/<name>.ipynb``: the packaged tutorial, as a download."""

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        path = _tutorial(name)
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_attachment_header(path.name)
        self.finish(await run_blocking(path.read_bytes))


class TutorialOpenHandler(_PageHandler):
    """POST ``slicebox/tutorials/<name>/open``: copy the tutorial into ``slicebox-tutorials/`` of the server's
    folder (an existing copy, maybe edited, is kept) and open it in JupyterLab or Notebook 7."""

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        path = _tutorial(name)
        front = frontends(self.serverapp)
        if not front:
            raise web.HTTPError(404, "this server has neither JupyterLab nor Notebook 7: download the tutorial")
        target = f"{TUTORIAL_FOLDER}/{path.name}"
        manager = self.contents_manager
        if not await ensure_async(manager.dir_exists(TUTORIAL_FOLDER)):
            await ensure_async(manager.save({"type": "directory"}, TUTORIAL_FOLDER))
        if not await ensure_async(manager.file_exists(target)):
            content = json.loads(await run_blocking(path.read_text, encoding="utf-8"))
            await ensure_async(manager.save({"type": "notebook", "format": "json", "content": content}, target))
        where = "lab/tree" if "JupyterLab" in front else "notebooks"
        self.redirect(self.url(where, target))


class ApiDocsHandler(_PageHandler):
    """``slicebox/api-docs/``: Swagger UI over ``openapi.json``, from the vendored bundle; nothing from outside."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        assets = self.url("slicebox", "api-docs", "swagger-ui")
        self.finish(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>slicebox_lab REST API</title>"
            f'<link rel="stylesheet" href="{html.escape(assets)}/swagger-ui.css"></head><body>'
            '<div id="swagger-ui"></div>'
            f'<script src="{html.escape(assets)}/swagger-ui-bundle.js"></script>'
            f'<script src="{html.escape(self.url("slicebox", "api-docs", "init.js"))}"></script>'
            "</body></html>"
        )


class ApiDocsInitHandler(_PageHandler):
    """The docs page's start script: a file, not inline, so a strict Content-Security-Policy still allows it."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        spec = json.dumps(self.url("slicebox", "api", "openapi.json"))
        xsrf = json.dumps(self.xsrf_token.decode())
        self.set_header("Content-Type", "application/javascript")
        # validatorUrl null: Swagger UI would otherwise fetch a badge from a public validator
        self.finish(
            "window.ui = SwaggerUIBundle({"
            f"url: {spec}, dom_id: '#swagger-ui', deepLinking: true, validatorUrl: null,"
            " presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout',"
            " requestInterceptor: (request) => {"
            f" request.headers['X-XSRFToken'] = {xsrf}; return request; }}"
            "});\n"
        )


class ApiDocsAssetHandler(AuthenticatedFileHandler):
    """The vendored Swagger UI files (server_extension/apidocs/swagger-ui, see its README for version and licence)."""

    auth_resource = AUTH_RESOURCE


class OpenApiHandler(SliceboxHandler):
    """``slicebox/api/openapi.json`` and ``.yaml``: the REST contract this node implements."""

    @web.authenticated
    @authorized
    async def get(self, fmt: str) -> None:
        if fmt == "yaml":
            self.set_header("Content-Type", "application/yaml; charset=utf-8")
            self.finish(await run_blocking(shipped.openapi_path().read_bytes))
            return
        self.write_json(await run_blocking(_openapi))


class ApiIndexHandler(SliceboxHandler):
    """``slicebox/api/``: where the API's description is, for a person or a script that starts here."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_json(
            {
                "name": "slicebox_lab",
                "version": __version__,
                "openapi": self.url("slicebox", "api", "openapi.json"),
                "openapi_yaml": self.url("slicebox", "api", "openapi.yaml"),
                "documentation": self.url("slicebox", "api-docs/"),
                "health": self.url("slicebox", "api", "system", "health"),
            }
        )

    def url(self, *parts: str) -> str:
        return url_path_join(self.base_url, *parts)


class ApiNotFoundHandler(SliceboxHandler):
    """Any other path under ``slicebox/api/``: a JSON 404 (a script must never have to parse an HTML page)."""

    def _missing(self, *_args: str) -> None:
        raise NotFound(f"no such route: {self.request.method} {self.request.path}; see {API}/openapi.json")

    get = web.authenticated(authorized(_missing))
    post = web.authenticated(authorized(_missing))
    put = web.authenticated(authorized(_missing))
    delete = web.authenticated(authorized(_missing))
    patch = web.authenticated(authorized(_missing))


def _handlers() -> list[tuple[Any, ...]]:
    handlers: list[tuple[Any, ...]] = [
        (rf"{PAGES}/?", LandingHandler),
        (rf"{PAGES}/dashboards/?", DashboardIndexHandler),
        (rf"{PAGES}/tutorials/([\w.-]+)\.ipynb", TutorialHandler),
        (rf"{PAGES}/tutorials/([\w.-]+)/open", TutorialOpenHandler),
        (rf"{PAGES}/api-docs/?", ApiDocsHandler),
        (rf"{PAGES}/api-docs/init\.js", ApiDocsInitHandler),
        (
            rf"{PAGES}/api-docs/swagger-ui/(.*)",
            ApiDocsAssetHandler,
            {"path": str(shipped.apidocs_dir() / "swagger-ui")},
        ),  # noqa: E501
    ]
    try:
        handlers.append((rf"{PAGES}/dashboards/([\w.-]+)", _dashboard_handler()))
    except ImportError:  # Voila is a dependency; a trimmed install still serves everything else
        pass
    return handlers


#: routes under the API (documented in openapi.yaml), the catch-all last
api_handlers = [
    (rf"{API}/?", ApiIndexHandler),
    (rf"{API}/openapi\.(json|yaml)", OpenApiHandler),
]
#: must be the last route under the API: every unknown path answers a JSON 404
not_found_handlers = [(rf"{API}/.*", ApiNotFoundHandler)]
default_handlers = _handlers()
