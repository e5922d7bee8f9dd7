"""Storage associations served by the node's worker processes; the index stays in the server process.

Why: pynetdicom decodes every PDU and DIMSE message in Python, so associations in one process share
one GIL: an empty pynetdicom SCP that writes each object durably reaches 0.50–0.66× Orthanc with four
associations in one process and 1.00× in one process per core (``bench/floor.py --which cstore
--associations 4``, bench/README.md).  So the SCP's listener, in the server process, looks at each
new association's A-ASSOCIATE-RQ (peeked, not read: pynetdicom reads it again wherever the
association runs) and, when it proposes only storage SOP classes and Verification (what a modality
or a PACS sending images proposes), passes the connected socket (``SCM_RIGHTS``) to an idle worker
process of the node's pool (:meth:`~slicebox_lab.workers.pool.WorkerPool.start_with_fds`), which
runs the association with pynetdicom in a thread (:func:`receive`) and is free for other work again.
Each object is validated there (``tasks.inspect``), written under its final key and flushed once;
then the server process is asked, over a socket pair of this association's own, to index it
(:meth:`~slicebox_lab.context.SliceboxContext.adopt_received`: the rest of the one ingest path, tag
filters, re-identification, the rows, the events), and its answer is the C-STORE status.  The
listener's thread of that association serves the socket pair until the association ends.  The
workers serve associations besides their other work (no processes of their own: a process per core
more would cost ~85 MB each).  Query/Retrieve associations (they need the index), associations that
negotiate SCP/SCU roles, and everything on a node without workers or without local storage stay in
the server process.

A worker that dies takes its associations with it: their senders see them aborted, and nothing of
theirs was acknowledged; an object it had flushed but not had indexed is found by the start-up
reconcile, as after a crash of the server.  The pool replaces the worker.  A server process that
dies takes its workers with it (each exits when its pipe closes), and their associations with them.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import ThreadedAssociationServer

from ..errors import SliceboxError
from ..storage import FileSystemStorage
from ..workers import tasks
from ..workers.pool import WorkerFailed, WorkerPool
from .acceptor import install_clock, make_ae, store_status, wake_early
from .transport import ACSE_TIMEOUT, VERIFICATION, set_nodelay

__all__ = ["Handed", "Receivers", "proposes_storage_only", "receive"]

log = logging.getLogger(__name__)

#: what an association may propose to be served by a worker
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


class Receivers:
    """Storage associations handed to the node's worker processes, and the index work they ask for."""

    def __init__(self, pool: WorkerPool, storage: FileSystemStorage) -> None:
        self._pool = pool
        self._root, self._fsync = str(storage.root), storage.fsync
        self._lock = threading.Lock()
        self._handing = threading.Lock()
        self._handed: set[Handed] = set()
        #: worker pid → associations it serves
        self._load: collections.Counter[int | None] = collections.Counter()

    def hand_over(self, sock: socket.socket, address: Any, ae_title: str, source_id: int) -> Handed | None:
        """Have a worker serve the association on the connected ``sock`` for the SCP ``ae_title``; None when
        no worker could take it (serve it here).  The idle worker serving the fewest associations takes it
        (one hand-over at a time, so each sees the others' counts); a worker found dead is replaced and the
        next one tried."""
        with self._handing:
            for _ in range(self._pool.workers + 1):
                ours, theirs = socket.socketpair()
                try:
                    call = self._pool.start_with_fds(
                        [sock.fileno(), theirs.fileno()],
                        receive,
                        ae_title,
                        source_id,
                        address,
                        self._root,
                        self._fsync,
                        load=self._load.__getitem__,
                    )
                    pid = call.pid
                    call.result()  # the association runs in the worker now (a thread of its own there)
                except WorkerFailed:
                    ours.close()
                    continue
                except Exception:
                    ours.close()
                    log.exception("an SCP could not hand an association to a worker")
                    return None
                finally:
                    theirs.close()
                handed = Handed(self, sock, Connection(ours.detach()), pid)
                with self._lock:
                    self._handed.add(handed)
                    self._load[pid] += 1
                return handed
            return None

    def _ended(self, handed: Handed) -> None:
        with self._lock:
            self._handed.discard(handed)
            self._load[handed.pid] -= 1

    def busy(self) -> int:
        """Associations the workers serve now."""
        with self._lock:
            return len(self._handed)

    def stop(self, timeout: float) -> None:
        """Let the handed associations finish for ``timeout`` seconds, then cut their connections."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            handed = list(self._handed)
        for association in handed:
            association.abort()


class Handed:
    """An association a worker serves: :meth:`serve` indexes what it stores until it ends."""

    def __init__(self, receivers: Receivers, sock: socket.socket, channel: Connection, pid: int | None) -> None:
        self._receivers, self._sock, self.channel, self.pid = receivers, sock, channel, pid

    def serve(self, adopt: Callable[[str, int, tasks.Inspected], object]) -> None:
        """Answer the worker's requests to index a stored object (``adopt(key, size, inspected)``) until the
        association ends (or the worker dies: then the channel closes too)."""
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
                    log.exception("an SCP's receiving worker: could not index an object")
                    answer = (False, SliceboxError(f"could not store: {type(error).__name__}"))
                try:
                    self.channel.send(answer)
                except (OSError, ValueError):
                    return
        finally:
            self.channel.close()
            self._sock.close()
            self._receivers._ended(self)

    def abort(self) -> None:
        """Cut the connection (the worker's copy too: a shutdown acts on the socket, not on a descriptor)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -------------------------------------------------------------------------------------------- worker side


class _Acceptor:
    """What a worker process keeps for the associations it serves: one pynetdicom server per SCP (its
    request handler; it never listens), the storage, and each association's index channel."""

    def __init__(self, root: str, fsync: bool) -> None:
        self.wake = install_clock()
        self.storage = FileSystemStorage(root, fsync=fsync)
        self.servers: dict[str, ThreadedAssociationServer] = {}
        #: connection → its index channel and source id, until its association opens; then association → them
        self.pending: dict[socket.socket, tuple[Connection, int]] = {}
        self.channels: dict[Association, tuple[Connection, int]] = {}

    def server_for(self, ae_title: str) -> ThreadedAssociationServer:
        server = self.servers.get(ae_title)
        if server is None:
            ae = make_ae(ae_title, query_retrieve=False)
            handlers: list[Any] = [
                (evt.EVT_CONN_OPEN, set_nodelay),
                (evt.EVT_CONN_OPEN, self._opened),
                *([(evt.EVT_CONN_OPEN, wake_early)] if self.wake else []),
                (evt.EVT_CONN_CLOSE, self._closed),
                (evt.EVT_C_STORE, self._on_store),
            ]
            server = ae.make_server(("127.0.0.1", 0), evt_handlers=handlers, server_class=ThreadedAssociationServer)
            server.server_close()
            self.servers[ae_title] = server
        return server

    def _opened(self, event: evt.Event) -> None:
        transport = event.assoc.dul.socket
        assert transport is not None and transport.socket is not None
        self.channels[event.assoc] = self.pending.pop(transport.socket)

    def _closed(self, event: evt.Event) -> None:
        channel = self.channels.pop(event.assoc, None)
        if channel is not None:
            channel[0].close()

    def _on_store(self, event: evt.Event) -> int | Dataset:
        channel, source_id = self.channels[event.assoc]
        storage = self.storage
        return store_status(
            event.assoc.acceptor.ae_title,
            lambda: _store(storage, channel, source_id, event.encoded_dataset(include_meta=True)),
        )


_acceptors: dict[tuple[str, bool], _Acceptor] = {}
_acceptors_lock = threading.Lock()


def receive(ae_title: str, source_id: int, address: Any, root: str, fsync: bool, fds: list[int]) -> None:
    """In a worker: serve the association on ``fds[0]`` (its index channel ``fds[1]``) for the SCP ``ae_title``,
    in a thread of pynetdicom's own; returns at once."""
    with _acceptors_lock:
        acceptor = _acceptors.get((root, fsync))
        if acceptor is None:
            acceptor = _acceptors[(root, fsync)] = _Acceptor(root, fsync)
        server = acceptor.server_for(ae_title)
    connection, channel = socket.socket(fileno=fds[0]), Connection(fds[1])
    acceptor.pending[connection] = (channel, source_id)
    try:
        server.process_request(connection, address)
    except BaseException:  # no thread to serve it (out of threads): the server serves the next one
        acceptor.pending.pop(connection, None)
        connection.close()
        channel.close()
        raise


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
