"""WADO-RS (PS3.18 §10.4): instances, metadata, bulk data, frames and rendered images.

Everything here blocks (SQL, file reads, decoding) and works on one instance at a time, so the
handler can stream a study part by part: :func:`locate` gives the instances (UIDs, keys, sizes;
never their bytes), then each part is read when it is written.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from slicebox_lab import dicom
from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.index import dicomweb as rows
from slicebox_lab.storage import StorageArea

from .dicomjson import PIXEL_DATA, dataset_json, parse_tag_path, tag_text
from .errors import NotAcceptable
from .multipart import MediaType

__all__ = [
    "Instance",
    "MetadataCache",
    "bulk_data",
    "choose_transfer_syntaxes",
    "frame_numbers",
    "locate",
    "metadata",
    "open_frames",
    "render",
    "transcoded",
]

#: native transfer syntaxes we can produce from any stored image (decoding compressed ones)
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_PIXEL_TAG_BYTES = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00"}
_MAX_FRAMES_PER_REQUEST = 10_000


class Instance(rows.InstanceRow):
    """One stored instance as WADO needs it (the index's row: UIDs, where its bytes are, how they are
    encoded), and the URL it has here."""

    __slots__ = ()

    def url(self, root: str) -> str:
        return f"{root}studies/{self.StudyInstanceUID}/series/{self.SeriesInstanceUID}/instances/{self.SOPInstanceUID}"


def locate(index: Index, study: str, series_uid: str | None = None, sop: str | None = None) -> list[Instance]:
    """The instances of a study, series or one instance (by UIDs), in series then storage order; 404 if none."""
    found = [Instance(*row) for row in rows.instances(index, study, series_uid, sop)]
    if not found:
        what = f"instance {sop}" if sop else f"series {series_uid}" if series_uid else f"study {study}"
        raise NotFound(f"no {what} here (study {study})")
    return found


# ---------------------------------------------------------------------------------------------- instances


def choose_transfer_syntaxes(accept: Sequence[MediaType], instances: Sequence[Instance]) -> list[str | None]:
    """Per instance: None to send the stored file as it is, or the native syntax to transcode it to.

    ``multipart/related; type="application/dicom"`` without ``transfer-syntax``, ``*`` or ``*/*``
    take the stored encoding; a named syntax is honoured when the file has it or it is a native
    one we can decode to.  406 when no range of ``accept`` can be given for every instance.
    """
    for media in accept:
        if not _dicom_range(media):
            continue
        syntax = media.parameters.get("transfer-syntax", "*").strip()
        if syntax == "*":
            return [None] * len(instances)
        if all(i.TransferSyntaxUID == syntax or syntax in _NATIVE for i in instances):
            return [None if i.TransferSyntaxUID == syntax else syntax for i in instances]
    wanted = ", ".join(_describe(m) for m in accept)
    raise NotAcceptable(
        f'cannot answer {wanted}: this node gives multipart/related; type="application/dicom" with the stored '
        f"transfer syntax, or transfer-syntax={ExplicitVRLittleEndian}"
    )


def _dicom_range(media: MediaType) -> bool:
    if media.type in ("*/*", "multipart/*"):
        return True
    if media.type != "multipart/related":
        return False
    return media.parameters.get("type", "application/dicom").lower() in ("application/dicom", "*/*", "application/*")


def _describe(media: MediaType) -> str:
    params = "".join(f"; {k}={v}" for k, v in media.parameters.items())
    return f"{media.type}{params}"


def transcoded(storage: StorageArea, instance: Instance, syntax: str) -> bytes:
    """The instance re-encoded in a native ``syntax`` (compressed pixel data decoded)."""
    ds = dicom.parse_part10(storage.read(instance.storage_key)).dataset
    target = UID(syntax)
    if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = target
    return dicom.write_part10(ds)


# ---------------------------------------------------------------------------------------------- metadata


def _pixel_element(stream: BinaryIO, ds: Dataset) -> tuple[str, int, int] | None:
    """After a ``stop_before_pixels`` read: (VR, value offset, length) of the pixel data element, if any."""
    start = stream.tell()
    head = stream.read(12)
    if head[:4] not in _PIXEL_TAG_BYTES:
        return None
    implicit = ds.original_encoding[0]
    if implicit:
        return "OW", start + 8, int.from_bytes(head[4:8], "little")
    vr = head[4:6].decode("ascii", "replace")
    return vr, start + 12, int.from_bytes(head[8:12], "little")


def metadata(storage: StorageArea, instance: Instance, root: str) -> dict[str, Any]:
    """The instance's attributes as DICOM JSON, bulk data (pixels, large binaries) by BulkDataURI."""
    base = instance.url(root) + "/bulkdata/"
    with storage.open(instance.storage_key) as stream:
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
        pixel = _pixel_element(stream, ds)
    item = dataset_json(ds, lambda path: base + path)
    if pixel is not None:
        vr = pixel[0] if pixel[0] in ("OB", "OW") else "OW"
        item[tag_text(PIXEL_DATA)] = {"vr": vr, "BulkDataURI": base + tag_text(PIXEL_DATA)}
    meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else None
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else instance.TransferSyntaxUID
    item["00083002"] = {"vr": "UI", "Value": [syntax or instance.TransferSyntaxUID]}
    return dict(sorted(item.items()))


class MetadataCache:
    """The DICOM JSON text of recently asked instances, keyed by storage key, bounded in bytes.

    Viewers ask a study's metadata again and again, and reading and converting each header costs
    1–1.5 ms of CPU per instance (Orthanc's DICOMweb plugin keeps a cache for the same reason).  A
    storage key names one stored version of one image (every ingest writes a new key), so an entry
    never goes stale; deleted or replaced images simply stop being asked for and age out.  The text is
    kept with a per-process placeholder for the service root, which differs between clients.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._root = f"sbx-root-{secrets.token_hex(8)}"
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def texts(self, storage: StorageArea, instances: Sequence[Instance], root: str) -> str:
        """The instances' DICOM JSON objects, comma separated, for a metadata array."""
        parts = []
        for instance in instances:
            with self._lock:
                text = self._entries.get(instance.storage_key)
                if text is not None:
                    self._entries.move_to_end(instance.storage_key)
            if text is None:
                text = json.dumps(metadata(storage, instance, self._root))
                self._put(instance.storage_key, text)
            parts.append(text)
        return ",".join(parts).replace(self._root, json.dumps(root)[1:-1])

    def _put(self, key: str, text: str) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = text
            self._bytes += len(text)
            while self._bytes > self.max_bytes and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= len(old)


def bulk_data(storage: StorageArea, instance: Instance, path: str) -> bytes:
    """The value of the binary element at ``path`` (``00091010`` or ``00540016/0/00181072``)."""
    steps = parse_tag_path(path)
    ds = dicom.parse_part10(storage.read(instance.storage_key)).dataset
    current: Any = ds
    for tag, item in steps:
        if not isinstance(current, Dataset) or tag not in current:
            raise NotFound(f"no element {path} in this instance")
        element = current[tag]
        if item is None:
            current = element.value
        else:
            value = element.value
            if element.VR != "SQ" or item >= len(value):
                raise NotFound(f"no item {item} of {tag_text(tag)} in this instance")
            current = value[item]
    if not isinstance(current, bytes | bytearray):
        raise NotFound(f"{path} is not a binary element")
    return bytes(current)


# ---------------------------------------------------------------------------------------------- frames


def frame_numbers(text: str) -> list[int]:
    """``1,3,5`` as frame numbers; 400 when not a list of positive integers."""
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or int(piece) < 1:
            raise InvalidInput(f"frame list {text!r}: frame numbers are positive integers, comma separated")
        numbers.append(int(piece))
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise InvalidInput(f"at most {_MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


class FrameSource:
    """Native pixel bytes of single frames: read straight from the file for native little-endian
    images (one frame in memory at a time), decoded by pydicom otherwise."""

    def __init__(self, storage: StorageArea, instance: Instance) -> None:
        self.storage = storage
        self.instance = instance
        self._dataset: Dataset | None = None
        self._native: tuple[int, int] | None = None  # (value offset, bytes per frame)
        syntax = UID(instance.TransferSyntaxUID or ExplicitVRLittleEndian)
        with storage.open(instance.storage_key) as stream:
            ds = pydicom.dcmread(stream, stop_before_pixels=True)
            pixel = _pixel_element(stream, ds)
        if pixel is None:
            raise NotFound(f"instance {instance.SOPInstanceUID} has no pixel data")
        self.frames = max(int(ds.get("NumberOfFrames") or 1), 1)
        bits = int(ds.get("BitsAllocated") or 0)
        if syntax in _NATIVE and bits in (8, 16, 32, 64) and pixel[2] != 0xFFFFFFFF:
            size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * bits // 8
            if size * self.frames <= pixel[2]:
                self._native = (pixel[1], size)

    def check(self, numbers: Sequence[int]) -> None:
        bad = [n for n in numbers if n > self.frames]
        if bad:
            raise NotFound(f"frame {bad[0]} does not exist: the instance has {self.frames} frame(s)")

    def frame(self, number: int) -> bytes:
        if self._native is not None:
            offset, size = self._native
            with self.storage.open(self.instance.storage_key) as stream:
                stream.seek(offset + (number - 1) * size)
                return stream.read(size)
        if self._dataset is None:
            self._dataset = dicom.parse_part10(self.storage.read(self.instance.storage_key)).dataset
        arr = pixel_array(self._dataset, index=number - 1)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return np.ascontiguousarray(arr).tobytes()


def open_frames(storage: StorageArea, instance: Instance, numbers: Sequence[int]) -> FrameSource:
    source = FrameSource(storage, instance)
    source.check(numbers)
    return source


# ---------------------------------------------------------------------------------------------- rendered

RENDERED_TYPES = ("image/png", "image/jpeg")


def rendered_type(accept: Sequence[MediaType]) -> str:
    """The image type to render for an ``Accept`` list (PNG unless JPEG is preferred); 406 otherwise."""
    for media in accept:
        for kind in ("image/png", "image/jpeg"):
            if media.matches(kind):
                return kind
    raise NotAcceptable("rendered images are image/png or image/jpeg")


def window_of(text: str | None) -> tuple[float, float] | None:
    """``center,width,function`` (PS3.18 §8.3.5.1.4) as (min, max) for the node's renderer."""
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 3):
        raise InvalidInput("window is center,width,function (e.g. 40,400,linear)")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise InvalidInput(f"window {text!r}: center and width must be numbers") from None
    if not (width > 0) or width == float("inf") or center != center or abs(center) == float("inf"):
        raise InvalidInput(f"window {text!r}: the width must be a positive finite number")
    function = pieces[2].lower() if len(pieces) == 3 else "linear"
    if function not in ("linear", "linear-exact", "linear_exact"):
        raise InvalidInput(f"window function {function!r} is not supported: use linear or linear-exact")
    return center - width / 2, center + width / 2


def render(
    dataset: Callable[[], Dataset], frame: int, kind: str, window: tuple[float, float] | None, quality: int
) -> bytes:
    """One frame rendered by the node's renderer (``dicom.render_png``), as PNG or JPEG."""
    low, high = window if window is not None else (None, None)
    png = dicom.render_png(dataset(), frame, low, high)
    if kind == "image/png":
        return png
    image: PILImage.Image = PILImage.open(io.BytesIO(png))
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
