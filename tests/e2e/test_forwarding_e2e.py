"""Forwarding rules on real `jupyter slicebox` nodes: what dcmtk storescu sends into node A's SCP goes on
to node B through a PUSH box (A's copies removed only once B has them all) and to a dcmtk storescp."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeproc import NodeProcess, start_node

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
from netutil import DCMTK_ENV, dcmtk, free_port, run_dcmtk, wait_listening, write_series  # noqa: E402

FAST = ("--SliceboxApp.box_poll_interval=0.2", "--SliceboxApp.fsync=False")
N = 10


def _stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "dicom").rglob("*") if p.is_file() and not p.name.startswith(".")]


def _wait(what: Callable[[], Any], timeout: float = 120, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.1)


def _scp(node: NodeProcess, ae_title: str) -> int:
    r = node.session().post(
        node.api + "/scps", json={"name": "ct", "ae_title": ae_title, "port": 0, "host": "127.0.0.1"}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["port"])


def _rule(node: NodeProcess, destination: dict[str, Any], keep: bool) -> int:
    body = {"source": {"sourceType": "scp", "sourceName": "ct"}, "destination": destination,
            "keepImages": keep, "quietSeconds": 1}  # fmt: skip
    r = node.session().post(node.api + "/forwarding/rules", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _batches(node: NodeProcess, rule_id: int) -> list[dict[str, Any]]:
    r = node.session().get(f"{node.api}/forwarding/rules/{rule_id}/batches", timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json())


def _storescu(port: int, ae_title: str, files: list[Path]) -> None:
    result = run_dcmtk("storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files), timeout=120)
    assert result.returncode == 0, result.stderr


def test_scp_to_box_delivers_and_removes_local_copies_only_after_the_partner_has_them(tmp_path: Path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    b = start_node(b_dir, tmp_path, "secret-token", *FAST)
    a = start_node(a_dir, tmp_path, "secret-token", *FAST)
    try:
        r = b.session().post(b.api + "/boxes/createconnection", json={"name": "hospital"})
        assert r.status_code == 201, r.text
        r = a.session().post(a.api + "/boxes/connect", json={"name": "university", "url": r.json()["base_url"]})
        assert r.status_code == 201, r.text
        box_id = r.json()["id"]
        port = _scp(a, "NODE-A")
        rule = _rule(a, {"type": "box", "id": box_id}, keep=False)

        b.process.send_signal(signal.SIGSTOP)  # B cannot take anything until it is continued
        try:
            _storescu(port, "NODE-A", write_series(tmp_path / "series", N, PatientID="FWD-E2E"))
            (batch,) = _wait(lambda: [x for x in _batches(a, rule) if x["state"] == "SENDING"], 60, "no batch sent")
            assert batch["imageCount"] == N
            time.sleep(3)  # rounds of A's forwarding pass: nothing may be deleted while B has nothing
            assert len(_stored_files(a_dir)) == N
            assert _batches(a, rule)[0]["state"] == "SENDING"
            r = a.session().get(f"{a.api}/boxes/outgoing/transactions/{batch['transactionId']}", timeout=10)
            assert r.json()["status"] != "FINISHED"
        finally:
            b.process.send_signal(signal.SIGCONT)

        _wait(lambda: _batches(a, rule)[0]["images"] == {"DELETED": N}, 180, f"not deleted: {_batches(a, rule)}")
        r = a.session().get(f"{a.api}/boxes/outgoing/transactions/{batch['transactionId']}", timeout=10)
        assert r.json()["status"] == "FINISHED" and r.json()["sent_image_count"] == N
        assert _batches(a, rule)[0]["state"] == "DELIVERED"
        assert len(_stored_files(b_dir)) == N
        assert _stored_files(a_dir) == []
        assert a.session().get(a.api + "/metadata/patients").json() == []
    finally:
        b.process.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


def test_scp_to_remote_node_delivers_to_storescp_and_keeps_the_images(tmp_path: Path):
    out = tmp_path / "received"
    out.mkdir()
    storescp_port = free_port()
    storescp = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out), str(storescp_port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    a_dir = tmp_path / "a"
    a = start_node(a_dir, tmp_path, "secret-token", *FAST)
    try:
        wait_listening(storescp_port)
        r = a.session().post(
            a.api + "/scus", json={"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": storescp_port}
        )
        assert r.status_code == 201, r.text
        port = _scp(a, "NODE-A")
        rule = _rule(a, {"type": "scu", "id": r.json()["id"]}, keep=True)
        _storescu(port, "NODE-A", write_series(tmp_path / "series", 5, PatientID="FWD-SCU"))
        _wait(lambda: [x for x in _batches(a, rule) if x["state"] in ("DELIVERED", "FAILED")], 60, "not sent")
        (batch,) = _batches(a, rule)
        assert batch["state"] == "DELIVERED" and batch["images"] == {"DELIVERED": 5}, batch
        assert len([p for p in out.iterdir() if p.is_file()]) == 5
        assert len(_stored_files(a_dir)) == 5
    finally:
        a.stop()
        storescp.terminate()
        storescp.wait(10)
