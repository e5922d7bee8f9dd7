"""Viewer: a series or an image in the notebook, scrolled and windowed in the browser.

Why it is built this way: the kernel fetches each DICOM file once through the client, decodes it
with pydicom and sends the modality values (int16/uint16 when lossless, else float32) to the
browser as binary buffers of custom messages, the shown slice first and the rest in the background.
Scrolling, window/level and zoom then happen in the browser (widgets/viewer.js applies the window
with a lookup table on canvas ImageData); the server is never asked again while the user looks.

The front end asks for the pixels with a ``ready`` message once its model exists, so a reloaded
page or a second front end gets them too, and nothing is sent into the void before a browser listens.

Segmentations (an app's DICOM SEG results, slicebox_lab/apps) are drawn over the series they were made
from (``ui/overlay.py``): the viewer lists the SEGs of the study that reference the shown series, shows
the newest, and the browser blends its label maps over the slices (toggle, opacity, choice of SEG).
Showing a SEG series itself shows its source series with that SEG over it.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from slicebox_lab.client import ClientError
from slicebox_lab.client.volume import read_dataset, slices_of, window_of

from . import overlay

__all__ = ["PRESETS", "Viewer"]

#: Window presets (center, width) in Hounsfield units; ``default`` is added per image from its own window.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "bone": (300.0, 1500.0),
    "brain": (40.0, 80.0),
}

_WORKERS = 4  # parallel downloads: the node serves files from its thread pool, 4 keeps a 2-core box busy
_ATTRIBUTE_DELAY = 0.25  # s: the attribute list follows the shown image once scrolling pauses
_MAX_VALUE_CHARS = 200


def _asset(name: str) -> Path:
    """widgets/<name>: slicebox_lab/_widgets in the wheel, the top-level widgets/ folder in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "_widgets", package.parent / "widgets"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is neither in {package / '_widgets'} nor in {package.parent / 'widgets'}")


@dataclass
class _Slice:
    """One frame as the browser gets it: values after the modality LUT, packed in the smallest lossless type."""

    image_id: int
    frame: int  # 1-based
    array: np.ndarray  # (rows, columns) modality values, or (rows, columns, 3) uint8 for colour
    kind: str  # int16 | uint16 | float32 | rgb8
    invert: bool  # MONOCHROME1: high values dark
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    instance: float | None

    def payload(self) -> bytes:
        return np.ascontiguousarray(self.array).tobytes()


