"""Receiver processes: storage associations served outside the server process, one process per core.

Why: pynetdicom decodes every PDU and DIMSE message in Python, so associations in one process share
one GIL: an empty pynetdicom SCP that writes each object durably reaches 0.66× Orthanc with four
associations in one process and 0.99× in one process per core (``bench/floor.py --which cstore
--associations 4``, bench/README.md).  So the SCP's listener, in the server process, looks at each
new association's A-ASSOCIATE-RQ (peeked, not read: pynetdicom reads it again wherever the
association runs) and, when it proposes only storage SOP classes and Verification (what a modality
or a PACS sending images proposes), passes the connected socket (``SCM_RIGHTS``) to the least busy
receiver process.  There pynetdicom runs the association; each object is validated
(``tasks.inspect``), written under its final key and flushed once, and then the server process is
asked, over a socket pair of this association's own, to index it
(:meth:`~slicebox_lab.context.SliceboxContext.adopt_received`: the rest of the one ingest path,
tag filters, re-identification, the rows, the events); its answer is the C-STORE status.  The
server's listener thread of that association serves that socket pair until the association ends.
Query/Retrieve associations (they need the index) and associations that negotiate SCP/SCU roles stay
in the server process, and so does everything when the node has no worker processes or its storage
is not a local folder.

A receiver that dies takes its associations with it: their senders see them aborted, and nothing
of theirs was acknowledged; an object it had flushed but not had indexed is found by the start-up
reconcile, as after a crash of the server.  The next association starts a new receiver.  A server
process that dies takes its receivers with it: each exits the moment its control channel closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import ThreadedAssociationServer

from ..errors import SliceboxError
from ..storage import FileSystemStorage
from ..workers import tasks
from ..workers.pool import main_not_rerun
from .acceptor import install_clock, make_ae, store_status, wake_early
from .transport import ACSE_TIMEOUT, VERIFICATION, set_nodelay

__all__ = ["ReceiverPool", "proposes_storage_only"]

log = logging.getLogger(__name__)

#: what an association may propose to be served by a receiver
_RECEIVABLE = frozenset({VERIFICATION, *(c.abstract_syntax for c in AllStoragePresentationContexts)})
#: A-ASSOCIATE-RQ PDU type, and the most of one we peek at (they are a few kB; a longer one stays here)
_A_ASSOCIATE_RQ = 0x01
_PEEK_LIMIT = 1 << 20
#: SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4): a C-GET's storage sub-operations come back over it
_ROLE_SELECTION = 0x54


def proposes_storage_only(sock: socket.socket, timeout: float = ACSE_TIMEOUT) -> bool:
    """Whether the association request waiting on ``sock`` proposes only storage and verification, without
    role selection; looked at with ``MSG_PEEK``, so the bytes stay for whoever serves the association."""
    deadline = time.monotonic() + timeout
    previous = sock.gettimeout()
    try:
        sock.settimeout(timeout)
        head = _peek(sock, 6, deadline)
        if head is None or head[0] != _A_ASSOCIATE_RQ:
            return False
        length = int.from_bytes(head[2:6], "big")
        if length > _PEEK_LIMIT:
            return False
        data = _peek(sock, 6 + length, deadline)
        if data is None:
            return False
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(data)
    except Exception:  # a timeout, a reset, a malformed request: pynetdicom, in-process, answers it
        return False
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    syntaxes = {str(item.abstract_syntax) for item in pdu.presentation_context}
    info = pdu.user_information
    roles = info is not None and any(item.item_type == _ROLE_SELECTION for item in info.user_data)
    return bool(syntaxes) and syntaxes <= _RECEIVABLE and not roles


def _peek(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    while True:
        data = sock.recv(size, socket.MSG_PEEK)
        if len(data) >= size:
            return data
        if not data or time.monotonic() > deadline:
            return None
        time.sleep(0.001)  # the rest of a request that came in several segments (rare)


# ---------------------------------------------------------------------------------------------- server side


class _Receiver:
    def __init__(self, process: BaseProcess, control: Connection) -> None:
        self.process = process
        self.control = control
        self.link = socket.socket(fileno=os.dup(control.fileno()))  # for SCM_RIGHTS on the same channel
        self.busy = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        self.link.close()
        self.control.close()


class ReceiverPool:
    """``count`` receiver processes (each started at its first association) for a storage folder."""

    def __init__(self, count: int, storage: FileSystemStorage) -> None:
        self.count = max(0, int(count))
        self._root, self._fsync = str(storage.root), storage.fsync
        self._receivers: list[_Receiver | None] = [None] * self.count
        self._lock = threading.Lock()
        self._closed = False

    def hand_over(self, sock: socket.socket, address: Any, ae_title: str, source_id: int) -> Handed | None:
        """Pass the connected ``sock`` to the least busy receiver, which serves the association for the SCP
        ``ae_title``; None when none could take it (serve it here).  ``sock`` may be closed afterwards."""
        receiver = self._pick()
        if receiver is None:
            return None
        ours, theirs = socket.socketpair()
        try:
            with receiver.lock:
                receiver.control.send((ae_title, source_id, address))
                socket.send_fds(receiver.link, [b"A"], [sock.fileno(), theirs.fileno()])
        except (OSError, EOFError, ValueError):
            ours.close()
            self._replace(receiver)
            return None
        finally:
            theirs.close()
        return Handed(self, receiver, Connection(ours.detach()))

    def _pick(self) -> _Receiver | None:
        with self._lock:
            if self._closed or not self.count:
                return None
            slot = min(range(self.count), key=self._load)
            receiver = self._receivers[slot]
            if receiver is None or not receiver.process.is_alive():
                if receiver is not None:  # died while idle
                    receiver.close()
                try:
                    receiver = self._receivers[slot] = _start(self._root, self._fsync)
                except Exception:
                    log.exception("slicebox: could not start a receiver process")
                    return None
            receiver.busy += 1
            return receiver

    def _load(self, slot: int) -> int:
        receiver = self._receivers[slot]
        return -1 if receiver is None else receiver.busy  # an idle slot: a receiver that is not started yet

    def _release(self, receiver: _Receiver) -> None:
        with self._lock:
            receiver.busy -= 1

    def _replace(self, dead: _Receiver) -> None:
        with self._lock:
            dead.busy -= 1
            for slot, receiver in enumerate(self._receivers):
                if receiver is dead:
                    self._receivers[slot] = None  # the next association starts a new one
        dead.process.join(1)
        code = dead.process.exitcode
        log.error("slicebox: a receiver process died (exit code %s); the next association starts a new one", code)
        dead.close()

    def busy(self) -> int:
        """Associations the receivers serve now."""
        with self._lock:
            return sum(r.busy for r in self._receivers if r is not None)

    def pids(self) -> list[int]:
        """The process ids of the running receivers (tests kill one)."""
        with self._lock:
            return [r.process.pid for r in self._receivers if r is not None and r.process.pid and r.process.is_alive()]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the receivers: running associations get ``timeout``/2 to finish, then are aborted."""
        with self._lock:
            self._closed = True
            receivers = [r for r in self._receivers if r is not None]
            self._receivers = [None] * self.count
        for receiver in receivers:
            try:
                with receiver.lock:
                    receiver.control.send(("stop", timeout / 2))
            except (OSError, EOFError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for receiver in receivers:
            receiver.process.join(max(0.1, deadline - time.monotonic()))
            if receiver.process.is_alive():
                receiver.process.terminate()
                receiver.process.join(1)
            receiver.close()


class Handed:
    """An association a receiver serves: :meth:`serve` indexes what it stores until it ends."""

    def __init__(self, pool: ReceiverPool, receiver: _Receiver, channel: Connection) -> None:
        self._pool, self._receiver, self.channel = pool, receiver, channel

    def serve(self, adopt: Callable[[str, int, tasks.Inspected], object]) -> None:
        """Answer the receiver's requests to index a stored object (``adopt(key, size, inspected)``) until
        the association ends (or the receiver dies: then the channel closes too)."""
        try:
            while True:
                try:
                    key, size, inspected = self.channel.recv()
                except (EOFError, OSError):
                    return
                try:
                    adopt(key, size, inspected)
                    answer: tuple[bool, Exception | None] = (True, None)
                except SliceboxError as error:
                    answer = (False, error)
                except Exception as error:
                    log.exception("an SCP's receiver: could not index an object")
                    answer = (False, SliceboxError(f"could not store: {type(error).__name__}"))
                try:
                    self.channel.send(answer)
                except (OSError, ValueError):
                    return
        finally:
            self.channel.close()
            self._pool._release(self._receiver)


def _start(root: str, fsync: bool) -> _Receiver:
    context = multiprocessing.get_context("forkserver")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, root, fsync), name="slicebox-receiver", daemon=True)
    with main_not_rerun():
        process.start()
    theirs.close()
    return _Receiver(process, ours)


