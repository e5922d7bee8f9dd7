"""A real `jupyter slicebox` process: its SCPs start with the server, and start again after a restart."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from generators import ct_dataset
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from nodeproc import start_node  # noqa: E402


def _echo(port: int, ae_title: str) -> bool:
    ae = AE(ae_title="E2E-SCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        if assoc.is_established:
            assoc.release()


def test_scps_of_a_real_node_survive_a_restart(tmp_path: Path):
    data_dir = tmp_path / "data"
    node = start_node(data_dir, tmp_path)
    try:
        session = node.session()
        r = session.post(node.api + "/scps", json={"name": "in", "ae_title": "E2E-IN", "port": 0, "host": "127.0.0.1"})
        assert r.status_code == 201, r.text
        port = r.json()["port"]
        assert _echo(port, "E2E-IN")
        ae = AE(ae_title="E2E-SCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
        assoc = ae.associate("127.0.0.1", port, ae_title="E2E-IN")
        try:
            assert assoc.send_c_store(ct_dataset(PatientID="E2E")).Status == 0
        finally:
            assoc.release()
        patients = session.get(node.api + "/metadata/patients").json()
        assert [p["PatientID"] for p in patients] == ["E2E"]
    finally:
        node.stop()
    assert node.process.returncode is not None
    assert not _echo(port, "E2E-IN")

    node = start_node(data_dir, tmp_path)
    try:
        deadline = time.monotonic() + 15
        while not _echo(port, "E2E-IN"):  # services start once the server runs
            assert time.monotonic() < deadline, "the SCP did not start again"
            time.sleep(0.1)
        scps = node.session().get(node.api + "/scps").json()
        assert [(s["name"], s["port"], s["running"]) for s in scps] == [("in", port, True)]
    finally:
        node.stop()
