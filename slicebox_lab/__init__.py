"""slicebox_lab: a DICOM node for research groups, inside Jupyter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .client import SliceboxClient


__all__ = ["__version__", "connect"]


def connect(url: str | None = None, token: str | None = None, **kwargs: Any) -> SliceboxClient:
    """A client of a slicebox_lab node (see :func:`slicebox_lab.client.connect`); imported lazily so
    importing slicebox_lab stays cheap."""
    from .client import connect as _connect

    return _connect(url, token, **kwargs)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell jupyter_server where the extension lives (imported lazily: kernels never need it)."""
    from .app import SliceboxApp

    return [{"module": "slicebox_lab.app", "app": SliceboxApp}]
