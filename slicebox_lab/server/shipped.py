"""Files the wheel ships beside the code: dashboards and tutorials, the OpenAPI document, the API docs' assets.

They live in the repository's non-Python folders (``notebooks/``, ``server_extension/``) and are copied
into the package by the wheel (``pyproject.toml``'s force-include: ``slicebox_lab/_notebooks``,
``slicebox_lab/_server_extension``).  Looking in both places, package first, is what lets the node serve
them whatever folder it was started from and however it was installed (wheel, editable, checkout).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["dashboards", "notebooks_dir", "openapi_path", "apidocs_dir", "tutorials"]

_PACKAGE = Path(__file__).resolve().parents[1]


def _folder(in_wheel: str, in_checkout: str) -> Path:
    for folder in (_PACKAGE / in_wheel, _PACKAGE.parent / in_checkout):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"neither {_PACKAGE / in_wheel} nor {_PACKAGE.parent / in_checkout} exists")


def notebooks_dir() -> Path:
    """The tutorials (``*.ipynb``) with the dashboards in ``dashboards/``."""
    return _folder("_notebooks", "notebooks")


def dashboards() -> dict[str, Path]:
    """Dashboard name (file name without ``.ipynb``) → notebook, in name order."""
    folder = notebooks_dir() / "dashboards"
    return {p.stem: p for p in sorted(folder.glob("*.ipynb"))}


def tutorials() -> dict[str, Path]:
    """Tutorial name (``01-getting-started``) → notebook, in name order."""
    return {p.stem: p for p in sorted(notebooks_dir().glob("[0-9]*.ipynb"))}


def openapi_path() -> Path:
    return _folder("_server_extension", "server_extension") / "openapi.yaml"


def apidocs_dir() -> Path:
    """The vendored Swagger UI (``swagger-ui/``) that renders the OpenAPI document without a CDN."""
    return _folder("_server_extension", "server_extension") / "apidocs"
