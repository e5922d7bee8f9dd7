"""Pieces every panel shares: a status line that shows the server's own error messages, a table of
widgets (cells, row checkboxes, per-row buttons) and a progress bar fed from a polling thread.

Widgets reach the node only through :mod:`slicebox_lab.client`; a failed call never raises into the
notebook (a traceback in a dashboard helps nobody), it lands in the status line with the message the
server wrote, so the user reads *why* (``port 11112 already in use``), not a status code.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import pandas as pd
from traitlets import Bool, Unicode

from ..model import JobState
from . import present

__all__ = ["StatusLine", "Outcome", "Grid", "Progress", "ProgressWatcher", "frame_to_html", "error_message", "records"]

_COLOURS = {"info": "#555", "ok": "#1a7f37", "error": "#c62828", "busy": "#555"}


def records(frame: pd.DataFrame | Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Rows of a client DataFrame (or a list of dicts) as plain dicts, for building widget options."""
    if frame is None:
        return []
    if isinstance(frame, pd.DataFrame):
        return [dict(r) for r in frame.to_dict(orient="records")]
    return [dict(r) for r in frame]


def error_message(exc: BaseException) -> str:
    """The server's message of a client error (``.message``), else the exception's text."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__


class StatusLine(widgets.HTML):
    """One visible line of what just happened; ``message`` and ``level`` are plain traits for code and tests."""

    message = Unicode("")
    level = Unicode("info")  # info | ok | error | busy

    def show(self, message: str, level: str = "info") -> None:
        self.level = level
        self.message = message
        colour = _COLOURS.get(level, "#555")
        text = html.escape(message)
        self.value = f'<span class="slicebox-status slicebox-status-{level}" style="color:{colour}">{text}</span>'

    def info(self, message: str) -> None:
        self.show(message, "info")

    def ok(self, message: str) -> None:
        self.show(message, "ok")

    def error(self, message: str | BaseException) -> None:
        self.show(message if isinstance(message, str) else error_message(message), "error")

    def clear(self) -> None:
        self.show("", "info")


@dataclass
class Outcome:
    """What a guarded call did: ``failed`` tells the caller to stop, ``message`` what the status line shows."""

    failed: bool = False
    message: str = ""


@contextmanager
def reporting(status: StatusLine, doing: str = "") -> Iterator[Outcome]:
    """Run a block of client calls; an exception is shown in ``status`` instead of raised.

    The server's message is shown as it is; ``doing`` only prefixes failures that are not the
    server's (a bug in the widget, a value the client refused before sending)."""
    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:  # noqa: BLE001 - a widget callback must not raise into the kernel
        outcome.failed = True
        message = error_message(exc)
        if getattr(exc, "status", "absent") == "absent" and doing:
            message = f"{doing}: {message}"
        outcome.message = message
        status.error(message)


cell_text = present.cell_text


def frame_to_html(frame: pd.DataFrame, columns: Sequence[str] | None = None, max_rows: int | None = None) -> str:
    """An escaped HTML table of a DataFrame for people (human labels, local times: ``present.table``)."""
    return present.table(frame, columns, max_rows=max_rows)


