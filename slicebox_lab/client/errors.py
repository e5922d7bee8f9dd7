"""Errors of the HTTP client: the server's JSON message, typed by status, so notebooks can catch what they expect.

```
ClientError (status, message, reason)
├── BadRequest        400  bad input, bad DICOM
├── Unauthorized      401  wrong basic credentials
├── Forbidden         403  no token, or a role without the right
├── NotFound          404  unknown id
├── Conflict          409  name already used, job already finished
├── Refused           422  e.g. a burned-in image the profile will not anonymize
├── PeerError         502/504  a remote DICOM node or partner failed
└── NodeUnreachable   no answer at all (connection refused, timeout); status None
```
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "NodeUnreachable",
    "NotFound",
    "PeerError",
    "Refused",
    "Unauthorized",
    "error_for_response",
]


class ClientError(Exception):
    """A request the node refused or could not answer; ``message`` is the node's own explanation."""

    def __init__(
        self, message: str, status: int | None = None, reason: str | None = None, method: str = "", url: str = ""
    ) -> None:
        self.message = message
        self.status = status
        self.reason = reason
        self.method = method
        self.url = url
        super().__init__(message)

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method and self.url else ""
        code = f"{self.status} " if self.status is not None else ""
        return f"{code}{self.message}{where}"


class BadRequest(ClientError):
    pass


class Unauthorized(ClientError):
    pass


class Forbidden(ClientError):
    pass


class NotFound(ClientError):
    pass


class Conflict(ClientError):
    pass


class Refused(ClientError):
    pass


class PeerError(ClientError):
    pass


class NodeUnreachable(ClientError):
    pass


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Refused,
    502: PeerError,
    504: PeerError,
}


def _message_of(body: bytes, content_type: str) -> tuple[str | None, str | None]:
    """(message, reason) of an error body: slicebox's and jupyter_server's JSON, else a short text."""
    try:
        value: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        value = None
    if isinstance(value, dict):
        message = value.get("message") or value.get("reason")
        reason = value.get("reason")
        return (str(message) if message else None), (str(reason) if reason else None)
    if body and "html" not in content_type:
        text = body.decode("utf-8", "replace").strip()
        if text:
            return text[:500], None
    return None, None


def error_for_response(response: Any) -> ClientError:
    """The typed error of a failed ``requests.Response``."""
    status = int(response.status_code)
    message, reason = _message_of(response.content or b"", response.headers.get("Content-Type", ""))
    if not message:
        message = f"{response.reason or 'error'}"
    cls = _BY_STATUS.get(status, ClientError)
    request = getattr(response, "request", None)
    return cls(message, status, reason, getattr(request, "method", "") or "", str(getattr(response, "url", "")))
