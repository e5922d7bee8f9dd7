"""What every slicebox handler shares: the context, argument parsing and JSON errors.

Handlers stay thin (house rule 2): parse the request, call the context or index
through ``run_blocking`` (house rule 5), finish.  Domain errors from
``errors.py`` become JSON errors here, in one place (house rule 6).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any, BinaryIO, ParamSpec, TypeVar

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.prometheus.log_functions import prometheus_log_method
from tornado.httputil import responses
from tornado.web import HTTPError

from ..access import audit as _audit
from ..context import SliceboxContext
from ..errors import InvalidInput, ServiceUnavailable, SliceboxError
from ..model import Source, to_json
from ..server.asyncio_bridge import run_blocking
from ..server.auth import ADMIN_ALL_RESOURCE, ADMIN_RESOURCE, RESOURCE, SliceboxAuthorizer, is_shared_token_user

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

#: the resource name jupyter_server's Authorizer sees for every slicebox route any user may use
AUTH_RESOURCE = RESOURCE
#: configuration routes: GET open to every role, other methods need an ADMINISTRATOR (slicebox_lab/auth.py)
#: and every method of ADMIN_ALL_RESOURCE needs one (users, key export)
__all__ = ["ADMIN_ALL_RESOURCE", "ADMIN_RESOURCE", "API", "AUTH_RESOURCE", "SliceboxHandler"]

API = r"/slicebox/api"

#: content types of a raw DICOM upload (Slicebox clients send octet-stream, or nothing)
DICOM_TYPES = ("application/dicom", "application/octet-stream", "")

#: the token holder's name before the server's owner had one (SliceboxApp.owner_name): data stored then keeps it
FORMER_TOKEN_OWNER = "anonymous"
_NO_CREDENTIALS = (
    "no valid credentials: send the server's token (Authorization: token ...), the login cookie, "
    "or a node user's name and password (HTTP basic auth)"
)
_WRONG_TOKEN = (
    "the token sent is not this server's token: send the one the server was started with (--token=..., "
    "or the ?token=... in its log and in `jupyter server list`), or sign in as a node user (HTTP basic auth)"
)
#: the partner-node token in .../transactions/{token}/... paths, kept out of the audit trail and the logs
_TOKEN_PATH = re.compile(r"(^|/)(transactions/)[^/?]+")


def masked_uri(uri: str) -> str:
    """``uri`` (or a path below the API) with a box token, the part after ``transactions/``, as ``***``."""
    return _TOKEN_PATH.sub(r"\1\2***", uri)


class SliceboxHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str = "slicebox", *args: Any, **kwargs: Any) -> None:
        super().initialize(name, *args, **kwargs)

    @property
    def context(self) -> SliceboxContext:
        context: SliceboxContext = self.settings["slicebox_context"]
        return context

    def _log(self) -> None:
        """jupyter_server's request log line, formatted only when its level is on: a success is logged at
        debug level, but formatting its line cost a fraction of a millisecond of the event loop per
        request (an upload burst is thousands).  The request-duration metric is always recorded."""
        status = self.get_status()
        if (status < 300 or status == 304) and not self.log.isEnabledFor(logging.DEBUG):
            prometheus_log_method(self)
            return
        super()._log()

    def service(self, kind: type[S]) -> S:
        """The node's running service of this type (``SliceboxApp`` starts them); 503 when it is not running."""
        for service in self.settings.get("slicebox_services", ()):
            if isinstance(service, kind):
                return service
        raise ServiceUnavailable(f"the {getattr(kind, 'name', kind.__name__)} service is not running on this node")

    async def blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking domain work off the event loop."""
        return await run_blocking(fn, *args, **kwargs)

    async def write_stream(self, stream: BinaryIO, chunk_size: int = 1 << 20) -> None:
        """Copy an open stored file into the answer a chunk at a time (read off the event loop, flushed:
        never a whole file or study in memory), then close it."""
        try:
            while chunk := await self.blocking(stream.read, chunk_size):
                self.write(chunk)
                await self.flush()
        finally:
            stream.close()

    def user_name(self) -> str:
        """The caller's stable name, for sources, ownership and the audit trail.

        Holders of the server's shared token are one principal, the server's owner, but jupyter_server
        gives each of their cookie-less requests a fresh random user
        (``IdentityProvider.generate_anonymous_user``): they all get the owner's name here
        (``SliceboxApp.owner_name``), or every upload by a script would become a new source.
        """
        return self._name_of(self.current_user)

    def owner_name(self) -> str:
        """The server's owner: who holds its token (``SliceboxApp.owner_name``)."""
        return str(self.settings.get("slicebox_owner_name") or FORMER_TOKEN_OWNER)

    def owner_names(self) -> tuple[str, ...]:
        """The caller's name, and for the server's owner also the name stored before it had one."""
        name = self.user_name()
        return (name, FORMER_TOKEN_OWNER) if name == self.owner_name() != FORMER_TOKEN_OWNER else (name,)

    def _name_of(self, user: Any) -> str:
        username = str(getattr(user, "username", "") or "")
        if not username or is_shared_token_user(user):
            return self.owner_name()
        return username

    def user_role(self) -> str:
        """SUPERUSER, ADMINISTRATOR or USER (slicebox_lab/auth.py)."""
        authorizer = self.settings.get("authorizer")
        if isinstance(authorizer, SliceboxAuthorizer):
            return authorizer.role_of(self.current_user)
        return "SUPERUSER"

    # ------------------------------------------------------------- audit

    #: set by a handler to name who acted when no one is logged in (e.g. the name tried at login)
    audit_user: str | None = None
    #: set by a handler to say more than method and path (never secrets)
    audit_detail: str = ""

    def on_finish(self) -> None:
        """Record every change, and every GET that lets data or keys leave (access/audit.py)."""
        trail = self.settings.get("slicebox_audit")
        if not isinstance(trail, _audit.AuditTrail):
            return
        entry = self.audit_entry()
        if entry is None:
            return
        action, path, fallback_name = entry
        user = getattr(self, "_jupyter_current_user", None)
        if user:
            name = self._name_of(user)
        else:
            name = self.audit_user or fallback_name
        trail.record(
            name,
            action,
            method=self.request.method or "",
            path=path,
            status=self.get_status(),
            remote_ip=str(self.request.remote_ip or ""),
            detail=self.audit_detail,
        )

    def audit_entry(self) -> tuple[str, str, str] | None:
        """(action, path as recorded, who when no user signed in) of this request, or None: not recorded."""
        method = self.request.method or ""
        base = self.settings.get("base_url", "/").rstrip("/") + API + "/"
        subpath = self.request.path[len(base) :] if self.request.path.startswith(base) else self.request.path
        if not _audit.is_recorded(method, subpath):
            return None
        shown = masked_uri(subpath)
        action = _audit.action_of(method, shown, self.auth_resource in (ADMIN_RESOURCE, ADMIN_ALL_RESOURCE))
        return action, API + "/" + shown, "box-token" if subpath.startswith("transactions/") else "-"

    def user_source(self) -> Source:
        return Source("user", self.user_name())

    # ------------------------------------------------------------- arguments

    def int_argument(self, name: str, default: int | None = None, minimum: int | None = None) -> int:
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            if default is None:
                raise InvalidInput(f"query parameter {name} is required")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"query parameter {name} must be an integer, not {raw!r}") from None
        if minimum is not None and value < minimum:
            if minimum == 0:
                raise InvalidInput(f"query parameter {name} must be non-negative")
            raise InvalidInput(f"query parameter {name} must be at least {minimum}")
        return value

    def float_argument(self, name: str) -> float | None:
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"query parameter {name} must be a number, not {raw!r}") from None
        if not math.isfinite(value):
            raise InvalidInput(f"query parameter {name} must be a finite number")
        return value

    def bool_argument(self, name: str, default: bool) -> bool:
        raw = self.get_argument(name, None)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise InvalidInput(f"query parameter {name} must be true or false, not {raw!r}")

    def json_body(self) -> Any:
        body = self.request.body
        if not body or not body.strip():
            raise InvalidInput("this request needs a JSON body")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"the body is not valid JSON: {e}") from None

    def id_list_body(self) -> list[int]:
        body = self.json_body()
        if not isinstance(body, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in body):
            raise InvalidInput("the body must be a JSON array of integer ids, e.g. [1, 2, 3]")
        return body

    def uploaded_file(self) -> tuple[bytes, str]:
        """(bytes, file name) of an upload: a raw ``application/dicom`` body or multipart field ``file``."""
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            files = self.request.files.get("file")
            if not files:
                raise InvalidInput("the multipart upload has no field named 'file'")
            return files[0].body, files[0].filename or ""
        if content_type in DICOM_TYPES:
            return self.request.body, ""
        raise InvalidInput(
            f"unsupported Content-Type {content_type!r}: send application/dicom "
            "or multipart/form-data with a field 'file'"
        )

    # ------------------------------------------------------------- responses

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(_jsonable(value)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 401 and self.request.headers.get("Authorization", "")[:6].lower() == "basic ":
            # bad basic credentials (slicebox_lab/auth.py): tell scripts which scheme to use
            self.set_header("WWW-Authenticate", 'Basic realm="slicebox", charset="UTF-8"')
        if isinstance(exc, SliceboxError):
            self._finish_error(exc.message, type(exc).__name__)
            return
        if status_code in (401, 403) and self._wrong_token():
            # a script with a stale or mistyped token: say so, not "'_xsrf' argument missing" (its POSTs
            # meet jupyter's XSRF check first) nor a bare "Forbidden"
            self._finish_error(_WRONG_TOKEN, "InvalidToken")
            return
        if isinstance(exc, HTTPError):
            if exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            elif status_code == 403:  # no credentials (tornado's @authenticated says nothing): what the node accepts
                message = _NO_CREDENTIALS
            else:
                message = responses.get(status_code, "Error")
            self._finish_error(message, exc.reason or _reason(status_code))
            return
        super().write_error(status_code, **kwargs)

    def _finish_error(self, message: str, reason: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": reason}))

    def _wrong_token(self) -> bool:
        """The request sent a token (header or ``?token=``) and nothing authenticated it."""
        if getattr(self, "_jupyter_current_user", None) is not None:
            return False
        get_token = getattr(self.identity_provider, "get_token", None)  # jupyter's and JupyterHub's have one
        return callable(get_token) and bool(get_token(self))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, SliceboxError):
            if self._finished:
                return
            log = self.log.error if e.status_code >= 500 else self.log.info
            log("slicebox: %s %s: %s", self.request.method, masked_uri(self.request.uri or ""), e.message)
            self.send_error(e.status_code, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


def _reason(status_code: int) -> str:
    """The HTTP reason phrase as one word, like the error class names of the other errors: "MethodNotAllowed"."""
    return "".join(responses.get(status_code, "Error").split())


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return to_json(value)
    return value
