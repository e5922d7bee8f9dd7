"""Roles, node-local users and the audit trail, without a server (slicebox_lab/auth.py, audit.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from generators import ct_bytes
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import User

from slicebox_lab.access.audit import AuditTrail, action_of, is_recorded
from slicebox_lab.access.users import UserStore
from slicebox_lab.anonymization import Profile
from slicebox_lab.context import SliceboxContext
from slicebox_lab.errors import InvalidInput
from slicebox_lab.index import Index, create_engine, sqlite_url, upgrade
from slicebox_lab.model import Source
from slicebox_lab.server.auth import (
    ADMIN_ALL_RESOURCE,
    ADMIN_RESOURCE,
    SliceboxAuthorizer,
    SliceboxUser,
    basic_credentials,
)
from slicebox_lab.storage import MemoryStorage


@pytest.fixture
def context(tmp_path: Path) -> SliceboxContext:
    engine = create_engine(sqlite_url(tmp_path / "index.sqlite"))
    upgrade(engine)
    return SliceboxContext(MemoryStorage(), Index(engine))


def token_holder() -> User:
    # what jupyter_server makes up for a request with the server's token and no cookie
    return User("0123456789abcdef0123456789abcdef", "Anonymous Io")


def test_roles_on_each_resource():
    authorizer = SliceboxAuthorizer(user_roles={"carol": "ADMINISTRATOR", "dave": "USER"})
    admin, user = SliceboxUser("alice", role="ADMINISTRATOR"), SliceboxUser("bob", role="USER")
    cases = [  # (user, action, resource, allowed)
        (user, "read", "slicebox", True), (user, "write", "slicebox", True),
        (user, "read", ADMIN_RESOURCE, True), (user, "write", ADMIN_RESOURCE, False),
        (user, "read", ADMIN_ALL_RESOURCE, False), (admin, "write", ADMIN_RESOURCE, True),
        (admin, "read", ADMIN_ALL_RESOURCE, True), (token_holder(), "write", ADMIN_ALL_RESOURCE, True),
        (User("carol"), "write", ADMIN_RESOURCE, True), (User("dave"), "write", ADMIN_RESOURCE, False),
        (User("eve"), "write", ADMIN_RESOURCE, False), (User("eve"), "read", ADMIN_RESOURCE, True),
    ]  # fmt: skip
    for who, action, resource, allowed in cases:
        assert authorizer.is_authorized(None, who, action, resource) is allowed, (who, action, resource)
    assert authorizer.role_of(token_holder()) == "SUPERUSER"


def test_hub_owner_is_superuser_and_default_role_is_configurable(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "owner")
    authorizer = SliceboxAuthorizer(default_role="ADMINISTRATOR")
    assert authorizer.role_of(User("owner")) == "SUPERUSER"
    assert authorizer.role_of(User("someone")) == "ADMINISTRATOR"


class _DenyKernels(Authorizer):
    def is_authorized(self, handler, user, action, resource):  # type: ignore[no-untyped-def]
        return resource != "kernels" and user.username != "banned"


def test_the_servers_own_authorizer_keeps_its_say():
    """Installed over JupyterHub's (or any) Authorizer: it still decides its resources, and may refuse a user."""
    authorizer = SliceboxAuthorizer(delegate=_DenyKernels())
    assert not authorizer.is_authorized(None, token_holder(), "execute", "kernels")
    assert authorizer.is_authorized(None, token_holder(), "read", "contents")
    assert not authorizer.is_authorized(None, User("banned"), "read", "slicebox")
    # node-local users are unknown to the server's Authorizer: the roles alone decide
    assert authorizer.is_authorized(None, SliceboxUser("banned", role="USER"), "read", "slicebox")
    assert not authorizer.is_authorized(None, SliceboxUser("banned", role="USER"), "write", ADMIN_RESOURCE)


class _AsyncHub(Authorizer):
    async def is_authorized(self, handler, user, action, resource):  # type: ignore[no-untyped-def]
        return user.username != "banned"


async def test_an_async_server_authorizer_is_awaited():
    authorizer = SliceboxAuthorizer(delegate=_AsyncHub())
    assert await authorizer.is_authorized(None, User("carol"), "read", ADMIN_RESOURCE) is True
    assert await authorizer.is_authorized(None, User("carol"), "write", ADMIN_RESOURCE) is False
    assert await authorizer.is_authorized(None, User("banned"), "read", "slicebox") is False
    assert await authorizer.is_authorized(None, User("banned"), "read", "contents") is False


