"""One exception hierarchy for the whole node.

Domain code raises these; the handlers turn each into a JSON error in one place
(``slicebox_lab.handlers.base``), so no bad input ever becomes a 500::

    SliceboxError                  500  (a bug or an environment failure)
    ├── InvalidInput               400  bad request values, bad JSON, bad query
    │   └── InvalidDicom           400  bytes that are not an acceptable DICOM Part-10 file
    ├── Forbidden                  403
    ├── NotFound                   404
    ├── Conflict                   409
    ├── AnonymizationRefused       422  de-identification cannot be done safely as asked (burned-in text)
    ├── RenderingFailed            501  a stored image that cannot be rendered (codec, frame)
    ├── PeerFailure                502  a remote node or PACS failed
    ├── ServiceUnavailable         503  a service the request needs is not running here
    └── StorageFull                507  no space left to store data durably
"""

from __future__ import annotations


class SliceboxError(Exception):
    """Base of every error the node raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SliceboxError):
    """The request itself is wrong; the client can fix it."""

    status_code = 400


class InvalidDicom(InvalidInput):
    """Bytes that cannot be accepted as a DICOM Part-10 file; the message names why."""


class Forbidden(SliceboxError):
    status_code = 403


class NotFound(SliceboxError):
    status_code = 404


class Conflict(SliceboxError):
    status_code = 409


class AnonymizationRefused(SliceboxError):
    """A well-formed request whose image cannot be de-identified safely as asked; the message says how to proceed."""

    status_code = 422


class RenderingFailed(SliceboxError):
    """The image is stored but cannot be rendered (unsupported codec, bad frame)."""

    status_code = 501


class PeerFailure(SliceboxError):
    status_code = 502


class ServiceUnavailable(SliceboxError):
    """A service the request needs (SCP listeners, folder watches) is not running on this node."""

    status_code = 503


class StorageFull(SliceboxError):
    """The disk is full: nothing was stored, retry when space is freed."""

    status_code = 507
