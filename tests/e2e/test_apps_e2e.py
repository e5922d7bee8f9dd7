"""Apps on a real `jupyter slicebox` node (issue 19): the example app, as a function and as a notebook, on a CT
series dcmtk's storescu sends; failing apps; who may register apps; what app logs may hold.

One node serves the module's tests (a short ``stable_seconds``); they run in order and each leaves the node
as the next expects it (the CT apps are disabled once their test is done).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from labproc import phantom_series
from nodeproc import NodeProcess, start_node

sys.path.insert(0, str(Path(__file__).parents[1] / "net"))
import netutil  # noqa: E402
from netutil import run_dcmtk  # noqa: E402

storescp = netutil.storescp  # dcmtk storescp (AE STORESCP) writing into a folder: (port, folder)

pytest.importorskip("highdicom", reason="the example app needs highdicom: pip install -e '.[apps]'")
pytest.importorskip("papermill", reason="notebook apps need papermill: pip install -e '.[apps]'")

DCIODVFY = shutil.which("dciodvfy")
TOKEN = "secret-apps-token"
STABLE = 2.0
FUNCTION_APP = "body-and-lungs"
NOTEBOOK_APP = "body-and-lungs-notebook"
DICOM = {"Content-Type": "application/dicom"}


def wait_for(what: Callable[[], Any], timeout: float = 120, message: str = "timed out") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def finished_job(node: NodeProcess, job_id: int, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = node.session().get(f"{node.api}/jobs/{job_id}", timeout=10).json()
        return job if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return dict(wait_for(done, timeout, f"job {job_id} did not finish"))


def upload_ct(node: NodeProcess, n: int = 8, size: int = 48, **attributes: Any) -> int:
    series = set()
    for data in phantom_series(n, size, **attributes):
        r = node.session().post(node.api + "/images", data=data, headers=DICOM, timeout=30)
        assert r.status_code == 201, r.text
        series.add(r.json()["series_id"])
    (series_id,) = series
    return int(series_id)


def register(node: NodeProcess, body: dict[str, Any]) -> dict[str, Any]:
    r = node.session().post(node.api + "/apps", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return dict(r.json())


def run_on(node: NodeProcess, app_id: int, series_ids: list[int], **parameters: Any) -> dict[str, Any]:
    r = node.session().post(
        f"{node.api}/apps/{app_id}/runs", json={"series_ids": series_ids, "parameters": parameters}, timeout=30
    )
    assert r.status_code == 202, r.text
    return dict(r.json())


def runs_of(node: NodeProcess, **params: Any) -> list[dict[str, Any]]:
    return list(node.session().get(node.api + "/apps/runs", params=params, timeout=10).json())


def app_series(node: NodeProcess, app: str) -> list[dict[str, Any]]:
    """Flat series whose source is the app."""
    rows = node.session().get(node.api + "/metadata/flatseries", params={"count": 1000}, timeout=10).json()
    found = []
    for row in rows:
        source = node.session().get(f"{node.api}/metadata/series/{row['id']}/source", timeout=10).json()
        if source["source_type"] == "app" and source["source_name"] == app:
            found.append(row)
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    work = tmp_path_factory.mktemp("apps-node")
    # credentials in the server's environment, as a JupyterHub spawner would leave them: no app may see them
    env = dict(os.environ, SLICEBOX_TOKEN=TOKEN, JUPYTERHUB_API_TOKEN="hub-" + TOKEN)
    node = start_node(work / "data", work, TOKEN, f"--SliceboxApp.stable_seconds={STABLE}",
                      "--SliceboxApp.fsync=False", env=env)  # fmt: skip
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy is not installed (apt-get install dicom3tools)")
@pytest.mark.timeout(600)
def test_the_example_apps_segment_a_stable_ct_series_sent_by_storescu(
    node: NodeProcess, storescp: tuple[int, Path], tmp_path: Path
):
    import highdicom as hd

    s = node.session()
    ct_type = s.post(node.api + "/seriestypes", json={"name": "CT"}).json()
    s.post(
        f"{node.api}/seriestypes/{ct_type['id']}/rules", json={"attributes": [{"tag": "Modality", "values": ["CT"]}]}
    )
    seg_type = s.post(node.api + "/seriestypes", json={"name": "Segmentation"}).json()
    s.post(
        f"{node.api}/seriestypes/{seg_type['id']}/rules", json={"attributes": [{"tag": "Modality", "values": ["SEG"]}]}
    )
    register(node, {"name": FUNCTION_APP, "version": "1.0", "series_types": ["CT"],
                    "function": "slicebox_lab.apps.examples.body_and_lungs:segment"})  # fmt: skip
    register(node, {"name": NOTEBOOK_APP, "version": "1.0", "series_types": ["CT"], "notebook": "body_and_lungs.ipynb"})
    # the results go on to a PACS (dcmtk storescp) by forwarding rules, as any image would
    port, received = storescp
    pacs = s.post(node.api + "/scus", json={"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port})
    assert pacs.status_code == 201, pacs.text
    for app in (FUNCTION_APP, NOTEBOOK_APP):
        destination = {"type": "scu", "id": pacs.json()["id"]}
        rule = {"source": {"sourceType": "app", "sourceName": app}, "destination": destination, "quietSeconds": 1}
        assert s.post(node.api + "/forwarding/rules", json=rule).status_code == 201

    scp = s.post(node.api + "/scps", json={"name": "ct", "ae_title": "NODE", "port": 0, "host": "127.0.0.1"}).json()
    folder = tmp_path / "ct"
    folder.mkdir()
    files = []
    for n, data in enumerate(phantom_series(12, 64, PatientName="Apps^Storescu", PatientID="APPS-1")):
        (folder / f"{n:03d}.dcm").write_bytes(data)
        files.append(str(folder / f"{n:03d}.dcm"))
    sent = run_dcmtk("storescu", "-aec", "NODE", "127.0.0.1", str(scp["port"]), *files, timeout=120)
    assert sent.returncode == 0, sent.stderr
    last_image = time.time()
    ct = s.get(node.api + "/metadata/flatseries", params={"filter": "Apps^Storescu"}).json()
    (ct_series,) = [row for row in ct if row["series"]["Modality"] == "CT"]

    def succeeded() -> list[dict[str, Any]]:
        runs = runs_of(node, series=ct_series["id"])
        return runs if len(runs) >= 2 and all(r["state"] != "RUNNING" for r in runs) else []

    runs = wait_for(succeeded, 240, "the apps did not run on the CT series")
    assert {r["app"]: r["state"] for r in runs} == {FUNCTION_APP: "SUCCEEDED", NOTEBOOK_APP: "SUCCEEDED"}, runs
    for run in runs:
        started = time.mktime(time.strptime(run["started"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert started >= last_image + STABLE - 1.5, "an app ran before the series was stable"
        assert run["trigger"] == "stable" and run["version"] == "1.0" and run["image_count"] == 12
        full = s.get(f"{node.api}/apps/runs/{run['id']}").json()
        assert len(full["sop_instance_uids"]) == 12
        (output,) = run["outputs"]
        assert output["source_series_ids"] == [ct_series["id"]]

        # the SEG: stored in the CT's study with source app:<name>, valid for dciodvfy, read back by highdicom
        seg_flat = s.get(f"{node.api}/metadata/series/{output['series_id']}").json()
        assert seg_flat["study_id"] == ct_series["study"]["id"]
        assert s.get(f"{node.api}/metadata/series/{output['series_id']}/source").json() == {
            **s.get(f"{node.api}/metadata/series/{output['series_id']}/source").json(),
            "source_type": "app",
            "source_name": run["app"],
        }
        path = tmp_path / f"{run['app']}.dcm"
        path.write_bytes(s.get(f"{node.api}/images/{output['image_id']}").content)
        check = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors
        seg = hd.seg.segread(path)
        assert [d.segment_label for d in seg.SegmentSequence] == ["Body", "Lungs"]
        assert seg.StudyInstanceUID == ct_series["study"]["StudyInstanceUID"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series["series"]["SeriesInstanceUID"]
        types = s.get(f"{node.api}/metadata/series/{output['series_id']}/seriestypes").json()
        assert [t["name"] for t in types] == ["Segmentation"]  # classified like any image
    notebook_run = next(r for r in runs if r["app"] == NOTEBOOK_APP)
    executed = s.get(f"{node.api}/apps/runs/{notebook_run['id']}/notebook").json()
    assert any("body (yellow)" in json.dumps(c.get("outputs", [])) or c.get("outputs") for c in executed["cells"])

    # forwarded to the PACS: both SEGs arrive at storescp
    def delivered() -> list[pydicom.Dataset]:
        found = [pydicom.dcmread(p) for p in received.iterdir() if p.is_file()]
        return found if len(found) >= 2 else []

    arrived = wait_for(delivered, 120, "the SEGs were not forwarded to storescp")
    assert sorted(ds.Modality for ds in arrived) == ["SEG", "SEG"]
    # the SEG series did not trigger the CT apps, and each app ran once on the CT
    time.sleep(STABLE + 1)
    assert len(runs_of(node, series=ct_series["id"])) == 2
    for app in s.get(node.api + "/apps").json():  # the next tests upload CTs of their own
        assert s.put(f"{node.api}/apps/{app['id']}", json={"enabled": False}).json()["enabled"] is False


RAISING = """
def app(inputs, mode="raise"):
    from slicebox_lab.apps import AppResult
    from slicebox_lab.apps.examples.body_and_lungs import segment

    result = segment(inputs)  # a valid SEG, made before the failure: it must not be stored
    if mode == "raise":
        raise RuntimeError("the app failed on purpose")
    return AppResult([*result.datasets, "not a dataset"])