def test_users_are_hashed_with_argon2_and_authenticated(context: SliceboxContext):
    store = UserStore(context.index)
    created = store.create("alice", "ADMINISTRATOR", "correct horse")
    assert created.user == "alice" and created.role == "ADMINISTRATOR"
    with context.index.reading() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM users").scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert store.authenticate("alice", "correct horse") == created
    assert store.authenticate("alice", "correct horse") == created  # the cached path
    assert store.authenticate("alice", "wrong") is None
    assert store.authenticate("nobody", "correct horse") is None
    assert "password" not in repr(created) and "argon2" not in repr(created)
    # an existing name: the existing user, password unchanged
    assert store.create("alice", "USER", "other") == created
    assert store.authenticate("alice", "other") is None
    for bad in (("", "USER", "x"), ("a b", "USER", "x"), ("root", "SUPERUSER", "x"), ("bob", "USER", "")):
        with pytest.raises(InvalidInput):
            store.create(*bad)
    store.delete(created.id)
    store.delete(created.id)
    assert store.list() == [] and store.authenticate("alice", "correct horse") is None


def test_basic_credentials_parsing():
    assert basic_credentials("Basic YWxpY2U6cDpx") == ("alice", "p:q")
    assert basic_credentials("basic !!!") == ("", "")
    assert basic_credentials("token abc") is None


def test_actions_of_requests():
    assert action_of("POST", "images", admin=False) == "ingest"
    assert action_of("GET", "anonymization/keys/export/csv", admin=True) == "key-export"
    assert action_of("POST", "images/3/anonymized", admin=False) == "export"
    assert action_of("POST", "boxes/2/send", admin=False) == "send"
    assert action_of("POST", "seriestypes", admin=True) == "configure"
    assert action_of("DELETE", "images/3", admin=False) == "delete"
    assert action_of("POST", "users/login", admin=False) == "login"
    assert is_recorded("GET", "images/export") and is_recorded("GET", "images/12")
    assert not is_recorded("GET", "metadata/patients") and not is_recorded("GET", "images/12/png")
    assert is_recorded("PUT", "seriestypes/1")


def test_images_from_non_rest_sources_are_audited_in_order(context: SliceboxContext):
    trail = AuditTrail(context.index)
    trail.subscribe(context.events)
    try:
        context.ingest(ct_bytes(PatientID="A"), Source("scp", "pacs"))
        context.ingest(ct_bytes(PatientID="B"), Source("user", "alice"))  # recorded by its REST handler instead
        context.ingest(ct_bytes(PatientID="C"), Source("box", "university"))
        context.ingest(ct_bytes(PatientID="D"), Source("directory", "incoming"))
        trail.record("alice", "configure", method="POST", path="/slicebox/api/scps", status=201, remote_ip="10.0.0.1")
        trail.flush()
        entries = trail.list(newest_first=False)
        assert [(e.user, e.action) for e in entries] == [
            ("scp:pacs", "ingest"), ("box:university", "receive"), ("directory:incoming", "ingest"),
            ("alice", "configure"),
        ]  # fmt: skip
        assert entries[-1].remote_ip == "10.0.0.1" and entries[-1].status == 201
        assert [e.user for e in trail.list(user="scp:pacs")] == ["scp:pacs"]
        assert [e.action for e in trail.list(action="receive")] == ["receive"]
        assert len(trail.list(start_index=1, count=2)) == 2
    finally:
        trail.close()


def test_concurrent_records_are_all_written(context: SliceboxContext):
    trail = AuditTrail(context.index)
    try:
        threads = [threading.Thread(target=lambda i=i: [trail.record(f"u{i}", "post") for _ in range(20)])
                   for i in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        trail.flush()
        assert len(trail.list(count=1000)) == 80
    finally:
        trail.close()


def test_re_identification_is_audited(context: SliceboxContext):
    trail = AuditTrail(context.index)
    trail.subscribe(context.events)
    try:
        image = context.ingest(ct_bytes(PatientName="Real^Person", PatientID="MRN-1"), Source("user", "alice"))
        anonymous = context.anonymized_bytes(image.image.id, Profile())
        context.delete_images([image.image.id])
        back = context.ingest(anonymous, Source("box", "university"))
        trail.flush()
        assert [(e.user, e.action, e.detail) for e in trail.list(newest_first=False)] == [
            ("node", "images-deleted", f"1 images: {image.image.id}"),
            ("box:university", "reidentify", f"image {back.image.id}"),
            ("box:university", "receive", f"image {back.image.id}"),
        ]
    finally:
        trail.close()