# -------------------------------------------------------------------------------------------- receiver side


def _serve(control: Connection, root: str, fsync: bool) -> None:
    """A receiver's life: associations in (a socket and its index channel), until told to stop."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake = install_clock()
    storage = FileSystemStorage(root, fsync=fsync)
    link = socket.socket(fileno=os.dup(control.fileno()))
    servers: dict[str, ThreadedAssociationServer] = {}
    #: connection → its index channel and source id, until its association opens; then association → them
    pending: dict[socket.socket, tuple[Connection, int]] = {}
    channels: dict[Association, tuple[Connection, int]] = {}

    def opened(event: evt.Event) -> None:
        transport = event.assoc.dul.socket
        assert transport is not None and transport.socket is not None
        channels[event.assoc] = pending.pop(transport.socket)

    def closed(event: evt.Event) -> None:
        channel = channels.pop(event.assoc, None)
        if channel is not None:
            channel[0].close()

    def on_store(event: evt.Event) -> int | Dataset:
        channel, source_id = channels[event.assoc]
        name = event.assoc.acceptor.ae_title
        return store_status(name, lambda: _store(storage, channel, source_id, event.encoded_dataset(include_meta=True)))

    def server_for(ae_title: str) -> ThreadedAssociationServer:
        server = servers.get(ae_title)
        if server is None:
            ae = make_ae(ae_title, query_retrieve=False)
            handlers: list[Any] = [
                (evt.EVT_CONN_OPEN, set_nodelay),
                (evt.EVT_CONN_OPEN, opened),
                *([(evt.EVT_CONN_OPEN, wake_early)] if wake else []),
                (evt.EVT_CONN_CLOSE, closed),
                (evt.EVT_C_STORE, on_store),
            ]
            # pynetdicom's server, for its request handler; it never listens: its sockets come from the node
            server = ae.make_server(("127.0.0.1", 0), evt_handlers=handlers, server_class=ThreadedAssociationServer)
            server.server_close()
            servers[ae_title] = server
        return server

    grace = 5.0
    while True:
        try:
            message = control.recv()
        except (EOFError, OSError):
            # the server process is gone (killed): nothing more can be indexed, and a blob written from now
            # on could land after the next start's reconcile; end every association at once
            os._exit(0)
        if message[0] == "stop":
            grace = float(message[1])
            break
        ae_title, source_id, address = message
        _, fds, _, _ = socket.recv_fds(link, 1, 2)
        connection, channel = socket.socket(fileno=fds[0]), Connection(fds[1])
        pending[connection] = (channel, source_id)
        server_for(ae_title).process_request(connection, address)  # a thread of pynetdicom's own
    _end_associations([s.ae for s in servers.values()], grace)


def _store(storage: FileSystemStorage, channel: Connection, source_id: int, data: bytes) -> None:
    """Validate, write and flush one received object, then have the server process index it."""
    inspected = tasks.inspect(None, data)  # a refused object writes nothing
    prefix = uuid.uuid4().hex
    digest = tasks.blob_digest()
    digest.update(data)
    key = tasks.blob_key(prefix, source_id, digest.hexdigest())
    writer = storage.create(prefix)
    try:
        writer.write(data)
        writer.name(key)
        writer.flush()
    except BaseException:
        writer.discard()
        raise
    try:
        channel.send((key, len(data), inspected))
        ok, error = channel.recv()
    except (EOFError, OSError) as lost:
        raise SliceboxError("the node's server process did not answer; the object was not indexed") from lost
    if not ok:
        raise error


def _end_associations(aes: list[Any], grace: float) -> None:
    deadline = time.monotonic() + grace
    running = [a for ae in aes for a in ae.active_associations]
    while any(a.is_alive() and a.is_established for a in running) and time.monotonic() < deadline:
        time.sleep(0.02)
    for assoc in running:
        if assoc.is_alive():
            assoc.abort()
    for assoc in running:
        assoc.join(1)
