"""SliceboxApp: the Jupyter server extension, and the headless ``jupyter slicebox`` node."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.auth.identity import IdentityProvider
from jupyter_server.extension.application import ExtensionApp
from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate
from traitlets import Dict as DictTrait

from ._version import __version__
from .access.audit import AuditTrail
from .access.users import USER, UserStore
from .anonymization import keystore, load_pixel_masks
from .anonymization.pixels import SCANNED_MODALITIES
from .box import configure_boxes
from .context import SliceboxContext
from .model import SOURCE_TYPES
from .server.asyncio_bridge import run_blocking, shutdown
from .server.auth import SliceboxAuthorizer, SliceboxIdentityProvider
from .server.memory import tune_malloc
from .server.services import Service, register_job_runners, service_factories, start_services, stop_services
from .workers.pool import default_workers


class SliceboxApp(ExtensionApp):
    """A DICOM node inside the Jupyter server: store, index and REST API under ``slicebox/api/``."""

    name = "slicebox"
    description = __doc__
    version = __version__
    #: what the server's root redirects to, and what `jupyter slicebox --browser` opens: the landing page
    extension_url = "/slicebox/"
    # `jupyter slicebox` also loads the other enabled extensions (Voila, JupyterLab)
    load_other_extensions = True
    # a headless node: no browser; CI and containers run as root
    serverapp_config: dict[str, Any] = {"open_browser": False, "allow_root": True}

    examples = """
