"""What runs an app, in a worker process of the node or on a Dask worker: :func:`run_app`.

A module-level function of a small, picklable :class:`RunSpec` (file paths, not pixels) returning a small
:class:`Outcome`; it never raises for the app's own failures (an exception, an error cell): the outcome
says what failed, with the log and the traceback, so the server records it the same way whichever
executor ran it.  DICOM results are written as Part-10 files into the run's output folder and checked
as the ingest will check them (``dicom.parse_part10``): one that would be refused fails the whole run,
before anything is stored.  Notebook apps run through papermill (parameters cell, executed notebook kept).

The app runs with the rights of the node's worker process; the process drops the environment variables
that hold credentials (tokens, passwords) before it runs any app, and the server removes its own token
from everything a run hands back (``service.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .inputs import AppInputs, AppResult

__all__ = ["FUNCTION", "NOTEBOOK", "Outcome", "RunSpec", "run_app"]

FUNCTION = "function"
NOTEBOOK = "notebook"
#: the most log text a run keeps (the end is kept: that is where the error is)
MAX_LOG = 200_000
#: attributes a result gets from its source when it has none (so it lands in the same patient and study)
LINKED_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip
_CREDENTIALS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class RunSpec:
    """One run of an app, as a worker gets it."""

    app: str
    version: str
    kind: str
    #: "module:function", "/path/file.py:function", the function's name in ``code``, or a notebook's path
    target: str
    #: inline Python source or notebook JSON ("" when ``target`` names it)
    code: str
    parameters: dict[str, Any]
    files: tuple[str, ...]
    file_series: tuple[int, ...]
    series_records: tuple[dict[str, Any], ...]
    output_dir: str


@dataclass
class Outcome:
    """What a run handed back: its results (file paths), values, log, executed notebook, or its failure."""

    ok: bool
    log: str = ""
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    notebook: str = ""


def run_app(spec: RunSpec) -> Outcome:
    """Run the app of ``spec`` and hand back its outcome (never raises for the app's failures)."""
    if multiprocessing.parent_process() is not None:
        _drop_credentials()  # a worker of the node: nothing of the server's secrets for the app
    buffer = io.StringIO()
    outcome = Outcome(ok=False)
    with _captured(buffer):
        try:
            if spec.kind == NOTEBOOK:
                outcome = _run_notebook(spec)
            else:
                outcome = _run_function(spec)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the app's failure is the run's outcome
            print(_ANSI.sub("", "".join(traceback.format_exception(error))), file=sys.stderr)
            outcome = Outcome(ok=False, error=f"{type(error).__name__}: {error}", notebook=outcome.notebook)
    text = buffer.getvalue()
    outcome.log = text[-MAX_LOG:] if len(text) > MAX_LOG else text
    return outcome


def _drop_credentials() -> None:
    for name in list(os.environ):
        if _CREDENTIALS.search(name):
            del os.environ[name]


@contextlib.contextmanager
def _captured(buffer: io.StringIO) -> Iterator[None]:
    """print(), warnings and logging of the run into ``buffer``."""
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            logging.captureWarnings(True)
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)


def _inputs(spec: RunSpec) -> AppInputs:
    return AppInputs(
        app=spec.app,
        version=spec.version,
        parameters=dict(spec.parameters),
        files=list(spec.files),
        file_series=list(spec.file_series),
        series_records=[dict(r) for r in spec.series_records],
        output_dir=spec.output_dir,
        log=logging.getLogger(f"app.{spec.app}"),
    )


# ---------------------------------------------------------------------------------------------- functions


def load_function(target: str, code: str = "", name: str = "app") -> Callable[..., Any]:
    """The function an app names: in inline ``code`` (``target`` is its name), in a ``.py`` file
    (``/path/file.py:function``) or in an importable module (``package.module:function``)."""
    if code:
        module = types.ModuleType("slicebox_app_" + re.sub(r"\W", "_", name))
        exec(compile(code, f"<app {name}>", "exec"), module.__dict__)  # noqa: S102 - an administrator's app
        found = module.__dict__.get(target)
    else:
        where, _, attribute = target.rpartition(":")
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"slicebox_app_{Path(where).stem}", where)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {where}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        found = getattr(module, attribute, None)
    if not callable(found):
        raise ImportError(f"the app names {target!r}, which is not a function")
    return found


