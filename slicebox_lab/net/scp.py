"""The node's SCPs: pynetdicom listeners for Verification, Storage and Query/Retrieve.

One :class:`ScpService` (a :class:`~slicebox_lab.server.services.Service`) owns one pynetdicom AE
listener per row of the ``scps`` table.  Each listener

* accepts associations only when the called AE title is its own (``require_called_aet``);
* answers C-ECHO;
* accepts C-STORE for every storage SOP class pynetdicom knows, in the transfer syntaxes the
  node accepts (:data:`slicebox_lab.dicom.ACCEPTED_TRANSFER_SYNTAXES`), and stores each object
  through the one ingest path (``context.ingest`` with source ``scp``; in a worker, validated and
  flushed there and indexed by ``context.adopt_received``): success (0x0000) is
  answered only after the file is durable and its rows committed, a refused object gets a failure status
  with an ErrorComment naming the reason, and the association keeps working;
* answers C-FIND, C-GET and C-MOVE in the Patient Root and Study Root models from the index
  (:mod:`slicebox_lab.net.qr`); C-MOVE destinations are the remote nodes (table ``scus``) found
  by AE title.

Every socket gets ``TCP_NODELAY`` (DIMSE messages are small writes; Nagle's algorithm would
delay each response by up to 40 ms), and a large maximum PDU is advertised.

An association that only stores (and verifies) is served by one of the node's worker processes, one
GIL per core, and what it stores is indexed here (:mod:`slicebox_lab.net.receivers`); Q/R associations,
and all of them on a node without workers, are served in this process.  pynetdicom's polling is made
to wake early (:mod:`slicebox_lab.net.acceptor`).
"""

from __future__ import annotations

import builtins
import errno
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from slicebox_lab.errors import Conflict, InvalidInput, PeerFailure, SliceboxError
from slicebox_lab.model import Image, Source
from slicebox_lab.net import nodes, qr
from slicebox_lab.net.acceptor import install_clock, make_ae, status, store_status, wake_early
from slicebox_lab.net.nodes import ANY_HOST, ScpConfig
from slicebox_lab.net.receivers import Receivers, proposes_storage_only
from slicebox_lab.net.transport import (
    MAX_PDU,
    resolve_host,
    set_nodelay,
    storage_contexts,
)
from slicebox_lab.storage import FileSystemStorage

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = ["ScpService", "scp_service_factory", "store_received"]

log = logging.getLogger(__name__)

#: C-FIND/GET/MOVE statuses (PS3.4 C.4)
QR_PENDING = 0xFF00
QR_CANCEL = 0xFE00
QR_IDENTIFIER_DOES_NOT_MATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_OUT_OF_RESOURCES = 0xA701


@dataclass
class _Listener:
    config: ScpConfig
    ae: AE
    server: ThreadedAssociationServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