class Grid(widgets.VBox):
    """A table made of widgets: text cells, an optional checkbox per row, buttons per row, sortable headers.

    Rows are keyed by an id (``row_ids``); ``checkboxes[id]`` and ``buttons[(label, id)]`` let code and
    tests drive it exactly as a click in the browser would."""

    sort_column = Unicode("", allow_none=False)
    sort_ascending = Bool(True)

    def __init__(
        self,
        *,
        selectable: bool = False,
        sortable: Sequence[str] = (),
        on_sort: Callable[[str, bool], None] | None = None,
        on_check: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.selectable = selectable
        self.sortable = set(sortable)
        self._on_sort = on_sort
        self._on_check = on_check
        self.columns: list[str] = []
        self.row_ids: list[Any] = []
        self.records: list[dict[str, Any]] = []
        self.checkboxes: dict[Any, widgets.Checkbox] = {}
        self.buttons: dict[tuple[str, Any], widgets.Button] = {}
        self.header_buttons: dict[str, widgets.Button] = {}
        self._grid = widgets.GridBox(layout=widgets.Layout(grid_gap="2px 8px", overflow="auto"))
        self.empty = widgets.HTML("<i>nothing to show</i>")
        self.children = [self.empty]

    def checked_ids(self) -> list[Any]:
        return [i for i in self.row_ids if self.checkboxes[i].value]

    def set_checked(self, ids: Sequence[Any]) -> None:
        wanted = set(ids)
        for i, box in self.checkboxes.items():
            box.value = i in wanted

    def set_rows(
        self,
        records: Sequence[dict[str, Any]],
        columns: Sequence[str],
        *,
        key: str = "id",
        actions: Sequence[tuple[str, Callable[[Any], None]]] = (),
        checked: Sequence[Any] = (),
        labels: dict[str, str] | None = None,
    ) -> None:
        """Rebuild the table; ``actions`` are (button label, callback(row id)) per row."""
        labels = labels or {}
        old = list(self._grid.children)
        self.columns = list(columns)
        self.records = [dict(r) for r in records]
        self.row_ids = [r.get(key) for r in self.records]
        self.checkboxes = {}
        self.buttons = {}
        self.header_buttons = {}
        if not self.records:
            self.children = [self.empty]
            self._grid.children = []
            self._close(old)
            return
        cells: list[widgets.Widget] = []
        if self.selectable:
            cells.append(widgets.HTML(""))
        for column in self.columns:
            title = labels.get(column) or present.label(column)
            if column in self.sortable:
                arrow = ""
                if column == self.sort_column:
                    arrow = " ▲" if self.sort_ascending else " ▼"
                # never narrower than its words: a header cut to "Stud…" tells nobody what the column is
                button = widgets.Button(description=title + arrow, tooltip=f"sort by {title}",
                                        layout=widgets.Layout(width="auto", min_width="max-content"))  # fmt: skip
                button.on_click(lambda _b, c=column: self._sort(c))
                self.header_buttons[column] = button
                cells.append(button)
            else:
                cells.append(widgets.HTML(f"<b>{html.escape(title)}</b>"))
        for _label, _ in actions:
            cells.append(widgets.HTML(""))
        wanted = set(checked)
        for row_id, record in zip(self.row_ids, self.records, strict=True):
            if self.selectable:
                box = widgets.Checkbox(value=row_id in wanted, indent=False, layout=widgets.Layout(width="24px"))
                box.observe(self._checked, "value")
                self.checkboxes[row_id] = box
                cells.append(box)
            for column in self.columns:
                cells.append(widgets.HTML(present.cell(column, record.get(column))))
            for label, callback in actions:
                button = widgets.Button(description=label, layout=widgets.Layout(width="auto"))
                button.on_click(lambda _b, i=row_id, cb=callback: cb(i))
                self.buttons[(label, row_id)] = button
                cells.append(button)
        count = len(self.columns) + len(actions) + (1 if self.selectable else 0)
        self._grid.layout.grid_template_columns = " ".join(["auto"] * count)
        self._grid.children = cells
        self.children = [self._grid]
        self._close(old)

    @staticmethod
    def _close(cells: Sequence[widgets.Widget]) -> None:
        """Close the widgets of the previous page: a kernel paging for hours must not keep every cell ever shown."""
        for cell in cells:
            cell.close()

    def _sort(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_ascending = not self.sort_ascending
        else:
            self.sort_column = column
            self.sort_ascending = True
        if self._on_sort is not None:
            self._on_sort(self.sort_column, self.sort_ascending)

    def _checked(self, _change: dict[str, Any]) -> None:
        if self._on_check is not None:
            self._on_check()


@dataclass
class Progress:
    """One poll of a long operation."""

    done: int
    total: int | None
    state: str
    finished: bool
    message: str = ""
    record: dict[str, Any] = field(default_factory=dict)


class ProgressWatcher:
    """Polls ``poll`` on a background thread and feeds a progress bar and a state label until finished.

    The kernel's main thread stays free (a notebook cell, a Voila dashboard keep answering); widget
    traits set from this thread reach the front end through the kernel's comm as any other change."""

    def __init__(
        self,
        poll: Callable[[], Progress],
        bar: widgets.IntProgress,
        state: StatusLine,
        *,
        interval: float = 0.25,
        timeout: float | None = None,
        on_done: Callable[[Progress], None] | None = None,
        max_errors: int = 20,
    ) -> None:
        self._poll = poll
        self.bar = bar
        self.state = state
        self.interval = interval
        self.timeout = timeout
        self._on_done = on_done
        self._max_errors = max_errors
        self._stop = threading.Event()
        self.last: Progress | None = None
        self.thread = threading.Thread(target=self._run, name="slicebox-progress", daemon=True)

    def start(self) -> ProgressWatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> Progress | None:
        self.thread.join(timeout)
        return self.last

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _show(self, progress: Progress) -> None:
        total = progress.total if progress.total is not None else 0
        self.bar.max = max(total, 1)
        self.bar.value = min(progress.done, self.bar.max)
        self.bar.description = f"{progress.done}/{total}" if total else str(progress.done)
        if progress.finished:
            failed = progress.state.upper() in (JobState.FAILED, JobState.CANCELLED)
            self.bar.bar_style = "danger" if failed else "success"
            text = progress.state + (f": {progress.message}" if progress.message else "")
            self.state.show(text, "error" if failed else "ok")
        else:
            self.bar.bar_style = "info"
            text = progress.state + (f" ({progress.message})" if progress.message else "")
            self.state.show(text, "busy")

    def _run(self) -> None:
        started = time.monotonic()
        errors = 0
        while not self._stop.is_set():
            try:
                progress = self._poll()
            except Exception as exc:  # noqa: BLE001 - shown, and polling goes on a while (a restarting node)
                errors += 1
                self.state.error(error_message(exc))
                if errors >= self._max_errors:
                    return
            else:
                errors = 0
                self.last = progress
                self._show(progress)
                if progress.finished:
                    if self._on_done is not None:
                        self._on_done(progress)
                    return
            if self.timeout is not None and time.monotonic() - started > self.timeout:
                self.state.error("gave up waiting")
                return
            self._stop.wait(self.interval)
