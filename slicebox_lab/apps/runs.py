"""One run of an app on one series (or study), with its provenance, retries, and results back into the node.

A run is recorded in ``app_runs`` as it starts (app name and version, parameters, the input series and
their SOPInstanceUIDs, the image count, the trigger), and finished with its state, log, executed
notebook, outputs and error.  The app executes where the executor puts it (``executors.py``); the
server waits for it without blocking anything but the job's own thread, stops it when the job is
cancelled or its time is up, and then ingests its DICOM results through the one ingest path, with
source ``app:<name>``: all of them or, when one is refused, none (those already stored are deleted).
A failed attempt is tried again after ``retry_seconds`` × 2^(attempt-1), up to ``retries`` times.
Every text a run hands back has the node's secrets (its token) replaced by ``***`` before it is kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, SliceboxError
from ..index import apps as rows
from ..index._records import iso
from ..jobs import JobCancelled, JobContext, JobState
from ..model import FlatSeries, Source, to_json
from .execute import Outcome, RunSpec
from .executors import Executor
from .registry import App

if TYPE_CHECKING:
    from ..context import SliceboxContext

__all__ = ["RunRecord", "RunResult", "get_run", "list_runs", "run_with_retries"]

log = logging.getLogger(__name__)

#: how often a waiting run looks at its job's cancel flag
_POLL = 0.25


@dataclass
class RunResult:
    """What one run (all its attempts) came to."""

    state: JobState
    run_ids: list[int] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "run_ids": list(self.run_ids),
            "outputs": list(self.outputs),
            "values": dict(self.values),
            "error": self.error,
            "log": self.log[-20_000:],
        }


@dataclass(frozen=True)
class RunRecord:
    """A row of ``app_runs`` as the API shows it."""

    row: rows.RunRow

    def to_json(self, full: bool = False) -> dict[str, Any]:
        r = self.row
        out: dict[str, Any] = {
            "id": r.id, "job_id": r.job_id, "batch_id": r.batch_id, "app_id": r.app_id, "app": r.app_name,
            "version": r.app_version, "level": r.level, "subject_id": r.subject_id,
            "series_ids": json.loads(r.series_ids), "image_count": r.image_count,
            "parameters": json.loads(r.parameters), "trigger": r.trigger, "attempt": r.attempt, "state": r.state,
            "started": iso(r.started), "finished": None if r.finished is None else iso(r.finished),
            "outputs": json.loads(r.outputs), "values": json.loads(r.result_values), "error": r.error,
            "has_notebook": bool(r.notebook) if full else None,
        }  # fmt: skip
        if full:
            out["sop_instance_uids"] = json.loads(r.sop_instance_uids)
            out["log"] = r.log
        else:
            out.pop("has_notebook")
        return out


def list_runs(index: Any, start_index: int = 0, count: int = 100, **filters: Any) -> list[RunRecord]:
    return [RunRecord(row) for row in rows.runs_page(index, start_index, count, **filters)]


def get_run(index: Any, run_id: int) -> rows.RunRow:
    found = rows.run_by_id(index, run_id)
    if found is None:
        raise NotFound(f"app run {run_id} not found")
    return found


def _now() -> datetime:
    return datetime.now(UTC)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def input_series(context: SliceboxContext, app: App, level: str, subject_id: int) -> list[int]:
    """The series a run gets: the series itself, or the study's series but the app's own results."""
    if level == "series":
        return [subject_id]
    found = []
    for series_id in rows.series_of_study(context.index, subject_id):
        source = context.index.series_source(series_id)
        if not (source.source_type == "app" and source.source_name == app.name):
            found.append(series_id)
    return found


def _record(flat: FlatSeries) -> dict[str, Any]:
    """Patient, study and series attributes of a series in one dict (what ``AppInputs.series`` rows hold)."""
    out: dict[str, Any] = {}
    for part in (flat.patient, flat.study, flat.series):
        values = to_json(part)
        values.pop("id", None)
        out.update(values)
    out["series_id"] = flat.id
    out["study_id"] = flat.study.id
    out["patient_id"] = flat.patient.id
    return out


class _Attempt:
    """One attempt: its row, its folder, its spec."""

    def __init__(self, context: SliceboxContext, app: App, level: str, subject_id: int, parameters: dict[str, Any]):
        self.series_ids = input_series(context, app, level, subject_id)
        if not self.series_ids:
            raise NotFound(f"{level} {subject_id} has no series to run {app.name} on")
        self.images = rows.images_of_series(context.index, self.series_ids)
        if not self.images:
            raise NotFound(f"{level} {subject_id} has no images")
        self.folder = Path(tempfile.mkdtemp(prefix="app-run-", dir=context.spool))
        files = []
        for image in self.images:
            path = context.storage.local_path(image.storage_key)
            if path is None:  # a storage without files (tests): a copy for the app
                copy = self.folder / "inputs" / f"{image.id}.dcm"
                copy.parent.mkdir(exist_ok=True)
                copy.write_bytes(context.storage.read(image.storage_key))
                path = str(copy)
            files.append(str(path))
        output = self.folder / "outputs"
        output.mkdir()
        self.spec = RunSpec(
            app=app.name, version=app.version, kind=app.kind, target=app.target, code=app.code,
            parameters=parameters, files=tuple(files), file_series=tuple(i.series_id for i in self.images),
            series_records=tuple(_record(context.index.get_flat_series(s)) for s in self.series_ids),
            output_dir=str(output),
        )  # fmt: skip

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait(handle: Any, job: JobContext | None, timeout: float | None) -> Outcome:
    """The outcome, stopping the run when the job is cancelled (JobCancelled) or its time is up."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not handle.wait(_POLL):
        if job is not None and job.cancelled:
            handle.stop()
            raise JobCancelled(f"job {job.job_id} was cancelled")
        if deadline is not None and time.monotonic() > deadline:
            handle.stop()
            handle.wait(10)
            return Outcome(ok=False, error=f"the app ran longer than its timeout of {timeout:g} s and was stopped")
    return handle.outcome()


