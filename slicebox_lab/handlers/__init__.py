"""The server extension's Tornado handlers, one module per area."""

from __future__ import annotations

from . import (
    anonymization,
    anonymization_report,
    apps,
    boxes,
    dicomweb,
    filtering,
    forwarding,
    images,
    imports,
    jobs,
    metadata,
    pages,
    scps,
    seriestags,
    seriestypes,
    system,
    users,
    watches,
)

default_handlers = [*system.default_handlers, *metadata.default_handlers, *images.default_handlers]
default_handlers += [*imports.default_handlers, *watches.default_handlers]
default_handlers += jobs.default_handlers
default_handlers += scps.default_handlers
default_handlers += anonymization.default_handlers
default_handlers += anonymization_report.default_handlers
default_handlers += filtering.default_handlers
default_handlers += forwarding.default_handlers
default_handlers += boxes.default_handlers
default_handlers += seriestags.default_handlers
default_handlers += seriestypes.default_handlers
default_handlers += users.default_handlers
default_handlers += dicomweb.default_handlers
default_handlers += apps.default_handlers
# the pages for people, the API's own description, then the API's JSON 404 for every other path (last)
default_handlers += pages.api_handlers + pages.default_handlers + pages.not_found_handlers

__all__ = ["default_handlers"]
