"""The images area of the client: pixels and volumes, upload, export and delete.

Volumes and deletes start from a series' image ids, so it builds on :class:`MetadataMixin`.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .base import frame
from .errors import ClientError, NodeUnreachable, NotFound
from .metadata import IMAGE_COLUMNS, MetadataMixin
from .selection import Selection, Series
from .volume import Volume, decode_pixels, read_dataset, slices_of, stack_volume

__all__ = ["ImagesMixin", "UploadSummary"]

_INT_VRS = {"US", "SS", "UL", "SL", "IS", "UV", "SV"}
_FLOAT_VRS = {"DS", "FL", "FD"}


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


class ImagesMixin(MetadataMixin):
    """``images`` routes (and ``import/sessions``): files, pixels, volumes, upload, export, delete."""

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

    def import_sessions(self) -> pd.DataFrame:
        return frame(self.get_all("import/sessions"))

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