jupyter slicebox                                 # a node on http://localhost:8888/slicebox/ (token in the log)
jupyter slicebox --port=8890 --token=T           # a fixed port and token (scripts: Authorization: token T)
jupyter slicebox --data-dir=/srv/slicebox        # the index and the stored files in that folder
jupyter slicebox --ip=0.0.0.0                    # reachable from other machines (put TLS in front)
jupyter slicebox --database-url=postgresql+psycopg://slicebox@db/slicebox
jupyter slicebox --help-all                      # every option (--SliceboxApp.<name>=...)
"""

    classes = [*ExtensionApp.classes, IdentityProvider]

    #: the options people need, shown by `jupyter slicebox --help` (everything else: --help-all)
    aliases = {
        **ExtensionApp.aliases,
        "port": "ServerApp.port",
        "ip": "ServerApp.ip",
        "token": "IdentityProvider.token",
        "base-url": "ServerApp.base_url",
        "root-dir": "ServerApp.root_dir",
        "data-dir": "SliceboxApp.data_dir",
        "database-url": "SliceboxApp.database_url",
        "storage-dir": "SliceboxApp.storage_dir",
        "node-name": "SliceboxApp.node_name",
    }
    flags = {
        **ExtensionApp.flags,
        "no-browser": ({"ServerApp": {"open_browser": False}}, "Do not open a browser (the default)."),
        "browser": ({"ServerApp": {"open_browser": True}}, "Open the landing page in a browser at start."),
    }

    @classmethod
    def make_serverapp(cls, **kwargs: Any) -> Any:
        """`jupyter slicebox` always serves Voila (``/voila/render/...``, the dashboards) when it is installed,
        even where no config file enables it (the other enabled extensions still load)."""
        import importlib.util

        extensions = dict(kwargs.pop("jpserver_extensions", None) or {})
        if importlib.util.find_spec("voila") is not None:
            extensions.setdefault("voila.server_extension", True)
        return super().make_serverapp(jpserver_extensions=extensions, **kwargs)

    data_dir = Unicode(
        help="Folder of the node's data: the SQLite index, stored DICOM files. Created on first start."
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "slicebox")

    database_url = Unicode(
        "",
        help=(
            "SQLAlchemy URL of the index database, e.g. postgresql+psycopg://user@host/slicebox. "
            "Empty: an SQLite file slicebox.sqlite in data_dir."
        ),
    ).tag(config=True)

    node_name = Unicode(
        help="The node's name on its landing page (e.g. 'Hospital A research node'); the host name when not set."
    ).tag(config=True)

    @default("node_name")
    def _default_node_name(self) -> str:
        return socket.gethostname()

    storage_dir = Unicode("", help="Folder of the stored DICOM files. Empty: the folder 'dicom' in data_dir.").tag(
        config=True
    )

    fsync = Bool(
        True,
        help=(
            "Flush every stored file to disk before answering success (one fsync per image). Turn off only "
            "for throwaway nodes (tests, demos): a power cut may then lose acknowledged images."
        ),
    ).tag(config=True)

    workers = Int(
        default_workers(),
        help=(
            "Worker processes for per-image CPU work (validating uploads, anonymizing, rendering), so that "
            "concurrent senders use every core; default: one per core. 0 runs that work in the server "
            "process (debugging)."
        ),
    ).tag(config=True)

    malloc_tuning = Bool(
        True,
        help=(
            "Let glibc keep freed image-sized buffers for reuse instead of returning them to the system "
            "(mmap threshold 16 MiB, trim threshold 64 MiB; see slicebox_lab/server/memory.py). Saves the page "
            "faults of fresh memory for every image; costs the process up to those sizes of retained memory."
        ),
    ).tag(config=True)

    context: SliceboxContext | None = None
    services: list[Service] = []

    box_poll_interval = Float(
        5.0,
        help=(
            "Seconds between two rounds of the box service when idle: how often this node polls the partners "
            "it connected to for their images, and retries the ones it pushes to (failures back off up to 60 s)."
        ),
    ).tag(config=True)

    service_stop_timeout = Float(
        10.0, help="Seconds each service (SCP listener, folder watch, ...) gets to stop when the server stops."
    ).tag(config=True)

    anonymization_key_attributes = List(
        Unicode(),
        default_value=[f"{a.keyword}:{a.level}" for a in keystore.DEFAULT_KEY_ATTRIBUTES],
        help=(
            "Attributes every anonymization key records besides the patient's name and ID and the study, "
            "series and instance UIDs, as 'Keyword:LEVEL' (LEVEL: PATIENT, STUDY, SERIES or IMAGE). Data "
            "coming back re-identified from a key gets these values back at the level it matches."
        ),
    ).tag(config=True)

    reidentify_sources = List(
        Unicode(),
        default_value=list(SOURCE_TYPES),
        help=(
            "Sources whose anonymous data (PatientIdentityRemoved=YES) is re-identified on ingest when it "
            "matches an anonymization key: a source type (user, import, scp, directory, box) or "
            "'type:name' for one source (e.g. 'box:university'). Empty: never re-identify."
        ),
    ).tag(config=True)

    anonymization_pixel_masks = Unicode(
        "",
        help=(
            "Pixel masks for burned-in annotations, as a JSON list or the path of a JSON file: "
            '[{"name": "US scanner X", "match": {"Modality": "US", "ManufacturerModelName": "X"}, '
            '"rectangles": [{"x": 0, "y": 0, "width": 640, "height": 40}]}]. A burned-in image that a mask '
            "matches is anonymized with the rectangles blacked out; one that no mask matches is refused."
        ),
    ).tag(config=True)

    secondary_capture_burned_in = Bool(
        True,
        help=(
            "Treat Secondary Capture images as burned-in, whatever their BurnedInAnnotation says "
            "(refused unless masked)."
        ),
    ).tag(config=True)

    burned_in_modalities = List(
        Unicode(),
        default_value=sorted(SCANNED_MODALITIES),
        help=(
            "Modalities whose pixels commonly carry names, IDs and dates: their images are read for text whatever "
            'their BurnedInAnnotation says, and leave the node as the "burnedInText" policy says (refused when '
            "text is found, by default). Empty: only flagged images and Secondary Captures."
        ),
    ).tag(config=True)

    burned_in_text_detection = Bool(
        True,
        help=(
            "Read the pixels of the images that may carry burned-in text (flagged, Secondary Captures, "
            "burned_in_modalities) with Tesseract OCR: an image in which no text is found may leave, text found "
            'is refused or masked ("burnedInText"). Needs the [ocr] extra and Debian tesseract-ocr-eng; where '
            "they are missing such images are refused. Off: refuse them unless a pixel mask matches or the "
            "profile keeps them."
        ),
    ).tag(config=True)

    burned_in_scan_all = Bool(
        False,
        help="Read every image's pixels for burned-in text, not only flagged ones, Secondary Captures and "
        "burned_in_modalities (slower: about a second per frame).",
    ).tag(config=True)

    user_roles = DictTrait(
        value_trait=Unicode(),
        help=(
            "Roles of Jupyter identities (JupyterHub or JupyterLab user names): {'alice': 'ADMINISTRATOR', "
            "'bob': 'USER'}. The server's token holder and $JUPYTERHUB_USER are SUPERUSER; node-local users "
            "(/slicebox/api/users) carry their own role."
        ),
    ).tag(config=True)

    default_role = Unicode(USER, help="Role of a Jupyter identity not in user_roles (ADMINISTRATOR or USER).").tag(
        config=True
    )

    owner_name = Unicode(
        help=(
            "The name of the server's owner, i.e. whoever holds its token: the source of what they upload "
            "('user: <name>'), the owner of their jobs and import sessions, the user of their lines in the audit "
            "trail. Default: $JUPYTERHUB_USER, else the login name of the account that runs the server. "
            "(Data stored before this option existed keeps the name 'anonymous'.)"
        ),
    ).tag(config=True)

    @default("owner_name")
    def _default_owner_name(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or _login_name()

    @validate("owner_name")
    def _valid_owner_name(self, proposal: Any) -> str:
        name = str(proposal["value"]).strip()
        if not name or not name.isprintable() or len(name) > 200:
            raise TraitError(f"SliceboxApp.owner_name must be a printable name of 1 to 200 characters, not {name!r}")
        return name

    node_users = Bool(
        True,
        help=(
            "Let node-local users (/slicebox/api/users) sign in with HTTP basic auth and /slicebox/api/users/login. "
            "Installs SliceboxIdentityProvider when the server uses jupyter's default one (not under JupyterHub)."
        ),
    ).tag(config=True)

    stable_seconds = Float(
        30.0,
        help=(
            "Seconds without a new image after which a series (or study) counts as stable and the apps of its "
            "type run on it (as Orthanc's StableAge), whatever the source."
        ),
    ).tag(config=True)

    app_executor = AnyTrait(
        "local",
        help=(
            "Where app runs execute: 'local' (worker processes of this node, app_workers of them), "
            "'dask://host:port' (a Dask scheduler; its workers must see the storage folder), or a "
            "distributed.Client. An app is code that runs with the node's rights: only administrators register it."
        ),
    ).tag(config=True)

    app_workers = Int(
        1,
        help=(
            "Worker processes for app runs (a pool of their own: long runs never hold up the ingest's workers), "
            "and runs at once on any executor. 0 runs apps in the server process (debugging)."
        ),
    ).tag(config=True)

    audit: AuditTrail | None = None

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        from jupyter_server.auth.identity import PasswordIdentityProvider

        # linking happens before the server builds its IdentityProvider: swap in ours only over
        # jupyter's default, never over JupyterHub's or a configured one
        if self.node_users and serverapp.identity_provider_class is PasswordIdentityProvider:
            serverapp.identity_provider_class = SliceboxIdentityProvider
        self._default_voila_template(serverapp)

    @staticmethod
    def _default_voila_template(serverapp: Any) -> None:
        """Dashboards render with our Voila template (Voila's "lab" without its CDN links: nothing fetched
        from outside the node), unless configured otherwise. Voila reads this config when it loads, after us.

        And a page's URL may not choose another one (``?template=lab`` would fetch from CDNs again; and the
        Voila release the dependencies pin, 0.5.8, takes the name as a path)."""
        from jupyter_core.paths import jupyter_path

        voila = serverapp.config.VoilaConfiguration
        if "template" not in voila and any(os.path.isdir(p) for p in jupyter_path("voila", "templates", "slicebox")):
            voila.template = "slicebox"
            if "allow_template_override" not in voila:
                voila.allow_template_override = "NOTEBOOK"

    def _install_authorizer(self) -> None:
        """Roles on slicebox routes, over whatever Authorizer the server has (it keeps the rest)."""
        serverapp = self.serverapp
        assert serverapp is not None
        current = serverapp.authorizer
        if isinstance(current, SliceboxAuthorizer):
            authorizer = current
        else:
            authorizer = SliceboxAuthorizer(
                parent=serverapp, log=self.log, identity_provider=serverapp.identity_provider, delegate=current
            )
            serverapp.authorizer = authorizer
        authorizer.user_roles = dict(self.user_roles)
        authorizer.default_role = self.default_role
        self.settings["authorizer"] = authorizer

    def initialize_settings(self) -> None:
        if self.malloc_tuning and tune_malloc():
            self.log.debug("slicebox: glibc malloc keeps image-sized buffers (slicebox_lab/server/memory.py)")
        # blocking on purpose: the node must be migrated and repaired before it serves
        self.context = SliceboxContext.open(
            Path(self.data_dir), self.database_url, self.storage_dir, fsync=self.fsync, workers=self.workers
        )
        self.context.key_attributes = keystore.parse_key_attributes(self.anonymization_key_attributes)
        self.context.reidentify_sources = frozenset(self.reidentify_sources)
        self.context.pixel_masks = load_pixel_masks(self.anonymization_pixel_masks)
        self.context.secondary_capture_burned_in = self.secondary_capture_burned_in
        self.context.burned_in_modalities = frozenset(m.strip().upper() for m in self.burned_in_modalities)
        self.context.burned_in_text_detection = self.burned_in_text_detection
        self.context.burned_in_scan_all = self.burned_in_scan_all
        self.settings["slicebox_context"] = self.context
        self.settings["slicebox_node_name"] = self.node_name
        self.settings["slicebox_owner_name"] = self.owner_name
        self.settings["slicebox_status"] = {"data_dir": self.data_dir, "secondary": self.context.secondary}
        self._stop_cleanly_on_sigint()
        self.settings["slicebox_users"] = UserStore(self.context.index)
        self.audit = AuditTrail(self.context.index)
        self.audit.subscribe(self.context.events)
        self.settings["slicebox_audit"] = self.audit
        self._install_authorizer()
        # services (SCP listeners, folder watches) run on their own threads, not on the loop; they
        # start here, before the server serves, so no request finds them missing
        configure_boxes(self.context, poll_interval=self.box_poll_interval)
        self.context.workers.start_workers()  # not in the first upload's time
        register_job_runners(self.context)
        if self.context.secondary:
            # the server already running on this folder has the listeners, watches and box loop; a second
            # SCP on the same port would only fail, and two box loops on one SQLite file would do the work twice
            self.log.warning(
                "slicebox: %s is in use by another server (%s): this one serves the API and the dashboards "
                "on the same data but starts no DICOM listener, folder watch, box or forwarding service",
                self.data_dir,
                ", ".join(self.context.other_servers),
            )
        else:
            self.services = start_services(self.context, self._service_factories())
        self.settings["slicebox_services"] = tuple(self.services)
        self.context.announce_reindexed()  # images a power cut had left without rows, now that forwarding listens
        self.log.info("slicebox: data in %s, index %s", self.data_dir, self.context.index.engine.url)

    def _service_factories(self) -> list[Any]:
        """The node's services, the apps service built with this app's settings."""
        from .apps.executors import executor_for
        from .apps.service import AppService, apps_service_factory

        def apps(context: SliceboxContext) -> AppService:
            executor = executor_for(self.app_executor, self.app_workers)
            return AppService(
                context, executor, self.stable_seconds, secrets=self._secrets, lanes=max(1, self.app_workers)
            )

        return [apps if factory is apps_service_factory else factory for factory in service_factories()]

    def _secrets(self) -> list[str]:
        """What no app run may hand back: the server's token, and credentials in the server's environment."""
        import re

        found = []
        serverapp = self.serverapp
        token = getattr(getattr(serverapp, "identity_provider", None), "token", "") if serverapp else ""
        if token:
            found.append(str(token))
        credential = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY", re.IGNORECASE)
        found += [v for k, v in os.environ.items() if credential.search(k) and len(v) >= 8]
        return found

    def _stop_cleanly_on_sigint(self) -> None:
        """SIGINT stops the server as SIGTERM does, through stop_extension (the next start then needs no repair).

        jupyter_server installs its SIGINT handler (a y/n prompt) only when stdin is a terminal; otherwise
        (a service manager, ``kill -INT``, Ctrl-C in a pipeline) Python's KeyboardInterrupt ends the event
        loop without any cleanup, which the next start sees as a crash."""
        serverapp = self.serverapp
        if serverapp is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler and hasattr(serverapp, "_signal_stop"):
            signal.signal(signal.SIGINT, serverapp._signal_stop)

    def initialize_handlers(self) -> None:
        from .handlers import default_handlers

        self.handlers.extend(default_handlers)

    async def stop_extension(self) -> None:
        if self.audit is not None:
            await run_blocking(self.audit.close)
            self.audit = None
        if self.services:
            await run_blocking(stop_services, self.services, self.service_stop_timeout)
            self.services = []
        if self.context is not None:
            await run_blocking(self.context.close)
            self.context = None
        shutdown(wait=False)


def _login_name() -> str:
    """The login name of the account running the server ("owner" where the system knows none, e.g. a bare uid)."""
    try:
        return getpass.getuser() or "owner"
    except (KeyError, OSError):
        return "owner"


main = launch_new_instance = SliceboxApp.launch_instance

if __name__ == "__main__":
    main()
