"""Apps: a research group's own code, run by the node on every stable series of a type, results back as DICOM.

Modules: ``registry`` (what an app declares: a function or a notebook, its triggers, level, parameters,
retries), ``inputs`` (what an app gets, :class:`AppInputs`, and may return, :class:`AppResult`),
``execute`` (what runs an app, in a worker process or on Dask: functions directly, notebooks through
papermill), ``executors`` (local worker processes, a Dask cluster), ``runs`` (one run with its provenance,
retries, results ingested with source ``app:<name>``) and ``service`` (stable series and studies, the
jobs of triggered and on-demand runs).  ``examples/`` holds the shipped example app, as a function and
as a notebook.  An app is code that runs with the node's rights: only administrators register one.
"""

from __future__ import annotations

from .inputs import AppInputs, AppResult

__all__ = ["AppInputs", "AppResult"]
