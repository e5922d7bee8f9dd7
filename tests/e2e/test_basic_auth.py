"""A script with `requests` and HTTP basic auth against a real `jupyter slicebox` process (issue 6)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import requests
from generators import ct_bytes
from nodeproc import start_node


def test_script_with_basic_auth_roles_and_audit(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    try:
        owner = node.session()
        for user, role in (("alice", "ADMINISTRATOR"), ("bob", "USER")):
            r = owner.post(f"{node.api}/users", json={"user": user, "role": role, "password": f"{user}-Pw7zq"})
            assert r.status_code == 201, r.text

        alice, bob = ("alice", "alice-Pw7zq"), ("bob", "bob-Pw7zq")
        r = requests.post(f"{node.api}/images", data=ct_bytes(), auth=bob,
                          headers={"Content-Type": "application/dicom"}, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        assert requests.get(f"{node.api}/metadata/patients", auth=bob, timeout=30).json()[0]["PatientName"]
        assert requests.post(f"{node.api}/seriestypes", json={"name": "CT"}, auth=bob, timeout=30).status_code == 403
        assert requests.post(f"{node.api}/seriestypes", json={"name": "CT"}, auth=alice, timeout=30).status_code == 201

        wrong = requests.get(f"{node.api}/metadata/patients", auth=("bob", "guess"), timeout=30)
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(f"{node.api}/metadata/patients", timeout=30).status_code in (401, 403)

        trail = requests.get(f"{node.api}/audit", params={"newestfirst": "false", "count": 100}, auth=bob,
                             timeout=30).json()  # fmt: skip
        steps = [(e["user"], e["action"], e["status"]) for e in trail if e["user"] in ("alice", "bob")]
        assert steps == [("bob", "ingest", 201), ("bob", "configure", 403), ("alice", "configure", 201)]
        assert all(e["remote_ip"] == "127.0.0.1" for e in trail if e["user"] in ("alice", "bob"))
        users = owner.get(f"{node.api}/users").text
        assert "argon2" not in users and "Pw7zq" not in users
    finally:
        node.stop()
    # the password is stored as a hash only, and neither it nor the hash reached the server's log
    log = node.log_path.read_text(errors="replace")
    assert "Pw7zq" not in log and "$argon2" not in log
    with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM users")]
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") and "Pw7zq" not in h for h in hashes)
