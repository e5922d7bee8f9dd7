"""The admin panels against real `jupyter slicebox` nodes: add, list, echo, delete through the widgets'
forms and buttons, and the server's own message in the status line when the node refuses."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from generators import ct_bytes

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from nodeproc import NodeProcess, start_node  # noqa: E402

from slicebox_lab.client import connect  # noqa: E402
from slicebox_lab.ui import AdminPanel  # noqa: E402
from slicebox_lab.ui.admin import EntityPanel  # noqa: E402


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    work = tmp_path_factory.mktemp("admin")
    a = start_node(work / "a", work)
    b = start_node(work / "b", work)
    try:
        yield {"a": a, "b": b}
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def admin(nodes: dict[str, NodeProcess]) -> AdminPanel:
    node = nodes["a"]
    panel = AdminPanel(connect(node.url, token=node.token))
    assert panel.titles[:3] == ("SCPs", "SCUs", "Watches")
    for p in panel.panels:
        assert p.status.level != "error", (p.title, p.status.message)
    return panel


def _added(panel: EntityPanel, key: str, value: Any) -> int:
    assert panel.status.level == "ok", panel.status.message
    rows = [r for r in panel.table.records if r.get(key) == value]
    assert len(rows) == 1, panel.table.records
    return int(rows[0]["id"])


def _delete(panel: EntityPanel, entry_id: int) -> None:
    panel.button("Delete", entry_id).click()
    assert panel.status.level == "ok", panel.status.message
    assert entry_id not in panel.ids()


def test_scp_and_scu_with_echo(admin: AdminPanel):
    scps, scus = admin.scps, admin.scus
    scps.name.value, scps.ae_title.value, scps.port.value = "ui-scp", "UISCP", 0
    scps.add_button.click()
    scp_id = _added(scps, "name", "ui-scp")
    scp = next(r for r in scps.table.records if r["id"] == scp_id)
    assert str(scp["running"]) == "True" and int(scp["port"]) > 0

    scps.name.value, scps.ae_title.value, scps.port.value = "second", "SECOND", int(scp["port"])
    scps.add_button.click()  # the port is taken: the node says so
    assert scps.status.level == "error" and str(scp["port"]) in scps.status.message, scps.status.message

    scus.name.value, scus.ae_title.value, scus.host.value = "own-scp", "UISCP", "127.0.0.1"
    scus.port.value = int(scp["port"])
    scus.add_button.click()
    scu_id = _added(scus, "name", "own-scp")
    scus.button("Echo", scu_id).click()
    assert scus.status.level == "ok" and "echo" in scus.status.message, scus.status.message

    _delete(scps, scp_id)
    scus.button("Echo", scu_id).click()  # nobody listens any more: the node's reason
    assert scus.status.level == "error" and scus.status.message, scus.status.message
    _delete(scus, scu_id)


def test_watch(admin: AdminPanel, tmp_path: Path):
    watches = admin.watches
    folder = tmp_path / "incoming"
    folder.mkdir()
    watches.name.value, watches.path.value = "ui-watch", str(folder)
    watches.add_button.click()
    watch_id = _added(watches, "name", "ui-watch")
    watches.name.value, watches.path.value = "relative", "not/absolute"
    watches.add_button.click()
    assert watches.status.level == "error" and "absolute" in watches.status.message, watches.status.message
    _delete(watches, watch_id)


def test_boxes_create_connect_delete(admin: AdminPanel, nodes: dict[str, NodeProcess]):
    b = nodes["b"]
    partner = AdminPanel(connect(b.url, token=b.token)).boxes
    partner.create_name.value = "to-a"
    created = partner.create_connection()
    assert created is not None and partner.connection_url.value == created["base_url"]
    assert partner.connection_url.value.startswith("http") and partner.status.level == "ok"
    boxes = admin.boxes
    boxes.connect_name.value, boxes.connect_url.value = "to-b", partner.connection_url.value
    boxes.connect_button.click()
    box_id = _added(boxes, "name", "to-b")
    assert "online" in boxes.table.columns
    boxes.connect_name.value, boxes.connect_url.value = "broken", "not a url"
    boxes.connect_button.click()
    assert boxes.status.level == "error" and boxes.status.message, boxes.status.message
    _delete(boxes, box_id)
    _delete(partner, int(created["id"]))


def test_forwarding_filter_series_type(admin: AdminPanel):
    scus = admin.scus
    scus.name.value, scus.ae_title.value, scus.host.value, scus.port.value = "pacs", "PACS", "127.0.0.1", 11999
    scus.add_button.click()
    scu_id = _added(scus, "name", "pacs")

    rules = admin.forwarding
    rules.refresh()
    rules.source_type.value, rules.source_name.value = "scp", "ct-scanner"
    rules.destination.value = ("scu", scu_id)
    rules.keep_images.value, rules.quiet_seconds.value = False, 5
    rules.add_button.click()
    assert rules.status.level == "ok", rules.status.message
    (rule,) = rules.table.records
    assert rule["source"] == "scp: ct-scanner" and rule["destination"] == "scu: pacs"
    rules.add_button.click()  # the same source and destination again
    assert rules.status.level == "error" and rules.status.message
    _delete(rules, int(rule["id"]))

    filters = admin.filters
    filters.name.value, filters.type.value = "no-address", "BLACKLIST"
    filters.tag_paths.value = "PatientAddress\nRequestAttributesSequence[*].PatientAddress"
    filters.add_button.click()
    filter_id = _added(filters, "name", "no-address")
    row = next(r for r in filters.table.records if r["id"] == filter_id)
    assert "PatientAddress" in row["tagPaths"]
    filters.name.value, filters.tag_paths.value = "bad", "PatientID"  # the identity cannot be filtered
    filters.add_button.click()
    assert filters.status.level == "error" and "PatientID" in filters.status.message, filters.status.message
    _delete(filters, filter_id)

    types = admin.series_types
    types.name.value = "T2"
    types.add_button.click()
    type_id = _added(types, "name", "T2")
    types.add_button.click()  # names are unique
    assert types.status.level == "error" and "T2" in types.status.message, types.status.message
    _delete(types, type_id)
    _delete(scus, scu_id)


def test_users_and_a_forbidden_action(admin: AdminPanel, nodes: dict[str, NodeProcess]):
    users = admin.users
    users.user.value, users.password.value, users.role.value = "bob", "bob-Pw7zq", "USER"
    users.add_button.click()
    bob_id = _added(users, "user", "bob")
    assert users.password.value == "" and "password" not in users.table.columns

    node = nodes["a"]
    as_bob = AdminPanel(connect(node.url, username="bob", password="bob-Pw7zq"))
    assert as_bob.series_types.status.level != "error"  # reading is open to every role
    assert as_bob.users.status.level == "error" and "not authorized" in as_bob.users.status.message
    as_bob.series_types.name.value = "by-bob"
    as_bob.series_types.add_button.click()
    status = as_bob.series_types.status
    assert status.level == "error" and "not authorized to write" in status.message, status.message
    as_bob.anonymization_keys.export_button.click()
    assert "not authorized" in as_bob.anonymization_keys.status.message
    assert as_bob.anonymization_keys.csv_bytes is None
    assert "by-bob" not in [r["name"] for r in admin.series_types.table.records]
    _delete(users, bob_id)


def test_keys_list_and_csv_export(admin: AdminPanel, nodes: dict[str, NodeProcess]):
    node = nodes["a"]
    s = node.session()
    r = s.post(node.api + "/images", data=ct_bytes(PatientName="Key^Holder", PatientID="KEY-1"),
               headers={"Content-Type": "application/dicom"}, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    r = s.put(f"{node.api}/images/{r.json()['id']}/anonymize", json={}, timeout=30)
    assert r.status_code in (200, 201), r.text
    keys = admin.anonymization_keys
    keys.refresh_button.click()
    assert keys.status.level != "error", keys.status.message
    assert any(row.get("PatientName") == "Key^Holder" for row in keys.table.records), keys.table.records
    keys.export_button.click()
    assert keys.status.level == "ok", keys.status.message
    assert keys.csv_bytes is not None
    rows = list(csv.reader(io.StringIO(keys.csv_bytes.decode("utf-8")), delimiter=";"))
    assert "Patient Name" in rows[0] and any("Key^Holder" in row for row in rows[1:])
    assert 'download="anonymization-keys.csv"' in keys.export_link.value
