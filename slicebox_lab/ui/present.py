"""Tables for people: human column names, local times, yes/no, coloured status chips, sentences when empty.

Why: the client's DataFrames speak the API (``send_method``, ``2026-03-02T14:03:11.123456+00:00``,
``True``); a clinician on a dashboard should read "Connection", "today 15:03" and "yes".  Every panel and
dashboard renders its tables through :func:`table` so they all read the same, and fit: cells wrap,
the table never sets a width wider than the notebook's.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

__all__ = ["LABELS", "label", "human_time", "human_date", "yes_no", "chip", "table", "review_table", "TABLE_CSS"]

#: column → what a person calls it
LABELS: dict[str, str] = {
    "id": "#",
    "series_id": "Series #",
    "PatientName": "Patient",
    "PatientID": "Patient ID",
    "PatientBirthDate": "Born",
    "PatientSex": "Sex",
    "StudyDate": "Study date",
    "StudyDescription": "Study",
    "SeriesDescription": "Series",
    "SeriesDate": "Series date",
    "Modality": "Modality",
    "BodyPartExamined": "Body part",
    "AccessionNumber": "Accession",
    "source": "Came from",
    "tags": "Tags",
    "series_tags": "Tags",
    "series_types": "Series types",
    "types": "Series types",
    "seriestypes": "Series types",
    "name": "Name",
    "ae_title": "AE title",
    "host": "Host",
    "port": "Port",
    "running": "Listening",
    "path": "Folder",
    "created": "Created",
    "updated": "Last update",
    "finished": "Finished",
    "started": "Started",
    "send_method": "Connection",
    "online": "Online",
    "last_contact": "Last contact",
    "last_error": "Last problem",
    "kind": "Kind",
    "description": "What",
    "state": "State",
    "progress_done": "Done",
    "progress_total": "Of",
    "error": "Problem",
    "entry_type": "Level",
    "subject": "About",
    "message": "Message",
    "box_name": "Partner",
    "status": "Status",
    "received_image_count": "Images received",
    "added_image_count": "Images added",
    "total_image_count": "Images in all",
    "sent_image_count": "Images sent",
    "series": "Series",
    "keyword": "Attribute",
    "tag": "Tag",
    "vr": "VR",
    "occurrences": "Found in",
    "outcome": "What happens",
    "decided_by": "Because of",
    "risk": "Risk left",
}

#: columns holding timestamps (ISO 8601 from the API) and DICOM dates (YYYYMMDD)
TIME_COLUMNS = frozenset({"created", "updated", "finished", "started", "last_contact", "heartbeat", "timestamp"})
DATE_COLUMNS = frozenset({"StudyDate", "SeriesDate", "PatientBirthDate", "AcquisitionDate", "ContentDate"})
#: columns shown as coloured chips
CHIP_COLUMNS = frozenset({"status", "state", "entry_type", "online", "running", "outcome"})

_GREEN = frozenset({"FINISHED", "SUCCEEDED", "OK", "INFO", "YES", "KEPT", "DONE"})
_RED = frozenset({"FAILED", "ERROR", "CANCELLED", "REFUSED", "NO"})
_AMBER = frozenset({"WARN", "WARNING", "WAITING", "PENDING", "REMOVED", "EMPTIED", "REPLACED", "CLEANED"})
_BLUE = frozenset({"RUNNING", "PROCESSING", "SENDING", "STARTING", "QUEUED"})
_CHIP_STYLE = {
    "green": "background:#e3f6e8;color:#1a7f37",
    "red": "background:#fdecea;color:#c62828",
    "amber": "background:#fff4e5;color:#9a4a00",
    "blue": "background:#e6f0f7;color:#0b6e99",
    "grey": "background:#eef1f4;color:#3e4c59",
}

#: one stylesheet for every table (put once on a page; :func:`table` includes it)
TABLE_CSS = (
    "<style>.sbx-table{border-collapse:collapse;max-width:100%;font-size:13px;line-height:1.35}"
    ".sbx-table th{text-align:left;font-weight:600;color:#3e4c59;border-bottom:2px solid #d9e2ec;"
    "padding:4px 10px 4px 0;white-space:nowrap}"
    ".sbx-table td{padding:4px 10px 4px 0;border-bottom:1px solid #eef1f4;vertical-align:top;"
    "overflow-wrap:anywhere;max-width:28em}"
    ".sbx-chip{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;font-weight:600;"
    "white-space:nowrap}.sbx-empty{color:#52606d;font-style:italic}</style>"
)


def label(column: str) -> str:
    """The human name of a column (``send_method`` → ``Connection``); unknown ones get their words spaced."""
    return LABELS.get(column) or column.replace("_", " ").capitalize()


def _as_datetime(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.to_pydatetime()
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def human_time(value: Any, now: datetime | None = None) -> str:
    """A timestamp as people say it, in this machine's time zone: "just now", "3 min ago", "today 14:03",
    "yesterday 09:12", "12 Mar 14:03", "12 Mar 2024". Anything unparseable is shown as it is."""
    moment = _as_datetime(value)
    if moment is None:
        return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the API writes UTC
    local = moment.astimezone()
    current = (now or datetime.now(UTC)).astimezone()
    ago = current - local
    if timedelta(0) <= ago < timedelta(minutes=1):
        return "just now"
    if timedelta(0) <= ago < timedelta(hours=1):
        return f"{int(ago.total_seconds() // 60)} min ago"
    if local.date() == current.date():
        return f"today {local:%H:%M}"
    if local.date() == current.date() - timedelta(days=1):
        return f"yesterday {local:%H:%M}"
    if local.year == current.year:
        return f"{local.day} {local:%b %H:%M}"
    return f"{local.day} {local:%b %Y}"


def human_date(value: Any) -> str:
    """A DICOM date (``20240115``) as ``15 Jan 2024``; anything else as it is."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()
    if len(text) == 8 and text.isdigit():
        try:
            day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return text
        return f"{day.day} {day:%b %Y}"
    return text


