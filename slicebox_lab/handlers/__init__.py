"""The server extension's Tornado handlers, one module per area."""

from __future__ import annotations

from . import images, metadata, system

default_handlers = [*system.default_handlers, *metadata.default_handlers, *images.default_handlers]

__all__ = ["default_handlers"]
