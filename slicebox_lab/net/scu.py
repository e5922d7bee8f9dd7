"""This node as a DICOM SCU towards remote nodes: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET.

Every association is opened by :func:`associate` (calling AE title ``SLICEBOX-SCU``, a large PDU,
``TCP_NODELAY`` on its socket, timeouts); a peer that cannot be reached, rejects or aborts is a
:class:`~slicebox_lab.errors.PeerFailure` naming why.  The long operations (:func:`send_images`,
:func:`retrieve`) report through callbacks, so :mod:`slicebox_lab.net.scu_jobs` runs them as jobs.
Images received by C-GET go through the one ingest path (``context.ingest``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from slicebox_lab import dicom
from slicebox_lab.errors import InvalidInput, NotFound, PeerFailure
from slicebox_lab.model import Source
from slicebox_lab.net.nodes import RemoteNode
from slicebox_lab.net.qr import LEVELS
from slicebox_lab.net.scp import store_received
from slicebox_lab.net.transport import (
    CONNECTION_TIMEOUT,
    DIMSE_TIMEOUT,
    MAX_CONTEXTS,
    MAX_PDU,
    VERIFICATION,
    resolve_host,
    set_nodelay,
    storage_contexts,
)

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = [
    "CALLING_AE_TITLE",
    "QUERY_TIMEOUT",
    "SendResult",
    "SubOperations",
    "associate",
    "echo",
    "identifier_dataset",
    "query",
    "retrieve",
    "send_images",
]

#: the calling AE title of associations this node opens (as Slicebox)
CALLING_AE_TITLE = "SLICEBOX-SCU"
#: the longest a C-FIND may wait for the peer's next answer
QUERY_TIMEOUT = 30.0

#: Patient Root (PATIENT level) and Study Root (the other levels) Query/Retrieve models
_PATIENT_ROOT = {"find": "P", "move": "P", "get": "P"}
_STUDY_ROOT = {"find": "S", "move": "S", "get": "S"}
_MODEL_UIDS = {
    ("P", "find"): "1.2.840.10008.5.1.4.1.2.1.1",
    ("P", "move"): "1.2.840.10008.5.1.4.1.2.1.2",
    ("P", "get"): "1.2.840.10008.5.1.4.1.2.1.3",
    ("S", "find"): "1.2.840.10008.5.1.4.1.2.2.1",
    ("S", "move"): "1.2.840.10008.5.1.4.1.2.2.2",
    ("S", "get"): "1.2.840.10008.5.1.4.1.2.2.3",
}
_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def _where(node: RemoteNode) -> str:
    return f"{node.ae_title}@{node.host}:{node.port}"


@contextmanager
def associate(
    node: RemoteNode,
    contexts: Iterable[PresentationContext | str],
    *,
    timeout: float = CONNECTION_TIMEOUT,
    dimse_timeout: float = DIMSE_TIMEOUT,
    ext_neg: list[Any] | None = None,
    evt_handlers: list[Any] | None = None,
    calling_ae_title: str = CALLING_AE_TITLE,
) -> Iterator[Association]:
    """An established association with ``node``, released (or aborted) on exit.

    Unreachable, unknown host, rejected or aborted → :class:`PeerFailure` naming which.
    """
    where = _where(node)
    address = resolve_host(node.host)
    ae = AE(ae_title=calling_ae_title)
    for context in contexts:
        if isinstance(context, PresentationContext):
            if context.abstract_syntax is not None:
                ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
        else:
            ae.add_requested_context(context)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = dimse_timeout
    connected = threading.Event()

    def on_open(event: evt.Event) -> None:
        connected.set()
        set_nodelay(event)

    handlers = [(evt.EVT_CONN_OPEN, on_open), *(evt_handlers or [])]
    assoc = ae.associate(
        address, node.port, ae_title=node.ae_title, max_pdu=MAX_PDU, ext_neg=ext_neg, evt_handlers=handlers
    )
    if not assoc.is_established:
        if not connected.is_set():
            raise PeerFailure(f"Cannot connect to {where}: connection refused, no route or timed out")
        if assoc.is_rejected:
            raise PeerFailure(f"{where} rejected the association (is the AE title right?)")
        raise PeerFailure(f"{where} aborted the association")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            try:
                assoc.release()
            except Exception:
                assoc.abort()


def echo(node: RemoteNode, calling_ae_title: str = CALLING_AE_TITLE, timeout: float = CONNECTION_TIMEOUT) -> None:
    """C-ECHO ``node``; any failure (unreachable, rejected, aborted, bad status) → PeerFailure."""
    where = _where(node)
    with associate(
        node, [VERIFICATION], timeout=timeout, dimse_timeout=timeout, calling_ae_title=calling_ae_title
    ) as assoc:
        status = assoc.send_c_echo()
    code = getattr(status, "Status", None)
    if code is None:
        raise PeerFailure(f"{where} did not answer the C-ECHO")
    if code != 0x0000:
        raise PeerFailure(f"{where} answered the C-ECHO with status 0x{code:04X}")


# ---------------------------------------------------------------------------------------------
# C-STORE


@dataclass
class SendResult:
    """What one :func:`send_images` did: ids sent, ids the peer (or we) could not send."""

    sent: list[int]
    failed: dict[int, str]


def send_images(
    context: SliceboxContext,
    node: RemoteNode,
    image_ids: list[int],
    on_image: Callable[[int, bool], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> SendResult:
    """C-STORE the images to ``node`` over one association, in order.

    ``on_image(image_id, sent)`` is called after each image; an image the peer answers with a
    failure status, that no longer exists or whose SOP class the peer did not accept counts as
    failed and the send goes on.  A peer that drops the association → :class:`PeerFailure`
    (what was sent is what ``on_image`` was told).
    """
    images = []
    result = SendResult(sent=[], failed={})
    for image_id in image_ids:
        try:
            images.append(context.index.get_image(image_id))
        except NotFound:
            result.failed[image_id] = "no such image"
    if not images:
        for image_id in result.failed:
            if on_image is not None:
                on_image(image_id, False)
        return result
    missing = set(result.failed)
    contexts = storage_contexts(images)
    if not contexts:  # no SOP class to propose (damaged rows): nothing can be sent
        for image_id in image_ids:
            result.failed.setdefault(image_id, "no SOP Class UID")
            if on_image is not None:
                on_image(image_id, False)
        return result
    with associate(node, contexts) as assoc:
        for image_id in image_ids:
            if check_cancelled is not None:
                check_cancelled()
            if image_id in missing:
                if on_image is not None:
                    on_image(image_id, False)
                continue
            reason = _store_one(context, assoc, image_id)
            if reason is None:
                result.sent.append(image_id)
            else:
                result.failed[image_id] = reason
            if on_image is not None:
                on_image(image_id, reason is None)
    return result


def _store_one(context: SliceboxContext, assoc: Association, image_id: int) -> str | None:
    """Send one image: None when stored, else why not; a dropped association → PeerFailure."""
    where = f"{assoc.acceptor.ae_title}@{assoc.acceptor.address}:{assoc.acceptor.port}"
    if not assoc.is_established:
        raise PeerFailure(f"{where} closed the association")
    try:
        dataset = context.dataset(image_id)
    except NotFound:
        return "no such image"
    except Exception as error:
        return f"cannot read the stored file: {type(error).__name__}"
    try:
        status = assoc.send_c_store(dataset)
    except ValueError as error:  # no accepted presentation context for this SOP class / syntax
        return f"not accepted by the peer: {error}"
    except RuntimeError:
        raise PeerFailure(f"{where} closed the association") from None
    code = getattr(status, "Status", None)
    if code is None:
        raise PeerFailure(f"{where} dropped the association (no answer to a C-STORE)")
    if code == _SUCCESS or (code & 0xF000) == 0xB000:  # success, or a warning: stored
        return None
    comment = str(getattr(status, "ErrorComment", "") or "")
    return f"status 0x{code:04X}{': ' + comment if comment else ''}"


# ---------------------------------------------------------------------------------------------
# C-FIND


def _level(value: Any) -> str:
    level = str(value).upper() if isinstance(value, str) else ""
    if level not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}, not {value!r}")
    return level


def identifier_dataset(level: Any, identifier: Any) -> Dataset:
    """A Query/Retrieve identifier from JSON: ``{"PatientName": "A*", "StudyInstanceUID": ""}``.

    Keys are DICOM keywords; values strings (an empty string or null: return this key), numbers,
    or lists of strings (a list match).  Sequences are not supported.
    """
    level = _level(level)
    if not isinstance(identifier, Mapping):
        raise InvalidInput('identifier must be a JSON object of DICOM keywords, e.g. {"PatientName": "A*"}')
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in identifier.items():
        tag = tag_for_keyword(keyword) if isinstance(keyword, str) else None
        if tag is None:
            raise InvalidInput(f"{keyword!r} is not a DICOM keyword")
        if keyword == "QueryRetrieveLevel":
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ" or " or " in vr:
            raise InvalidInput(f"{keyword} (VR {vr}) cannot be used in a query identifier")
        if value is None or value == "":
            ds.add_new(tag, vr, None)
        elif isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            ds.add_new(tag, vr, str(value) if vr not in ("US", "UL", "SS", "SL", "FL", "FD") else value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            ds.add_new(tag, vr, value)
        else:
            raise InvalidInput(f"{keyword} must be a string, a number, a list of strings or null")
    return ds


def _json_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1").strip(" \x00")
    return str(value)


def _row(answer: Dataset) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for element in answer:
        keyword = element.keyword
        if not keyword or element.VR == "SQ" or keyword == "SpecificCharacterSet":
            continue
        row[keyword] = _json_value(element.value)
    return row


def _model(level: str, operation: str) -> str:
    root = _PATIENT_ROOT if level == "PATIENT" else _STUDY_ROOT
    return _MODEL_UIDS[(root[operation], operation)]


def query(node: RemoteNode, level: Any, identifier: Any, timeout: float = QUERY_TIMEOUT) -> list[dict[str, Any]]:
    """C-FIND ``node`` at ``level`` (PATIENT: Patient Root, else Study Root): one JSON row per answer.

    Each row holds the keys the peer returned, by DICOM keyword, as text (numbers too; multiple
    values joined with a backslash).  Unreachable, a failure status or no answer within ``timeout`` → PeerFailure.
    """
    ds = identifier_dataset(level, identifier)
    model = _model(str(ds.QueryRetrieveLevel), "find")
    where = _where(node)
    rows: list[dict[str, Any]] = []
    with associate(node, [model], dimse_timeout=timeout) as assoc:
        for status, answer in assoc.send_c_find(ds, model):
            code = getattr(status, "Status", None)
            if code is None:
                raise PeerFailure(f"{where} did not answer the C-FIND in time, or dropped the association")
            if code in _PENDING:
                if answer is not None:
                    rows.append(_row(answer))
                continue
            if code != _SUCCESS:
                comment = str(getattr(status, "ErrorComment", "") or "")
                raise PeerFailure(f"{where} answered the C-FIND with status 0x{code:04X} {comment}".strip())
    return rows


# ---------------------------------------------------------------------------------------------
# C-MOVE / C-GET


@dataclass
class SubOperations:
    """The sub-operation counts of a C-MOVE or C-GET, as the peer reported them."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.warning

    def update(self, status: Dataset) -> None:
        for name in ("completed", "failed", "warning", "remaining"):
            value = getattr(status, f"NumberOf{name.capitalize()}Suboperations", None)
            if value is not None and value != "":
                setattr(self, name, int(value))