def yes_no(value: Any) -> str:
    return "yes" if bool(value) else "no"


def chip(text: str, colour: str | None = None) -> str:
    """A coloured pill for a status; the colour follows the word (FINISHED green, FAILED red, ...)."""
    if colour is None:
        word = text.strip().upper()
        colour = next(
            (name for name, words in (("green", _GREEN), ("red", _RED), ("amber", _AMBER), ("blue", _BLUE))
             if word in words), "grey")  # fmt: skip
    return f'<span class="sbx-chip" style="{_CHIP_STYLE[colour]}">{html.escape(text)}</span>'


def cell_text(value: Any) -> str:
    """A table cell as text: lists joined, yes/no for booleans, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell_text(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return yes_no(value)
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def cell(column: str, value: Any, now: datetime | None = None) -> str:
    """One cell as escaped HTML, formatted by what its column holds."""
    if column in TIME_COLUMNS:
        return html.escape(human_time(value, now))
    if column in DATE_COLUMNS:
        return html.escape(human_date(value))
    if column in ("online", "running"):
        return chip(yes_no(value), "green" if value else "grey") if value is not None else ""
    text = cell_text(value)
    if column in CHIP_COLUMNS and text:
        return chip(text.lower() if column == "outcome" else text)
    if column == "source" and ":" in text:  # "box:hospital" → "box hospital"
        kind, _, name = text.partition(":")
        return f"{html.escape(name)} <small style='color:#52606d'>({html.escape(kind)})</small>"
    return html.escape(text)


def table(
    frame: pd.DataFrame | Sequence[dict[str, Any]],
    columns: Iterable[str] | None = None,
    *,
    empty: str = "Nothing here yet.",
    max_rows: int | None = None,
    labels: dict[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """An HTML table of ``frame`` (escaped: the values are DICOM text from anywhere) for people to read."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(list(frame))
    if not len(frame):
        return f'{TABLE_CSS}<p class="sbx-empty">{html.escape(empty)}</p>'
    shown = [c for c in (columns if columns is not None else frame.columns) if c in frame.columns]
    if max_rows is not None:
        frame = frame.head(max_rows)
    names = {**LABELS, **(labels or {})}
    head = "".join(f"<th>{html.escape(names.get(c) or label(c))}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(c, record.get(c), now)}</td>" for c in shown) + "</tr>"
        for record in frame.to_dict(orient="records")
    )
    return f'{TABLE_CSS}<table class="sbx-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def review_table(frame: pd.DataFrame) -> str:
    """The de-identification review, risky rows first, then what the profile changes, then what it keeps;
    the file meta group last (it is rewritten on the way out anyway). The attribute shown once (its path)."""
    if not len(frame):
        return table(frame, empty="The profile leaves nothing to review for this selection.")
    ordered = frame.copy()
    risky = ordered["risk"].fillna("").astype(str).str.len() > 0 if "risk" in ordered else False
    changed = ordered["outcome"].astype(str) != "kept" if "outcome" in ordered else False
    meta = ordered["tag"].astype(str).str.startswith(("(0002", "0002")) if "tag" in ordered else False
    ordered["_order"] = (~pd.Series(risky, index=ordered.index)).astype(int) * 2 + (
        ~pd.Series(changed, index=ordered.index)
    ).astype(int)
    ordered["_meta"] = pd.Series(meta, index=ordered.index).astype(int)
    ordered = ordered.sort_values(["_meta", "_order"], kind="stable")
    attribute = "path" if "path" in ordered else "keyword"
    columns = [attribute, "outcome", "decided_by", "risk", "occurrences"]
    return table(ordered, columns, labels={attribute: "Attribute"})
