"""The empty servers of ``bench/floor.py``: the stack our node must use, doing no work of its own.

* As a Jupyter server extension (``--ServerApp.jpserver_extensions={"floor_ext": True}`` with
  ``bench/`` on ``PYTHONPATH``): ``POST /floor/images`` reads the body and answers 201
  ``{"bytes": n}`` (no parsing, no disk); ``GET /floor/images/{id}/anonymized`` answers a constant
  body of ``FLOOR_BODY_BYTES`` (environment, default 525,316) bytes as ``application/dicom``, or, with
  ``FLOOR_ANONYMIZE_FILE``, that file de-identified as the node's workers do (in a thread, no key record);
  ``GET /floor/count`` says how many uploads and downloads were answered (the benchmark's check).
  With ``FLOOR_STORE_DIR`` set, each upload is also written durably before the answer, the way
  the node must (``slicebox_lab.storage.FileSystemStorage.write``: temp file, fsync, rename, folder
  fsync), in a thread as the node does: the floor of any server that answers only durable data.
  ``FLOOR_STORE_MODE=orthanc``: written as Orthanc does instead (final name, write, fsync).
  An upload with an ``X-Slicebox-SHA256`` header has its SHA-256 checked first (400 if it differs).
  Every handler is an ``APIHandler`` with ``@web.authenticated`` + ``@authorized`` like the node's.
* As a script (``python bench/floor_ext.py scp --port N [--wake]``): a pynetdicom AE that accepts
  CT Image Storage (Explicit/Implicit VR Little Endian), advertises a 4 MiB maximum PDU, sets
  ``TCP_NODELAY`` on every accepted socket and answers each C-STORE 0x0000 at once, after looking
  at the length of the received data set (never decoded nor written). ``--wake`` adds the node's
  early wake-ups of pynetdicom's 1 ms polling sleeps (``slicebox_lab.net.acceptor.wake_early``).
  ``--store DIR`` writes each received object as a Part-10 file durably (as above) before answering.
  ``--processes N``: N such processes share the port (``SO_REUSEPORT``), each with its own GIL: the floor
  of a node whose associations are served by one process per core.
  SIGUSR1 prints ``stored <n> <bytes>``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import sys
import time
import uuid
from types import FrameType
from typing import Any

AUTH_RESOURCE = "slicebox"
BODY_BYTES = int(os.environ.get("FLOOR_BODY_BYTES", "525316"))
AE_TITLE = "FLOOR"
#: the header a box sends the SHA-256 of its bytes in (``slicebox_lab.box.transfer.HASH_HEADER``)
HASH_HEADER = "X-Slicebox-SHA256"


# ---------------------------------------------------------------------------------------------------
# the Jupyter server extension


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "floor_ext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    counts = {"uploads": 0, "downloads": 0, "bytes": 0}
    storage = _storage(os.environ.get("FLOOR_STORE_DIR", ""))
    # a DICOM-looking constant: 128-byte preamble, "DICM", zeros (the client checks the magic)
    body = bytes(128) + b"DICM" + bytes(max(0, BODY_BYTES - 132))

    def keep(data: bytes, expected: str) -> bool:
        """Check the body's SHA-256 if one was sent (as a box receiver must), then store it if storing."""
        if expected and hashlib.sha256(data).hexdigest() != expected:
            return False
        if storage is not None:
            storage.write(uuid.uuid4().hex, data)
        return True

    class UploadHandler(APIHandler):
        auth_resource = AUTH_RESOURCE

        @web.authenticated
        @authorized
        async def post(self) -> None:
            n = len(self.request.body)
            expected = self.request.headers.get(HASH_HEADER, "")
            if storage is not None or expected:
                loop = asyncio.get_running_loop()
                if not await loop.run_in_executor(None, keep, self.request.body, expected):
                    raise web.HTTPError(400, "SHA-256 mismatch")
            counts["uploads"] += 1
            counts["bytes"] += n
            self.set_status(201)
            self.finish(json.dumps({"bytes": n}))

    deidentify = _deidentifier(os.environ.get("FLOOR_ANONYMIZE_FILE", ""))

    class DownloadHandler(APIHandler):
        auth_resource = AUTH_RESOURCE

        @web.authenticated
        @authorized
        async def get(self, image_id: str) -> None:
            answer = body
            if deidentify is not None:
                answer = await asyncio.get_running_loop().run_in_executor(None, deidentify)
            counts["downloads"] += 1
            self.finish(answer, set_content_type="application/dicom")

    class CountHandler(APIHandler):
        auth_resource = AUTH_RESOURCE

        @web.authenticated
        @authorized
        def get(self) -> None:
            self.finish(json.dumps(counts))

    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "/floor/images"), UploadHandler),
            (url_path_join(base, r"/floor/images/([^/]+)/anonymized"), DownloadHandler),
            (url_path_join(base, "/floor/count"), CountHandler),
        ],
    )


