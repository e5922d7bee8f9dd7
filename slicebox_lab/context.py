"""SliceboxContext: the node's storage, index and event bus, and the one way in.

This is the ONLY module that touches both the storage area and the index
(house rule 1).  Every source of images (REST upload, import, SCP, folder watch,
box, C-MOVE/C-GET) calls :meth:`SliceboxContext.ingest`, which

1. parses and validates the bytes (``dicom.parse_part10``, ``dicom.verify_pixel_data``),
2. writes the blob durably under a fresh key,
3. writes the rows in one transaction (``Index.ingest``),
4. removes the blob again if the rows could not be written,
5. deletes the blob the ingest replaced, and publishes ``ImageAdded``.

Step 2 overlaps step 1 (the blob is written in a writer thread while the caller
parses); step 3 starts only once the blob is durable, so a row never points at a
missing file, and concurrent ingests share one commit (``Index.ingest``'s group
commit).  A crash between 2 and 3 leaves a blob without a row; :meth:`open`
notices the unclean shutdown (a marker file nobody holds, ``storage/running.py``) and :meth:`reconcile` removes such
blobs before the node accepts data again.  All methods block: callers on the
event loop go through ``asyncio_bridge.run_blocking``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset

from . import dicom
from .anonymization import PixelMask, Profile, PseudonymKeys, anonymize, keystore
from .anonymization.pixels import SCANNED_MODALITIES
from .dicom.tagpath import TagValue, apply_tag_values
from .errors import InvalidInput, NotFound
from .events import EventBus, ImageAdded, ImagesDeleted
from .index import Index, create_engine, sqlite_url, upgrade
from .index.leader import Leadership
from .index.repository import IngestAlso
from .jobs import JobManager
from .model import SOURCE_TYPES, Image, IngestResult, Source
from .routing import filtering
from .storage import FileSystemStorage, StorageArea
from .storage.running import RunningMarkers

log = logging.getLogger(__name__)

#: seconds a blob or temp file must have existed before a crash repair removes it while other servers
#: share database and storage (it may be their ingest in flight, between blob and row)
SHARED_RECONCILE_GRACE_S = 600.0
#: the node's pseudonym secret (mode 0600) in the data directory; never in storage, never served
PSEUDONYM_KEY_FILE = "anonymization.key"


@dataclass
class ReconcileReport:
    """What a start after an unclean shutdown repaired."""

    temporary_files_removed: int = 0
    orphan_blobs_removed: int = 0
    rows_without_blob_removed: int = 0


class SliceboxContext:
    """Owns storage, index and events; built once per server (or per test)."""

    def __init__(self, storage: StorageArea, index: Index, events: EventBus | None = None) -> None:
        self.storage = storage
        self.index = index
        self.events = events or EventBus()
        self.exports = ExportSets()
        self.jobs = JobManager(index)
        #: whether this server runs the once-per-database work (box loop, forwarding) among those sharing the database
        self.leader = Leadership(index.engine)
        self._markers: RunningMarkers | None = None
        #: opened on a data folder another server (SQLite) is running on: no repair, no listeners (``open``)
        self.secondary = False
        #: the other servers found running on the data folder at open, as "host pid N"
        self.other_servers: list[str] = []
        self._writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slicebox-write")
        self._pseudonym_keys: PseudonymKeys | None = None
        self._keys_lock = threading.Lock()
        #: attributes every anonymization key records (``SliceboxApp.anonymization_key_attributes``)
        self.key_attributes: tuple[keystore.KeyAttribute, ...] = keystore.DEFAULT_KEY_ATTRIBUTES
        #: sources whose anonymous data is re-identified on ingest: a source type ("box") or
        #: "type:name" ("box:university") (``SliceboxApp.reidentify_sources``)
        self.reidentify_sources: frozenset[str] = frozenset(SOURCE_TYPES)
        #: the node's configured pixel masks (``SliceboxApp.anonymization_pixel_masks``), added to every profile
        self.pixel_masks: tuple[PixelMask, ...] = ()
        #: Secondary Capture images count as burned-in (``SliceboxApp.secondary_capture_burned_in``)
        self.secondary_capture_burned_in = True
        #: images of these modalities count as burned-in (``SliceboxApp.burned_in_modalities``)
        self.burned_in_modalities: frozenset[str] = SCANNED_MODALITIES
        #: read the pixels of those images with Tesseract (``SliceboxApp.burned_in_text_detection``)
        self.burned_in_text_detection = True
        #: read every image's pixels, whatever its modality (``SliceboxApp.burned_in_scan_all``)
        self.burned_in_scan_all = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        database_url: str = "",
        storage_dir: str | Path = "",
        fsync: bool = True,
    ) -> SliceboxContext:
        """Open (creating on first start) the node's data under ``data_dir``.

        Migrates the index, and repairs what a crash may have left (only after an unclean shutdown, so
        a clean start of a large node stays fast).  Each server keeps its own locked marker in the data
        folder (``storage/running.py``): a marker nobody holds is a crash to repair.  With SQLite, a server that
        finds another one running on the folder opens as its *secondary* (:attr:`secondary`): it
        repairs nothing (the files in flight are the other server's) and the app starts no listeners.
        """
        data = Path(data_dir).expanduser().resolve()
        data.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url or sqlite_url(data / "slicebox.sqlite"))
        markers = RunningMarkers(data)
        with markers.starting():
            live, stale = markers.scan()
            secondary = bool(live) and engine.dialect.name == "sqlite"
            upgrade(engine)
            storage = FileSystemStorage(Path(storage_dir) if storage_dir else data / "dicom", fsync=fsync)
            context = cls(storage, Index(engine))
            context.secondary = secondary
            context.other_servers = [markers.describe(path) for path in live]
            context.pseudonym_keys = PseudonymKeys.load_or_create(data / PSEUDONYM_KEY_FILE)
            if stale and not secondary:
                # other servers on this database may be ingesting into the same storage right now: leave
                # their young blobs and temp files alone (a server registers before it ingests, so one that
                # starts after this look writes only files newer than ``now``).  Servers of this very process
                # are earlier contexts a test left behind to simulate a crash, not ingesting now.
                now = time.time()
                ours = context.jobs.server.rsplit(":", 1)[0] + ":"
                shared = bool(live) or any(
                    not server.startswith(ours) for server in context.jobs.settled_live_servers()
                )
                report = context.reconcile(written_before=now - SHARED_RECONCILE_GRACE_S if shared else now)
                context.index.add_log(
                    "WARN",
                    "System",
                    "unclean shutdown detected; repaired: "
                    f"{report.temporary_files_removed} temporary files, "
                    f"{report.orphan_blobs_removed} blobs without a row, "
                    f"{report.rows_without_blob_removed} rows without a blob",
                )
                markers.remove(stale)
            markers.claim("secondary" if secondary else "primary")
        context._markers = markers
        if secondary:
            log.warning(
                "another server (%s) runs on %s: this one joins it as a secondary (no crash repair, no listeners)",
                ", ".join(context.other_servers),
                data,
            )
        context.index.add_log("INFO", "System", f"node started on {data}" + (" (secondary)" if secondary else ""))
        return context

    def close(self) -> None:
        """Clean shutdown: the next start skips the crash repair."""
        self.jobs.shutdown(timeout=10)
        self.leader.close()
        if self._markers is not None:
            self.index.add_log("INFO", "System", "node stopped")
            self._markers.release()  # this server's marker only: another one running keeps its own
            self._markers = None
        self._writer.shutdown(wait=True)
        self.index.engine.dispose()

    def reconcile(self, written_before: float | None = None) -> ReconcileReport:
        """Make storage and index agree: every row has its blob and every blob its row.

        Only blobs and temp files written before ``written_before`` (a ``time.time()``; None: all)
        are candidates for removal: a blob being written has no row yet, so with ``None`` this must
        run before anything is ingested, here or by another server sharing the storage.
        """
        report = ReconcileReport(temporary_files_removed=self.storage.remove_incomplete(written_before))
        # blobs listed before the rows are read: a row committed meanwhile keeps its blob
        stored = list(self.storage.keys(written_before))
        indexed = set(self.index.storage_keys())
        for key in stored:
            if key not in indexed:
                self.storage.delete(key)
                report.orphan_blobs_removed += 1
        missing = [key for key in indexed if not self.storage.exists(key)]
        if missing:
            # looked up after the blob check: an image another server re-ingested meanwhile (new blob, old
            # one deleted) no longer has the missing key and stays
            lost = self.index.images_by_storage_keys(missing)
            self.index.delete_images(image.id for image in lost)
            report.rows_without_blob_removed = len(lost)
            log.error("%d indexed images had no stored file and were removed", len(lost))
        return report

    @property
    def pseudonym_keys(self) -> PseudonymKeys:
        """The node secret behind anonymous UIDs, pseudonyms and date offsets.

        :meth:`open` loads it from ``<data_dir>/anonymization.key`` (created on first start), so
        anonymization is deterministic across restarts.  A context built directly (tests, in-memory
        nodes) gets a random secret on first use, so its pseudonyms last only as long as it does.
        """
        with self._keys_lock:
            if self._pseudonym_keys is None:
                self._pseudonym_keys = PseudonymKeys.generate()
            return self._pseudonym_keys

    @pseudonym_keys.setter
    def pseudonym_keys(self, keys: PseudonymKeys) -> None:
        with self._keys_lock:
            self._pseudonym_keys = keys

    # ------------------------------------------------------------------ ingest

    def ingest(
        self,
        data: bytes,
        source: Source,
        reidentify: bool = True,
        also: IngestAlso | None = None,
    ) -> IngestResult:
        """Store one DICOM file from ``source``; the one way in (house rule 3).

        Returns only when blob and rows are durable.  Raises ``InvalidDicom`` for
        bytes that are not an acceptable Part-10 file; nothing is stored then.
        The tag filters attached to ``source`` are applied first (``routing/filtering.py``); then
        anonymous data (PatientIdentityRemoved=YES) matching an anonymization key is
        re-identified when ``source`` is one of :attr:`reidentify_sources`
        (``reidentify=False``: never, for the node's own anonymized results).  ``also(conn, result)``
        writes rows that belong with the image in its own transaction (``Index.ingest``).
        """
        key = uuid.uuid4().hex
        # the durable write (mostly waiting on the disk) runs in a writer thread, overlapping the
        # parse (CPU); the rows are written only after both (house rule 1: never a row whose blob
        # is not durable, so a listed image can always be read), and their commit is shared with
        # concurrent ingests.  A crash before the commit leaves a blob without a row, which
        # reconcile() removes (nothing was answered yet).
        written = self._writer.submit(self.storage.write, key, data)
        try:
            try:
                parsed = dicom.parse_part10(data)
                dicom.verify_pixel_data(parsed.dataset)
                # the source's tag filters, then re-identification, may rewrite the file (rare)
                tag_filter = filtering.filter_for_source(self.index, source)
                filtered = tag_filter is not None and tag_filter.apply(parsed.dataset)
                restored = self._reidentified(parsed, source) if reidentify else None
                reidentified = restored is not None
                if restored is None and filtered:
                    restored = dicom.write_part10(parsed.dataset)
                if restored is None:
                    attributes = dicom.extract_attributes(parsed)
            except BaseException:
                _settle(written)  # let the write finish, then remove its blob below
                raise
            if restored is not None:  # store the filtered or re-identified file instead
                written.result()
                self.storage.delete(key)
                data, key = restored, uuid.uuid4().hex
                self.storage.write(key, data)
                attributes = dicom.extract_attributes(dicom.parse_part10(data))
            written.result()  # raises if the blob could not be written: then no row is written
            result = self.index.ingest(attributes, source, key, len(data), also)
        except BaseException:
            self.storage.delete(key)
            raise
        if result.replaced_storage_key:
            self.storage.delete(result.replaced_storage_key)
        self.events.publish(ImageAdded(result.image, source, not result.image_added, reidentified=reidentified))
        return result

    def _reidentified(self, parsed: dicom.ParsedDicom, source: Source) -> bytes | None:
        """The file re-identified from the anonymization keys, or None (not anonymous, no key, source off)."""
        if not keystore.is_anonymous(parsed.dataset):
            return None
        wanted = self.reidentify_sources
        if source.source_type not in wanted and f"{source.source_type}:{source.source_name}" not in wanted:
            return None
        dataset = parsed.dataset
        level = keystore.reidentify(self.index, dataset)
        if level is None:
            return None
        log.info("re-identified an image from %s %s at %s level", source.source_type, source.source_name, level)
        return dicom.write_part10(dataset)

    # ------------------------------------------------------------------ reading

    def image_bytes(self, image_id: int) -> bytes:
        return self.storage.read(self.index.get_image(image_id).storage_key)

    def open_image(self, image_id: int) -> tuple[Image, BinaryIO]:
        image = self.index.get_image(image_id)
        return image, self.storage.open(image.storage_key)

    def dataset(self, image_id: int) -> Dataset:
        """The stored file as a pydicom dataset (pixel data included)."""
        return dicom.parse_part10(self.image_bytes(image_id)).dataset

    def attributes(self, image_id: int) -> list[dict[str, object]]:
        return dicom.attribute_listing(self.dataset(image_id))

    def image_information(self, image_id: int) -> dict[str, int]:
        return dicom.image_information(self.dataset(image_id))

    def png(
        self,
        image_id: int,
        frame_number: int = 1,
        window_min: float | None = None,
        window_max: float | None = None,
        image_height: int = 0,
    ) -> bytes:
        return dicom.render_png(self.dataset(image_id), frame_number, window_min, window_max, image_height)

    # ------------------------------------------------------------------ anonymizing

    def anonymized_bytes(self, image_id: int, profile: Profile, tag_values: Sequence[TagValue] = ()) -> bytes:
        """Part-10 bytes of the image de-identified with ``profile``; the stored image is unchanged.

        ``tag_values`` are written after the profile (e.g. a PatientName chosen per patient).  Every
        anonymization records its key (see ``anonymization/keystore.py``).  The one way to anonymize
        (house rule 3): boxes, SCU and exports call this too.
        """
        return self._anonymized(self.index.get_image(image_id), profile, tag_values)

    def anonymize_in_place(
        self, image_id: int, profile: Profile, tag_values: Sequence[TagValue] = (), delete_original: bool = True
    ) -> IngestResult:
        """Replace the image by its de-identified version, ingested under its series' source.

        The old image is deleted after the new one is durable, unless the result has the old
        image's identity (then the ingest already replaced its file).  The result is not
        re-identified on its way in (it matches the key just recorded).
        """
        image = self.index.get_image(image_id)
        return self._replace(image, self._anonymized(image, profile, tag_values), delete_original)

    def modify(self, image_id: int, tag_values: Sequence[TagValue]) -> IngestResult:
        """Replace the image by a copy with ``tag_values`` applied (nested paths allowed)."""
        if not tag_values:
            raise InvalidInput("nothing to modify: give at least one tag value")
        image = self.index.get_image(image_id)
        dataset = dicom.parse_part10(self.storage.read(image.storage_key)).dataset
        apply_tag_values(dataset, tag_values)
        if "SOPInstanceUID" in dataset and getattr(dataset, "file_meta", None) is not None:
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        return self._replace(image, dicom.write_part10(dataset))

    def _replace(self, image: Image, data: bytes, delete_original: bool = True) -> IngestResult:
        """Ingest ``data`` under the source of ``image``'s series, then delete ``image`` unless the result
        is ``image`` itself (``delete_original=False``: the caller deletes originals in batches)."""
        source = self.index.series_source(image.series_id)
        result = self.ingest(data, source, reidentify=False)
        if result.image.id != image.id and delete_original:
            self.delete_images([image.id])
        return result

    def node_profile(self, profile: Profile) -> Profile:
        """``profile`` with this node's burned-in settings: its configured masks added, its scanned images,
        text detection."""
        return dataclasses.replace(
            profile.with_pixel_masks(self.pixel_masks),
            secondary_capture_burned_in=profile.secondary_capture_burned_in and self.secondary_capture_burned_in,
            burned_in_modalities=self.burned_in_modalities,
            detect_text=self.burned_in_text_detection,
            scan_all=self.burned_in_scan_all,
        )

    def _anonymized(self, image: Image, profile: Profile, tag_values: Sequence[TagValue] = ()) -> bytes:
        dataset = dicom.parse_part10(self.storage.read(image.storage_key)).dataset
        profile = self.node_profile(profile)
        anonymized = anonymize(dataset, profile, self.pseudonym_keys)
        if tag_values:
            apply_tag_values(anonymized, tag_values)
        keystore.record_key(self.index, dataset, anonymized, image.id, profile, self.key_attributes)
        return dicom.write_part10(anonymized)

    # ------------------------------------------------------------------ deleting

    def delete_images(self, image_ids: Iterable[int]) -> list[int]:
        """Delete images (rows first, then blobs); unknown ids are ignored."""
        deleted = self.index.delete_images(image_ids)
        for image in deleted:
            self.storage.delete(image.storage_key)
        ids = tuple(image.id for image in deleted)
        if ids:
            self.events.publish(ImagesDeleted(ids))
        return list(ids)

    # ------------------------------------------------------------------ export

    def export_entries(self, image_ids: Iterable[int]) -> Iterator[tuple[str, Image]]:
        """(path in the zip, image) for each existing image, in Slicebox's folder layout."""
        for image_id in image_ids:
            try:
                image = self.index.get_image(image_id)
                flat = self.index.get_flat_series(image.series_id)
            except NotFound:
                continue
            patient, study, series = flat.patient, flat.study, flat.series
            parts = [
                f"{patient.id}_{patient.PatientName}-{patient.PatientID}",
                f"{study.id}_{study.StudyDate}",
                f"{series.id}_{series.SeriesDate}_{series.Modality}",
            ]
            yield "/".join(_safe_path_part(p) for p in parts) + f"/{image.id}.dcm", image


def _settle(future: Future[None]) -> None:
    """Wait for a background write whose outcome no longer matters (the ingest failed anyway)."""
    try:
        future.result()
    except BaseException:  # noqa: S110 - the ingest's own error is the one to report
        pass


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