def _get_contexts(model: str) -> tuple[list[PresentationContext | str], list[Any]]:
    """The contexts of a C-GET: the model, and storage classes we take as SCP (role selection)."""
    syntaxes = [*_UNCOMPRESSED, *sorted(set(dicom.ACCEPTED_TRANSFER_SYNTAXES) - set(_UNCOMPRESSED))]
    contexts: list[PresentationContext | str] = [model]
    roles = []
    for cx in StoragePresentationContexts[: MAX_CONTEXTS - 1]:
        uid = cx.abstract_syntax
        if uid is None:
            continue
        contexts.append(build_context(uid, list(syntaxes)))
        roles.append(build_role(uid, scp_role=True))
    return contexts, roles


def retrieve(
    context: SliceboxContext,
    node: RemoteNode,
    level: Any,
    identifier: Any,
    method: str,
    destination_ae_title: str = "",
    on_progress: Callable[[SubOperations], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> SubOperations:
    """C-MOVE (to ``destination_ae_title``, one of our SCPs) or C-GET what ``identifier`` names.

    A C-MOVE's images arrive through our SCP; a C-GET's are ingested here with source
    ``scp``/<node name>.  A failure status or a dropped association → PeerFailure; a warning
    (some sub-operations failed) returns the counts.
    """
    if method not in ("move", "get"):
        raise InvalidInput(f'method must be "move" or "get", not {method!r}')
    ds = identifier_dataset(level, identifier)
    model = _model(str(ds.QueryRetrieveLevel), method)
    where = _where(node)
    counts = SubOperations()
    handlers: list[Any] = []
    roles: list[Any] = []
    contexts: list[PresentationContext | str] = [model]
    if method == "get":
        source = Source("scp", node.name)
        contexts, roles = _get_contexts(model)
        handlers = [(evt.EVT_C_STORE, lambda event: store_received(context, event, source))]
    with associate(node, contexts, ext_neg=roles or None, evt_handlers=handlers) as assoc:
        if method == "move":
            responses = assoc.send_c_move(ds, destination_ae_title, model)
        else:
            responses = assoc.send_c_get(ds, model)
        for status, _ in responses:
            code = getattr(status, "Status", None)
            if code is None:
                raise PeerFailure(
                    f"{where} dropped the association during the C-{method.upper()} "
                    f"({counts.completed} images retrieved)"
                )
            counts.update(status)
            if code not in _PENDING and "NumberOfRemainingSuboperations" not in status:
                counts.remaining = 0  # the final response has no remaining count
            if on_progress is not None:
                on_progress(counts)
            if code in _PENDING:
                if check_cancelled is not None:
                    try:
                        check_cancelled()
                    except BaseException:
                        assoc.abort()  # the peer stops its sub-operations
                        raise
                continue
            if code == _SUCCESS or (code & 0xF000) == 0xB000:
                return counts
            comment = str(getattr(status, "ErrorComment", "") or "")
            if code == 0xA801:
                comment = comment or f"move destination {destination_ae_title} unknown to the peer"
            raise PeerFailure(
                f"{where} answered the C-{method.upper()} with status 0x{code:04X}"
                f"{': ' + comment if comment else ''} ({counts.completed} images retrieved)"
            )
    return counts
