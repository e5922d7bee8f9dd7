"""Notebook and dashboard widgets of a node: browse, view, send, administer.

Every widget talks to the node only through a :class:`slicebox_lab.client.SliceboxClient`::

    import slicebox_lab
    from slicebox_lab.ui import Browser, Sender, AdminPanel
    sbx = slicebox_lab.connect()
    browser = Browser(sbx); browser
    Sender(sbx, browser)            # follows the browser's selection

``Viewer`` is imported on first use (it needs anywidget and numpy volumes; the other panels do not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .admin import (
    AdminPanel,
    BoxPanel,
    FilterPanel,
    ForwardingPanel,
    KeysPanel,
    ScpPanel,
    ScuPanel,
    SeriesTypePanel,
    UserPanel,
    WatchPanel,
)
from .browser import Browser
from .sender import Sender

if TYPE_CHECKING:
    from .viewer import Viewer

__all__ = [
    "Browser",
    "Viewer",
    "Sender",
    "AdminPanel",
    "ScpPanel",
    "ScuPanel",
    "WatchPanel",
    "BoxPanel",
    "ForwardingPanel",
    "FilterPanel",
    "SeriesTypePanel",
    "UserPanel",
    "KeysPanel",
]


def __getattr__(name: str) -> Any:
    if name == "Viewer":
        from .viewer import Viewer

        return Viewer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
