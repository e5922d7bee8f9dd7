"""What the node's SCPs and SCUs share: timeouts, PDU size, TCP_NODELAY, addresses, contexts."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext

from slicebox_lab.errors import PeerFailure
from slicebox_lab.model import Image

#: the largest PDU we receive: large PDUs mean few, big writes (pynetdicom's default is 16 KiB)
MAX_PDU = 4 * 1024 * 1024
ACSE_TIMEOUT = 30.0
DIMSE_TIMEOUT = 60.0
#: an idle association is closed after this long
NETWORK_TIMEOUT = 60.0
CONNECTION_TIMEOUT = 10.0
#: an association proposes at most 128 presentation contexts (PS3.8 9.3.2.2: odd ids 1..255)
MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
VERIFICATION = "1.2.840.10008.1.1"


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle's algorithm off on the association's socket.

    DIMSE messages are written in small pieces (a command, then data); with Nagle on, each
    response waits for the peer's delayed ACK (up to 40 ms on Linux).
    """
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def resolve_host(host: str) -> str:
    """An IP address for ``host`` (pynetdicom wants addresses); unknown host → PeerFailure."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise PeerFailure(f"Unknown host {host}: {error}") from None
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    return str((ipv4 or infos)[0][4][0])


def storage_contexts(images: Iterable[Image]) -> list[PresentationContext]:
    """Storage contexts to send ``images``: per SOP class the uncompressed syntaxes, plus each
    compressed syntax a file is stored in, on its own context (so the peer cannot pick another)."""
    contexts: list[PresentationContext] = []
    seen: set[tuple[str, str]] = set()
    for image in images:
        sop_class = image.SOPClassUID
        wanted = [(sop_class, "")]
        if image.TransferSyntaxUID and image.TransferSyntaxUID not in _UNCOMPRESSED:
            wanted.append((sop_class, image.TransferSyntaxUID))
        for key in wanted:
            if key in seen or not sop_class:
                continue
            if len(contexts) >= MAX_CONTEXTS:
                return contexts
            seen.add(key)
            syntaxes: list[str | UID] = list(_UNCOMPRESSED) if not key[1] else [key[1]]
            contexts.append(build_context(sop_class, syntaxes))
    return contexts
