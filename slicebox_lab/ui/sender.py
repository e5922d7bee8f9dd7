"""Send a selection to a partner node (box) or a DICOM node (SCU), after reviewing what de-identification does.

The review comes first on purpose: for a box the Send button is enabled only once the report of the
chosen profile for exactly this selection is on screen, so nobody sends without having seen which
attributes are kept and what residual risk remains, and what text the node found in the pixels
(shown masked, with a thumbnail where the boxes are drawn) and what the chosen ``burnedInText``
policy does with it. Sends run on the node; the widget polls the
transaction (box) or job (SCU) from a background thread into a progress bar until it ends.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import pandas as pd
from traitlets import Bool, Unicode

from ..model import FINISHED_STATES, TRANSACTION_ENDED, JobState
from ._common import Progress, ProgressWatcher, StatusLine, reporting
from ._common import records as _records
from .present import review_table, table

__all__ = ["Sender"]

#: the pixel-text rows' columns, in this order
_TEXT_COLUMNS = ("image_id", "frame", "x", "y", "width", "height", "text", "confidence", "decision", "why")
#: the burnedInText choices: (label, value); "" leaves it to the box's profile (a None value would show
#: as no selection in the browser)
TEXT_POLICIES = (
    ("the box's profile (default: refuse)", ""),
    ("refuse images with text", "refuse"),
    ("mask all text found", "mask-detected"),
    ("mask identifying text only", "mask-detected-phi"),
    ("keep the pixels as they are", "keep"),
)


def transaction_progress(transaction: dict[str, Any]) -> Progress:
    done = int(transaction.get("sent_image_count") or 0) + int(transaction.get("failed_image_count") or 0)
    status = str(transaction.get("status", ""))
    return Progress(done, int(transaction.get("total_image_count") or 0), status, status in TRANSACTION_ENDED,
                    str(transaction.get("reason") or ""), transaction)  # fmt: skip


def job_progress(job: dict[str, Any]) -> Progress:
    state = str(job.get("state", ""))
    total = job.get("progress_total")
    return Progress(int(job.get("progress_done") or 0), int(total) if total is not None else None, state,
                    state in FINISHED_STATES, str(job.get("error") or ""), job)  # fmt: skip


class Sender(widgets.VBox):
    """Destination, de-identification options, review, Send, progress and final state.

    ``selection`` may be a client ``Selection``, a list of series ids, or a
    :class:`~slicebox_lab.ui.Browser` (the sender then follows the browser's selection)."""

    state = Unicode("")
    reviewed = Bool(False)

    def __init__(self, client: Any, selection: Any = None) -> None:
        super().__init__()
        self.client = client
        self.status = StatusLine()
        self.state_line = StatusLine()
        self._selection: Any = None
        self.review_frame: pd.DataFrame | None = None
        self.watcher: ProgressWatcher | None = None
        self.result: dict[str, Any] | None = None

        self.destination = widgets.Dropdown(options=[], description="Send to")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.option_boxes: dict[str, widgets.Checkbox] = {}
        self.options_box = widgets.VBox([])
        self.text_policy = widgets.Dropdown(options=list(TEXT_POLICIES), value="", description="Text in pixels",
                                            style={"description_width": "initial"},
                                            layout=widgets.Layout(width="420px"))  # fmt: skip
        self.review_button = widgets.Button(description="Review de-identification", icon="eye",
                                            layout=widgets.Layout(width="auto"))  # fmt: skip
        self.review_html = widgets.HTML("")
        self.send_button = widgets.Button(description="Send", icon="paper-plane", button_style="primary",
                                          disabled=True)  # fmt: skip
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.selection_label = widgets.Label("")

        self.destination.observe(self._inputs_changed, "value")
        self.text_policy.observe(self._inputs_changed, "value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.review_button.on_click(lambda _b: self.review())
        self.send_button.on_click(lambda _b: self.send())

        self.children = [
            self.selection_label,
            widgets.HBox([self.destination, self.refresh_button]),
            widgets.HTML("<b>De-identification options</b> (added to the basic profile)"),
            self.options_box,
            self.text_policy,
            self.review_button,
            self.review_html,
            widgets.HBox([self.send_button, self.progress, self.state_line]),
            self.status,
        ]
        self.refresh()
        self.set_selection(selection)

    # inputs --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the destinations and the profile options from the node."""
        options: list[tuple[str, tuple[str, int]]] = []
        with reporting(self.status, "listing boxes"):
            for box in _records(self.client.boxes()):
                online = "online" if box.get("online") else "offline"
                options.append((f"box: {box['name']} ({online})", ("box", int(box["id"]))))
        with reporting(self.status, "listing SCUs"):
            for scu in _records(self.client.scus()):
                options.append((f"SCU: {scu['name']} ({scu.get('ae_title', '')})", ("scu", int(scu["id"]))))
        current = self.destination.value
        self.destination.options = options
        if current in [v for _, v in options]:
            self.destination.value = current
        elif len(options) == 1:  # one partner (the usual hospital node): nothing to choose
            self.destination.value = options[0][1]
        with reporting(self.status, "listing anonymization options"):
            if not self.option_boxes:
                for option in self.client.anonymization_options():
                    box = widgets.Checkbox(value=False, description=str(option.get("title") or option["name"]),
                                           indent=False, tooltip=str(option.get("description", "")),
                                           layout=widgets.Layout(width="auto"))  # fmt: skip
                    box.observe(self._inputs_changed, "value")
                    self.option_boxes[str(option["name"])] = box
                self.options_box.children = list(self.option_boxes.values())

    def set_selection(self, selection: Any) -> None:
        """Send these series next: a ``Selection``, a list of series ids, or a Browser to follow."""
        from .browser import Browser

        if isinstance(selection, Browser):
            browser = selection
            browser.on_select(self.set_selection)
            selection = browser.selection if browser.selected_series_ids else None
        elif selection is not None and not hasattr(selection, "series_ids"):
            with reporting(self.status, "selecting"):
                selection = self.client.select(list(selection))
        self._selection = selection
        count = len(selection.series_ids) if selection is not None else 0
        self.selection_label.value = f"{count} series to send" if count else "No series chosen to send yet"
        self._inputs_changed(None)

    @property
    def selection(self) -> Any:
        return self._selection

    @property
    def options(self) -> list[str]:
        """The names of the ticked profile options (RETAIN_UIDS ...)."""
        return [name for name, box in self.option_boxes.items() if box.value]

    @property
    def profile(self) -> dict[str, Any] | None:
        """The profile body sent for review and send: the options and the burnedInText policy (None: the
        box's default profile)."""
        if not self.options and not self.text_policy.value:
            return None
        body: dict[str, Any] = {"options": self.options}
        if self.text_policy.value:
            body["burnedInText"] = self.text_policy.value
        return body

    def select_destination(self, kind: str, name_or_id: str | int) -> None:
        """Choose the box or SCU by name or id (as a click in the dropdown would)."""
        for label, (k, i) in self.destination.options:
            if k == kind and (i == name_or_id or label.split(": ", 1)[1].rsplit(" (", 1)[0] == name_or_id):
                self.destination.value = (k, i)
                return
        raise ValueError(f"no {kind} {name_or_id!r}")

    def _inputs_changed(self, _change: Any) -> None:
        to_scu = bool(self.destination.value) and self.destination.value[0] == "scu"
        for box in self.option_boxes.values():
            box.disabled = to_scu  # a C-STORE sends the images as stored: no profile applies
        self.text_policy.disabled = to_scu
        self.reviewed = False
        self.review_frame = None
        self.review_html.value = ""
        self._update_send_button()

    def _update_send_button(self) -> None:
        busy = self.watcher is not None and self.watcher.running
        ready = self._selection is not None and len(self._selection.series_ids) > 0 and self.destination.value
        if ready and self.destination.value[0] == "box":
            ready = self.reviewed
        self.send_button.disabled = bool(busy or not ready)

    # review --------------------------------------------------------------------------------------
    def review(self) -> pd.DataFrame | None:
        """Show what the chosen profile does to the selection, attribute by attribute."""
        if self._selection is None or not self._selection.series_ids:
            self.status.error("select series first")
            return None
        if self.destination.value and self.destination.value[0] == "scu":
            self.review_html.value = "<p><b>SCU sends are not de-identified:</b> the images leave as stored.</p>"
            self.reviewed = True
            self._update_send_button()
            return None
        self.status.info("reviewing…")
        with reporting(self.status, "reviewing") as outcome:
            frame = self._selection.review(options=self.profile)
        if outcome.failed:
            return None
        self.review_frame = frame
        self.review_html.value = (
            f'<div class="slicebox-review"><p><b>De-identification review:</b> {html.escape(_summary(frame))}</p>'
            f"{_pixel_text_html(frame.attrs.get('pixel_text') or {})}"
            f'<div style="max-height:300px;overflow:auto">{review_table(frame)}</div></div>'
        )
        self.reviewed = True
        self.status.ok("reviewed: check the table, then Send")
        self._update_send_button()
        return frame

    # send ----------------------------------------------------------------------------------------
    def send(self) -> ProgressWatcher | None:
        """Start the send on the node and follow it; returns the watcher (``.join()`` waits)."""
        if self.send_button.disabled:
            self.status.error("review the de-identification first" if not self.reviewed else "nothing to send")
            return None
        kind, target = self.destination.value
        self.send_button.disabled = True
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.result = None
        self.state = "STARTING"
        with reporting(self.status, "sending") as outcome:
            image_ids = [int(i) for i in self._selection.image_ids()]
            if kind == "box":
                started = self.client.send_to_box(target, image_ids, options=self.profile)
                transaction_id = _transaction_id(started)
                if transaction_id is None:  # the node answered the job only: follow the job
                    poll = self._job_poll(int(started["job_id"]))
                else:
                    poll = self._transaction_poll(transaction_id)
            else:
                job = self.client.send_to_scu(target, image_ids)
                poll = self._job_poll(int(job["id"]))
        if outcome.failed:
            self.state = JobState.FAILED
            self.state_line.error("not sent")
            self._update_send_button()
            return None
        self.status.info(f"sending {len(image_ids)} images…")
        self.watcher = ProgressWatcher(poll, self.progress, self.state_line, on_done=self._done).start()
        return self.watcher

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the running send ends (scripts and tests); the final transaction or job."""
        if self.watcher is not None:
            self.watcher.join(timeout)
        return self.result

    def _transaction_poll(self, transaction_id: int) -> Any:
        def poll() -> Progress:
            progress = transaction_progress(self.client.transaction(transaction_id))
            self.state = progress.state
            return progress

        return poll

    def _job_poll(self, job_id: int) -> Any:
        def poll() -> Progress:
            progress = job_progress(self.client.job(job_id))
            self.state = progress.state
            return progress

        return poll

    def _done(self, progress: Progress) -> None:
        self.result = progress.record
        self.state = progress.state
        if progress.state in (JobState.FAILED, JobState.CANCELLED):
            self.status.error(progress.message or progress.state)
        else:
            self.status.ok(f"{progress.state}: {progress.done} of {progress.total} images")
        self.send_button.disabled = False


def _summary(frame: pd.DataFrame) -> str:
    """One line of the report's summary: images, attribute paths, residual risks, burned-in images refused."""
    summary = frame.attrs.get("summary") or {}
    risky = int(frame["risk"].notna().sum()) if "risk" in frame.columns else 0
    parts = []
    if "images" in summary:
        parts.append(f"{summary['images']} images")
    parts.append(f"{len(frame)} attribute paths, {risky} with a residual risk")
    refused = (summary.get("burned_in") or {}).get("refused")
    if refused:
        parts.append(f"{refused} images with burned-in annotation will be refused")
    masked = (summary.get("burned_in") or {}).get("masked")
    if masked:
        parts.append(f"{masked} images will have text masked in their pixels")
    return "; ".join(parts)


def _pixel_text_html(pixel_text: dict[str, Any]) -> str:
    """The text found in the pixels: a line of counts, thumbnails with the boxes drawn, one row per text
    (shown masked by the node), and the refusals."""
    summary = pixel_text.get("summary") or {}
    if not summary.get("images_read") and not summary.get("images_unreadable") and not summary.get("images_not_read"):
        return ""
    counts = (
        f"{summary.get('images_read', 0)} images read for text in their pixels: {summary.get('texts', 0)} texts "
        f"found, {summary.get('masked', 0)} to be masked, {summary.get('kept', 0)} kept, "
        f"{summary.get('refused', 0)} in refused images"
    )
    if summary.get("images_unreadable"):
        counts += f"; {summary['images_unreadable']} images cannot be read here (Tesseract is missing): refused"
    if summary.get("images_not_read"):
        counts += f"; {summary['images_not_read']} more are read when sent"
    pictures = []
    for image in pixel_text.get("images") or []:
        thumbnail = image.get("thumbnail")
        if thumbnail:
            caption = html.escape(f"image {image['image_id']}, frame {thumbnail['frame']}: {image.get('fate')}")
            pictures.append(
                '<figure style="display:inline-block;margin:4px">'
                f'<img alt="{caption}" src="data:image/png;base64,{html.escape(str(thumbnail["png"]))}"/>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    refusals = [
        f"<li>{html.escape(str(image['refusal']))}</li>"
        for image in pixel_text.get("images") or []
        if image.get("refusal")
    ]
    rows = pd.DataFrame(pixel_text.get("rows") or [], columns=list(_TEXT_COLUMNS))
    return (
        f'<div class="slicebox-pixel-text"><p><b>Text in the pixels:</b> {html.escape(counts)}</p>'
        f"<div>{''.join(pictures)}</div>"
        + (f"<ul>{''.join(refusals)}</ul>" if refusals else "")
        + (f'<div style="max-height:200px;overflow:auto">{table(rows, _TEXT_COLUMNS)}</div>' if len(rows) else "")
        + "</div>"
    )


def _transaction_id(started: dict[str, Any]) -> int | None:
    """The outgoing transaction of a box send (the client answers the transaction, or its job)."""
    if "total_image_count" in started or "box_id" in started:
        return int(started["id"])
    parameters = started.get("parameters") or (started.get("job") or {}).get("parameters") or {}
    transaction_id = parameters.get("transaction_id")
    return int(transaction_id) if transaction_id is not None else None
