"""Downloads of many images: the selections kept for a later zip (as Slicebox did), and the zip streamed as it is
made, never held in memory."""

from __future__ import annotations

import re
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .errors import InvalidInput, NotFound
from .index import Index
from .model import Image

__all__ = ["ExportSets", "ZipStream", "export_entries"]


def export_entries(index: Index, image_ids: Iterable[int]) -> Iterator[tuple[str, Image]]:
    """(path in the zip, image) for each existing image, in Slicebox's folder layout."""
    for image_id in image_ids:
        try:
            image = index.get_image(image_id)
            flat = index.get_flat_series(image.series_id)
        except NotFound:
            continue
        patient, study, series = flat.patient, flat.study, flat.series
        parts = [
            f"{patient.id}_{patient.PatientName}-{patient.PatientID}",
            f"{study.id}_{study.StudyDate}",
            f"{series.id}_{series.SeriesDate}_{series.Modality}",
        ]
        yield "/".join(_safe_path_part(p) for p in parts) + f"/{image.id}.dcm", image


def _safe_path_part(part: str) -> str:
    return re.sub(r'[/\\:*?"<>|\x00-\x1f]', "-", part)


class ExportSets:
    """Selections of images to download as a zip, kept for six hours (as Slicebox did)."""

    lifetime_seconds = 6 * 3600

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 1
        self._sets: dict[int, tuple[float, tuple[int, ...]]] = {}

    def add(self, image_ids: Iterable[int]) -> int:
        ids = tuple(image_ids)
        if not ids:
            raise InvalidInput("an export needs at least one image id")
        with self._lock:
            now = time.monotonic()
            self._sets = {k: v for k, v in self._sets.items() if now - v[0] < self.lifetime_seconds}
            export_id = self._next
            self._next += 1
            self._sets[export_id] = (now, ids)
            return export_id

    def get(self, export_id: int) -> tuple[int, ...]:
        with self._lock:
            entry = self._sets.get(export_id)
        if entry is None or time.monotonic() - entry[0] >= self.lifetime_seconds:
            raise NotFound(f"export set {export_id} not found (export sets are kept for six hours)")
        return entry[1]


class ZipStream:
    """Builds a zip file piece by piece so it is streamed, never held in memory.

    ``zipfile`` writes to any object with ``write``; this one hands the bytes
    back to the caller after each file (data descriptors make seeking unneeded).
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offset = 0
        self._zip = zipfile.ZipFile(self, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)

    # the file-like protocol zipfile needs on a non-seekable stream
    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def add(self, name: str, source: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Add one file read from ``source``; yields the zip bytes as they are made."""
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_STORED
        with self._zip.open(info, mode="w", force_zip64=True) as entry:
            while True:
                block = source.read(chunk_size)
                if not block:
                    break
                entry.write(block)
                yield from self._take()
        yield from self._take()

    def finish(self) -> Iterator[bytes]:
        self._zip.close()
        yield from self._take()

    def _take(self) -> Iterator[bytes]:
        if self._chunks:
            chunk = b"".join(self._chunks)
            self._chunks.clear()
            yield chunk
