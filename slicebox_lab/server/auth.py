"""Who may do what, inside jupyter_server: the identity provider and the Authorizer of slicebox routes.

Identities come from jupyter_server (token, JupyterHub, JupyterLab login); a standalone node also
has its own users (``access/users.py``), usable with HTTP basic auth (scripts) and
``POST /slicebox/api/users/login`` (dashboards).  The server's owner, i.e. whoever holds the
server's token (jupyter_server gives such requests a random anonymous user) or the JupyterHub user
owning the server, is ``SUPERUSER``; roles are explained in ``access/users.py``.

Handlers name what they guard in ``auth_resource``: ``slicebox`` (any role),
:data:`ADMIN_RESOURCE` (reading open to every role, writing needs an administrator: the lists of
SCPs, boxes, filters... stay visible to a USER who picks a destination) and
:data:`ADMIN_ALL_RESOURCE` (every method needs an administrator: users, anonymization key export).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import os
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer
from jupyter_server.auth.identity import PasswordIdentityProvider, User
from tornado import web
from traitlets import Dict as DictTrait
from traitlets import Instance, Unicode, default

from ..access.users import ADMINISTRATOR, ROLES, SUPERUSER, USER, USER_ROLES, NodeUser, UserStore
from .asyncio_bridge import run_blocking

#: the resource of every slicebox route any authenticated user may use
RESOURCE = "slicebox"
#: configuration: reading (GET) open to every role, writing needs ADMINISTRATOR
ADMIN_RESOURCE = "slicebox-admin"
#: every method needs ADMINISTRATOR (users, anonymization key export)
ADMIN_ALL_RESOURCE = "slicebox-admin-all"

#: the user jupyter_server makes up for a request holding the shared token but no login cookie
_ANONYMOUS_ID = re.compile(r"[0-9a-f]{32}")
#: prefix of the login cookie value of a node-local user (jupyter's own cookies hold JSON)
_COOKIE_PREFIX = "slicebox-user:"


@dataclass
class SliceboxUser(User):
    """A node-local user, authenticated by this node (basic auth or the slicebox login)."""

    role: str = USER
    user_id: int = 0


def is_shared_token_user(user: Any) -> bool:
    """True for the random user jupyter_server makes up for holders of the server's token."""
    username = str(getattr(user, "username", "") or "")
    name = str(getattr(user, "name", "") or "")
    return (
        bool(_ANONYMOUS_ID.fullmatch(username)) and name.startswith("Anonymous ") and not isinstance(user, SliceboxUser)
    )


def _is_slicebox_request(handler: web.RequestHandler) -> bool:
    base_url = str(handler.settings.get("base_url", "/"))
    return handler.request.path.startswith(base_url.rstrip("/") + "/slicebox/api/")


def _user_store(handler: web.RequestHandler) -> UserStore | None:
    store = handler.settings.get("slicebox_users")
    return store if isinstance(store, UserStore) else None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(name, password) of an ``Authorization: Basic`` header, None if it is not one."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    name, _, password = decoded.partition(":")
    return name, password


def as_identity(user: NodeUser) -> SliceboxUser:
    return SliceboxUser(username=user.user, name=user.user, display_name=user.user, role=user.role, user_id=user.id)


