"""The node's SCPs: pynetdicom listeners for Verification, Storage and Query/Retrieve.

One :class:`ScpService` (a :class:`~slicebox_lab.server.services.Service`) owns one pynetdicom AE
listener per row of the ``scps`` table.  Each listener

* accepts associations only when the called AE title is its own (``require_called_aet``);
* answers C-ECHO;
* accepts C-STORE for every storage SOP class pynetdicom knows, in the transfer syntaxes the
  node accepts (:data:`slicebox_lab.dicom.ACCEPTED_TRANSFER_SYNTAXES`), and stores each object
  through the one ingest path (``context.ingest`` with source ``scp``): success (0x0000) is
  answered only after the file and its rows are durable, a refused object gets a failure status
  with an ErrorComment naming the reason, and the association keeps working;
* answers C-FIND, C-GET and C-MOVE in the Patient Root and Study Root models from the index
  (:mod:`slicebox_lab.net.qr`); C-MOVE destinations are the remote nodes (table ``scus``) found
  by AE title.

Every socket gets ``TCP_NODELAY`` (DIMSE messages are small writes; Nagle's algorithm would
delay each response by up to 40 ms), and a large maximum PDU is advertised.

pynetdicom's two threads per association (the DUL reader and the association reactor) poll with
``time.sleep(0.001)``; every hand-over between them (request decoded → handler, response queued →
socket) could wait for the rest of a sleep, ~3 ms per C-STORE in a profile.  :func:`_wake_early`
makes those sleeps of *our listeners'* associations end the moment there is work (socket readable,
response queued, message decoded); they never sleep longer than pynetdicom asked.  It needs
``time`` inside pynetdicom's ``dul`` and ``association`` modules replaced, which
:meth:`ScpService.start` does explicitly (:func:`install_clock`), for the pynetdicom releases it was
written for.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import select
import threading
import time
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pynetdicom.association
import pynetdicom.dul
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from slicebox_lab import dicom
from slicebox_lab.errors import Conflict, InvalidDicom, InvalidInput, PeerFailure, SliceboxError, StorageFull
from slicebox_lab.model import Image, Source
from slicebox_lab.net import nodes, qr
from slicebox_lab.net.nodes import ANY_HOST, ScpConfig
from slicebox_lab.net.transport import (
    ACSE_TIMEOUT,
    DIMSE_TIMEOUT,
    MAX_PDU,
    NETWORK_TIMEOUT,
    VERIFICATION,
    resolve_host,
    set_nodelay,
    storage_contexts,
)

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = ["ScpService", "scp_service_factory", "store_received"]

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3)
STORE_SUCCESS = 0x0000
STORE_OUT_OF_RESOURCES = 0xA700
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_PROCESSING_FAILURE = 0x0110
#: C-FIND/GET/MOVE statuses (PS3.4 C.4)
QR_PENDING = 0xFF00
QR_CANCEL = 0xFE00
QR_IDENTIFIER_DOES_NOT_MATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_OUT_OF_RESOURCES = 0xA701

#: Patient Root and Study Root Query/Retrieve: FIND, MOVE, GET (PS3.4 C.6)
_QR_MODELS = (
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.2.3",
)
#: the most associations one listener serves at a time
MAX_ASSOCIATIONS = 32


def _status(code: int, comment: str = "") -> Dataset:
    """A status dataset; ErrorComment (LO) holds at most 64 characters."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


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
        self._wake_early = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start a listener for every configured SCP; one that cannot listen is logged and skipped."""
        self._wake_early = install_clock()
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
        _stop_listeners(listeners, timeout)

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

    def _make_ae(self, config: ScpConfig) -> AE:
        ae = AE(ae_title=config.ae_title)
        ae.require_called_aet = True
        ae.maximum_pdu_size = MAX_PDU
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.acse_timeout = ACSE_TIMEOUT
        ae.dimse_timeout = DIMSE_TIMEOUT
        ae.network_timeout = NETWORK_TIMEOUT
        ae.add_supported_context(VERIFICATION)
        syntaxes = sorted(dicom.ACCEPTED_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            # scp_role: the peer may be the storage SCP on this context (C-GET sends back over it)
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, syntaxes, scp_role=True, scu_role=False)
        for model in _QR_MODELS:
            ae.add_supported_context(model)
        return ae

    def _listen(self, config: ScpConfig) -> _Listener:
        ae = self._make_ae(config)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            *([(evt.EVT_CONN_OPEN, _wake_early)] if self._wake_early else []),
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
            server = ae.start_server((address, config.port), block=False, evt_handlers=handlers)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Conflict(f"Port {config.port} is already in use (cannot listen on {where})") from None
            if error.errno == errno.EACCES:
                raise InvalidInput(f"cannot listen on {where}: ports below 1024 need privileges") from None
            raise InvalidInput(f"cannot listen on {where}: {error.strerror or error}") from None
        if server is None:  # only a blocking server returns None
            raise SliceboxError("pynetdicom did not return a server")
        return _Listener(config, ae, server)

    # ------------------------------------------------------------------ C-STORE

    def _on_store(self, event: evt.Event, scp_name: str) -> int | Dataset:
        return store_received(self.context, event, Source("scp", scp_name))

    # ------------------------------------------------------------------ C-FIND

    def _on_find(self, event: evt.Event, ae_title: str) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        try:
            identifier = event.identifier
            finder = qr.Finder(self.context, identifier, retrieve_ae_title=ae_title)
        except qr.BadIdentifier as error:
            yield _status(QR_IDENTIFIER_DOES_NOT_MATCH, error.message), None
            return
        except Exception as error:
            log.exception("C-FIND: cannot decode the identifier")
            yield _status(QR_UNABLE_TO_PROCESS, f"cannot decode the identifier: {type(error).__name__}"), None
            return
        try:
            for answer in finder.answers():
                if event.is_cancelled:
                    yield QR_CANCEL, None
                    return
                yield QR_PENDING, answer
        except SliceboxError as error:
            yield _status(QR_UNABLE_TO_PROCESS, error.message), None
        except Exception as error:
            log.exception("C-FIND failed")
            yield _status(QR_UNABLE_TO_PROCESS, f"query failed: {type(error).__name__}"), None

    # ------------------------------------------------------------------ C-GET / C-MOVE

    def _matching_images(self, event: evt.Event) -> builtins.list[Image] | Dataset:
        """The images a C-GET/C-MOVE asks for, or a failure status dataset."""
        try:
            return qr.Finder(self.context, event.identifier).images()
        except qr.BadIdentifier as error:
            return _status(QR_IDENTIFIER_DOES_NOT_MATCH, error.message)
        except SliceboxError as error:
            return _status(QR_UNABLE_TO_PROCESS, error.message)
        except Exception as error:
            log.exception("C-GET/C-MOVE: cannot find the images")
            return _status(QR_UNABLE_TO_PROCESS, f"cannot find the images: {type(error).__name__}")

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


def store_received(context: SliceboxContext, event: evt.Event, source: Source) -> int | Dataset:
    """Ingest one object received by C-STORE (our SCPs, and C-GET answers); never raises.

    The association must keep working: a refused object gets a failure status with an
    ErrorComment naming the reason.
    """
    name = source.source_name
    try:
        data = event.encoded_dataset(include_meta=True)
        context.ingest(data, source)
    except InvalidDicom as error:
        log.info("%s: refused an object: %s", name, error.message)
        return _status(STORE_CANNOT_UNDERSTAND, error.message)
    except StorageFull as error:
        log.error("%s: %s", name, error.message)
        return _status(STORE_OUT_OF_RESOURCES, error.message)
    except SliceboxError as error:
        log.warning("%s: could not store an object: %s", name, error.message)
        return _status(STORE_CANNOT_UNDERSTAND, error.message)
    except Exception as error:
        log.exception("%s: could not store an object", name)
        return _status(STORE_PROCESSING_FAILURE, f"could not store: {type(error).__name__}")
    return STORE_SUCCESS


class _Clock(types.ModuleType):
    """Stands in for ``time`` in pynetdicom's ``dul`` and ``association`` modules.

    ``sleep`` of a thread that registered a waiter (``_slicebox_wait``, set by :func:`_wake_early`)
    calls the waiter, which returns at the latest after ``seconds`` but earlier when there is work;
    every other thread (our SCUs, other code) sleeps as before.
    """

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait = getattr(threading.current_thread(), "_slicebox_wait", None)
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


#: the pynetdicom releases whose ``dul`` and ``association`` modules poll as :class:`_Clock` expects
#: (pyproject.toml allows exactly these)
WAKE_EARLY_VERSIONS = ((3, 0), (3, 1))


def install_clock() -> bool:
    """Replace ``time`` in pynetdicom's ``dul`` and ``association`` modules by :class:`_Clock` (once per
    process; every other thread keeps sleeping as before).  ``ScpService.start`` calls it: importing this
    module changes nothing.  Only for the pynetdicom releases it was written for: another one keeps its
    plain polling (slower C-STOREs, nothing worse)."""
    version = tuple(int(part) for part in pynetdicom.__version__.split(".")[:2] if part.isdigit())
    if not WAKE_EARLY_VERSIONS[0] <= version < WAKE_EARLY_VERSIONS[1]:
        log.warning("pynetdicom %s is not a release the SCP's early wake-ups were written for", pynetdicom.__version__)
        return False
    for module in (pynetdicom.dul, pynetdicom.association):
        if not isinstance(getattr(module, "time", None), _Clock):
            module.time = _Clock()  # type: ignore[attr-defined]
    return True


class _Waker:
    """Early wake-ups for one acceptor association's DUL and reactor threads."""

    def __init__(self, assoc: Association) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._reactor = threading.Event()
        self._dul = assoc.dul
        weakref.finalize(self, _close_fds, self._read, self._write)
        _wrap_put(assoc.dul.to_provider_queue, self._wake_dul)  # a response to send
        _wrap_put(assoc.dimse.msg_queue, self._reactor.set)  # a decoded request
        _wrap_put(assoc.dul.to_user_queue, self._reactor.set)  # release / abort
        assoc.dul._slicebox_wait = self._dul_wait  # type: ignore[attr-defined]
        assoc._slicebox_wait = self._reactor_wait  # type: ignore[attr-defined]

    def _wake_dul(self) -> None:
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending (pipe full) or closing: the DUL wakes anyway

    def _dul_wait(self, seconds: float) -> None:
        transport = getattr(self._dul, "socket", None)
        sock = getattr(transport, "socket", None)
        watched: list[Any] = [self._read]
        if sock is not None and sock.fileno() >= 0:
            watched.append(sock)
        try:
            ready, _, _ = select.select(watched, [], [], seconds)
        except (OSError, ValueError):
            time.sleep(seconds)
            return
        if self._read in ready:
            try:
                os.read(self._read, 4096)
            except (BlockingIOError, OSError):
                pass

    def _reactor_wait(self, seconds: float) -> None:
        self._reactor.wait(seconds)
        # a put after this clear sets the event again; one before it left its item in the queue,
        # which the reactor checks right after this call
        self._reactor.clear()


def _wrap_put(target: Any, wake: Any) -> None:
    put = target.put

    def put_and_wake(*args: Any, **kwargs: Any) -> None:
        put(*args, **kwargs)
        wake()

    target.put = put_and_wake


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _wake_early(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler (before the association's threads start): see the module docstring."""
    assoc = event.assoc
    dul, dimse = getattr(assoc, "dul", None), getattr(assoc, "dimse", None)
    queues = (
        getattr(dul, "to_provider_queue", None),
        getattr(dimse, "msg_queue", None),
        getattr(dul, "to_user_queue", None),
    )
    if not all(callable(getattr(q, "put", None)) for q in queues):
        return  # not the queues install_clock's releases have: keep pynetdicom's plain polling
    try:
        waker = _Waker(assoc)
    except OSError:  # out of file descriptors: keep pynetdicom's plain polling
        return
    event.assoc._slicebox_waker = waker  # type: ignore[attr-defined]  # lives as long as the association


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
