"""The server extension's Tornado handlers, one module per area."""

from __future__ import annotations

from . import anonymization, images, imports, jobs, metadata, scps, system, watches

default_handlers = [*system.default_handlers, *metadata.default_handlers, *images.default_handlers]
default_handlers += [*imports.default_handlers, *watches.default_handlers]
default_handlers += jobs.default_handlers
default_handlers += scps.default_handlers
default_handlers += anonymization.default_handlers

__all__ = ["default_handlers"]
