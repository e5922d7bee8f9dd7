"""SliceboxApp: the Jupyter server extension, and the headless ``jupyter slicebox`` node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Unicode, default

from . import __version__
from .asyncio_bridge import run_blocking, shutdown
from .context import SliceboxContext
from .services import Service, start_services, stop_services


class SliceboxApp(ExtensionApp):
    """A DICOM node inside the Jupyter server: store, index and REST API under ``slicebox/api/``."""

    name = "slicebox"
    description = __doc__
    version = __version__
    extension_url = "/slicebox/api/system/information"
    # `jupyter slicebox` also loads the other enabled extensions (Voila, JupyterLab)
    load_other_extensions = True
    # a headless node: no browser; CI and containers run as root
    serverapp_config: dict[str, Any] = {"open_browser": False, "allow_root": True}

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

    storage_dir = Unicode(
        "", help="Folder of the stored DICOM files. Empty: the folder 'dicom' in data_dir."
    ).tag(config=True)

    fsync = Bool(
        True,
        help=(
            "fsync every stored file and its folder before answering success. Turn off only for "
            "throwaway nodes (tests, demos): a power cut may then lose acknowledged images."
        ),
    ).tag(config=True)

    context: SliceboxContext | None = None
    services: list[Service] = []

    service_stop_timeout = Float(
        10.0, help="Seconds each service (SCP listener, folder watch, ...) gets to stop when the server stops."
    ).tag(config=True)

    def initialize_settings(self) -> None:
        # blocking on purpose: the node must be migrated and repaired before it serves
        self.context = SliceboxContext.open(
            Path(self.data_dir), self.database_url, self.storage_dir, fsync=self.fsync
        )
        self.settings["slicebox_context"] = self.context
        # services (SCP listeners, folder watches) run on their own threads, not on the loop; they
        # start here, before the server serves, so no request finds them missing
        self.services = start_services(self.context)
        self.log.info("slicebox: data in %s, index %s", self.data_dir, self.context.index.engine.url)

    def initialize_handlers(self) -> None:
        from .handlers import default_handlers

        self.handlers.extend(default_handlers)

    async def stop_extension(self) -> None:
        if self.services:
            await run_blocking(stop_services, self.services, self.service_stop_timeout)
            self.services = []
        if self.context is not None:
            await run_blocking(self.context.close)
            self.context = None
        shutdown(wait=False)


main = launch_new_instance = SliceboxApp.launch_instance

if __name__ == "__main__":
    main()