"""

KILLED = """
def app(inputs, pid_file=""):
    import os, pathlib, time
    path = pathlib.Path(pid_file)
    if path.exists():
        raise ValueError("the second attempt fails at once")
    path.write_text(str(os.getpid()))
    time.sleep(120)
"""

ERROR_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "files = []\n", "outputs": [],
         "execution_count": None},
        {"cell_type": "code", "metadata": {}, "source": "print('reading', len(files), 'files')\n", "outputs": [],
         "execution_count": None},
        {"cell_type": "code", "metadata": {}, "source": "raise ValueError('a bad cell')\n", "outputs": [],
         "execution_count": None},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}  # fmt: skip


@pytest.mark.timeout(600)
def test_failing_apps_leave_failed_runs_with_their_log_store_nothing_and_retry(node: NodeProcess, tmp_path: Path):
    s = node.session()
    series_id = upload_ct(node, PatientName="Apps^Failing", PatientID="APPS-2")
    images_before = len(s.get(node.api + "/metadata/images", params={"count": 1000}).json())
    raising = register(node, {"name": "raising", "function": "app", "code": RAISING, "retries": 1,
                              "retry_seconds": 0.2})  # fmt: skip
    notebook = register(node, {"name": "error-cell", "notebook": ERROR_NOTEBOOK, "retries": 0})
    killed = register(node, {"name": "killed", "function": "app", "code": KILLED, "retries": 1, "retry_seconds": 0.2})

    for app, parameters in ((raising, {"mode": "raise"}), (raising, {"mode": "half"})):
        job = finished_job(node, run_on(node, app["id"], [series_id], **parameters)["id"])
        assert job["state"] == "FAILED", job
        attempts = runs_of(node, job=job["id"])
        assert [r["attempt"] for r in attempts] == [2, 1] and all(r["state"] == "FAILED" for r in attempts)
        full = s.get(f"{node.api}/apps/runs/{attempts[0]['id']}").json()
        if parameters["mode"] == "raise":
            assert "RuntimeError: the app failed on purpose" in full["error"]
            assert "Traceback (most recent call last)" in full["log"] and "RuntimeError" in full["log"]
        else:
            assert "result 2 is a str, not a pydicom Dataset" in full["error"], full["error"]

    job = finished_job(node, run_on(node, notebook["id"], [series_id])["id"])
    assert job["state"] == "FAILED"
    (attempt,) = runs_of(node, job=job["id"])
    full = s.get(f"{node.api}/apps/runs/{attempt['id']}").json()
    assert "ValueError: a bad cell" in full["error"] and "ValueError" in full["log"], full
    executed = s.get(f"{node.api}/apps/runs/{attempt['id']}/notebook").json()
    assert "a bad cell" in json.dumps(executed["cells"][-1]["outputs"])
    assert "reading 8 files" in json.dumps([c.get("outputs") for c in executed["cells"]])  # papermill adds a cell

    pid_file = tmp_path / "app.pid"
    job_id = run_on(node, killed["id"], [series_id], pid_file=str(pid_file))["id"]
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the app did not start"))
    os.kill(pid, 9)  # the app's process dies mid-run (as the OOM killer would)
    job = finished_job(node, job_id)
    assert job["state"] == "FAILED"
    first, second = sorted(runs_of(node, job=job_id), key=lambda r: r["attempt"])
    assert "process died" in first["error"], first
    assert "the second attempt fails at once" in second["error"]

    # nothing of any failing run was stored, and the node serves as before
    assert not [x for x in (app_series(node, a) for a in ("raising", "error-cell", "killed")) if x]
    assert len(s.get(node.api + "/metadata/images", params={"count": 1000}).json()) == images_before
    assert s.get(node.api + "/system/health").status_code == 200
    assert upload_ct(node, 2, PatientName="Apps^After", PatientID="APPS-3") > series_id


LEAKY = """
def app(inputs):
    import glob, json, os
    print("environment:", {k: v for k, v in os.environ.items() if "TOKEN" in k})
    for path in glob.glob(os.path.join(os.environ.get("JUPYTER_RUNTIME_DIR", "/nonexistent"), "jpserver-*.json")):
        token = json.load(open(path))["token"]
        print("the server's token is", token)
        raise RuntimeError("leaking " + token)
    return {"found": "nothing"}