def _deidentifier(path: str) -> Any:
    """With ``FLOOR_ANONYMIZE_FILE``: a function answering that stored file de-identified as the node's workers
    do (``slicebox_lab.workers.tasks``, basic profile; the header alone where the pixels stay), without the
    node's key record, index or hand-over to a worker process."""
    if not path:
        return None
    from slicebox_lab.anonymization import Profile, PseudonymKeys, keystore
    from slicebox_lab.workers import tasks

    how = tasks.Deidentification(Profile(), PseudonymKeys.generate(), (), keystore.DEFAULT_KEY_ATTRIBUTES)

    def run() -> bytes:
        buffer = io.BytesIO()
        tasks.write_anonymized(buffer, path, None, how)
        return buffer.getvalue()

    return run


def _storage(root: str) -> Any:
    """The node's own durable file storage under ``root`` (None: no storing); with ``FLOOR_STORE_MODE=
    orthanc`` a file written the way Orthanc's ``SyncStorageArea`` does it instead (one fsync)."""
    if not root:
        return None
    if os.environ.get("FLOOR_STORE_MODE") == "orthanc":
        return _OrthancLikeStorage(root)
    from slicebox_lab.storage import FileSystemStorage

    return FileSystemStorage(root)


class _OrthancLikeStorage:
    """Orthanc's way: open the final name, write, fsync the file; no temp name, rename or folder fsync
    (so a crash can leave a partial file under its name, and the name itself is not made durable)."""

    def __init__(self, root: str) -> None:
        self.root = root
        for n in range(256):
            os.makedirs(os.path.join(root, f"{n:02x}"), exist_ok=True)

    def write(self, key: str, data: bytes) -> None:
        fd = os.open(os.path.join(self.root, key[:2], key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------
# the pynetdicom storage SCP


def _set_nodelay_fallback(event: Any) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve_scp(port: int, wake: bool, store: str = "", processes: int = 1) -> int:
    """The empty SCP; ``processes`` > 1: that many processes, each its own pynetdicom AE on the same port
    (``SO_REUSEPORT``: the kernel hands each new association to one of them), the counts summed here."""
    import multiprocessing

    counts = multiprocessing.get_context("fork").Array("q", 3)  # objects, bytes, processes listening
    if processes <= 1:
        return _serve_scp_process(port, wake, store, counts, reuse_port=False)
    children: list[int] = []
    for _ in range(processes):  # forked before this process has any thread
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _serve_scp_process(port, wake, store, counts, reuse_port=True)
            finally:
                os._exit(code)
        children.append(pid)

    def report(signum: int, frame: FrameType | None) -> None:
        print(f"stored {counts[0]} {counts[1]}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        for child in children:
            os.waitpid(child, 0)
        print(f"stored {counts[0]} {counts[1]}", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, stop)
    while counts[2] < processes:
        time.sleep(0.05)
    print(f"listening {port} wake={wake} processes={processes}", flush=True)
    while True:
        time.sleep(3600)


def _serve_scp_process(port: int, wake: bool, store: str, counts: Any, reuse_port: bool) -> int:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
    from pynetdicom.transport import AssociationServer

    try:  # the node's own helper, when this checkout's package is importable
        from slicebox_lab.net.transport import set_nodelay
    except ImportError:
        set_nodelay = _set_nodelay_fallback
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)]
    if wake:
        from slicebox_lab.net.acceptor import install_clock, wake_early

        install_clock()
        handlers.append((evt.EVT_CONN_OPEN, wake_early))
    if reuse_port:
        bind = AssociationServer.server_bind

        def bind_shared(server: Any) -> None:
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bind(server)

        AssociationServer.server_bind = bind_shared  # type: ignore[method-assign,assignment]

    storage = _storage(store)

    def on_store(event: Any) -> int:
        if storage is not None:  # as the node: the Part-10 file, durable before the answer
            data = event.encoded_dataset(include_meta=True)
            storage.write(uuid.uuid4().hex, data)
            size = len(data)
        else:
            with event.request.DataSet.getbuffer() as view:  # the received bytes, not decoded
                size = view.nbytes
        with counts.get_lock():
            counts[0] += 1
            counts[1] += size
        return 0x0000

    handlers.append((evt.EVT_C_STORE, on_store))

    def report(signum: int, frame: FrameType | None) -> None:
        print(f"stored {counts[0]} {counts[1]}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, stop)

    ae = AE(ae_title=AE_TITLE)
    ae.require_called_aet = True
    ae.maximum_pdu_size = 4 * 1024 * 1024
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    with counts.get_lock():
        counts[2] += 1
    if not reuse_port:
        print(f"listening {port} wake={wake}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except SystemExit:
        return 0
    finally:
        if server is not None:
            server.shutdown()
        if not reuse_port:
            print(f"stored {counts[0]} {counts[1]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    scp = sub.add_parser("scp", help="an empty pynetdicom storage SCP")
    scp.add_argument("--port", type=int, required=True)
    scp.add_argument("--wake", action="store_true", help="with the node's early wake-ups of pynetdicom's polling")
    scp.add_argument("--store", default="", help="write each object durably into this folder before answering")
    scp.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    return serve_scp(args.port, args.wake, args.store, args.processes)


if __name__ == "__main__":
    sys.exit(main())
