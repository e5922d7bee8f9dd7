"""This node as a DICOM SCU towards remote nodes: C-ECHO (verification)."""

from __future__ import annotations

import threading

from pynetdicom import AE, evt

from slicebox_lab.errors import PeerFailure
from slicebox_lab.net.nodes import RemoteNode
from slicebox_lab.net.transport import CONNECTION_TIMEOUT, MAX_PDU, VERIFICATION, resolve_host, set_nodelay

__all__ = ["CALLING_AE_TITLE", "echo"]

#: the calling AE title of associations this node opens (as Slicebox)
CALLING_AE_TITLE = "SLICEBOX-SCU"


def echo(node: RemoteNode, calling_ae_title: str = CALLING_AE_TITLE, timeout: float = CONNECTION_TIMEOUT) -> None:
    """C-ECHO ``node``; any failure (unreachable, rejected, aborted, bad status) → PeerFailure."""
    where = f"{node.ae_title}@{node.host}:{node.port}"
    address = resolve_host(node.host)
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(VERIFICATION)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    connected = threading.Event()

    def on_open(event: evt.Event) -> None:
        connected.set()
        set_nodelay(event)

    assoc = ae.associate(
        address, node.port, ae_title=node.ae_title, max_pdu=MAX_PDU, evt_handlers=[(evt.EVT_CONN_OPEN, on_open)]
    )
    if not assoc.is_established:
        if not connected.is_set():
            raise PeerFailure(f"Cannot connect to {where}: connection refused, no route or timed out")
        if assoc.is_rejected:
            raise PeerFailure(f"{where} rejected the association (is the AE title right?)")
        raise PeerFailure(f"{where} aborted the association")
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise PeerFailure(f"{where} did not answer the C-ECHO")
    if code != 0x0000:
        raise PeerFailure(f"{where} answered the C-ECHO with status 0x{code:04X}")
