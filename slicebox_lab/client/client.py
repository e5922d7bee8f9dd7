"""SliceboxClient: the node's REST API as pandas DataFrames, numpy volumes and a few verbs.

Used by the widgets (slicebox_lab/ui), notebooks, Voila dashboards and scripts; it speaks HTTP only.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ClientError, NodeUnreachable, NotFound
from .http import PAGE, HttpClient, discover_server
from .volume import Volume, decode_pixels, read_dataset, slices_of, stack_volume

if TYPE_CHECKING:
    from .selection import Selection, Series

__all__ = ["SliceboxClient", "UploadSummary", "connect"]

#: columns of the REST JSON, in the order the DataFrames show them (id first)
PATIENT_COLUMNS = ["id", "PatientName", "PatientID", "PatientBirthDate", "PatientSex"]
STUDY_COLUMNS = [
    "id",
    "patient_id",
    "StudyInstanceUID",
    "StudyDescription",
    "StudyDate",
    "StudyID",
    "AccessionNumber",
    "PatientAge",
]
SERIES_COLUMNS = [
    "id",
    "study_id",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesDate",
    "Modality",
    "ProtocolName",
    "BodyPartExamined",
    "Manufacturer",
    "StationName",
    "FrameOfReferenceUID",
    "source_id",
]
IMAGE_COLUMNS = [
    "id",
    "series_id",
    "SOPInstanceUID",
    "SOPClassUID",
    "ImageType",
    "InstanceNumber",
    "TransferSyntaxUID",
    "NumberOfFrames",
    "size",
    "source_id",
    "created",
]
FLAT_SERIES_COLUMNS = [
    "id",
    "series_id",
    "patient_id",
    "study_id",
    *PATIENT_COLUMNS[1:],
    *STUDY_COLUMNS[2:],
    *SERIES_COLUMNS[2:],
    "source",
    "tags",
    "series_types",
]
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
TRANSACTION_COLUMNS = [
    "id",
    "box_id",
    "box_name",
    "status",
    "reason",
    "total_image_count",
    "sent_image_count",
    "failed_image_count",
    "received_image_count",
    "added_image_count",
    "outgoing_transaction_id",
    "job_id",
    "created",
    "updated",
]
KEY_COLUMNS = [
    "id",
    "created",
    "imageId",
    "profile",
    "PatientName",
    "AnonPatientName",
    "PatientID",
    "AnonPatientID",
    "StudyInstanceUID",
    "AnonStudyInstanceUID",
    "SeriesInstanceUID",
    "AnonSeriesInstanceUID",
    "SOPInstanceUID",
    "AnonSOPInstanceUID",
]
LOG_COLUMNS = ["id", "created", "entry_type", "subject", "message"]
BOX_COLUMNS = ["id", "name", "send_method", "base_url", "online", "last_contact", "last_error", "created"]
NODE_COLUMNS = ["id", "name", "ae_title", "host", "port"]
SCP_COLUMNS = [*NODE_COLUMNS, "running"]
WATCH_COLUMNS = ["id", "name", "path", "delete_on_import", "created"]
ATTRIBUTE_COLUMNS = [
    "tag",
    "name",
    "vr",
    "value",
    "depth",
    "path",
    "keyword",
    "tag_path",
    "name_path",
    "length",
    "values",
]
REPORT_COLUMNS = ["tag", "keyword", "vr", "path", "occurrences", "outcome", "decided_by", "risk"]

_INT_VRS = {"US", "SS", "UL", "SL", "IS", "UV", "SV"}
_FLOAT_VRS = {"DS", "FL", "FD"}
_FINISHED_JOB = ("SUCCEEDED", "FAILED", "CANCELLED")
_FINISHED_TRANSACTION = ("FINISHED", "FAILED")


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ("id",)) -> pd.DataFrame:
    """Rows of REST JSON as a DataFrame: the known columns first (``id`` first), then any others."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    df = pd.DataFrame.from_records(list(rows))
    ordered = [c for c in columns if c in df.columns] + [c for c in df.columns if c not in columns]
    return df[ordered]


def profile_body(options: Any) -> dict[str, Any]:
    """An AnonymizationProfile body from ``None`` (basic profile), a list of option names or a dict."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    if isinstance(options, str):
        return {"options": [options]}
    return {"options": list(options)}


def _typed(vr: str, values: list[str]) -> Any:
    """An attribute listing's text values as numbers where the VR says so; one value → a scalar."""
    converted: list[Any] = []
    for value in values:
        try:
            if vr in _INT_VRS:
                converted.append(int(float(value)))
            elif vr in _FLOAT_VRS:
                converted.append(float(value))
            else:
                converted.append(value)
        except ValueError:
            converted.append(value)
    if not converted:
        return None
    return converted[0] if len(converted) == 1 else converted


def _flatten_series(row: Mapping[str, Any]) -> dict[str, Any]:
    patient = row.get("patient") or {}
    study = row.get("study") or {}
    series = row.get("series") or {}
    out: dict[str, Any] = {
        "id": row.get("id", series.get("id")),
        "series_id": series.get("id", row.get("id")),
        "patient_id": patient.get("id"),
        "study_id": study.get("id"),
    }
    for part in (patient, study, series):
        for key, value in part.items():
            if key not in ("id", "patient_id", "study_id"):
                out[key] = value
    return out


