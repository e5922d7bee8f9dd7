"""The apps service: runs each enabled app once per stable series (or study) of its type, and on demand.

Stable.  A series is stable when no image arrived in it for ``stable_seconds`` (Orthanc's ``StableAge``),
whatever the source (SCP, upload, watch, box, DICOMweb, another app).  The ``ImageAdded`` subscriber only
notes the time in memory; the service's thread records new series (and studies) in ``app_pending``, so a
restart loses none (after a restart they count as having just received an image), and once one is stable
it runs every enabled app whose series types or rule match it (a study: any of its series), as a job
(kind ``app-run``).  An app runs once per series: a series that grew after its run is run again only
when the app says so (``rerun_on_growth``).  An app never runs on its own results (source ``app:<name>``).

On demand.  ``submit_batch`` runs an app on a selection or a cohort as one job (kind ``app-batch``) with
progress (one step per series), cancel (the running app is stopped) and resume (series that already have
a succeeded run in the batch are skipped, so a batch resumed after a restart gives one result per series).

Both kinds run in a lane of their own of the job manager: long runs never hold up sends or re-classifications.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydicom

from ..errors import InvalidInput, NotFound, SliceboxError
from ..events import ImageAdded
from ..index import apps as rows
from ..jobs import FINISHED_STATES, Job, JobContext, JobFailed, JobState
from ..organize.seriestypes import Rule, classifier, rule_matches
from .executors import Executor, LocalExecutor
from .registry import App, enabled_apps, get_app
from .runs import run_with_retries

if TYPE_CHECKING:
    from ..context import SliceboxContext

__all__ = ["BATCH_JOB", "RUN_JOB", "AppService"]

log = logging.getLogger(__name__)

RUN_JOB = "app-run"
BATCH_JOB = "app-batch"
LANE = "apps"
#: the most series one on-demand batch takes
MAX_BATCH = 10_000
_ORPHAN_CHECK_SECONDS = 10.0


class AppService:
    """Stable-series triggers and the runners of app jobs; one per node (``SliceboxApp`` builds it)."""

    name = "apps"

    def __init__(
        self,
        context: SliceboxContext,
        executor: Executor | None = None,
        stable_seconds: float = 30.0,
        tick: float = 1.0,
        secrets: Callable[[], Iterable[str]] = lambda: (),
        lanes: int = 1,
    ) -> None:
        self._context_ref = weakref.ref(context)
        self._index = context.index
        self.executor: Executor = executor if executor is not None else LocalExecutor(1)
        self.stable_seconds = float(stable_seconds)
        self.tick = tick
        self.secrets = secrets
        self._lock = threading.Lock()
        #: (level, id) → monotonic time of its last image; the ones recorded in app_pending
        self._last: dict[tuple[str, int], float] = {}
        self._recorded: set[tuple[str, int]] = set()
        self._study_of: dict[int, int] = {}
        #: (app id, level, id) with a run job queued or running
        self._submitted: dict[tuple[int, str, int], int] = {}
        self._apps: list[App] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._last_orphan_check = 0.0
        context.jobs.register(RUN_JOB, self._run_job, lane=LANE, threads=lanes)
        context.jobs.register(BATCH_JOB, self._batch_job, lane=LANE, threads=lanes)

    @property
    def _context(self) -> SliceboxContext:
        context = self._context_ref()
        if context is None:
            raise SliceboxError("the node of this apps service is gone")
        return context

    # ------------------------------------------------------------------ service

    def start(self) -> None:
        if self._thread is not None:
            return
        self.apps_changed()
        now = time.monotonic()
        for level, subject, _added in rows.pending(self._index):  # a restart: stable from now on
            self._last[(level, subject)] = now
            self._recorded.add((level, subject))
        self._fail_orphans()
        self._unsubscribe = self._context.events.subscribe(ImageAdded, self._on_image_added)
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="slicebox-apps", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            self._thread = None
        self.executor.close()

    def apps_changed(self) -> None:
        """Read the enabled apps again (after a registration, a change, a deletion)."""
        loaded = enabled_apps(self._index)
        with self._lock:
            self._apps = loaded

    def _enabled(self) -> list[App]:
        with self._lock:
            if self._apps is not None:
                return self._apps
        self.apps_changed()
        with self._lock:
            return self._apps or []

    # ------------------------------------------------------------------ stable series

    def _on_image_added(self, event: ImageAdded) -> None:
        """On the ingest thread: note the time of the series' (and study's) last image; never blocks on SQL
        but once per new series (its study)."""
        apps = self._enabled()
        if not any(app.triggered for app in apps):
            return
        series_id = event.image.series_id
        now = time.monotonic()
        keys = [("series", series_id)]
        if any(app.level == "study" for app in apps):
            study = self._study_of.get(series_id)
            if study is None:
                study = rows.study_of_series(self._index, series_id)
                if study is not None:
                    self._study_of[series_id] = study
            if study is not None:
                keys.append(("study", study))
        with self._lock:
            for key in keys:
                self._last[key] = now

    def _work(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_once()
            except Exception:
                log.exception("apps: a round failed; trying again")

    def run_once(self, now: float | None = None) -> None:
        """Record new pending series, trigger the stable ones, fail runs a dead server left running."""
        now = time.monotonic() if now is None else now
        with self._lock:
            new = [key for key in self._last if key not in self._recorded]
            stable = [key for key, last in self._last.items() if now - last >= self.stable_seconds]
        if new:
            rows.mark_pending(self._index, new, datetime.now(UTC))
            with self._lock:
                self._recorded.update(new)
        for level, subject in stable:
            try:
                self.trigger(level, subject)
            except Exception:
                log.exception("apps: %s %d could not be handed to its apps", level, subject)
            with self._lock:
                self._last.pop((level, subject), None)
                self._recorded.discard((level, subject))
            rows.clear_pending(self._index, level, subject)
        if now - self._last_orphan_check > _ORPHAN_CHECK_SECONDS:
            self._last_orphan_check = now
            self._fail_orphans()

    def _fail_orphans(self) -> None:
        rows.fail_orphaned_runs(self._index, JobState.RUNNING, FINISHED_STATES, JobState.FAILED,
                                "the server running it stopped; resume its job to run it again")  # fmt: skip

    def pending(self) -> list[tuple[str, int]]:
        """The series and studies waiting to be stable (tests)."""
        with self._lock:
            return sorted(self._last)

    # ------------------------------------------------------------------ triggers

    def trigger(self, level: str, subject_id: int) -> list[Job]:
        """Run every enabled app of ``level`` that matches the stable series (or study) and should run."""
        submitted = []
        candidates = [a for a in self._enabled() if a.level == level and a.triggered]
        if not candidates:
            return []
        classifier(self._context).wait_idle(10)  # its series types are assigned by now
        for app in candidates:
            if self._matches(app, level, subject_id) and self._should_run(app, level, subject_id):
                submitted.append(self.submit_run(app, level, subject_id, trigger="stable"))
        return submitted

    def _matches(self, app: App, level: str, subject_id: int) -> bool:
        series_ids = [subject_id] if level == "series" else rows.series_of_study(self._index, subject_id)
        for series_id in series_ids:
            try:
                source = self._index.series_source(series_id)
            except NotFound:
                continue
            if source.source_type == "app" and source.source_name == app.name:
                continue  # never on its own results
            if app.series_types and set(app.series_types) & rows.series_type_names(self._index, series_id):
                return True
            if app.rule and self._rule_matches(app, series_id):
                return True
        return False

    def _rule_matches(self, app: App, series_id: int) -> bool:
        images = rows.images_of_series(self._index, [series_id])
        if not images:
            return False
        try:
            _, stream = self._context.open_image(images[0].id)
        except NotFound:
            return False
        with stream:
            ds = pydicom.dcmread(stream, stop_before_pixels=True, force=True)
        return rule_matches(Rule(0, 0, app.rule), ds)

    def _should_run(self, app: App, level: str, subject_id: int) -> bool:
        with self._lock:
            job_id = self._submitted.get((app.id, level, subject_id))
        if job_id is not None and not self._context.jobs.get(job_id).is_finished:
            return False  # already queued or running
        last = rows.last_run(self._index, app.id, level, subject_id)
        if last is None:
            return True
        if not app.rerun_on_growth:
            return False
        series = [subject_id] if level == "series" else rows.series_of_study(self._index, subject_id)
        return len(rows.images_of_series(self._index, series)) > last[1]

    def submit_run(
        self, app: App, level: str, subject_id: int, *, trigger: str, parameters: dict[str, Any] | None = None,
        owner: str = "",
    ) -> Job:  # fmt: skip
        """One run of ``app`` on the series (or study) as a job."""
        job = self._context.jobs.submit(
            RUN_JOB,
            f"{app.name} {app.version} on {level} {subject_id}",
            {"app_id": app.id, "app": app.name, "version": app.version, "level": level, "subject_id": subject_id,
             "parameters": {**app.parameters, **(parameters or {})}, "trigger": trigger},
            owner=owner or f"app:{app.name}",
            total=1,
        )  # fmt: skip
        with self._lock:
            self._submitted[(app.id, level, subject_id)] = job.id
        return job

    # ------------------------------------------------------------------ on demand

    def submit_batch(self, app_id: Any, series_ids: Any, parameters: Any = None, owner: str = "") -> Job:
        """Run an app on each of ``series_ids`` (its level: each one's study) as one job with progress."""
        app = get_app(self._index, app_id)
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be an object of names and values')
        if not isinstance(series_ids, list | tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in series_ids
        ):
            raise InvalidInput('give the series as "series_ids": [1, 2, 3] or a flat-series "query"')
        ids = list(dict.fromkeys(series_ids))
        if not ids:
            raise InvalidInput("no series to run the app on")
        if len(ids) > MAX_BATCH:
            raise InvalidInput(f"one run takes at most {MAX_BATCH} series")
        subjects = ids
        if app.level == "study":
            studies = [rows.study_of_series(self._index, i) for i in ids]
            subjects = list(dict.fromkeys(s for s in studies if s is not None))
        else:
            for series_id in ids:
                self._index.get_flat_series(series_id)  # 404 for an unknown series
        what = f"{len(subjects)} {app.level}" + ("" if len(subjects) == 1 else " (each)")
        return self._context.jobs.submit(
            BATCH_JOB,
            f"{app.name} {app.version} on {what}",
            {"app_id": app.id, "app": app.name, "version": app.version, "level": app.level,
             "subject_ids": subjects, "parameters": {**app.parameters, **parameters}},
            owner=owner,
            total=len(subjects),
        )  # fmt: skip

    # ------------------------------------------------------------------ runners

    def _app_of(self, job: JobContext) -> App:
        try:
            return get_app(self._index, int(job.parameters["app_id"]))
        except NotFound:
            raise JobFailed(f"app {job.parameters.get('app')!r} was deleted before it could run") from None

    def _run_job(self, job: JobContext) -> dict[str, Any]:
        self._fail_orphans()  # a resumed job's earlier runs, cut short by a dead server, are failed first
        app = self._app_of(job)
        p = job.parameters
        result = run_with_retries(
            self._context, self.executor, app, str(p["level"]), int(p["subject_id"]), dict(p["parameters"]),
            job=job, trigger=str(p.get("trigger", "on demand")), secrets=self.secrets,
        )  # fmt: skip
        job.progress(1, 1)
        answer = {"app": app.name, "version": app.version, **result.to_json()}
        if result.state != JobState.SUCCEEDED:
            raise JobFailed(f"{app.name} failed on {p['level']} {p['subject_id']}: {result.error}", answer)
        return answer

    def _batch_root(self, job: JobContext) -> int:
        """The first job of a batch (resumes carry on its runs)."""
        found = job.resume_from.get("job_id")
        root = job.job_id
        while found is not None:
            root = int(found)
            found = self._context.jobs.get(root).parameters.get("resume_from", {}).get("job_id")
        return root

    def _batch_job(self, job: JobContext) -> dict[str, Any]:
        self._fail_orphans()
        app = self._app_of(job)
        p = job.parameters
        subjects = [int(s) for s in p["subject_ids"]]
        batch = self._batch_root(job)
        done = rows.succeeded_subjects(self._index, batch, JobState.SUCCEEDED) & set(subjects)
        job.progress(len(done), len(subjects))
        failed: dict[str, str] = {}
        run_ids: list[int] = []
        for subject in subjects:
            if subject in done:
                continue
            job.check_cancelled()
            result = run_with_retries(
                self._context, self.executor, app, str(p["level"]), subject, dict(p["parameters"]), job=job,
                batch_id=batch, trigger="on demand", secrets=self.secrets,
            )  # fmt: skip
            run_ids.extend(result.run_ids)
            if result.state == JobState.SUCCEEDED:
                done.add(subject)
                job.count("succeeded")
            else:
                failed[str(subject)] = result.error
                job.count("failed")
            job.progress(len(done) + len(failed), len(subjects))
        answer = {"app": app.name, "version": app.version, "batch_id": batch, "succeeded": len(done),
                  "failed": failed, "run_ids": run_ids}  # fmt: skip
        if failed:
            raise JobFailed(
                f"{app.name} failed on {len(failed)} of {len(subjects)} {p['level']}: resume to retry", answer
            )
        return answer


def apps_service_factory(context: SliceboxContext) -> AppService:
    """The factory ``services.service_factories`` lists, with the defaults; ``SliceboxApp`` builds its own."""
    return AppService(context)
