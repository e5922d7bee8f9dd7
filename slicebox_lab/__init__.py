"""slicebox_lab: a DICOM node for research groups, inside Jupyter."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell jupyter_server where the extension lives (imported lazily: kernels never need it)."""
    from .app import SliceboxApp

    return [{"module": "slicebox_lab.app", "app": SliceboxApp}]
