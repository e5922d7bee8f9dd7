"""Two real `jupyter slicebox` nodes on 127.0.0.1 exchange 100 images through a box, PUSH and POLL,
de-identified on the way out, and finish exactly once when either node is SIGKILLed mid-transfer."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
from generators import to_bytes
from nodeproc import NodeProcess, start_node
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parents[1] / "anonymization"))
from planted import planted_dataset, plants_for  # noqa: E402

N = 100
POLL_INTERVAL = ("--SliceboxApp.box_poll_interval=0.2", "--SliceboxApp.fsync=False")
DICOM = {"Content-Type": "application/dicom"}


def _images() -> tuple[list[bytes], list[bytes]]:
    """N small images carrying planted identifiers, and the markers that must not leave the sender."""
    ds, raw = planted_dataset()
    markers = [p.search for p in plants_for(raw, frozenset()) if p.fate in ("gone", "clean") and p.search]
    files = []
    for n in range(N):
        image = copy.deepcopy(ds)
        image.SOPInstanceUID = generate_uid()
        image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
        image.InstanceNumber = n + 1
        files.append(to_bytes(image))
    return files, [m for m in markers if m is not None]


@pytest.fixture(scope="module")
def planted() -> tuple[list[bytes], list[bytes]]:
    return _images()


def _start(data_dir: Path, tmp_path: Path, port: int | None = None) -> NodeProcess:
    return start_node(data_dir, tmp_path, "secret-token", *POLL_INTERVAL, port=port or 0)


def _port(node: NodeProcess) -> int:
    port = urlsplit(node.url).port
    assert port is not None
    return port


def _connect(polled: NodeProcess, connecting: NodeProcess) -> tuple[int, int]:
    """(box id on the polled node, box id on the connecting node)."""
    r = polled.session().post(polled.api + "/boxes/createconnection", json={"name": "partner"})
    assert r.status_code == 201, r.text
    created = r.json()
    r = connecting.session().post(
        connecting.api + "/boxes/connect", json={"name": "partner", "url": created["base_url"]}
    )
    assert r.status_code == 201, r.text
    return created["id"], r.json()["id"]


def _upload(node: NodeProcess, files: list[bytes]) -> list[int]:
    s = node.session()
    ids = []
    for data in files:
        r = s.post(node.api + "/images", data=data, headers=DICOM)
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["id"])
    return ids


def _send(node: NodeProcess, box_id: int, ids: list[int]) -> int:
    r = node.session().post(f"{node.api}/boxes/{box_id}/send", json={"imageIds": ids})
    assert r.status_code == 201, r.text
    return int(r.json()["parameters"]["transaction_id"])


def _outgoing(node: NodeProcess, transaction_id: int) -> dict[str, Any]:
    r = node.session().get(f"{node.api}/boxes/outgoing/transactions/{transaction_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_finished(node: NodeProcess, transaction_id: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        transaction = _outgoing(node, transaction_id)
        if transaction["status"] in ("FINISHED", "FAILED"):
            return transaction
        assert time.monotonic() < deadline, transaction
        time.sleep(0.1)


def _wait_sent(node: NodeProcess, transaction_id: int, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        sent = int(_outgoing(node, transaction_id)["sent_image_count"])
        if sent >= at_least:
            return sent
        assert time.monotonic() < deadline, sent
        time.sleep(0.02)


def _stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "dicom").rglob("*") if p.is_file() and not p.name.startswith(".")]


def _check_receiver(receiver: NodeProcess, receiver_dir: Path, markers: list[bytes], expected: int = N) -> None:
    """``expected`` distinct de-identified images from the box, each stored once, no marker anywhere."""
    files = _stored_files(receiver_dir)
    datasets = [pydicom.dcmread(io.BytesIO(p.read_bytes())) for p in files]
    assert len(files) == expected
    assert len({ds.SOPInstanceUID for ds in datasets}) == expected
    assert all(ds.PatientIdentityRemoved == "YES" for ds in datasets)
    leaks = set()
    stored = set(files)
    for path in receiver_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            # a short marker (e.g. an age "585W") can occur by chance across the record boundaries of a
            # database page (a UID ending in 585 before a header byte "W"): the database is searched raw
            # for the longer markers, and value by value (below) for all of them
            content = _without_pseudonymous_uids(content)
            leaks |= {m for m in markers if m in content and (path in stored or len(m) >= 8)}
    leaks |= _database_leaks(receiver_dir / "slicebox.sqlite", markers)
    assert not leaks, sorted(leaks)[:5]

    incoming = receiver.session().get(receiver.api + "/boxes/incoming/transactions").json()
    assert incoming[-1]["status"] == "FINISHED" and incoming[-1]["received_image_count"] == N
    images = receiver.session().get(f"{receiver.api}/boxes/incoming/transactions/{incoming[-1]['id']}/images").json()
    assert sorted(i["sequence_number"] for i in images) == list(range(1, N + 1))
    assert len(images) == N


def _database_leaks(path: Path, markers: list[bytes]) -> set[bytes]:
    """The markers found in any text or blob value of any row of the node's SQLite index."""
    found: set[bytes] = set()
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    data = value.encode() if isinstance(value, str) else value
                    if isinstance(data, bytes):
                        data = _without_pseudonymous_uids(data)
                        found |= {m for m in markers if m in data}
    return found


