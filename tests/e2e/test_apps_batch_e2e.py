"""An app run on demand over a 20-series cohort (issue 19): progress, cancel, resume after a server restart,
exactly one result per series; in the node's worker processes and on a Dask cluster (``LocalCluster`` with
worker processes on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodeproc import NodeProcess, start_node
from test_apps_e2e import app_series, finished_job, register, runs_of, upload_ct, wait_for

pytest.importorskip("highdicom", reason="the example app needs highdicom: pip install -e '.[apps]'")

SERIES = 20
TOKEN = "batch-token"
#: the example app, slowed down so that a cancel and a restart land in the middle of the batch
SLOW = """
def app(inputs, delay=0.4):
    import time
    from slicebox_lab.apps.examples.body_and_lungs import segment

    time.sleep(delay)
    return segment(inputs)
"""


@pytest.fixture(params=["local", "dask"])
def executor(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "local":
        yield "local"
        return
    distributed = pytest.importorskip(
        "distributed", reason="the Dask executor needs distributed: pip install -e '.[apps]'"
    )
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    try:
        yield "dask://" + cluster.scheduler_address.removeprefix("tcp://")
    finally:
        cluster.close()


def _job(node: NodeProcess, job_id: int) -> dict[str, Any]:
    return dict(node.session().get(f"{node.api}/jobs/{job_id}", timeout=10).json())


@pytest.mark.timeout(600)
def test_a_cohort_batch_shows_progress_cancels_resumes_after_a_restart_with_one_result_per_series(
    tmp_path: Path, executor: str
):
    data = tmp_path / "data"
    options = ("--SliceboxApp.fsync=False", f"--SliceboxApp.app_executor={executor}")
    node = start_node(data, tmp_path, TOKEN, *options)
    try:
        app = register(node, {"name": "cohort", "version": "1", "function": "app", "code": SLOW, "retries": 0})
        for n in range(SERIES):
            upload_ct(node, 4, 32, PatientName=f"Cohort^{n:02d}", PatientID=f"COHORT-{n:02d}")
        query = {
            "query_properties": [{"property_name": "PatientID", "operator": "wildcard", "property_value": "COHORT-*"}]
        }
        r = node.session().post(f"{node.api}/apps/{app['id']}/runs", json={"query": query}, timeout=30)
        assert r.status_code == 202, r.text
        first = r.json()
        assert first["kind"] == "app-batch" and first["progress_total"] == SERIES

        # progress, then cancel: the running app is stopped, the batch is CANCELLED part of the way
        wait_for(lambda: _job(node, first["id"])["progress_done"] >= 3, 120, "no progress")
        assert node.session().post(f"{node.api}/jobs/{first['id']}/cancel").status_code == 200
        cancelled = finished_job(node, first["id"])
        assert cancelled["state"] == "CANCELLED" and 3 <= cancelled["progress_done"] < SERIES, cancelled

        # resume, then the server dies mid-batch (SIGKILL) and starts again on the same data
        second = node.session().post(f"{node.api}/jobs/{first['id']}/resume").json()
        wait_for(lambda: _job(node, second["id"])["progress_done"] >= cancelled["progress_done"] + 3, 120, "stuck")
        node.kill()
        node = start_node(data, tmp_path, TOKEN, *options)
        interrupted = finished_job(node, second["id"], timeout=90)  # a dead server's job is found and failed
        assert interrupted["state"] == "FAILED", interrupted
        third = node.session().post(f"{node.api}/jobs/{second['id']}/resume").json()
        done = finished_job(node, third["id"], timeout=300)
        assert done["state"] == "SUCCEEDED", done
        assert done["progress_done"] == done["progress_total"] == SERIES

        # no run is left RUNNING: one under way at the cancel was CANCELLED (unless the cancel fell between two
        # runs), the one the kill cut short was FAILED as the batch was resumed
        every = runs_of(node, batch=first["id"], count=1000)
        assert {r["state"] for r in every} <= {"SUCCEEDED", "CANCELLED", "FAILED"}, every
        for run in every:
            if run["state"] == "FAILED":
                assert "the server running it stopped" in run["error"], run
        # exactly one result per series
        succeeded = runs_of(node, batch=first["id"], state="SUCCEEDED", count=1000)
        assert sorted(r["subject_id"] for r in succeeded) == sorted({r["subject_id"] for r in succeeded})
        assert len(succeeded) == SERIES
        segs = app_series(node, "cohort")
        assert len(segs) == SERIES
        sources = {r["outputs"][0]["source_series_ids"][0] for r in succeeded}
        assert len(sources) == SERIES
    finally:
        node.stop()
