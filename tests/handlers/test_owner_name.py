"""The server's token holder is its owner, under a real name (issue 20): sources, job owners, import sessions,
the audit trail and ``users/current`` say ``SliceboxApp.owner_name``, not "anonymous"; data stored under
"anonymous" before stays as it is and stays the owner's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from generators import ct_bytes
from helpers import body_json
from traitlets import TraitError

from slicebox_lab.app import SliceboxApp
from slicebox_lab.context import SliceboxContext
from slicebox_lab.model import Source
from slicebox_lab.watch.imports import ImportSessions

OWNER = "dr.berg"
JSON = {"Content-Type": "application/json"}
DICOM = {"Content-Type": "application/dicom"}


@pytest.fixture
def jp_server_config(node_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"slicebox_lab": True}},
        "IdentityProvider": {"token": "slicebox-test-token"},
        "SliceboxApp": {"data_dir": str(node_dir), "owner_name": OWNER},
    }


@pytest.fixture
def context(jp_serverapp: Any) -> SliceboxContext:
    context: SliceboxContext = jp_serverapp.web_app.settings["slicebox_context"]
    return context


async def upload(api: Any, data: bytes) -> Any:
    return await api("images", method="POST", body=data, headers=dict(DICOM))


async def test_the_token_holder_is_the_owner_by_name(api, context: SliceboxContext):
    for n in range(3):  # three cookie-less requests: three random jupyter users, one owner
        assert (await upload(api, ct_bytes(PatientID=f"O{n}"))).code == 201
    sources = body_json(await api("sources"))
    assert [(s["source_type"], s["source_name"]) for s in sources] == [("user", OWNER)]
    series = body_json(await api("metadata", "flatseries"))
    assert body_json(await api("users", "current")) == {"user": OWNER, "role": "SUPERUSER"}
    # a job submitted with the token is the owner's
    image_ids = [i["id"] for i in body_json(await api("metadata", "images", params={"seriesid": series[0]["id"]}))]
    body = json.dumps({"imageIds": image_ids, "options": []})
    job = await api("anonymization", "anonymize", method="POST", body=body, headers=dict(JSON))
    assert job.code == 201, job.body
    assert body_json(job)["owner"] == OWNER
    assert body_json(await api("jobs", body_json(job)["id"]))["owner"] == OWNER
    # and so are the audit trail's lines of the token's requests
    trail = body_json(await api("audit", params={"newestfirst": "false", "count": "100"}))
    assert [e["action"] for e in trail if e["user"] == OWNER][:3] == ["ingest"] * 3
    assert not [e for e in trail if e["user"] == "anonymous" or len(e["user"]) == 32]


async def test_what_was_stored_under_anonymous_stays_and_stays_the_owners(api, context: SliceboxContext):
    """Sources named "anonymous" (uploads by the token before owner_name) are kept as they are, and an import
    session the token holder opened then is still theirs: asking for it by name gives it back."""
    old = context.ingest(ct_bytes(PatientID="OLD"), Source("user", "anonymous")).image
    session, created = ImportSessions(context).create("nightly batch", "anonymous")
    assert created
    assert (await upload(api, ct_bytes(PatientID="NEW"))).code == 201
    sources = body_json(await api("sources"))
    assert sorted((s["source_type"], s["source_name"]) for s in sources) == [("user", "anonymous"), ("user", OWNER)]
    assert (await api("images", old.id)).code == 200  # its file, as before
    again = await api("import", "sessions", method="POST", body=json.dumps({"name": "nightly batch"}))
    assert again.code == 201 and body_json(again)["id"] == session.id and body_json(again)["user"] == "anonymous"
    new = body_json(await api("import", "sessions", method="POST", body=json.dumps({"name": "morning batch"})))
    assert new["user"] == OWNER


def test_the_owner_name_defaults_to_the_jupyterhub_user_then_the_login_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("getpass.getuser", lambda: "radiology")
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-alice")
    assert SliceboxApp().owner_name == "hub-alice"
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert SliceboxApp().owner_name == "radiology"

    def no_login_name() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")  # a container's bare uid

    monkeypatch.setattr("getpass.getuser", no_login_name)
    assert SliceboxApp().owner_name == "owner"
    assert SliceboxApp(owner_name="  Dr Berg ").owner_name == "Dr Berg"
    with pytest.raises(TraitError, match="owner_name"):
        SliceboxApp(owner_name=" ")
