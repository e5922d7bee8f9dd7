"""Typed events and a thread-safe bus.

Ingest, deletion and (later) boxes, forwarding and series types talk through
these events instead of calling each other, as Slicebox's actors did.
Subscribers run synchronously on the publisher's thread; a failing subscriber
is logged and never undoes the work that published the event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .model import Image, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageAdded:
    image: Image
    source: Source
    overwrite: bool
    #: restored from an anonymization key on the way in (recorded in the audit trail)
    reidentified: bool = False


@dataclass(frozen=True)
class ImagesDeleted:
    image_ids: tuple[int, ...]


E = TypeVar("E")


class EventBus:
    """Publish/subscribe by event type; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[type, list[Callable[[Any], None]]] = {}

    def subscribe(self, event_type: type[E], callback: Callable[[E], None]) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.setdefault(event_type, []).append(callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._subscribers.get(event_type, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    def publish(self, event: object) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(type(event), []))
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not undo an ingest
                log.exception("event subscriber %r failed on %r", callback, event)