def _pack(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality values as int16 or uint16 when that is lossless (half the bytes of float32), else float32."""
    if values.size and np.all(np.isfinite(values)) and np.array_equal(values, np.round(values)):
        low, high = float(values.min()), float(values.max())
        if low >= -32768 and high <= 32767:
            return values.astype(np.int16), "int16"
        if low >= 0 and high <= 65535:
            return values.astype(np.uint16), "uint16"
    return values.astype(np.float32), "float32"


def _decode(image_id: int, data: bytes) -> tuple[list[_Slice], tuple[float, float] | None]:
    """Every frame of one DICOM file, decoded as the client's volumes are (same values, same positions)."""
    ds = read_dataset(data)
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    out = []
    for s in slices_of(image_id, ds):
        if s.pixels.ndim == 3:
            array, kind = np.clip(s.pixels, 0, 255).astype(np.uint8), "rgb8"
        else:
            array, kind = _pack(s.pixels)
        out.append(_Slice(image_id, s.frame or 1, array, kind, invert, s.position, s.orientation, s.instance_number))
    return out, window_of(ds)


def _order(items: Sequence[_Slice]) -> list[int]:
    """Along the slice normal when every slice has a position (as slicebox_lab.client's volumes), else the
    order the slots were laid out in: the images by instance number, each image's frames in order."""
    orientation = next((s.orientation for s in items if s.orientation), None)
    normal: np.ndarray | None = None
    if orientation is not None:
        cross = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
        if np.linalg.norm(cross) > 1e-6:
            normal = cross / np.linalg.norm(cross)
    if normal is not None and all(s.position is not None for s in items):
        distances = [float(np.dot(np.array(s.position), normal)) for s in items]
        return sorted(range(len(items)), key=lambda i: (distances[i], items[i].instance or 0, i))
    return list(range(len(items)))


def _frame_counts(images: Any) -> list[int]:
    """NumberOfFrames of each row of an images DataFrame, 1 where missing or not a positive number."""
    if "NumberOfFrames" not in images:
        return [1] * len(images)
    counts = []
    for value in images["NumberOfFrames"].tolist():
        try:
            counts.append(max(1, int(value)))
        except (TypeError, ValueError):
            counts.append(1)
    return counts


def _instance_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf


class Viewer(anywidget.AnyWidget):
    """A series (``series_id``) or one image (``image_id``, its frames) with slice scrolling, window/level and zoom.

    ``viewer.index`` is the shown slice, ``viewer.set_window(40, 400)`` / ``viewer.preset("lung")`` the
    window, ``viewer.show(series_id)`` another series. Server errors appear in the status line below
    the image (``viewer.status``), they are not raised into the notebook.
    """

    _esm = _asset("viewer.js")
    _css = _asset("viewer.css")

    _uid = traitlets.Unicode("").tag(sync=True)
    generation = traitlets.Int(0).tag(sync=True)  # counts show() calls; the browser drops older pixels
    series_id = traitlets.Int(None, allow_none=True).tag(sync=True)
    image_id = traitlets.Int(None, allow_none=True).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)
    n_slices = traitlets.Int(0).tag(sync=True)
    n_loaded = traitlets.Int(0).tag(sync=True)
    rows = traitlets.Int(0).tag(sync=True)
    columns = traitlets.Int(0).tag(sync=True)
    window_center = traitlets.Float(40.0).tag(sync=True)
    window_width = traitlets.Float(400.0).tag(sync=True)
    presets = traitlets.Dict().tag(sync=True)
    zoom = traitlets.Float(1.0).tag(sync=True)  # 1 = fit the stage
    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    current_image_id = traitlets.Int(None, allow_none=True).tag(sync=True)
    current_frame = traitlets.Int(1).tag(sync=True)
    attributes = traitlets.List(traitlets.Dict()).tag(sync=True)  # of the shown image: [{tag, name, vr, value, depth}]
    #: segmentations of the shown series ([{series_id, label}]), the one drawn over it, its segments
    #: ([{number, label, color}]), whether it is drawn and how opaque
    overlays = traitlets.List(traitlets.Dict()).tag(sync=True)
    overlay_series_id = traitlets.Int(None, allow_none=True).tag(sync=True)
    overlay_segments = traitlets.List(traitlets.Dict()).tag(sync=True)
    overlay_visible = traitlets.Bool(True).tag(sync=True)
    overlay_opacity = traitlets.Float(0.35).tag(sync=True)
    overlay_status = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client: Any, series_id: int | None = None, image_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(_uid=uuid.uuid4().hex, presets={k: list(v) for k, v in PRESETS.items()}, **kwargs)
        self._client = client
        self._lock = threading.RLock()
        self._slices: list[_Slice | None] = []
        self._ready = False  # a front end asked for the pixels: from then on every loaded slice is sent at once
        self._loader: threading.Thread | None = None
        self._cancel = threading.Event()
        self._attribute_timer: threading.Timer | None = None
        self._attribute_cache: dict[int, list[dict[str, Any]]] = {}
        self._sop_of: dict[int, str] = {}  # image id → SOPInstanceUID of the shown series (SEG frames name them)
        self._overlay_maps: dict[tuple[int, int], np.ndarray] = {}
        self._overlay_id: int | None = None  # the SEG whose maps _overlay_maps holds
        self._quiet_overlay = False  # the kernel sets overlay_series_id itself: no load from the observer
        self.on_msg(self._on_frontend_msg)
        if series_id is not None or image_id is not None:
            self.show(series_id, image_id=image_id)

    # -- public API ---------------------------------------------------------------------------

    def show(self, series_id: int | None = None, *, image_id: int | None = None) -> None:
        """Show a series (its images sorted along the slice normal) or one image (its frames)."""
        if (series_id is None) == (image_id is None):
            raise ValueError("give a series_id or an image_id")
        subject = f"series {series_id}" if series_id is not None else f"image {image_id}"
        self._stop_loader()
        with self._lock:
            self._slices = []
            self.generation += 1
            generation = self.generation
        self.error = ""
        self.attributes = []
        with self._lock:
            self._overlay_maps, self._overlay_id = {}, None
        with self.hold_sync():
            self.series_id, self.image_id = series_id, image_id
            self.n_slices = self.n_loaded = 0
            self.index = 0
            self.current_image_id = None
            self.status = f"loading {subject}…"
            self._set_overlay(None)
            self.overlays, self.overlay_segments, self.overlay_status = [], [], ""
        record: dict[str, Any] = {}
        wanted_overlay = None
        try:
            if series_id is not None:
                record = self._client.series_record(int(series_id))
                if overlay.is_segmentation(record):  # a SEG: its source series, with the SEG over it
                    source = overlay.source_of(self._client, record)
                    if source is not None:
                        wanted_overlay, series_id = int(series_id), source
                        self.series_id = source
                        record = self._client.series_record(source)
                images = self._client.images(series_id)
                self._sop_of = (
                    dict(zip(images["id"].tolist(), images["SOPInstanceUID"].tolist(), strict=True))
                    if "SOPInstanceUID" in images
                    else {}
                )
                if len(images) == 0:
                    self._fail(f"series {series_id} has no images")
                    return
                order = sorted(
                    zip(images["id"].tolist(), images.get("InstanceNumber", images["id"]).tolist(), strict=True),
                    key=lambda pair: (_instance_number(pair[1]), int(pair[0])),
                )
                ids = [int(i) for i, _ in order]
                frames_of = dict(zip(images["id"].tolist(), _frame_counts(images), strict=True))
                counts = [frames_of[i] for i in ids]
                title = " · ".join(
                    str(record.get(key, "")) for key in ("Modality", "SeriesDescription") if record.get(key)
                )
                self.title = f"series {series_id}" + (f" · {title}" if title else "")
            else:
                assert image_id is not None
                ids = [int(image_id)]
                counts = [1]
                self.title = f"image {image_id}"
            first, window = _decode(ids[0], self._client.image_bytes(ids[0]))
        except ClientError as e:
            self._fail(e.message or str(e))
            return
        except Exception as e:  # noqa: BLE001  undecodable pixel data: say why in the widget, as for server errors
            self._fail(f"cannot show {subject}: {e}")
            return
        # one slot per frame of every image (the index knows each image's NumberOfFrames); the first
        # image is decoded now, the others by the loader into their slots
        counts[0] = len(first)
        offsets = [sum(counts[:i]) for i in range(len(counts))]
        slices: list[_Slice | None] = [*first, *([None] * (sum(counts) - len(first)))]
        if window is None:
            values = first[0].array.astype(np.float32)
            low, high = float(values.min()), float(values.max())
            window = ((low + high) / 2, max(high - low, 1.0))
        with self._lock:
            self._slices = slices
        with self.hold_sync():
            self.presets = {**{k: list(v) for k, v in PRESETS.items()}, "default": list(window)}
            self.n_slices = len(slices)
            self.rows, self.columns = int(first[0].array.shape[0]), int(first[0].array.shape[1])
            self.window_center, self.window_width = window
            self.n_loaded = sum(s is not None for s in slices)
        self._current_changed()
        # to a front end that is already listening (show() on a displayed viewer)
        self._publish(generation, [i for i, s in enumerate(slices) if s is not None])
        if len(ids) > 1:
            self._cancel = threading.Event()
            layout = list(zip(ids, offsets, counts, strict=True))
            self._loader = threading.Thread(
                target=self._load_rest, args=(generation, layout, self._cancel), daemon=True
            )
            self._loader.start()
        else:
            self.status = self._loaded_status()
        if series_id is not None:
            threading.Thread(target=self._find_overlays, args=(generation, record, wanted_overlay), daemon=True).start()

    def show_overlay(self, seg_series_id: int | None) -> None:
        """Draw this segmentation series over the shown series (None: none); blocks until it is read."""
        self._set_overlay(None if seg_series_id is None else int(seg_series_id))
        if seg_series_id is not None:
            self._load_overlay(self.generation, int(seg_series_id))

    def overlay_map(self, image_id: int, frame: int = 1) -> np.ndarray | None:
        """The label map (segment numbers, 0: none) drawn over a slice, as sent to the browser."""
        with self._lock:
            return self._overlay_maps.get((int(image_id), int(frame)))

    def set_window(self, center: float, width: float) -> None:
        """Window/level in modality units (HU for CT); the browser re-draws, nothing goes to the server."""
        if not width > 0:
            raise ValueError(f"window width must be > 0, not {width}")
        with self.hold_sync():
            self.window_center, self.window_width = float(center), float(width)

    def preset(self, name: str) -> None:
        """A named window: lung, bone, brain, or default (the image's own)."""
        key = name.lower()
        if key == "image":
            key = "default"
        if key not in self.presets:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(self.presets)}")
        self.set_window(*self.presets[key])

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every slice is loaded (scripts and tests); False on timeout."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)
            return not loader.is_alive()
        return True

    def slice_array(self, index: int) -> np.ndarray | None:
        """The values of a slice as sent to the browser (None while not loaded)."""
        with self._lock:
            item = self._slices[index] if 0 <= index < len(self._slices) else None
        return None if item is None else item.array

    def slice_image(self, index: int) -> tuple[int, int] | None:
        """(image id, frame number) of a slice, once known."""
        with self._lock:
            item = self._slices[index] if 0 <= index < len(self._slices) else None
        return None if item is None else (item.image_id, item.frame)

    def close(self) -> None:
        self._stop_loader()
        super().close()

    # -- traits -------------------------------------------------------------------------------

    @traitlets.validate("index")
    def _valid_index(self, proposal: Any) -> int:
        return max(0, min(int(proposal["value"]), max(self.n_slices - 1, 0)))

    @traitlets.validate("window_width")
    def _valid_width(self, proposal: Any) -> float:
        return max(float(proposal["value"]), 1e-3)

    @traitlets.observe("index")
    def _index_changed(self, _change: Any) -> None:
        self._current_changed()

    @traitlets.observe("overlay_series_id")
    def _overlay_chosen(self, change: Any) -> None:
        """The user chose another segmentation in the browser: read it off the kernel's main thread."""
        if self._quiet_overlay:
            return
        with self._lock:
            self._overlay_maps, self._overlay_id = {}, None
        if change["new"] is not None:
            args = (self.generation, int(change["new"]))
            threading.Thread(target=self._load_overlay, args=args, daemon=True).start()

    # -- internals ----------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        with self.hold_sync():
            self.error = message
            self.status = message

    def _loaded_status(self) -> str:
        return f"{self.n_loaded} of {self.n_slices} slices loaded"

    def _stop_loader(self) -> None:
        self._cancel.set()
        if self._loader is not None and self._loader is not threading.current_thread():
            self._loader.join(30)
        self._loader = None
        if self._attribute_timer is not None:
            self._attribute_timer.cancel()

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Sequence[Any]) -> None:
        """``ready``: a front-end model exists and wants the pixels: every loaded slice, the shown one first."""
        if not isinstance(content, dict) or content.get("type") != "ready":
            return
        with self._lock:
            self._ready = True
            generation = self.generation
            loaded = [i for i, s in enumerate(self._slices) if s is not None]
        start = self.index
        loaded.sort(key=lambda i: (abs(i - start), i))
        self._publish(generation, loaded, force=True)
        with self._lock:
            seg, keys = self._overlay_id, list(self._overlay_maps)
        if seg is not None:
            self._publish_overlay(generation, seg, keys, force=True)

    # -- segmentations over the series ---------------------------------------------------------

    def _set_overlay(self, seg_series_id: int | None) -> None:
        """Choose the SEG drawn (from the kernel): the maps of another one are dropped at once."""
        with self._lock:
            if self._overlay_id != seg_series_id:
                self._overlay_maps, self._overlay_id = {}, None
        self._quiet_overlay = True
        try:
            self.overlay_series_id = seg_series_id
        finally:
            self._quiet_overlay = False

    def _find_overlays(self, generation: int, record: dict[str, Any], wanted: int | None) -> None:
        """Background: the SEGs of the study that reference the series; draw the wanted one, else the newest."""
        try:
            found = overlay.segmentations_of(self._client, record)
        except Exception as e:  # noqa: BLE001  the images are shown all the same: say why there is no overlay
            self.overlay_status = f"segmentations could not be listed: {getattr(e, 'message', None) or e}"
            return
        if generation != self.generation:
            return
        self.overlays = found
        ids = [o["series_id"] for o in found]
        choice = wanted if wanted in ids else (ids[-1] if ids else None)
        if choice is not None:
            self._set_overlay(choice)
            self._load_overlay(generation, choice)

    def _load_overlay(self, generation: int, seg_series_id: int) -> None:
        """Read the SEG, map its frames to the (loaded) slices, send the label maps to the browser."""
        label = next((o["label"] for o in self.overlays if o["series_id"] == seg_series_id), "")
        self.overlay_status = f"loading {label or f'segmentation {seg_series_id}'}…"
        try:
            segmentation = overlay.read_segmentation(self._client, seg_series_id, label)
        except ClientError as e:
            self.overlay_status = f"segmentation {seg_series_id}: {e.message or e}"
            return
        except Exception as e:  # noqa: BLE001  an unreadable SEG: say so beside the images
            self.overlay_status = f"segmentation {seg_series_id} cannot be shown: {e}"
            return
        self.wait()  # every slice loaded: positions known, frames can find their slice
        with self._lock:
            if generation != self.generation or self.overlay_series_id != seg_series_id:
                return
            keys = [
                overlay.SliceKey(s.image_id, s.frame, s.position, (int(s.array.shape[0]), int(s.array.shape[1])))
                for s in self._slices
                if s is not None
            ]
        maps, unmatched = overlay.label_maps(segmentation, keys, self._sop_of)
        with self._lock:
            if generation != self.generation or self.overlay_series_id != seg_series_id:
                return
            self._overlay_maps, self._overlay_id = maps, seg_series_id
        status = f"on {len(maps)} of {len(keys)} slices"
        if unmatched:
            status += f"; {unmatched} frame(s) match no slice of this series"
        with self.hold_sync():
            self.overlay_segments = [s.to_json() for s in segmentation.segments]
            self.overlay_status = status
        self._publish_overlay(generation, seg_series_id, list(maps))

    def _publish_overlay(
        self, generation: int, seg_series_id: int, keys: Sequence[tuple[int, int]], *, force: bool = False
    ) -> None:
        current = self.index
        shown = self.slice_image(current)
        keys = sorted(keys, key=lambda k: (k != shown, k))  # the shown slice's map first
        for key in keys:
            with self._lock:
                if not (self._ready or force) or generation != self.generation or self._overlay_id != seg_series_id:
                    return
                labels = self._overlay_maps.get(key)
            if labels is None:
                continue
            header = {
                "type": "overlay",
                "generation": generation,
                "overlay": seg_series_id,
                "image_id": key[0],
                "frame": key[1],
                "rows": int(labels.shape[0]),
                "columns": int(labels.shape[1]),
            }
            self.send(header, buffers=[np.ascontiguousarray(labels).tobytes()])

    def _publish(self, generation: int, indices: Sequence[int], *, force: bool = False) -> None:
        """Send slices to the browser (only once a front end said ready, and only of the current series)."""
        for i in indices:
            with self._lock:
                if not (self._ready or force) or generation != self.generation:
                    return
                item = self._slices[i] if i < len(self._slices) else None
            if item is None:
                continue
            header = {
                "type": "slice",
                "generation": generation,
                "index": i,
                "rows": int(item.array.shape[0]),
                "columns": int(item.array.shape[1]),
                "dtype": item.kind,
                "invert": item.invert,
                "image_id": item.image_id,
                "frame": item.frame,
            }
            self.send(header, buffers=[item.payload()])

    def _load_rest(self, generation: int, layout: list[tuple[int, int, int]], cancel: threading.Event) -> None:
        """Background: download and decode the other images (``layout``: image id, first slot, frames),
        nearest to the shown slice first, each into its slots; then sort."""
        start = self.index
        todo = sorted(range(1, len(layout)), key=lambda i: (abs(layout[i][1] - start), i))
        failures: list[str] = []
        reported = 0

        def fetch(i: int) -> tuple[int, list[_Slice]]:
            if cancel.is_set():
                return i, []
            image_id = layout[i][0]
            return i, _decode(image_id, self._client.image_bytes(image_id))[0]

        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="slicebox-viewer") as pool:
            futures = [pool.submit(fetch, i) for i in todo]
            for future in futures:
                if cancel.is_set():
                    for f in futures:
                        f.cancel()
                    return
                try:
                    i, decoded = future.result()
                except ClientError as e:
                    failures.append(e.message or str(e))
                    continue
                except Exception as e:  # noqa: BLE001  one bad file must not stop the others
                    failures.append(str(e))
                    continue
                if not decoded:
                    continue
                image_id, first_slot, count = layout[i]
                if len(decoded) != count:  # the file and the index disagree: show what fits, say so
                    failures.append(f"image {image_id} has {len(decoded)} frames, its index entry {count}")
                slots = list(range(first_slot, first_slot + min(count, len(decoded))))
                with self._lock:
                    if generation != self.generation:
                        return
                    for slot, item in zip(slots, decoded, strict=False):
                        self._slices[slot] = item
                self._publish(generation, slots)
                with self._lock:
                    n, total = sum(s is not None for s in self._slices), len(self._slices)
                if n - reported >= 10 or n == total:
                    reported = n
                    self.n_loaded = n
                    self.status = self._loaded_status()
        if cancel.is_set() or generation != self.generation:
            return
        self._sort(generation)
        with self.hold_sync():
            self.n_loaded = sum(s is not None for s in self._slices)
            if failures:
                self.error = f"{len(failures)} image(s) could not be shown: {failures[0]}"
                self.status = f"{self._loaded_status()}; {self.error}"
            else:
                self.status = self._loaded_status()

    def _sort(self, generation: int) -> None:
        """Order by position along the slice normal (instance number until then); tell the browser the permutation."""
        with self._lock:
            if generation != self.generation or any(s is None for s in self._slices):
                return
            items: list[_Slice] = [s for s in self._slices if s is not None]
            order = _order(items)
            if order == list(range(len(items))):
                return
            self._slices = [items[i] for i in order]
        self.send({"type": "order", "generation": generation, "order": order})
        self._current_changed()

    def _current_changed(self) -> None:
        """Follow the shown slice: its image id now, its attribute list once scrolling pauses."""
        located = self.slice_image(self.index)
        if located is None:
            return
        image_id, frame = located
        self.current_frame = frame
        if image_id == self.current_image_id and self.attributes:
            return
        self.current_image_id = image_id
        if image_id in self._attribute_cache:
            self.attributes = self._attribute_cache[image_id]
            return
        if self._attribute_timer is not None:
            self._attribute_timer.cancel()
        self._attribute_timer = threading.Timer(_ATTRIBUTE_DELAY, self._load_attributes, args=(image_id,))
        self._attribute_timer.daemon = True
        self._attribute_timer.start()

    def _load_attributes(self, image_id: int) -> None:
        try:
            frame = self._client.attributes(image_id)
        except ClientError as e:
            self.status = f"attributes of image {image_id}: {e.message or e}"
            return
        rows = []
        for record in frame.to_dict("records"):
            value = "" if record.get("value") is None else str(record.get("value"))
            if len(value) > _MAX_VALUE_CHARS:
                value = value[:_MAX_VALUE_CHARS] + "…"
            rows.append(
                {
                    "tag": str(record.get("tag", "")),
                    "name": str(record.get("name", "")),
                    "vr": str(record.get("vr", "")),
                    "value": value,
                    "depth": int(record.get("depth", 0) or 0),
                }
            )
        self._attribute_cache[image_id] = rows
        if self.current_image_id == image_id:
            self.attributes = rows
