"""The jobs and logs area of the client: background jobs (list, follow, cancel, resume), the log and the audit trail."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..model import FINISHED_STATES
from .base import ClientBase, frame

__all__ = ["JobsMixin"]

JOB_COLUMNS = [
    "id",
    "kind",
    "description",
    "state",
    "progress_done",
    "progress_total",
    "counts",
    "parameters",
    "result",
    "error",
    "owner",
    "created",
    "started",
    "finished",
]
LOG_COLUMNS = ["id", "created", "entry_type", "subject", "message"]


class JobsMixin(ClientBase):
    """``jobs``, ``log`` and ``audit`` routes."""

    def jobs(self, *, state: str | None = None, kind: str | None = None, limit: int | None = None) -> pd.DataFrame:
        return frame(self.get_all("jobs", {"state": state, "kind": kind}, limit=limit), JOB_COLUMNS)

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.get(f"jobs/{int(job_id)}"))

    def wait_job(
        self, job_id: int, *, progress: bool = True, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Follow a job until SUCCEEDED, FAILED or CANCELLED; the final job (check ``state``).  Each request is a
        long poll (``?wait=interval``): the node answers as soon as the job finishes, and the progress bar moves
        every ``interval`` seconds."""
        return self._poll(
            lambda: dict(self.get(f"jobs/{int(job_id)}", wait=min(interval, 60))),
            lambda j: j.get("state") in FINISHED_STATES,
            lambda j: (int(j.get("progress_done") or 0), j.get("progress_total")),
            f"job {job_id}",
            progress,
            timeout,
            0.0,  # the node held each answer back for up to ``interval``
        )

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return dict(self.post(f"jobs/{int(job_id)}/cancel"))

    def resume_job(self, job_id: int) -> dict[str, Any]:
        return dict(self.post(f"jobs/{int(job_id)}/resume"))

    def log(self, limit: int | None = 100, *, subject: str | None = None, type: str | None = None) -> pd.DataFrame:
        """Log entries, newest first."""
        return frame(self.get_all("log", {"subject": subject, "type": type}, limit=limit), LOG_COLUMNS)

    def audit(self, limit: int | None = 100, **params: Any) -> pd.DataFrame:
        """The audit trail, newest first (``user``, ``action``, ``since``, ``until`` as the route takes them)."""
        return frame(
            self.get_all("audit", params, limit=limit),
            ["id", "created", "user", "action", "method", "path", "status", "remote_ip", "detail"],
        )

    def clear_log(self) -> None:
        self.delete("log")