def _ingest(context: SliceboxContext, app: App, paths: Sequence[str], source_series: list[int]) -> list[dict[str, Any]]:
    """Every result through the one ingest path, or none: a refused one removes those stored before it."""
    stored: list[dict[str, Any]] = []
    try:
        for path in paths:
            result = context.ingest(Path(path).read_bytes(), Source("app", app.name), reidentify=False)
            image = result.image
            stored.append(
                {"image_id": image.id, "series_id": image.series_id, "SOPInstanceUID": image.SOPInstanceUID,
                 "SOPClassUID": image.SOPClassUID, "source_series_ids": source_series}
            )  # fmt: skip
    except Exception:
        context.delete_images([s["image_id"] for s in stored])
        raise
    return stored


def attempt_once(
    context: SliceboxContext,
    executor: Executor,
    app: App,
    level: str,
    subject_id: int,
    parameters: dict[str, Any],
    *,
    job: JobContext | None,
    batch_id: int | None,
    trigger: str,
    attempt: int,
    secrets: Callable[[], Iterable[str]],
) -> tuple[int, JobState, Outcome, list[dict[str, Any]]]:
    """One attempt, recorded: (run id, state, outcome, stored outputs)."""
    prepared = _Attempt(context, app, level, subject_id, parameters)
    run_id = rows.insert_run(
        context.index,
        {
            "job_id": None if job is None else job.job_id, "batch_id": batch_id, "app_id": app.id,
            "app_name": app.name, "app_version": app.version, "level": level, "subject_id": subject_id,
            "series_ids": json.dumps(prepared.series_ids),
            "sop_instance_uids": json.dumps([i.SOPInstanceUID for i in prepared.images]),
            "image_count": len(prepared.images), "parameters": json.dumps(parameters), "trigger": trigger,
            "attempt": attempt, "state": JobState.RUNNING, "started": _now(),
        },
    )  # fmt: skip
    state, stored = JobState.FAILED, []
    outcome = Outcome(ok=False, error="the run did not end")
    try:
        outcome = _wait(executor.submit(prepared.spec), job, app.timeout_seconds)
        if outcome.ok:
            try:
                stored = _ingest(context, app, outcome.outputs, prepared.series_ids)
                state = JobState.SUCCEEDED
            except SliceboxError as error:
                outcome.ok, outcome.error = (
                    False,
                    f"a result was refused by the node, nothing was kept: {error.message}",
                )
    except JobCancelled:
        state, outcome = JobState.CANCELLED, Outcome(ok=False, error="cancelled")
        raise
    except Exception as error:  # the node's own failure around the app (storage, executor)
        outcome = Outcome(ok=False, error=f"{type(error).__name__}: {error}", log=outcome.log)
        log.warning("app %s on %s %d failed", app.name, level, subject_id, exc_info=True)
    finally:
        known = list(secrets())
        outcome.log, outcome.error = redact(outcome.log, known), redact(outcome.error, known)
        outcome.notebook = redact(outcome.notebook, known)
        rows.finish_run(
            context.index,
            run_id,
            {"state": state, "finished": _now(), "log": outcome.log, "notebook": outcome.notebook,
             "outputs": json.dumps(stored), "result_values": json.dumps(outcome.values, default=str),
             "error": outcome.error},
        )  # fmt: skip
        prepared.close()
    return run_id, state, outcome, stored


def run_with_retries(
    context: SliceboxContext,
    executor: Executor,
    app: App,
    level: str,
    subject_id: int,
    parameters: dict[str, Any],
    *,
    job: JobContext | None = None,
    batch_id: int | None = None,
    trigger: str = "on demand",
    secrets: Callable[[], Iterable[str]] = lambda: (),
) -> RunResult:
    """Attempts until one succeeds or ``1 + app.retries`` failed, waiting the back-off in between."""
    result = RunResult(JobState.FAILED)
    for attempt in range(1, app.retries + 2):
        run_id, state, outcome, stored = attempt_once(
            context, executor, app, level, subject_id, parameters, job=job, batch_id=batch_id, trigger=trigger,
            attempt=attempt, secrets=secrets,
        )  # fmt: skip
        result.run_ids.append(run_id)
        result.state, result.error, result.log = state, outcome.error, outcome.log
        what = f"app {app.name} {app.version} on {level} {subject_id} (attempt {attempt})"
        if state == JobState.SUCCEEDED:
            result.outputs, result.values = stored, outcome.values
            context.index.add_log("INFO", "Apps", f"{what}: {len(stored)} result(s) stored")
            return result
        context.index.add_log("WARN", "Apps", f"{what} failed: {outcome.error[:500]}")
        if attempt <= app.retries:
            delay = app.retry_seconds * 2 ** (attempt - 1)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if job is not None:
                    job.check_cancelled()
                time.sleep(min(_POLL, max(0.0, end - time.monotonic())))
    return result
