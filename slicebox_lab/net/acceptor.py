"""What each of the node's DICOM acceptors needs, in the server process and in a receiver process alike.

The AE of an SCP (:func:`make_ae`), the C-STORE status of storing a received object
(:func:`store_status`), and early wake-ups of pynetdicom's polling:

pynetdicom's two threads per association (the DUL reader and the association reactor) poll with
``time.sleep(0.001)``; every hand-over between them (request decoded → handler, response queued →
socket) could wait for the rest of a sleep, ~3 ms per C-STORE in a profile.  :func:`wake_early`
makes those sleeps of *our listeners'* associations end the moment there is work (socket readable,
response queued, message decoded); they never sleep longer than pynetdicom asked.  It needs
``time`` inside pynetdicom's ``dul`` and ``association`` modules replaced, which
``ScpService.start`` and each receiver process do explicitly (:func:`install_clock`), for the
pynetdicom releases it was written for.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association

from slicebox_lab import dicom
from slicebox_lab.errors import InvalidDicom, SliceboxError, StorageFull
from slicebox_lab.net.transport import ACSE_TIMEOUT, DIMSE_TIMEOUT, MAX_PDU, NETWORK_TIMEOUT, VERIFICATION

__all__ = ["MAX_ASSOCIATIONS", "install_clock", "make_ae", "status", "store_status", "wake_early"]

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3)
STORE_SUCCESS = 0x0000
STORE_OUT_OF_RESOURCES = 0xA700
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_PROCESSING_FAILURE = 0x0110
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


def status(code: int, comment: str = "") -> Dataset:
    """A status dataset; ErrorComment (LO) holds at most 64 characters."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


def make_ae(ae_title: str, query_retrieve: bool = True) -> AE:
    """The AE of one of our SCPs: verification, every storage SOP class, and (``query_retrieve``) Q/R."""
    ae = AE(ae_title=ae_title)
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
    if query_retrieve:
        for model in _QR_MODELS:
            ae.add_supported_context(model)
    return ae


def store_status(name: str, store: Callable[[], object]) -> int | Dataset:
    """The C-STORE status of ``store()``, which stores one received object; never raises.

    The association must keep working: a refused object gets a failure status with an
    ErrorComment naming the reason.
    """
    try:
        store()
    except InvalidDicom as error:
        log.info("%s: refused an object: %s", name, error.message)
        return status(STORE_CANNOT_UNDERSTAND, error.message)
    except StorageFull as error:
        log.error("%s: %s", name, error.message)
        return status(STORE_OUT_OF_RESOURCES, error.message)
    except SliceboxError as error:
        log.warning("%s: could not store an object: %s", name, error.message)
        return status(STORE_CANNOT_UNDERSTAND, error.message)
    except Exception as error:
        log.exception("%s: could not store an object", name)
        return status(STORE_PROCESSING_FAILURE, f"could not store: {type(error).__name__}")
    return STORE_SUCCESS


class _Clock(types.ModuleType):
    """Stands in for ``time`` in pynetdicom's ``dul`` and ``association`` modules.

    ``sleep`` of a thread that registered a waiter (``_slicebox_wait``, set by :func:`wake_early`)
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


def wake_early(event: evt.Event) -> None:
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