_PSEUDONYMOUS_UID = re.compile(rb"2\.25\.[0-9]{20,}")


def _without_pseudonymous_uids(data: bytes) -> bytes:
    """``data`` with the digits of the node's UIDs (``2.25.`` + a 39-digit hash) blanked out.

    Those digits are random: a digit-only marker (a date ``15281113``, an IS ``9004837``) occurs in
    one of the hundreds of UIDs of a transfer by chance in a few runs out of a hundred (CI saw it).
    A UID of that form is made by the node from a hash; it carries no marker.
    """
    return _PSEUDONYMOUS_UID.sub(lambda m: b"2.25." + b"u" * (len(m.group()) - 5), data)


@pytest.mark.parametrize("mode", ["push", "poll"])
def test_images_arrive_de_identified_and_map_back_on_the_sender(
    tmp_path: Path, planted: tuple[list[bytes], list[bytes]], mode: str
):
    files, markers = planted
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a, b = _start(a_dir, tmp_path), _start(b_dir, tmp_path)
    try:
        # PUSH: B (reachable) made the connection, A pushes; POLL: A made it, B polls A
        polled_box, connecting_box = _connect(b, a) if mode == "push" else _connect(a, b)
        box_on_a = connecting_box if mode == "push" else polled_box
        ids = _upload(a, files)
        transaction_id = _send(a, box_on_a, ids)
        transaction = _wait_finished(a, transaction_id)
        assert (transaction["status"], transaction["sent_image_count"]) == ("FINISHED", N), transaction
        _check_receiver(b, b_dir, markers)
        job = a.session().get(f"{a.api}/jobs/{transaction['job_id']}").json()
        assert (job["state"], job["counts"]) == ("SUCCEEDED", {"sent": N, "failed": 0})

        # A's anonymization keys map B's images back to the originals
        incoming = b.session().get(b.api + "/boxes/incoming/transactions").json()[0]
        received = b.session().get(f"{b.api}/boxes/incoming/transactions/{incoming['id']}/images").json()
        data = b.session().get(f"{b.api}/images/{received[0]['image_id']}").content
        r = a.session().post(a.api + "/images", data=data, headers=DICOM)
        assert r.status_code == 200 and r.json()["id"] in ids, r.text

        # sending the same images again adds nothing
        again = _wait_finished(a, _send(a, box_on_a, ids))
        assert again["status"] == "FINISHED"
        assert len(_stored_files(b_dir)) == N
        latest = b.session().get(b.api + "/boxes/incoming/transactions").json()[0]
        assert (latest["received_image_count"], latest["added_image_count"]) == (N, 0)
        boxes = a.session().get(a.api + "/boxes").json()
        assert boxes[0]["online"] is True
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("mode,victim", [("push", "b"), ("push", "a"), ("poll", "a"), ("poll", "b")])
def test_a_node_killed_mid_transfer_finishes_with_every_image_exactly_once(
    tmp_path: Path, planted: tuple[list[bytes], list[bytes]], mode: str, victim: str
):
    files, markers = planted
    dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
    nodes = {"a": _start(dirs["a"], tmp_path), "b": _start(dirs["b"], tmp_path)}
    try:
        polled_box, connecting_box = (
            _connect(nodes["b"], nodes["a"]) if mode == "push" else _connect(nodes["a"], nodes["b"])
        )
        box_on_a = connecting_box if mode == "push" else polled_box
        ids = _upload(nodes["a"], files)
        transaction_id = _send(nodes["a"], box_on_a, ids)
        sent = _wait_sent(nodes["a"], transaction_id, N // 3)
        port = _port(nodes[victim])
        nodes[victim].kill()
        assert sent < N, "the transfer finished before the kill: nothing was tested"
        time.sleep(1.0)  # the other node notices and backs off
        # the polled node must come back where its partner knows it; the other may move
        polled_name = "b" if mode == "push" else "a"
        nodes[victim] = _start(dirs[victim], tmp_path, port if victim == polled_name else None)
        transaction = _wait_finished(nodes["a"], transaction_id)
        assert (transaction["status"], transaction["sent_image_count"]) == ("FINISHED", N), transaction
        _check_receiver(nodes["b"], dirs["b"], markers)
        # the transaction's job survived the restart with it
        job = nodes["a"].session().get(f"{nodes['a'].api}/jobs/{transaction['job_id']}").json()
        assert (job["state"], job["progress_done"], job["counts"]["sent"]) == ("SUCCEEDED", N, N)
    finally:
        for node in nodes.values():
            node.stop()
