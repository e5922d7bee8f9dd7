"""`jupyter slicebox` as a process: starts empty, keeps its data, survives SIGKILL mid-upload."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from generators import ct_bytes
from nodeproc import start_node

DICOM = {"Content-Type": "application/dicom"}


def test_second_start_finds_the_data_of_the_first(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    try:
        s = node.session()
        assert s.get(node.api + "/metadata/patients").json() == []
        info = s.get(node.api + "/system/information").json()
        assert info["database"] == "sqlite" and info["version"]
        r = s.post(node.api + "/images", data=ct_bytes(PatientID="KEEP"), headers=DICOM)
        assert r.status_code == 201
        # unauthenticated requests are refused
        assert node.session().get(node.api + "/metadata/patients", headers={"Authorization": ""}).status_code == 403
    finally:
        node.stop()
    assert (data_dir / "slicebox.sqlite").exists()
    # SIGTERM is a clean stop: services closed, no crash repair needed at the next start
    assert node.process.returncode == 0
    assert not (data_dir / "slicebox.running").exists()
    node = start_node(data_dir, tmp_path)
    try:
        patients = node.session().get(node.api + "/metadata/patients").json()
        assert [p["PatientID"] for p in patients] == ["KEEP"]
    finally:
        node.stop()


def test_sigkill_during_uploads_loses_no_acknowledged_image(tmp_path: Path):
    data_dir = tmp_path / "node"
    node = start_node(data_dir, tmp_path)
    acknowledged: dict[int, bytes] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def uploader(worker: int) -> None:
        s = node.session()
        n = 0
        while not stop.is_set():
            data = ct_bytes(PatientID=f"W{worker}", InstanceNumber=n, rows=128, columns=128, seed=n)
            n += 1
            try:
                r = s.post(node.api + "/images", data=data, headers=DICOM, timeout=30)
            except Exception:  # the server died mid-request: that upload was never acknowledged
                return
            if r.status_code == 201:
                acknowledged[r.json()["id"]] = data
            elif r.status_code != 200:
                errors.append(AssertionError(r.text))

    threads = [threading.Thread(target=uploader, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    # let a stream of uploads run, then kill the server in the middle of it
    deadline = 200
    import time

    t0 = time.monotonic()
    while len(acknowledged) < deadline and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    node.kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(acknowledged) >= 20, "too few uploads before the kill to test anything"

    node = start_node(data_dir, tmp_path)
    try:
        s = node.session()
        for image_id, data in acknowledged.items():
            r = s.get(f"{node.api}/images/{image_id}")
            assert r.status_code == 200, image_id
            assert r.content == data
        # storage and index agree exactly: every row has its blob, every blob its row
        with sqlite3.connect(data_dir / "slicebox.sqlite") as db:
            keys = {k for (k,) in db.execute("SELECT storage_key FROM images")}
        blobs = {p.name for p in (data_dir / "dicom").rglob("*") if p.is_file()}
        assert keys == blobs
        assert not [p for p in (data_dir / "dicom").rglob(".tmp-*")]
        log = s.get(node.api + "/log", params={"type": "WARN"}).json()
        assert any("unclean shutdown" in entry["message"] for entry in log)
    finally:
        node.stop()


def _unclean_warnings(node) -> list[str]:
    log = node.session().get(node.api + "/log", params={"type": "WARN", "count": 100}).json()
    return [entry["message"] for entry in log if "unclean shutdown" in entry["message"]]


def test_sigint_is_a_clean_stop(tmp_path: Path):
    """Ctrl-C where stdin is no terminal (a service manager, kill -INT): the next start repairs nothing."""
    import signal

    data_dir = tmp_path / "node"
    inherited = signal.getsignal(signal.SIGINT)
    if inherited == signal.SIG_IGN:
        # this test runs in the background of a shell (`pytest &`, nohup): the node would inherit the ignored
        # SIGINT and rightly keep ignoring it; a handler here makes the child start with the default disposition
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        node = start_node(data_dir, tmp_path)
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        assert (
            node.session().post(node.api + "/images", data=ct_bytes(PatientID="INT"), headers=DICOM).status_code == 201
        )
    finally:
        node.process.send_signal(signal.SIGINT)
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()  # a stop that hangs: say where the log stopped (the failure to look into)
            log = node.log_path.read_text()[-3000:]
            pytest.fail(f"the node did not stop within 30 s of SIGINT; its log ends:\n{log}")
    assert node.process.returncode == 0, node.log_path.read_text()[-2000:]
    assert "stopping" in node.log_path.read_text()
    assert not list((data_dir / "slicebox.running.d").glob("*.json"))
    again = start_node(data_dir, tmp_path)
    try:
        assert _unclean_warnings(again) == []
        assert "unclean" not in again.log_path.read_text()
    finally:
        again.stop()


def test_a_second_server_on_the_folder_joins_as_a_secondary_and_leaves_the_first_alone(tmp_path: Path):
    """`jupyter lab` started while `jupyter slicebox` runs on the same (SQLite) folder: it serves the same data,
    repairs nothing, listens on no SCP port, and stopping it leaves the first server's marker in place."""
    from labproc import free_port

    data_dir = tmp_path / "node"
    first = start_node(data_dir, tmp_path)
    try:
        s = first.session()
        port = free_port()
        assert (
            s.post(first.api + "/scps", json={"name": "pacs-in", "ae_title": "FIRST", "port": port}).status_code == 201
        )
        image = s.post(first.api + "/images", data=ct_bytes(PatientID="SHARED"), headers=DICOM).json()
        markers = list((data_dir / "slicebox.running.d").glob("*.json"))
        assert len(markers) == 1
        second = start_node(data_dir, tmp_path)
        try:
            text = second.log_path.read_text()
            assert "joins it as a secondary" in text and "starts no DICOM listener" in text
            assert "unclean" not in text and "Traceback" not in text and "SCP pacs-in not started" not in text
            assert len(list((data_dir / "slicebox.running.d").glob("*.json"))) == 2
            # the same data through either server
            assert second.session().get(f"{second.api}/images/{image['id']}").status_code == 200
            landing = second.session().get(second.url + "slicebox/").text
            assert "Shares its data folder with another server" in landing
        finally:
            second.stop()
        assert second.process.returncode == 0
        assert [p for p in markers if p.exists()] == markers  # the first one's marker is still there
        assert _unclean_warnings(first) == []
        scps = s.get(first.api + "/scps").json()
        assert scps[0]["running"] and scps[0]["port"] == port  # and it still listens
    finally:
        first.stop()
    assert not list((data_dir / "slicebox.running.d").glob("*.json"))
    again = start_node(data_dir, tmp_path)
    try:
        assert _unclean_warnings(again) == []
    finally:
        again.stop()