@dataclass
class UploadSummary:
    """What an upload stored (``added``, one row per file, ``new`` False when it replaced a stored image)
    and what the node refused (``refused``: (path, the node's message))."""

    added: pd.DataFrame
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def image_ids(self) -> list[int]:
        return [int(i) for i in self.added["id"]] if len(self.added) else []

    @property
    def series_ids(self) -> list[int]:
        return sorted({int(i) for i in self.added["series_id"]}) if len(self.added) else []

    def __repr__(self) -> str:
        new = int(self.added["new"].sum()) if len(self.added) else 0
        lines = [
            f"UploadSummary: {len(self.added)} file(s) stored ({new} new, {len(self.added) - new} replaced) "
            f"in {len(self.series_ids)} series; {len(self.refused)} refused"
        ]
        for path, message in self.refused[:20]:
            lines.append(f"  refused {path}: {message}")
        if len(self.refused) > 20:
            lines.append(f"  ... and {len(self.refused) - 20} more (see .refused)")
        return "\n".join(lines)


def _progress(total: int | None, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, unit="img")


class SliceboxClient(HttpClient):
    """A slicebox_lab node over HTTP; see the module docstring of :mod:`slicebox_lab.client`."""

    workers = 4

    # ------------------------------------------------------------------ system

    def health(self) -> dict[str, Any]:
        return dict(self.get("system/health"))

    def information(self) -> dict[str, Any]:
        return dict(self.get("system/information"))

    def current_user(self) -> dict[str, Any]:
        return dict(self.get("users/current"))

    def sources(self) -> pd.DataFrame:
        return frame(self.get("sources"), ["source_id", "source_type", "source_name"])

    # ------------------------------------------------------------------ browsing

    def _organizing(
        self,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
    ) -> dict[str, Any]:
        """The list routes' filter parameters from ids or names."""
        params: dict[str, Any] = {}
        if sources is not None:
            params["sources"] = [s if isinstance(s, str) and ":" in s else f"user:{int(s)}" for s in _listify(sources)]
        if types is not None:
            params["seriestypes"] = self._ids_of(types, self.series_types)
        if tags is not None:
            params["seriestags"] = self._ids_of(tags, self.series_tags)
            params["seriestagsmatch"] = tags_match
        return params

    @staticmethod
    def _ids_of(values: Any, listing: Callable[[], pd.DataFrame]) -> list[int]:
        """Ids from ids or names (names looked up in ``listing``; an unknown name → NotFound)."""
        wanted = _listify(values)
        names = [v for v in wanted if isinstance(v, str) and not v.isdigit()]
        by_name: dict[str, int] = {}
        if names:
            known = listing()
            by_name = {str(n): int(i) for n, i in zip(known.get("name", []), known.get("id", []), strict=False)}
        ids = []
        for value in wanted:
            if isinstance(value, str) and not value.isdigit():
                if value not in by_name:
                    raise NotFound(f"no series tag or type named {value!r}", 404)
                ids.append(by_name[value])
            else:
                ids.append(int(value))
        return ids

    def _query_body(
        self, attributes: Mapping[str, Any], order_by: str | None, ascending: bool, filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        properties = []
        for name, value in attributes.items():
            text = str(value)
            operator = "wildcard" if ("*" in text or "?" in text) else "="
            properties.append({"property_name": name, "operator": operator, "property_value": text})
        body: dict[str, Any] = {"query_properties": properties, "order": {"order_ascending": ascending}}
        if order_by:
            body["order"]["order_by"] = order_by
        f: dict[str, Any] = {}
        if "sources" in filters:
            f["sources"] = [int(str(s).rpartition(":")[2]) for s in filters["sources"]]
        if "seriestypes" in filters:
            f["series_types"] = filters["seriestypes"]
        if "seriestags" in filters:
            f["series_tags"] = filters["seriestags"]
            f["series_tags_match"] = filters.get("seriestagsmatch", "any")
        if f:
            body["filters"] = f
        return body

    def _level(
        self,
        level: str,
        list_path: str,
        parent: tuple[str, str, int | None],
        columns: Sequence[str],
        filter: str | None,
        order_by: str | None,
        ascending: bool,
        limit: int | None,
        offset: int,
        organizing: Mapping[str, Any],
        attributes: Mapping[str, Any],
    ) -> pd.DataFrame:
        parameter, property_name, parent_id = parent
        if attributes or (parent_id is None and parameter) or (filter and level in ("studies", "series")):
            wanted = dict(attributes)
            if parent_id is not None:
                wanted[property_name] = parent_id
            if filter:
                raise ValueError("filter= cannot be combined with attribute queries or a missing parent id")
            rows = self.query_all(
                level, self._query_body(wanted, order_by, ascending, organizing), limit=limit, offset=offset
            )
            return frame(rows, columns)
        params: dict[str, Any] = {**organizing, "orderby": order_by, "orderascending": ascending, "filter": filter}
        if parameter:
            params[parameter] = parent_id
        return frame(self.get_all(list_path, params, limit=limit, offset=offset), columns)

    def patients(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Patients; ``filter`` a substring of their text columns, keyword arguments attribute values
        (``PatientName="Doe*"``: DICOM wildcards)."""
        return self._level(
            "patients",
            "metadata/patients",
            ("", "", None),
            PATIENT_COLUMNS,
            filter,
            order_by,
            ascending,
            limit,
            offset,
            self._organizing(sources, types, tags, tags_match),
            attributes,
        )

    def studies(
        self,
        patient_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Studies of a patient (every study when ``patient_id`` is None)."""
        return self._level(
            "studies",
            "metadata/studies",
            ("patientid", "patient_id", None if patient_id is None else int(patient_id)),
            STUDY_COLUMNS,
            None,
            order_by,
            ascending,
            limit,
            offset,
            self._organizing(sources, types, tags, tags_match),
            attributes,
        )

    def series(
        self,
        study_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        sources: Any = None,
        types: Any = None,
        tags: Any = None,
        tags_match: str = "any",
        **attributes: Any,
    ) -> pd.DataFrame:
        """Series of a study (every series when ``study_id`` is None)."""
        return self._level(
            "series",
            "metadata/series",
            ("studyid", "study_id", None if study_id is None else int(study_id)),
            SERIES_COLUMNS,
            None,
            order_by,
            ascending,
            limit,
            offset,
            self._organizing(sources, types, tags, tags_match),
            attributes,
        )

    def images(
        self,
        series_id: int | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        **attributes: Any,
    ) -> pd.DataFrame:
        """Images of a series (every image when ``series_id`` is None)."""
        return self._level(
            "images",
            "metadata/images",
            ("seriesid", "series_id", None if series_id is None else int(series_id)),
            IMAGE_COLUMNS,
            None,
            order_by,
            ascending,
            limit,
            offset,
            {},
            attributes,
        )

    def flat_series(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        offset: int = 0,
        tags: Any = None,
        types: Any = None,
        sources: Any = None,
        tags_match: str = "any",
        details: bool = True,
        **attributes: Any,
    ) -> pd.DataFrame:
        """Series with their study and patient, one row each (``id`` = ``series_id``); with ``details``
        also ``source`` (``type:name``), ``tags`` and ``series_types`` (lists of names)."""
        organizing = self._organizing(sources, types, tags, tags_match)
        if attributes:
            if filter:
                raise ValueError("filter= cannot be combined with attribute queries")
            raw = self.query_all(
                "flatseries", self._query_body(attributes, order_by, ascending, organizing), limit=limit, offset=offset
            )
        else:
            params = {**organizing, "orderby": order_by, "orderascending": ascending, "filter": filter}
            raw = self.get_all("metadata/flatseries", params, limit=limit, offset=offset)
        rows = [_flatten_series(r) for r in raw]
        if details:
            self._add_details(rows)
        columns = (
            FLAT_SERIES_COLUMNS
            if details
            else [c for c in FLAT_SERIES_COLUMNS if c not in ("source", "tags", "series_types")]
        )
        return frame(rows, columns)

    def _add_details(self, rows: list[dict[str, Any]]) -> None:
        """source, tags and series types of flat series rows: one request per tag, one for types."""
        if not rows:
            return
        sources = {s["source_id"]: f"{s['source_type']}:{s['source_name']}" for s in self.get("sources")}
        ids = [int(r["series_id"]) for r in rows]
        wanted = set(ids)
        tag_names: dict[int, list[str]] = {i: [] for i in ids}
        used = [t for t in self.get_all("metadata/seriestags") if t.get("series_count")]
        if used and len(ids) <= max(20, len(used)):  # a page of series: ask each series
            per_series = self._map(lambda i: self.get(f"metadata/series/{i}/seriestags"), ids, False, "tags")
            for series_id, tags in zip(ids, per_series, strict=True):
                tag_names[series_id] = [str(t["name"]) for t in tags]
        else:  # many series: ask each tag which series carry it
            for tag in used:
                for r in self.get_all("metadata/flatseries", {"seriestags": tag["id"]}):
                    if int(r["id"]) in wanted:
                        tag_names[int(r["id"])].append(str(tag["name"]))
        type_names: dict[int, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), PAGE):
            for entry in self.post("seriestypes/series/query", json={"series_ids": ids[start : start + PAGE]}):
                type_names.setdefault(int(entry["series_id"]), []).append(str(entry["series_type"]["name"]))
        for r in rows:
            r["source"] = sources.get(r.get("source_id"), "")
            r["tags"] = sorted(tag_names[int(r["series_id"])])
            r["series_types"] = sorted(type_names.get(int(r["series_id"]), []))

    def patient(self, patient_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/patients/{int(patient_id)}"))

    def study(self, study_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/studies/{int(study_id)}"))

    def series_record(self, series_id: int) -> dict[str, Any]:
        """One flat series row (patient, study and series attributes) as a dict."""
        return _flatten_series(self.get(f"metadata/flatseries/{int(series_id)}"))

    def image(self, image_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/images/{int(image_id)}"))

    def image_ids(self, series_id: int) -> list[int]:
        return [int(r["id"]) for r in self.get_all("metadata/images", {"seriesid": int(series_id)})]

    def attributes(self, image_id: int) -> pd.DataFrame:
        """Every attribute before the pixel data (tag, name, vr, value, depth, path)."""
        rows = []
        for a in self.get(f"images/{int(image_id)}/attributes"):
            values = [str(v) for v in a.get("values") or []]
            rows.append({**a, "name": a.get("keyword", ""), "value": "\\".join(values), "path": a.get("tag_path", "")})
        return frame(rows, ATTRIBUTE_COLUMNS)

    def source_of(self, series_id: int) -> dict[str, Any]:
        return dict(self.get(f"metadata/series/{int(series_id)}/source"))

    # ------------------------------------------------------------------ pixels

    def image_bytes(self, image_id: int) -> bytes:
        """The stored DICOM file."""
        return self.get_bytes(f"images/{int(image_id)}")

    def image_info(self, image_id: int) -> dict[str, Any]:
        """What a viewer needs: Rows, Columns, NumberOfFrames, window, rescale, spacing, position …
        (top-level attributes as numbers where the VR is numeric) plus the server's pixel range."""
        info: dict[str, Any] = dict(self.get(f"images/{int(image_id)}/imageinformation"))
        wanted = {
            "Rows",
            "Columns",
            "NumberOfFrames",
            "WindowCenter",
            "WindowWidth",
            "RescaleSlope",
            "RescaleIntercept",
            "PixelSpacing",
            "SliceThickness",
            "SpacingBetweenSlices",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "BitsAllocated",
            "BitsStored",
            "PixelRepresentation",
            "PhotometricInterpretation",
            "SamplesPerPixel",
            "Modality",
            "InstanceNumber",
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "TransferSyntaxUID",
        }
        for a in self.get(f"images/{int(image_id)}/attributes"):
            keyword = a.get("keyword")
            if a.get("depth", 0) == 0 and keyword in wanted:
                info[keyword] = _typed(str(a.get("vr", "")), [str(v) for v in a.get("values") or []])
        info.setdefault("NumberOfFrames", info.get("number_of_frames", 1))
        for name in ("WindowCenter", "WindowWidth"):
            if isinstance(info.get(name), list):
                info[name] = info[name][0]
        info.setdefault("RescaleSlope", 1.0)
        info.setdefault("RescaleIntercept", 0.0)
        return info

    def pixel_array(self, image_id: int, *, frame: int | None = None) -> np.ndarray:
        """float32 pixels decoded in the kernel, rescale applied; every frame when ``frame`` is None
        ((frames, rows, cols) for a multi-frame image), else the 1-based frame (rows, cols)."""
        return decode_pixels(read_dataset(self.image_bytes(image_id)), frame)

    def png(
        self,
        image_id: int,
        *,
        frame: int = 1,
        window: float | tuple[float, float] | None = None,
        level: float | None = None,
        width: int | None = None,
        height: int | None = None,
        window_min: float | None = None,
        window_max: float | None = None,
    ) -> bytes:
        """One frame as PNG rendered by the node. ``window``: the window width (with ``level`` its centre),
        or a (center, width) pair; none: the file's own window. ``width``/``height``: output size in
        pixels (the node keeps the aspect ratio; 0/None native)."""
        if isinstance(window, tuple | list):
            level, window = float(window[0]), float(window[1])
        if window is not None or level is not None:
            if window is None or level is None:
                info = self.image_info(image_id)
                level = float(info.get("WindowCenter") if level is None else level)  # type: ignore[arg-type]
                window = float(info.get("WindowWidth") if window is None else window)  # type: ignore[arg-type]
            window_min, window_max = level - window / 2, level + window / 2
        if width and not height:
            info = self.image_info(image_id)
            rows, cols = int(info.get("Rows") or 0), int(info.get("Columns") or 0)
            height = max(1, round(width * rows / cols)) if rows and cols else width
        return self.get_bytes(
            f"images/{int(image_id)}/png",
            framenumber=frame,
            windowmin=window_min,
            windowmax=window_max,
            imageheight=height or None,
        )

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any], progress: bool, description: str) -> list[Any]:
        """``fn`` over ``items`` on a small thread pool, results in order, with a tqdm bar."""
        results: list[Any] = [None] * len(items)
        with _progress(len(items), description, progress) as bar, ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(fn, item): n for n, item in enumerate(items)}
            for future in futures:
                results[futures[future]] = future.result()
                bar.update(1)
        return results

    def series_volume(self, series_id: int, *, progress: bool = False) -> Volume:
        """The series as a :class:`Volume` (slices sorted along the normal, rescale applied)."""
        ids = self.image_ids(series_id)
        if not ids:
            raise NotFound(f"series {series_id} has no images", 404)
        return self.volume_of_images(ids, progress=progress)

    def volume_of_images(self, image_ids: Sequence[int], *, progress: bool = False) -> Volume:
        def load(image_id: int) -> list[Any]:
            return slices_of(image_id, read_dataset(self.image_bytes(image_id)))

        parts = self._map(load, list(image_ids), progress, "images")
        return stack_volume([s for part in parts for s in part])

    def series_obj(self, series_id: int) -> Series:
        from .selection import Series

        return Series(self, int(series_id))

    # ------------------------------------------------------------------ upload / export / delete

    def upload(self, path_or_folder: str | os.PathLike[str] | Iterable[Any], *, progress: bool = True) -> UploadSummary:
        """Store files (a file, a folder searched recursively, or a list of them) one request each; what the
        node refuses is listed with its message, the rest goes on."""
        paths = _files_of(path_or_folder)

        def send(path: Path) -> tuple[Path, dict[str, Any] | None, str | None]:
            try:
                data = path.read_bytes()
            except OSError as e:
                return path, None, f"cannot read the file: {e}"
            try:
                response = self.request("POST", "images", data=data, headers={"Content-Type": "application/dicom"})
            except NodeUnreachable:
                raise
            except ClientError as e:
                return path, None, e.message
            return path, {**response.json(), "path": str(path), "new": response.status_code == 201}, None

        added: list[dict[str, Any]] = []
        refused: list[tuple[str, str]] = []
        for path, row, message in self._map(send, paths, progress, "upload"):
            if row is not None:
                added.append(row)
            else:
                refused.append((str(path), message or ""))
        return UploadSummary(frame(added, [*IMAGE_COLUMNS, "path", "new"]), refused)

    def upload_bytes(self, data: bytes) -> dict[str, Any]:
        """Store one DICOM file given as bytes; the image record."""
        return dict(self.post("images", data=data, headers={"Content-Type": "application/dicom"}))

    def export(self, selection_or_image_ids: Any, folder: str | os.PathLike[str]) -> list[Path]:
        """Download images into ``folder`` (patient/study/series/image.dcm, as the node's zip export names them)."""
        ids = self._image_ids_of(selection_or_image_ids)
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        if not ids:
            return []
        export = self.post("images/export", json=ids)
        root = target.resolve()
        written: list[Path] = []
        with tempfile.TemporaryFile() as tmp:
            response = self.request("GET", "images/export", params={"id": export["id"]}, stream=True)
            for chunk in response.iter_content(1 << 20):
                tmp.write(chunk)
            tmp.seek(0)
            with zipfile.ZipFile(tmp) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    destination = (root / info.filename).resolve()
                    if root not in destination.parents:
                        raise ClientError(f"the export holds an unsafe path {info.filename!r}")
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as source, open(destination, "wb") as out:
                        while chunk := source.read(1 << 20):
                            out.write(chunk)
                    written.append(destination)
        return written

    def _image_ids_of(self, value: Any) -> list[int]:
        from .selection import Selection, Series

        if isinstance(value, Selection):
            return value.image_ids()
        if isinstance(value, Series):
            return self.image_ids(value.id)
        if isinstance(value, UploadSummary):
            return value.image_ids
        if isinstance(value, pd.DataFrame):
            return [int(i) for i in value["id"]]
        if isinstance(value, int | np.integer):
            return [int(value)]
        return [int(i) for i in value]

    def delete_images(self, image_ids: Iterable[int]) -> None:
        self.post("images/delete", json=[int(i) for i in image_ids])

    def delete_image(self, image_id: int) -> None:
        self.delete(f"images/{int(image_id)}")

    # ------------------------------------------------------------------ selections

    def select(self, frame_or_series_ids: Any) -> Selection:
        """A selection of series from a DataFrame (``series_id`` or ``id`` column of series) or ids."""
        from .selection import Selection

        return Selection(self, _series_ids_of(frame_or_series_ids))

    # ------------------------------------------------------------------ anonymization

    def anonymization_options(self) -> list[dict[str, Any]]:
        return list(self.get("anonymization/options"))

    def review(
        self, image_ids: Iterable[int] = (), options: Any = None, *, series_ids: Iterable[int] = ()
    ) -> pd.DataFrame:
        """What the profile would do to each attribute path of the selection (values never included);
        the report's summary is in ``df.attrs["summary"]``, the text found in the pixels (rows shown masked,
        thumbnails) in ``df.attrs["pixel_text"]``."""
        body = {
            **profile_body(options),
            "imageIds": [int(i) for i in image_ids],
            "seriesIds": [int(i) for i in series_ids],
        }
        report = self.post("anonymization/report", json=body)
        df = frame(report.get("attributes", []), REPORT_COLUMNS)
        df.attrs["summary"] = report.get("summary", {})
        df.attrs["pixel_text"] = report.get("pixel_text") or {}
        return df

    def anonymize_images(self, image_ids: Iterable[int], options: Any = None) -> dict[str, Any]:
        """Anonymize images in place, as a job (see :meth:`wait_job`)."""
        return dict(
            self.post(
                "anonymization/anonymize", json={**profile_body(options), "imageIds": [int(i) for i in image_ids]}
            )
        )

    def anonymize_image(self, image_id: int, options: Any = None) -> dict[str, Any]:
        """Replace one stored image by its de-identified version; the new image record."""
        return dict(self.put(f"images/{int(image_id)}/anonymize", json=profile_body(options)))

    def anonymized_bytes(self, image_id: int, options: Any = None) -> bytes:
        """The image de-identified, as a file (nothing stored changes)."""
        return self.request(
            "POST", f"images/{int(image_id)}/anonymized", json=profile_body(options), headers={"Accept": "*/*"}
        ).content

    def modify_image(self, image_id: int, tag_values: Any) -> dict[str, Any]:
        """Write tag values (``{"PatientName": "x"}`` or TagValue dicts) into a stored image; the new record."""
        if isinstance(tag_values, Mapping):
            tag_values = [{"tagPath": k, "value": v} for k, v in tag_values.items()]
        return dict(self.put(f"images/{int(image_id)}/modify", json=list(tag_values)))

    def keys(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
    ) -> pd.DataFrame:
        params = {"filter": filter, "orderby": order_by, "orderascending": ascending}
        return frame(self.get_all("anonymization/keys", params, limit=limit), KEY_COLUMNS)

    def key_values(self, key_id: int) -> pd.DataFrame:
        return frame(
            self.get(f"anonymization/keys/{int(key_id)}/keyvalues"),
            ["id", "keyId", "tagPath", "level", "value", "anonymizedValue"],
        )

    def delete_key(self, key_id: int) -> None:
        self.delete(f"anonymization/keys/{int(key_id)}")

    def export_keys_csv(self) -> str:
        return str(self.get("anonymization/keys/export/csv"))

    # ------------------------------------------------------------------ sending

    def send_to_box(
        self, box_id: int | str, image_ids: Iterable[int], *, options: Any = None, tag_values: Any = None
    ) -> dict[str, Any]:
        """Send images to a box (id or name) as one outgoing transaction; the transaction (``job_id`` inside).
        ``options`` None: the box's default profile."""
        box = self._id_by_name(box_id, self.boxes, "box")
        body: dict[str, Any] = {"imageIds": [int(i) for i in image_ids]}
        if options is not None:
            body["profile"] = profile_body(options)
        if tag_values is not None:
            body["tagValues"] = tag_values
        job = self.post(f"boxes/{box}/send", json=body)
        transaction_id = (job.get("parameters") or {}).get("transaction_id")
        if transaction_id is None:
            return {"job_id": job["id"], "status": "WAITING", "job": job}
        return dict(self.get(f"boxes/outgoing/transactions/{int(transaction_id)}"))

    def send_to_scu(self, scu_id: int | str, image_ids: Iterable[int]) -> dict[str, Any]:
        """C-STORE images to a remote node (id or name), as a job (see :meth:`wait_job`)."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        return dict(self.post(f"scus/{scu}/send", json={"image_ids": [int(i) for i in image_ids]}))

    @staticmethod
    def _id_by_name(value: int | str, listing: Callable[[], pd.DataFrame], what: str) -> int:
        if isinstance(value, str) and not value.isdigit():
            known = listing()
            match = known[known["name"] == value] if len(known) else known
            if not len(match):
                raise NotFound(f"no {what} named {value!r}", 404)
            return int(match["id"].iloc[0])
        return int(value)

    def _poll(
        self,
        fetch: Callable[[], dict[str, Any]],
        finished: Callable[[dict[str, Any]], bool],
        done_total: Callable[[dict[str, Any]], tuple[int, int | None]],
        description: str,
        progress: bool,
        timeout: float | None,
        interval: float,
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        state = fetch()
        with _progress(done_total(state)[1], description, progress) as bar:
            while True:
                done, total = done_total(state)
                if total is not None and bar.total != total:
                    bar.total = total
                bar.n = done
                bar.refresh()
                if finished(state):
                    return state
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{description} not finished after {timeout} s: {state}")
                time.sleep(interval)
                state = fetch()

    def wait_job(
        self, job_id: int, *, progress: bool = True, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll a job until SUCCEEDED, FAILED or CANCELLED; the final job (check ``state``)."""
        return self._poll(
            lambda: dict(self.get(f"jobs/{int(job_id)}")),
            lambda j: j.get("state") in _FINISHED_JOB,
            lambda j: (int(j.get("progress_done") or 0), j.get("progress_total")),
            f"job {job_id}",
            progress,
            timeout,
            interval,
        )

    def wait_transaction(
        self, transaction_id: int, *, progress: bool = True, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll an outgoing box transaction until FINISHED or FAILED; the final transaction."""
        return self._poll(
            lambda: dict(self.get(f"boxes/outgoing/transactions/{int(transaction_id)}")),
            lambda t: t.get("status") in _FINISHED_TRANSACTION,
            lambda t: (int(t.get("sent_image_count") or 0), t.get("total_image_count")),
            f"transaction {transaction_id}",
            progress,
            timeout,
            interval,
        )

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.get(f"jobs/{int(job_id)}"))

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return dict(self.post(f"jobs/{int(job_id)}/cancel"))

    def resume_job(self, job_id: int) -> dict[str, Any]:
        return dict(self.post(f"jobs/{int(job_id)}/resume"))

    def transaction(self, transaction_id: int, direction: str = "outgoing") -> dict[str, Any]:
        return dict(self.get(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}"))

    def transaction_images(self, transaction_id: int, direction: str = "outgoing") -> pd.DataFrame:
        return frame(self.get(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}/images"))

    def delete_transaction(self, transaction_id: int, direction: str = "outgoing") -> None:
        self.delete(f"boxes/{_direction(direction)}/transactions/{int(transaction_id)}")

    # ------------------------------------------------------------------ listings

    def transactions(self, direction: str = "outgoing", *, limit: int | None = None) -> pd.DataFrame:
        return frame(self.get_all(f"boxes/{_direction(direction)}/transactions", limit=limit), TRANSACTION_COLUMNS)

    def jobs(self, *, state: str | None = None, kind: str | None = None, limit: int | None = None) -> pd.DataFrame:
        return frame(self.get_all("jobs", {"state": state, "kind": kind}, limit=limit), JOB_COLUMNS)

    def log(self, limit: int | None = 100, *, subject: str | None = None, type: str | None = None) -> pd.DataFrame:
        """Log entries, newest first."""
        return frame(self.get_all("log", {"subject": subject, "type": type}, limit=limit), LOG_COLUMNS)

    def audit(self, limit: int | None = 100, **params: Any) -> pd.DataFrame:
        """The audit trail, newest first (``user``, ``action``, ``since``, ``until`` as the route takes them)."""
        return frame(
            self.get_all("audit", params, limit=limit),
            ["id", "created", "user", "action", "method", "path", "status", "remote_ip", "detail"],
        )

    def boxes(self) -> pd.DataFrame:
        return frame(self.get_all("boxes"), BOX_COLUMNS)

    def scus(self) -> pd.DataFrame:
        return frame(self.get_all("scus"), NODE_COLUMNS)

    def scps(self) -> pd.DataFrame:
        return frame(self.get_all("scps"), SCP_COLUMNS)

    def watches(self) -> pd.DataFrame:
        return frame(self.get_all("directorywatches"), WATCH_COLUMNS)

    def forwarding_rules(self) -> pd.DataFrame:
        return frame(
            self.get_all("forwarding/rules"),
            ["id", "source", "destination", "keepImages", "quietSeconds", "created", "queuedImageCount"],
        )

    def forwarding_batches(self, rule_id: int) -> pd.DataFrame:
        return frame(self.get_all(f"forwarding/rules/{int(rule_id)}/batches"))

    def filters(self) -> pd.DataFrame:
        return frame(self.get("filtering/filters"), ["id", "name", "type", "tagPaths"])

    def filter_associations(self) -> pd.DataFrame:
        return frame(
            self.get("filtering/associations"),
            ["id", "sourceType", "sourceName", "sourceId", "filterId", "filterName"],
        )

    def series_types(self) -> pd.DataFrame:
        return frame(self.get_all("seriestypes"), ["id", "name"])

    def series_type_rules(self, series_type_id: int) -> pd.DataFrame:
        return frame(self.get(f"seriestypes/{int(series_type_id)}/rules"), ["id", "series_type_id", "attributes"])

    def users(self) -> pd.DataFrame:
        return frame(self.get_all("users"), ["id", "user", "role", "created"])

    def series_tags(self) -> pd.DataFrame:
        return frame(self.get_all("metadata/seriestags"), ["id", "name", "series_count"])

    def import_sessions(self) -> pd.DataFrame:
        return frame(self.get_all("import/sessions"))

    # ------------------------------------------------------------------ admin (verb_noun)

    def add_scp(self, name: str, ae_title: str, port: int, host: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "ae_title": ae_title, "port": int(port)}
        if host is not None:
            body["host"] = host
        return dict(self.post("scps", json=body))

    def delete_scp(self, scp_id: int) -> None:
        self.delete(f"scps/{int(scp_id)}")

    def add_scu(self, name: str, ae_title: str, host: str, port: int) -> dict[str, Any]:
        return dict(self.post("scus", json={"name": name, "ae_title": ae_title, "host": host, "port": int(port)}))

    def delete_scu(self, scu_id: int) -> None:
        self.delete(f"scus/{int(scu_id)}")

    def echo_scu(self, scu_id: int | str) -> dict[str, Any]:
        return dict(self.post(f"scus/{self._id_by_name(scu_id, self.scus, 'remote node')}/echo"))

    def query_scu(self, scu_id: int | str, level: str = "STUDY", **identifier: Any) -> pd.DataFrame:
        """C-FIND a remote node: keywords with a value to match, or "" to have them returned."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        rows = self.post(f"scus/{scu}/query", json={"level": level.upper(), "identifier": identifier})
        return pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(identifier))

    def retrieve_scu(
        self,
        scu_id: int | str,
        level: str,
        identifier: Mapping[str, Any],
        *,
        method: str = "move",
        destination_scp_id: int | None = None,
    ) -> dict[str, Any]:
        """C-MOVE (into one of this node's SCPs) or C-GET from a remote node, as a job."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        body: dict[str, Any] = {"level": level.upper(), "identifier": dict(identifier), "method": method}
        if destination_scp_id is not None:
            body["destination_scp_id"] = int(destination_scp_id)
        return dict(self.post(f"scus/{scu}/retrieve", json=body))

    def add_watch(self, name: str, path: str | os.PathLike[str], *, delete_on_import: bool = False) -> dict[str, Any]:
        return dict(
            self.post("directorywatches", json={"name": name, "path": str(path), "delete_on_import": delete_on_import})
        )

    def delete_watch(self, watch_id: int) -> None:
        self.delete(f"directorywatches/{int(watch_id)}")

    def create_box_connection(
        self, name: str, options: Any = None, *, send_anonymous_as_is: bool = False
    ) -> dict[str, Any]:
        """A box the partner will call; the answer's ``base_url`` is the URL to hand to the partner."""
        body: dict[str, Any] = {"name": name, "sendAnonymousAsIs": send_anonymous_as_is}
        if options is not None:
            body["defaultProfile"] = profile_body(options)
        return dict(self.post("boxes/createconnection", json=body))

    def connect_box(
        self, name: str, url: str, options: Any = None, *, send_anonymous_as_is: bool = False
    ) -> dict[str, Any]:
        """Connect to a partner from the URL its create_box_connection answered."""
        body: dict[str, Any] = {"name": name, "url": url, "sendAnonymousAsIs": send_anonymous_as_is}
        if options is not None:
            body["defaultProfile"] = profile_body(options)
        return dict(self.post("boxes/connect", json=body))

    def delete_box(self, box_id: int) -> None:
        self.delete(f"boxes/{int(box_id)}")

    def add_user(self, user: str, password: str, role: str = "USER") -> dict[str, Any]:
        return dict(self.post("users", json={"user": user, "password": password, "role": role}))

    def delete_user(self, user_id: int) -> None:
        self.delete(f"users/{int(user_id)}")

    def add_series_tag(self, name: str) -> dict[str, Any]:
        return dict(self.post("metadata/seriestags", json={"name": name}))

    def rename_series_tag(self, tag_id: int, name: str) -> dict[str, Any]:
        return dict(self.put(f"metadata/seriestags/{int(tag_id)}", json={"name": name}))

    def delete_series_tag(self, tag_id: int) -> None:
        self.delete(f"metadata/seriestags/{int(tag_id)}")

    def tag_series(self, series_id: int, name: str) -> dict[str, Any]:
        return dict(self.post(f"metadata/series/{int(series_id)}/seriestags", json={"name": name}))

    def untag_series(self, series_id: int, tag_id: int) -> None:
        self.delete(f"metadata/series/{int(series_id)}/seriestags/{int(tag_id)}")

    def add_series_type(self, name: str) -> dict[str, Any]:
        return dict(self.post("seriestypes", json={"name": name}))

    def delete_series_type(self, series_type_id: int) -> None:
        self.delete(f"seriestypes/{int(series_type_id)}")

    def add_series_type_rule(self, series_type_id: int, attributes: Any) -> dict[str, Any]:
        """A rule from ``{"Modality": ["CT"]}`` or ``[{"tag", "values"}]``."""
        if isinstance(attributes, Mapping):
            attributes = [{"tag": k, "values": list(_listify(v))} for k, v in attributes.items()]
        return dict(self.post(f"seriestypes/{int(series_type_id)}/rules", json={"attributes": list(attributes)}))

    def delete_series_type_rule(self, series_type_id: int, rule_id: int) -> None:
        self.delete(f"seriestypes/{int(series_type_id)}/rules/{int(rule_id)}")

    def update_series_types(self) -> dict[str, Any]:
        """Re-classify every series now (a job)."""
        return dict(self.post("seriestypes/updatestatus"))

    def add_filter(self, name: str, type: str, tag_paths: Iterable[str] = ()) -> dict[str, Any]:
        return dict(
            self.post("filtering/filters", json={"name": name, "type": type.upper(), "tagPaths": list(tag_paths)})
        )

    def delete_filter(self, filter_id: int) -> None:
        self.delete(f"filtering/filters/{int(filter_id)}")

    def add_filter_association(
        self, filter_id: int, source_type: str, source_name: str | None = None, source_id: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"filterId": int(filter_id), "sourceType": source_type}
        if source_name is not None:
            body["sourceName"] = source_name
        if source_id is not None:
            body["sourceId"] = int(source_id)
        return dict(self.post("filtering/associations", json=body))

    def delete_filter_association(self, association_id: int) -> None:
        self.delete(f"filtering/associations/{int(association_id)}")

    def add_forwarding_rule(
        self,
        source_type: str,
        source_name: str,
        destination_type: str,
        destination_id: int,
        *,
        keep_images: bool = True,
        quiet_seconds: float = 30,
    ) -> dict[str, Any]:
        body = {
            "source": {"sourceType": source_type, "sourceName": source_name},
            "destination": {"type": destination_type, "id": int(destination_id)},
            "keepImages": keep_images,
            "quietSeconds": quiet_seconds,
        }
        return dict(self.post("forwarding/rules", json=body))

    def delete_forwarding_rule(self, rule_id: int) -> None:
        self.delete(f"forwarding/rules/{int(rule_id)}")

    def clear_log(self) -> None:
        self.delete("log")


def _direction(direction: str) -> str:
    if direction not in ("outgoing", "incoming"):
        raise ValueError(f"direction must be 'outgoing' or 'incoming', not {direction!r}")
    return direction


def _listify(value: Any) -> list[Any]:
    if isinstance(value, str | int | np.integer):
        return [value]
    return list(value)


def _series_ids_of(value: Any) -> list[int]:
    if isinstance(value, pd.DataFrame):
        column = "series_id" if "series_id" in value.columns else "id"
        if column not in value.columns:
            raise ValueError("the DataFrame needs a series_id or id column of series")
        ids = [int(i) for i in value[column]]
    elif isinstance(value, pd.Series):
        ids = [int(i) for i in value]
    elif isinstance(value, int | np.integer):
        ids = [int(value)]
    else:
        ids = [int(getattr(i, "id", i)) for i in value]
    return list(dict.fromkeys(ids))


def _files_of(value: Any) -> list[Path]:
    if isinstance(value, str | os.PathLike):
        values: list[Any] = [value]
    else:
        values = list(value)
    files: list[Path] = []
    for item in values:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return files


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 60,
    check: bool = True,
) -> SliceboxClient:
    """A client for a node: ``url`` (and ``token`` or ``username``/``password``); without a URL,
    ``SLICEBOX_URL``/``SLICEBOX_TOKEN``, else the Jupyter server that started this kernel.
    ``check`` asks the node's health once, so a wrong URL or token fails here, clearly."""
    if url is None:
        url = os.environ.get("SLICEBOX_URL") or None
        if url is not None and token is None and username is None:
            token = os.environ.get("SLICEBOX_TOKEN") or None
    if url is None:
        server = discover_server()
        url = str(server.get("url") or "")
        if not url.startswith("http"):
            raise NodeUnreachable(
                f"the Jupyter server (pid {server.get('pid')}) listens on a socket, not a URL; "
                "call connect(url, token=...)"
            )
        if token is None and username is None:
            token = str(server.get("token") or "") or os.environ.get("JUPYTERHUB_API_TOKEN") or None
    client = SliceboxClient(url, token, username=username, password=password, timeout=timeout)
    if check:
        client.health()
    return client