"""


@pytest.mark.timeout(300)
def test_only_administrators_register_apps_and_app_logs_hold_no_token(node: NodeProcess):
    s = node.session()
    for name, role in (("ada", "ADMINISTRATOR"), ("uma", "USER")):
        r = s.post(node.api + "/users", json={"user": name, "role": role, "password": f"{name}-password-1"})
        assert r.status_code == 201, r.text
    ada, uma = requests.Session(), requests.Session()
    ada.auth, uma.auth = ("ada", "ada-password-1"), ("uma", "uma-password-1")
    body = {"name": "leaky", "function": "app", "code": LEAKY, "retries": 0}
    assert uma.post(node.api + "/apps", json=body).status_code == 403
    created = ada.post(node.api + "/apps", json=body)
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    assert uma.put(f"{node.api}/apps/{app_id}", json={"enabled": False}).status_code == 403
    assert uma.delete(f"{node.api}/apps/{app_id}").status_code == 403
    assert uma.get(node.api + "/apps").status_code == 200  # a USER lists the apps and runs them on demand
    series_id = upload_ct(node, 2, PatientName="Apps^Leak", PatientID="APPS-4")
    started = uma.post(f"{node.api}/apps/{app_id}/runs", json={"series_ids": [series_id]})
    assert started.status_code == 202, started.text
    job = finished_job(node, started.json()["id"])
    (run,) = runs_of(node, job=job["id"])
    full = s.get(f"{node.api}/apps/runs/{run['id']}").json()
    assert "the server's token is ***" in full["log"], full["log"]
    everything = json.dumps([job, full, s.get(node.api + "/log", params={"count": 50}).json()])
    assert TOKEN not in everything
    assert "JUPYTERHUB_API_TOKEN" not in full["log"] and "SLICEBOX_TOKEN" not in full["log"]
    assert ada.put(f"{node.api}/apps/{app_id}", json={"version": "2"}).json()["version"] == "2"
    assert ada.delete(f"{node.api}/apps/{app_id}").status_code == 204