class ScpService:
    """The node's SCP listeners, kept in step with the ``scps`` table."""

    name = "scp"

    def __init__(self, context: SliceboxContext) -> None:
        self.context = context
        self._lock = threading.RLock()
        self._listeners: dict[int, _Listener] = {}
        self._early_wakeups = False
        #: storage associations go to the worker processes, where there are some and blobs are local files
        storage, pool = context.storage, context.workers
        self._receivers = Receivers(pool, storage) if pool.workers and isinstance(storage, FileSystemStorage) else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start a listener for every configured SCP; one that cannot listen is logged and skipped."""
        self._early_wakeups = install_clock()
        for config in nodes.list_scps(self.context.index):
            with self._lock:
                if config.id in self._listeners:
                    continue
                try:
                    listener = self._listen(config)
                except Exception as error:
                    reason = error.message if isinstance(error, SliceboxError) else f"{type(error).__name__}: {error}"
                    log.error("SCP %s not started: %s", config.name, reason)
                    self.context.index.add_log("ERROR", "SCP", f"SCP {config.name} not started: {reason}")
                    continue
                if listener.port != config.port:  # configured as 0: keep the port it got
                    nodes.set_scp_port(self.context.index, config.id, listener.port)
                    listener.config = _with_port(config, listener.port)
                self._listeners[config.id] = listener

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every listener: no new associations, running ones get half the time, then abort."""
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
        _stop_listeners(listeners, timeout / 2 if self._receivers is not None else timeout)
        if self._receivers is not None:
            self._receivers.stop(timeout / 2)

    # ------------------------------------------------------------------ configuration

    def list(self) -> builtins.list[ScpConfig]:
        return nodes.list_scps(self.context.index)

    def get(self, scp_id: Any) -> ScpConfig:
        return nodes.get_scp(self.context.index, scp_id)

    def is_running(self, scp_id: int) -> bool:
        # no lock: a dict lookup is atomic, and handlers call this on the event loop while
        # remove() may hold the lock for seconds
        return scp_id in self._listeners

    def add(self, name: Any, ae_title: Any, port: Any, host: Any = ANY_HOST) -> ScpConfig:
        """Persist a new SCP and start its listener; nothing is persisted if it cannot listen.

        ``port`` 0 takes any free port; the record holds the port actually used.
        """
        config = ScpConfig(
            id=0,
            name=nodes.validate_name(name),
            ae_title=nodes.validate_ae_title(ae_title),
            host=nodes.validate_host(host),
            port=nodes.validate_port(port, allow_zero=True),
        )
        index = self.context.index
        with self._lock:
            if nodes.scp_name_used(index, config.name):
                raise Conflict(f"an SCP named {config.name!r} already exists")
            if config.port:
                for other in nodes.list_scps(index):
                    if other.port == config.port:
                        raise Conflict(f"Port {config.port} is already in use by SCP {other.name!r}")
            listener = self._listen(config)
            try:
                record = nodes.insert_scp(index, config.name, config.ae_title, config.host, listener.port)
            except BaseException:
                _stop_listeners([listener], 2.0)
                raise
            listener.config = record
            self._listeners[record.id] = listener
        index.add_log("INFO", "SCP", f"SCP {record.name} ({record.ae_title}) listening on {record.host}:{record.port}")
        return record

    def remove(self, scp_id: Any, timeout: float = 5.0) -> None:
        """Stop the SCP's listener (within ``timeout``) and delete it; unknown id → NotFound."""
        with self._lock:
            config = nodes.get_scp(self.context.index, scp_id)
            listener = self._listeners.pop(config.id, None)
            if listener is not None:
                _stop_listeners([listener], timeout)
            nodes.delete_scp_row(self.context.index, config.id)
        self.context.index.add_log("INFO", "SCP", f"SCP {config.name} removed")

    # ------------------------------------------------------------------ listeners

    def _listen(self, config: ScpConfig) -> _Listener:
        ae = make_ae(config.ae_title)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            *([(evt.EVT_CONN_OPEN, wake_early)] if self._early_wakeups else []),
            (evt.EVT_C_STORE, self._on_store, [config.name]),
            (evt.EVT_C_FIND, self._on_find, [config.ae_title]),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
        ]
        where = f"{config.host}:{config.port}"
        try:
            address = resolve_host(config.host)
        except PeerFailure as error:
            raise InvalidInput(f"cannot listen on {where}: {error.message}") from None
        try:
            made = ae.make_server((address, config.port), evt_handlers=handlers, server_class=_RoutingServer)
            server = cast(_RoutingServer, made)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Conflict(f"Port {config.port} is already in use (cannot listen on {where})") from None
            if error.errno == errno.EACCES:
                raise InvalidInput(f"cannot listen on {where}: ports below 1024 need privileges") from None
            raise InvalidInput(f"cannot listen on {where}: {error.strerror or error}") from None
        if self._receivers is not None:
            server.route = functools.partial(self._hand_over, config)
        # as pynetdicom's start_server(block=False) does, with our server class
        threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{config.name}", daemon=True).start()
        ae._servers.append(server)
        return _Listener(config, ae, server)

    def _hand_over(self, config: ScpConfig, sock: socket.socket, address: Any) -> bool:
        """Have a worker process serve this association if it only stores (``net/receivers.py``); then
        index what it stores, in this thread, until it ends.  False: serve it here."""
        receivers = self._receivers
        if receivers is None or not proposes_storage_only(sock):
            return False
        source = Source("scp", config.name)
        handed = receivers.hand_over(sock, address, config.ae_title, self.context.index.source_id(source))
        if handed is None:
            return False
        handed.serve(lambda key, size, inspected: self.context.adopt_received(key, size, source, inspected))
        return True

    # ------------------------------------------------------------------ C-STORE

    def _on_store(self, event: evt.Event, scp_name: str) -> int | Dataset:
        return store_received(self.context, event, Source("scp", scp_name))

    # ------------------------------------------------------------------ C-FIND

    def _on_find(self, event: evt.Event, ae_title: str) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        try:
            identifier = event.identifier
            finder = qr.Finder(self.context, identifier, retrieve_ae_title=ae_title)
        except qr.BadIdentifier as error:
            yield status(QR_IDENTIFIER_DOES_NOT_MATCH, error.message), None
            return
        except Exception as error:
            log.exception("C-FIND: cannot decode the identifier")
            yield status(QR_UNABLE_TO_PROCESS, f"cannot decode the identifier: {type(error).__name__}"), None
            return
        try:
            for answer in finder.answers():
                if event.is_cancelled:
                    yield QR_CANCEL, None
                    return
                yield QR_PENDING, answer
        except SliceboxError as error:
            yield status(QR_UNABLE_TO_PROCESS, error.message), None
        except Exception as error:
            log.exception("C-FIND failed")
            yield status(QR_UNABLE_TO_PROCESS, f"query failed: {type(error).__name__}"), None

    # ------------------------------------------------------------------ C-GET / C-MOVE

    def _matching_images(self, event: evt.Event) -> builtins.list[Image] | Dataset:
        """The images a C-GET/C-MOVE asks for, or a failure status dataset."""
        try:
            return qr.Finder(self.context, event.identifier).images()
        except qr.BadIdentifier as error:
            return status(QR_IDENTIFIER_DOES_NOT_MATCH, error.message)
        except SliceboxError as error:
            return status(QR_UNABLE_TO_PROCESS, error.message)
        except Exception as error:
            log.exception("C-GET/C-MOVE: cannot find the images")
            return status(QR_UNABLE_TO_PROCESS, f"cannot find the images: {type(error).__name__}")

    def _sub_operations(self, event: evt.Event, images: builtins.list[Image]) -> Iterator[tuple[int, Any]]:
        for image in images:
            if event.is_cancelled:
                yield QR_CANCEL, None
                return
            try:
                dataset: Any = self.context.dataset(image.id)
            except Exception as error:  # deleted meanwhile, unreadable: counted as a failed sub-operation
                log.warning("cannot read image %s for a retrieve: %s", image.id, error)
                dataset = "unreadable"
            yield QR_PENDING, dataset

    def _on_get(self, event: evt.Event) -> Iterator[Any]:
        yield from self._send_matches(event, self._matching_images(event))

    def _on_move(self, event: evt.Event) -> Iterator[Any]:
        destination = (event.move_destination or "").strip()
        node = nodes.find_scu_by_ae_title(self.context.index, destination) if destination else None
        if node is None:
            log.info("C-MOVE: unknown destination %r", destination)
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        try:
            address = resolve_host(node.host)
        except SliceboxError as error:
            log.warning("C-MOVE: destination %s: %s", node.ae_title, error.message)
            yield None, None
            return
        images = self._matching_images(event)
        contexts = storage_contexts(images if isinstance(images, list) else [])
        options = {
            "contexts": contexts,
            "max_pdu": MAX_PDU,
            "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)],
        }
        yield address, node.port, options
        yield from self._send_matches(event, images)

    def _send_matches(self, event: evt.Event, images: builtins.list[Image] | Dataset) -> Iterator[Any]:
        """The C-GET/C-MOVE tail: the sub-operation count, then each image (or the failure dataset)."""
        if isinstance(images, Dataset):
            yield 1
            yield images, None
            return
        yield len(images)
        yield from self._sub_operations(event, images)


