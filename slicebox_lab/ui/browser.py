"""Browse a node: a patient → study → series tree and a flat, filterable, sortable, paged series table.

Both views select series; the selection is one list of series ids (``selected_series_ids``, a trait
other widgets can observe or link to) and a :class:`~slicebox_lab.client.Selection` made from it
(``browser.selection``) for tagging, sending or exporting in the next cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd
from traitlets import Int, List, Unicode

from ._common import Grid, StatusLine, reporting
from ._common import records as _records

__all__ = ["Browser", "SeriesTree", "SeriesTable"]

#: the flat table's columns, in this order, when the client's frame has them
TABLE_COLUMNS = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "Modality",
    "source",
    "tags",
    "series_tags",
    "series_types",
    "types",
    "seriestypes",
)
#: columns the server can order flat series by (attributes of the series, study or patient)
SORTABLE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyDescription",
            "StudyID", "AccessionNumber", "SeriesDescription", "SeriesDate", "Modality", "ProtocolName",
            "BodyPartExamined")  # fmt: skip
PAGE_SIZES = (10, 20, 50, 100)


def _label(record: dict[str, Any], first: str, second: str, noun: str) -> str:
    text = f"{record.get(first) or ''} {record.get(second) or ''}".strip()
    return text or f"{noun} {record['id']}"


def _set_options(picker: widgets.SelectMultiple, options: list[tuple[str, Any]]) -> None:
    """New choices, keeping the chosen ones that still exist."""
    chosen = [v for v in picker.value if v in {value for _, value in options}]
    picker.options = options
    picker.value = tuple(chosen)


def _series_key(frame: pd.DataFrame) -> str:
    return "series_id" if "series_id" in frame.columns else "id"


class SeriesTree(widgets.HBox):
    """Three linked lists: patients, the chosen patient's studies, the chosen study's series (multi-select)."""

    def __init__(self, client: Any, status: StatusLine, on_series: Callable[[list[int]], None]) -> None:
        super().__init__()
        self.client = client
        self.status = status
        self._on_series = on_series
        layout = widgets.Layout(width="33%", height="180px")
        self.patients = widgets.Select(options=[], description="", layout=layout)
        self.studies = widgets.Select(options=[], layout=layout)
        self.series = widgets.SelectMultiple(options=[], layout=layout)
        self.patients.observe(self._patient_chosen, "value")
        self.studies.observe(self._study_chosen, "value")
        self.series.observe(self._series_chosen, "value")
        self._quiet = False
        self.children = [
            widgets.VBox([widgets.HTML("<b>Patients</b>"), self.patients], layout=widgets.Layout(width="33%")),
            widgets.VBox([widgets.HTML("<b>Studies</b>"), self.studies], layout=widgets.Layout(width="33%")),
            widgets.VBox([widgets.HTML("<b>Series</b>"), self.series], layout=widgets.Layout(width="33%")),
        ]

    def refresh(self) -> None:
        with reporting(self.status, "listing patients"):
            patients = _records(self.client.patients())
            options = [(f"{p.get('PatientName', '')} ({p.get('PatientID', '')})", int(p["id"])) for p in patients]
            self._quiet = True
            try:
                self.patients.options = options
                self.patients.value = None
                self.studies.options = []
                self.series.options = []
            finally:
                self._quiet = False

    def _patient_chosen(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self.studies.options = []
        self.series.options = []
        if change["new"] is None:
            return
        with reporting(self.status, "listing studies"):
            studies = _records(self.client.studies(patient_id=change["new"]))
            self.studies.options = [(_label(s, "StudyDate", "StudyDescription", "study"), int(s["id"]))
                                    for s in studies]  # fmt: skip
            self.studies.value = None

    def _study_chosen(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self.series.options = []
        if change["new"] is None:
            return
        with reporting(self.status, "listing series"):
            series = _records(self.client.series(study_id=change["new"]))
            self.series.options = [(_label(s, "Modality", "SeriesDescription", "series"), int(s["id"])) for s in series]

    def _series_chosen(self, change: dict[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self._on_series([int(i) for i in change["new"]])


class SeriesTable(widgets.VBox):
    """The flat series table: filter text, tag/type/source filters, sortable columns, paging, row checkboxes."""

    page = Int(0)
    page_size = Int(20)
    filter_text = Unicode("")

    def __init__(
        self, client: Any, status: StatusLine, on_check: Callable[[list[int], list[int]], None], page_size: int = 20
    ) -> None:
        super().__init__()
        self.client = client
        self.status = status
        self._on_check = on_check
        self.page_size = page_size
        self.frame = pd.DataFrame()
        self.has_next = False
        self._building = False
        self._browser: Any = None  # the Browser holding the selection across pages
        self._loading_filters = False
        self.filter = widgets.Text(placeholder="filter (any text column)", description="Filter",
                                   continuous_update=False)  # fmt: skip
        self.tag_filter = widgets.SelectMultiple(options=[], description="Tags", rows=3)
        self.type_filter = widgets.SelectMultiple(options=[], description="Types", rows=3)
        self.source_filter = widgets.SelectMultiple(options=[], description="Sources", rows=3)
        self.page_size_picker = widgets.Dropdown(options=sorted({*PAGE_SIZES, page_size}), value=page_size,
                                                 description="Page size")  # fmt: skip
        self.prev_button = widgets.Button(description="◀ Prev", disabled=True)
        self.next_button = widgets.Button(description="Next ▶", disabled=True)
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.select_page_button = widgets.Button(description="Select page")
        self.clear_button = widgets.Button(description="Clear selection")
        self.page_label = widgets.Label("")
        self.grid = Grid(selectable=True, sortable=SORTABLE, on_sort=self._sorted, on_check=self._checked)

        self.filter.observe(self._on_filter_text, "value")
        for picker in (self.tag_filter, self.type_filter, self.source_filter):
            picker.observe(self._on_filter_lists, "value")
        self.page_size_picker.observe(self._on_page_size, "value")
        self.prev_button.on_click(lambda _b: self.go(self.page - 1))
        self.next_button.on_click(lambda _b: self.go(self.page + 1))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.select_page_button.on_click(lambda _b: self.grid.set_checked(self.grid.row_ids))

        self.children = [
            widgets.HBox([self.filter, self.refresh_button]),
            widgets.HBox([self.tag_filter, self.type_filter, self.source_filter]),
            self.grid,
            widgets.HBox(
                [
                    self.prev_button,
                    self.page_label,
                    self.next_button,
                    self.page_size_picker,
                    self.select_page_button,
                    self.clear_button,
                ]
            ),  # fmt: skip
        ]

    # filters -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the filter lists (keeping what is chosen) and the page."""
        self.load_filter_options()
        self.reload()

    def load_filter_options(self) -> None:
        """Tags, series types and sources the node knows, for the filter lists."""
        self._loading_filters = True
        try:
            with reporting(self.status, "listing tags"):
                tags = [(str(t["name"]), int(t["id"])) for t in _records(self.client.series_tags())]
                _set_options(self.tag_filter, tags)
            with reporting(self.status, "listing series types"):
                types = [(str(t["name"]), int(t["id"])) for t in _records(self.client.series_types())]
                _set_options(self.type_filter, types)
            with reporting(self.status, "listing sources"):
                sources = [
                    (f"{s['source_type']}: {s.get('source_name', '')}", f"{s['source_type']}:{int(s['source_id'])}")
                    for s in _records(self.client.sources())
                ]
                _set_options(self.source_filter, sources)
        finally:
            self._loading_filters = False

    def _on_filter_text(self, change: dict[str, Any]) -> None:
        self.filter_text = change["new"]
        self.go(0)

    def _on_filter_lists(self, _change: dict[str, Any]) -> None:
        if not self._loading_filters:
            self.go(0)

    def _on_page_size(self, change: dict[str, Any]) -> None:
        self.page_size = int(change["new"])
        self.go(0)

    def _sorted(self, _column: str, _ascending: bool) -> None:
        self.go(0)

    # paging --------------------------------------------------------------------------------------
    def go(self, page: int) -> None:
        self.page = max(0, page)
        self.reload()

    def query(self) -> dict[str, Any]:
        """The keyword arguments of ``client.flat_series`` for the current page."""
        return {
            "filter": self.filter_text or None,
            "order_by": self.grid.sort_column or None,
            "ascending": self.grid.sort_ascending,
            "limit": self.page_size + 1,  # one more tells whether there is a next page
            "offset": self.page * self.page_size,
            "tags": list(self.tag_filter.value) or None,
            "types": list(self.type_filter.value) or None,
            "sources": list(self.source_filter.value) or None,
        }

    def reload(self, selected: Sequence[int] | None = None) -> None:
        with reporting(self.status, "listing series") as outcome:
            frame = self.client.flat_series(**self.query())
        if outcome.failed:
            return
        self.has_next = len(frame) > self.page_size
        self.frame = frame.head(self.page_size).reset_index(drop=True)
        key = _series_key(self.frame) if len(self.frame.columns) else "series_id"
        columns = [c for c in TABLE_COLUMNS if c in self.frame.columns]
        checked = selected if selected is not None else self._selected()
        self._building = True
        try:
            self.grid.set_rows(_records(self.frame), columns, key=key, checked=list(checked))
        finally:
            self._building = False
        first = self.page * self.page_size
        shown = len(self.frame)
        self.page_label.value = f"page {self.page + 1}: {first + 1 if shown else 0}–{first + shown}"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = not self.has_next

    def _selected(self) -> list[int]:
        return list(self._browser.selected_series_ids) if self._browser is not None else []

    def page_series_ids(self) -> list[int]:
        return [int(i) for i in self.grid.row_ids]

    def _checked(self) -> None:
        if not self._building:
            self._on_check(self.page_series_ids(), [int(i) for i in self.grid.checked_ids()])

    def show_checked(self, ids: Sequence[int]) -> None:
        """Tick the rows of ``ids`` on this page without reporting back."""
        self._building = True
        try:
            self.grid.set_checked(list(ids))
        finally:
            self._building = False


