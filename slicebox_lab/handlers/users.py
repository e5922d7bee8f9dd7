"""/slicebox/api/users (node-local users, login, logout, current) and /slicebox/api/audit."""

from __future__ import annotations

from datetime import UTC, datetime

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from tornado import web

from ..access.audit import AuditTrail
from ..access.users import UserStore
from ..errors import InvalidInput
from ..server.auth import ADMIN_ALL_RESOURCE, SliceboxUser, as_identity
from .base import API, SliceboxHandler


class _UsersHandler(SliceboxHandler):
    @property
    def users(self) -> UserStore:
        store: UserStore = self.settings["slicebox_users"]
        return store


class UsersHandler(_UsersHandler):
    auth_resource = ADMIN_ALL_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """``[{"id","user","role","created"}]``: never a password or its hash."""
        start = self.int_argument("startindex", 0, minimum=0)
        count = self.int_argument("count", 20, minimum=0)
        found = await self.blocking(self.users.list)
        self.write_json(found[start : start + count])

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """``{"user","role","password"}`` → 201; an existing name → that user, password unchanged."""
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidInput('the body must be {"user": ..., "role": "ADMINISTRATOR"|"USER", "password": ...}')
        name, role, password = body.get("user"), body.get("role"), body.get("password")
        self.audit_detail = f"user {name} role {role}"
        created = await self.blocking(self.users.create, name, role, password)  # type: ignore[arg-type]
        self.write_json(created, status=201)


class UserHandler(_UsersHandler):
    auth_resource = ADMIN_ALL_RESOURCE

    @web.authenticated
    @authorized
    async def delete(self, user_id: str) -> None:
        """204, also for an unknown id; the server's owner is no stored user and cannot be deleted."""
        await self.blocking(self.users.delete, int(user_id))
        self.set_status(204)
        await self.finish()


class LoginHandler(_UsersHandler):
    """``{"user","pass"}`` → 204 with jupyter's login cookie; a wrong pair → 401, no cookie."""

    def check_xsrf_cookie(self) -> None:
        # nobody is logged in yet: scripts (no Origin) and same-origin pages may log in
        if "Origin" in self.request.headers and not self.check_origin():
            raise web.HTTPError(403, "cross-origin login refused")

    @allow_unauthenticated
    async def post(self) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("user"), str) or not isinstance(body.get("pass"), str):
            raise InvalidInput('the body must be {"user": ..., "pass": ...}')
        self.audit_user = body["user"]
        found = await self.blocking(self.users.authenticate, body["user"], body["pass"])
        if found is None:
            raise web.HTTPError(401, "Invalid username or password")
        self.identity_provider.set_login_cookie(self, as_identity(found))
        self.set_status(204)
        await self.finish()


class LogoutHandler(_UsersHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.identity_provider.clear_login_cookie(self)
        self.set_status(204)
        await self.finish()


class CurrentUserHandler(_UsersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """``{"user","role"}`` of the caller (the dashboards hide admin controls from a USER)."""
        user = self.current_user
        body: dict[str, object] = {"user": self.user_name(), "role": self.user_role()}
        if isinstance(user, SliceboxUser):
            body["id"] = user.user_id
        self.write_json(body)


class AuditHandler(SliceboxHandler):
    """The audit trail: every role reads it, no one edits it."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        trail: AuditTrail = self.settings["slicebox_audit"]
        await self.blocking(trail.flush)
        entries = await self.blocking(
            trail.list,
            start_index=self.int_argument("startindex", 0, minimum=0),
            count=self.int_argument("count", 20, minimum=0),
            user=self.get_argument("user", None),
            action=self.get_argument("action", None),
            since=self._instant("since"),
            until=self._instant("until"),
            newest_first=self.bool_argument("newestfirst", True),
        )
        self.write_json(entries)

    def _instant(self, name: str) -> datetime | None:
        raw = self.get_argument(name, None)
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"query parameter {name} must be an ISO-8601 instant, not {raw!r}") from None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


default_handlers = [
    (rf"{API}/users", UsersHandler),
    (rf"{API}/users/(\d+)", UserHandler),
    (rf"{API}/users/login", LoginHandler),
    (rf"{API}/users/logout", LogoutHandler),
    (rf"{API}/users/current", CurrentUserHandler),
    (rf"{API}/audit", AuditHandler),
    (rf"{API}/log/audit", AuditHandler),  # the same trail, next to the node's log
]