# ---------------------------------------------------------------------------------------------


class _RoutingServer(ThreadedAssociationServer):
    """pynetdicom's server, whose connection threads first offer each association to ``route``
    (:meth:`ScpService._hand_over`), which serves it elsewhere or returns False."""

    route: Callable[[socket.socket, Any], bool] | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        route = self.route
        if route is not None and route(request, client_address):
            return
        super().finish_request(request, client_address)


def store_received(context: SliceboxContext, event: evt.Event, source: Source) -> int | Dataset:
    """Ingest one object received by C-STORE (our SCPs, and C-GET answers); never raises."""
    return store_status(source.source_name, lambda: context.ingest(event.encoded_dataset(include_meta=True), source))


def _with_port(config: ScpConfig, port: int) -> ScpConfig:
    return ScpConfig(id=config.id, name=config.name, ae_title=config.ae_title, host=config.host, port=port)


def _stop_listeners(listeners: list[_Listener], timeout: float) -> None:
    """Stop accepting, let running associations finish for half of ``timeout``, abort the rest."""
    deadline = time.monotonic() + max(timeout, 0.0)
    grace = time.monotonic() + max(timeout, 0.0) / 2
    for listener in listeners:
        try:
            listener.server.shutdown()
        except Exception:
            log.exception("SCP %s: stopping the listener failed", listener.config.name)
    running: list[Association] = [a for listener in listeners for a in listener.ae.active_associations]
    # established associations may finish what they do; the others (still negotiating) need not wait
    while any(a.is_alive() and a.is_established for a in running) and time.monotonic() < grace:
        time.sleep(0.02)
    joined: list[Association] = []
    for assoc in running:
        if not assoc.is_alive():
            continue
        if assoc.is_established:
            assoc.abort()
            joined.append(assoc)
        else:
            # still waiting for an A-ASSOCIATE-RQ: close its socket (the daemon thread itself only
            # wakes at the ACSE timeout, so it is not waited for; it holds nothing then)
            transport = getattr(assoc.dul, "socket", None)
            if transport is not None:
                try:
                    transport.close()
                except Exception:
                    log.debug("closing a pending association's socket failed", exc_info=True)
    for assoc in joined:
        assoc.join(max(0.0, deadline - time.monotonic()))


def scp_service_factory(context: SliceboxContext) -> ScpService:
    """The factory ``SliceboxApp`` calls (the handlers find the service among the app's services)."""
    return ScpService(context)
