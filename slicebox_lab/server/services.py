"""Long-lived services of a node (SCP listeners, folder watches, ...) and their one start/stop point.

:func:`service_factories` lists every service of a node, in start order; ``SliceboxApp`` builds and
starts them when the server starts and stops them, each within a timeout, when it stops.  The
services are plain blocking objects over a :class:`~slicebox_lab.context.SliceboxContext`: they
import no tornado and no jupyter_server (house rule 2), so tests can run them without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..context import SliceboxContext

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    def start(self) -> None:
        """Start serving (listeners, watches); must not block for long."""
        ...

    def stop(self, timeout: float) -> None:
        """Stop within ``timeout`` seconds, leaving no thread or socket behind."""
        ...


ServiceFactory = Callable[["SliceboxContext"], Service]


def service_factories() -> list[ServiceFactory]:
    """The node's services, in start order (stopped in reverse); imported here, in one place."""
    from ..apps.service import apps_service_factory
    from ..box.service import box_service_factory
    from ..net.scp import scp_service_factory
    from ..organize.seriestypes import series_type_service_factory
    from ..routing.forwarding import forwarding_service_factory
    from ..watch.service import create_watch_service

    # series types, forwarding and apps first: listening before any source can deliver an image
    return [series_type_service_factory, forwarding_service_factory, apps_service_factory, scp_service_factory,
            create_watch_service, box_service_factory]  # fmt: skip


def register_job_runners(context: SliceboxContext) -> None:
    """Register the runners of the job kinds the node's REST routes and services submit (anonymize,
    C-STORE send, C-MOVE/C-GET retrieve); the services register their own (series types)."""
    from ..anonymization.jobs import register_anonymization_jobs
    from ..net.scu_jobs import register_scu_jobs

    register_anonymization_jobs(context)
    register_scu_jobs(context)


def start_services(context: SliceboxContext, factories: list[ServiceFactory] | None = None) -> list[Service]:
    """Build and start the services; one that fails to start is logged, not fatal."""
    started: list[Service] = []
    for factory in service_factories() if factories is None else factories:
        service = factory(context)
        try:
            service.start()
        except Exception:
            log.exception("slicebox: service %s failed to start", getattr(service, "name", factory))
            context.index.add_log("ERROR", "System", f"service {getattr(service, 'name', '?')} failed to start")
            continue
        started.append(service)
    return started


def stop_services(services: list[Service], timeout: float = 10.0) -> None:
    for service in reversed(services):
        try:
            service.stop(timeout)
        except Exception:
            log.exception("slicebox: service %s failed to stop", service.name)
