"""The executors of app runs: a run stopped mid-way (a cancel, a timeout) frees its place for the next run.

A stopped local run kills its worker process; the pool must take that worker's failed answer and start a
replacement, or the next run waits for the dead worker for ever (a cancelled batch resumed never ran).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from slicebox_lab.apps.execute import FUNCTION, RunSpec
from slicebox_lab.apps.executors import LocalExecutor, executor_for
from slicebox_lab.errors import InvalidInput

CODE = """
def app(inputs, seconds=0.0):
    import os, time
    time.sleep(seconds)
    return {"pid": os.getpid()}
"""


def spec(tmp_path: Path, seconds: float) -> RunSpec:
    return RunSpec(app="sleepy", version="1", kind=FUNCTION, target="app", code=CODE,
                   parameters={"seconds": seconds}, files=(), file_series=(), series_records=(),
                   output_dir=str(tmp_path))  # fmt: skip


@pytest.mark.timeout(120)
def test_a_stopped_local_run_is_replaced_by_a_new_worker_and_the_next_run_goes_on(tmp_path: Path):
    executor = LocalExecutor(1)
    try:
        first = executor.submit(spec(tmp_path, 60))
        assert not first.wait(0.5)
        started = time.monotonic()
        first.stop()
        assert first.wait(5) and time.monotonic() - started < 10
        second = executor.submit(spec(tmp_path, 0))
        assert second.wait(60), "the next run waited for the stopped one's worker"
        outcome = second.outcome()
        assert outcome.ok, outcome.error
        assert outcome.values["pid"] in executor.pool.worker_pids()
    finally:
        executor.close()


def test_the_executor_setting_is_local_or_a_dask_address():
    assert executor_for("", 0).name == "local"
    with pytest.raises(InvalidInput, match="dask://host:port"):
        executor_for("http://cluster:8786", 1)