class Browser(widgets.VBox):
    """Patients, studies and series of a node; ``selected_series_ids`` and ``selection`` follow the user's picks.

    ``Browser(client, viewer=viewer)`` shows the first selected series in a
    :class:`slicebox_lab.ui.viewer.Viewer`; ``on_select(callback)`` calls ``callback(selection)``
    whenever the selection changes."""

    selected_series_ids = List(Int())

    def __init__(self, client: Any, *, viewer: Any = None, page_size: int = 20) -> None:
        super().__init__()
        self.client = client
        self.viewer = viewer
        self.status = StatusLine()
        self._callbacks: list[Callable[[Any], None]] = []
        self.tree = SeriesTree(client, self.status, self._tree_selected)
        self.table = SeriesTable(client, self.status, self._table_checked, page_size=page_size)
        self.table._browser = self
        self.table.clear_button.on_click(lambda _b: self.select([]))
        self.selection_label = widgets.Label("No series selected")
        tabs = widgets.Tab(children=[self.table, self.tree])
        tabs.set_title(0, "Series")
        tabs.set_title(1, "Patients / studies")
        self.tabs = tabs
        self.observe(self._selection_changed, "selected_series_ids")
        parts: list[widgets.Widget] = [tabs, self.selection_label, self.status]
        if viewer is not None and isinstance(viewer, widgets.Widget):
            parts.append(viewer)
        self.children = parts
        self.refresh()

    # public --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the filter lists, the table page and the tree from the node."""
        self.status.clear()
        self.table.load_filter_options()
        self.table.reload()
        self.tree.refresh()

    @property
    def selection(self) -> Any:
        """The selected series as a client ``Selection`` (tag, send, export, review...)."""
        return self.client.select(list(self.selected_series_ids))

    def select(self, series_ids: Sequence[int]) -> None:
        self.selected_series_ids = [int(i) for i in dict.fromkeys(series_ids)]

    def on_select(self, callback: Callable[[Any], None], remove: bool = False) -> None:
        """``callback(selection)`` after every change of the selection."""
        if remove:
            self._callbacks.remove(callback)
        else:
            self._callbacks.append(callback)

    # internals -----------------------------------------------------------------------------------
    def _tree_selected(self, series_ids: list[int]) -> None:
        self.select(series_ids)

    def _table_checked(self, page_ids: list[int], checked: list[int]) -> None:
        on_page, ticked = set(page_ids), set(checked)
        kept = [i for i in self.selected_series_ids if i not in on_page or i in ticked]  # in the order picked
        self.select(kept + [i for i in checked if i not in kept])

    def _selection_changed(self, change: dict[str, Any]) -> None:
        ids = list(change["new"])
        self.table.show_checked(ids)
        self.selection_label.value = f"{len(ids)} series selected" if ids else "No series selected"
        if not self._callbacks and self.viewer is None:
            return
        with reporting(self.status, "selecting") as outcome:
            selection = self.selection
        if outcome.failed:
            return
        for callback in list(self._callbacks):
            with reporting(self.status, "selection callback"):
                callback(selection)
        if self.viewer is not None and ids:
            with reporting(self.status, "showing the series"):
                _show_in_viewer(self.viewer, ids[0])


def _show_in_viewer(viewer: Any, series_id: int) -> None:
    """The viewer's way of showing one series (its API is its own engineer's; the common spellings)."""
    for name in ("show_series", "show", "load_series", "load"):
        method = getattr(viewer, name, None)
        if callable(method):
            method(series_id)
            return
    if hasattr(viewer, "series_id"):
        viewer.series_id = series_id
        return
    raise TypeError(f"{type(viewer).__name__} has no way to show a series")