def _run_function(spec: RunSpec) -> Outcome:
    fn = load_function(spec.target, spec.code, spec.app)
    returned = fn(_inputs(spec), **spec.parameters)
    if isinstance(returned, AppResult):
        datasets, values = list(returned.datasets), dict(returned.values)
    elif returned is None:
        datasets, values = [], {}
    elif isinstance(returned, dict):
        datasets, values = [], returned
    elif isinstance(returned, list | tuple):
        datasets, values = list(returned), {}
    else:
        datasets, values = [returned], {}
    outputs = [_write(ds, spec, n) for n, ds in enumerate(datasets)]
    return Outcome(ok=True, outputs=outputs, values=_plain(values))


def _plain(values: Any) -> dict[str, Any]:
    """The values as JSON (a value JSON cannot hold is shown as its text)."""
    return dict(json.loads(json.dumps(dict(values), default=str)))


def _write(dataset: Any, spec: RunSpec, number: int) -> str:
    """A result as a Part-10 file in the output folder, linked to its source and checked as the ingest will."""
    from pydicom.dataset import Dataset, FileMetaDataset

    from .. import dicom

    if not isinstance(dataset, Dataset):
        raise TypeError(f"result {number + 1} is a {type(dataset).__name__}, not a pydicom Dataset")
    source = spec.series_records[0] if spec.series_records else {}
    for keyword in LINKED_ATTRIBUTES:
        if keyword in source and not dataset.get(keyword):
            setattr(dataset, keyword, source[keyword])
    for keyword in ("PatientID", "StudyInstanceUID"):
        if source.get(keyword) and str(dataset.get(keyword, "")) != str(source[keyword]):
            raise ValueError(
                f"result {number + 1} has {keyword} {dataset.get(keyword)!r}, not its source's {source[keyword]!r}: "
                "a result must belong to the patient and study it was made from"
            )
    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    meta = dataset.file_meta
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        from pydicom.uid import ExplicitVRLittleEndian

        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    data = dicom.write_part10(dataset)
    try:
        dicom.parse_part10(data)
    except Exception as error:
        raise ValueError(f"result {number + 1} would be refused by the node: {error}") from None
    path = os.path.join(spec.output_dir, f"result-{number + 1:04d}.dcm")
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------------------------- notebooks


def _run_notebook(spec: RunSpec) -> Outcome:
    """papermill: the parameters cell gets ``files``, ``series``, ``output_dir``, ``app_name``, ``app_version``
    and each parameter."""
    import papermill

    folder = Path(spec.output_dir)
    source = folder / "app.ipynb"
    if spec.code:
        source.write_text(spec.code, encoding="utf-8")
    else:
        source.write_bytes(Path(spec.target).read_bytes())
    executed = folder / "executed.ipynb"
    results = folder / "results"
    results.mkdir(exist_ok=True)
    parameters = {
        **spec.parameters,
        "files": list(spec.files),
        "series": [dict(r) for r in spec.series_records],
        "output_dir": str(results),
        "app_name": spec.app,
        "app_version": spec.version,
    }
    notebook = ""
    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters=parameters, kernel_name="python3", cwd=str(folder),
            progress_bar=False, log_output=True, report_mode=False,
        )  # fmt: skip
    except Exception as error:
        notebook = executed.read_text(encoding="utf-8") if executed.exists() else ""
        message = f"{type(error).__name__}: {error}"
        ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
        if ename:
            message = f"{ename}: {evalue}"
            print(_ANSI.sub("", "\n".join(getattr(error, "traceback", []) or [])), file=sys.stderr)
        return Outcome(ok=False, error=f"the notebook failed: {message}", notebook=notebook)
    notebook = executed.read_text(encoding="utf-8")
    import pydicom

    outputs = []
    for n, path in enumerate(sorted(results.glob("*.dcm"))):
        outputs.append(_write(pydicom.dcmread(path), spec, n))
    values: dict[str, Any] = {}
    if (results / "values.json").exists():
        values = _plain(json.loads((results / "values.json").read_text(encoding="utf-8")))
    return Outcome(ok=True, outputs=outputs, values=values, notebook=notebook)