class SliceboxIdentityProvider(PasswordIdentityProvider):
    """jupyter_server's token/password identity, plus the node's own users on slicebox routes.

    ``Authorization: Basic`` on a ``/slicebox/api/`` request is checked against the node's users and
    decides alone: a wrong password is a 401 even with a valid cookie (Slicebox §8).  Such a request
    without an ``Origin`` header (a script) skips jupyter's XSRF check like a token does; a browser
    page always sends ``Origin`` on writes, so it still needs the XSRF token.  A node user logged in
    through ``POST /slicebox/api/users/login`` holds jupyter's login cookie, which names the user; the
    role is read from the database on each request, so deleting a user logs them out.

    ``Authorization: token <the server's token>`` on a ``/slicebox/api/`` request (a script, the client,
    a partner of many uploads) is the server's owner: one identity for all such requests, no login
    cookie set.  jupyter_server would make up a new random user and sign a new cookie for each: a
    third of a millisecond of the event loop per request, and a new "anonymous" name each time.
    """

    _token_user: User | None = None

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        if getattr(handler, "_jupyter_current_user", None):
            return handler._jupyter_current_user  # type: ignore[attr-defined]
        header = handler.request.headers.get("Authorization", "")
        if header[:6].lower() == "token " and self.token and _is_slicebox_request(handler):
            if hmac.compare_digest(header[6:].strip().encode(), str(self.token).encode()):
                handler._token_authenticated = True  # type: ignore[attr-defined]
                if self._token_user is None:
                    self._token_user = self.generate_anonymous_user(handler)
                return self._token_user
        credentials = basic_credentials(header) if header else None
        store = _user_store(handler)
        if credentials is not None and store is not None and _is_slicebox_request(handler):
            node_user = await run_blocking(store.authenticate, *credentials)
            if node_user is None:
                handler.audit_user = credentials[0][:64] or "-"  # type: ignore[attr-defined]
                raise web.HTTPError(401, "The supplied authentication is invalid")
            if "Origin" not in handler.request.headers:
                handler._token_authenticated = True  # type: ignore[attr-defined]
            return as_identity(node_user)
        user = await super()._get_user(handler)
        if isinstance(user, SliceboxUser):
            # a node user's login cookie: still there, and with which role now?
            current = await run_blocking(store.get, user.username) if store is not None else None
            if current is None:
                self.clear_login_cookie(handler)
                return None
            return as_identity(current)
        return user

    def user_to_cookie(self, user: User) -> str:
        if isinstance(user, SliceboxUser):
            return _COOKIE_PREFIX + user.username
        return super().user_to_cookie(user)

    def user_from_cookie(self, cookie_value: str) -> User | None:
        if cookie_value.startswith(_COOKIE_PREFIX):
            name = cookie_value[len(_COOKIE_PREFIX) :]
            return SliceboxUser(username=name, name=name, display_name=name)
        return super().user_from_cookie(cookie_value)


class SliceboxAuthorizer(Authorizer):
    """Roles on slicebox resources; every other resource goes to the server's own Authorizer.

    The extension installs it over whatever Authorizer the server has (JupyterHub's, a custom
    one, the default allow-all), so it applies inside any Jupyter server without configuration.
    """

    delegate = Instance(Authorizer, allow_none=True, help="The server's Authorizer, for non-slicebox resources")

    user_roles = DictTrait(
        value_trait=Unicode(),
        help="Jupyter user names (JupyterHub, JupyterLab identities) → role; set from SliceboxApp.user_roles.",
    )

    default_role = Unicode(
        USER, help="Role of a Jupyter identity that is not the server's owner and not in user_roles."
    )

    owner = Unicode(help="Jupyter user name of the server's owner (a SUPERUSER); default: $JUPYTERHUB_USER.")

    @default("owner")
    def _owner_default(self) -> str:
        return os.environ.get("JUPYTERHUB_USER", "")

    def role_of(self, user: Any) -> str:
        if isinstance(user, SliceboxUser):
            return user.role if user.role in USER_ROLES else USER
        if is_shared_token_user(user):
            return SUPERUSER
        name = str(getattr(user, "username", "") or "")
        owner = self.owner or os.environ.get("JUPYTERHUB_USER", "")
        if owner and name == owner:
            return SUPERUSER
        role = self.user_roles.get(name, self.default_role)
        return role if role in ROLES else USER

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> Awaitable[bool] | bool:
        """Synchronous unless the server's Authorizer is async: some callers do not await."""
        answer: Awaitable[bool] | bool = True
        if self.delegate is not None and not isinstance(self.delegate, AllowAllAuthorizer):
            if not isinstance(user, SliceboxUser):  # node users are unknown to the server's Authorizer
                answer = self.delegate.is_authorized(handler, user, action, resource)
        if not resource.startswith(RESOURCE):
            return answer
        if inspect.isawaitable(answer):
            return self._after(answer, user, action, resource)
        return bool(answer) and self._role_allows(user, action, resource)

    async def _after(self, answer: Awaitable[bool], user: Any, action: str, resource: str) -> bool:
        return bool(await answer) and self._role_allows(user, action, resource)

    def _role_allows(self, user: Any, action: str, resource: str) -> bool:
        role = self.role_of(user)
        if resource == ADMIN_ALL_RESOURCE:
            return role in (SUPERUSER, ADMINISTRATOR)
        if resource == ADMIN_RESOURCE:
            return action == "read" or role in (SUPERUSER, ADMINISTRATOR)
        return True
