"""SliceboxClient: the node's REST API as pandas DataFrames, numpy volumes and a few verbs.

Used by the widgets (slicebox_lab/ui), notebooks, Voila dashboards and scripts; it speaks HTTP only.
Each REST area is a mixin in its own module (metadata, images, organizing, anonymization, boxes,
networking, configuration, jobs); this module composes them into the one class users import, and
adds what spans them: selections of series.
"""

from __future__ import annotations

import os
from typing import Any

from .anonymization import AnonymizationMixin
from .apps import AppsMixin
from .boxes import BoxesMixin
from .configuration import ConfigurationMixin
from .errors import NodeUnreachable
from .http import discover_server
from .images import ImagesMixin, UploadSummary
from .jobs import JobsMixin
from .metadata import MetadataMixin
from .networking import NetworkingMixin
from .organizing import OrganizingMixin
from .selection import Selection, Series, series_ids_of

__all__ = ["SliceboxClient", "UploadSummary", "connect"]


class SliceboxClient(
    ImagesMixin,
    MetadataMixin,
    OrganizingMixin,
    AnonymizationMixin,
    BoxesMixin,
    NetworkingMixin,
    ConfigurationMixin,
    JobsMixin,
    AppsMixin,
):
    """A slicebox_lab node over HTTP; see the module docstring of :mod:`slicebox_lab.client`."""

    # ------------------------------------------------------------------ selections

    def select(self, frame_or_series_ids: Any) -> Selection:
        """A selection of series from a DataFrame (``series_id`` or ``id`` column of series) or ids."""
        return Selection(self, series_ids_of(frame_or_series_ids))

    def series_obj(self, series_id: int) -> Series:
        return Series(self, int(series_id))


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60,
    check: bool = True,
) -> SliceboxClient:
    """A client for a node: ``url`` (and ``token`` or ``username``/``password``); without a URL,
    ``SLICEBOX_URL``/``SLICEBOX_TOKEN``, else the Jupyter server that started this kernel.
    ``check`` asks the node's health once, so a wrong URL or token fails here, clearly."""
    if url is None:
        url = os.environ.get("SLICEBOX_URL") or None
        if url is not None and token is None and username is None:
            token = os.environ.get("SLICEBOX_TOKEN") or None
    if url is None:
        server = discover_server()
        url = str(server.get("url") or "")
        if not url.startswith("http"):
            raise NodeUnreachable(
                f"the Jupyter server (pid {server.get('pid')}) listens on a socket, not a URL; "
                "call connect(url, token=...)"
            )
        if token is None and username is None:
            token = str(server.get("token") or "") or os.environ.get("JUPYTERHUB_API_TOKEN") or None
    client = SliceboxClient(url, token, username=username, password=password, timeout=timeout)
    if check:
        client.health()
    return client
