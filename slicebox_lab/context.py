"""SliceboxContext: the node's storage, index and event bus, and the one way in.

This is the ONLY module that touches both the storage area and the index
(house rule 1).  Every source of images (REST upload, import, SCP, folder watch,
box, C-MOVE/C-GET) stores through :class:`Upload` (:meth:`SliceboxContext.ingest`
for bytes at hand), which

1. writes the bytes to storage as they arrive, hashing them,
2. names the blob ``<uuid>.<source id>.<digest>`` and flushes it (one flush: the
   only wait for the disk), while a worker process validates the file and
   extracts the indexed attributes (``workers/tasks.py``),
3. writes the rows in one transaction (``Index.ingest``), whose commit does not
   wait for the disk unless the transaction holds something a file cannot give
   back (a box receipt),
4. removes the blob again if anything failed, deletes the blob the ingest
   replaced, and publishes ``ImageAdded``.

The blob store is the truth and the index is derived from it.  A power cut can
lose the last row commits, never an acknowledged blob: after an unclean shutdown
(a marker file nobody holds, ``storage/running.py``) :meth:`reconcile` re-indexes every blob without a row whose content
still matches the digest in its name (the source comes from its name too), removes
the partial ones, and removes rows whose blob is gone.  A deletion removes the
blobs durably before the rows, so a deleted image never comes back.  All methods
block: callers on the event loop go through ``server.asyncio_bridge.run_blocking``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydicom.dataset import Dataset

from . import dicom
from .anonymization import PixelMask, Profile, PseudonymKeys, keystore, report
from .anonymization.pixels import SCANNED_MODALITIES
from .dicom.tagpath import TagValue, apply_tag_values
from .errors import InvalidInput, NotFound, SliceboxError
from .events import EventBus, ImageAdded, ImagesDeleted
from .exports import ExportSets
from .index import Index, create_engine, sqlite_url, upgrade
from .index.leader import Leadership
from .index.repository import IngestAlso
from .jobs import JobManager
from .model import SOURCE_TYPES, Image, IndexedAttributes, IngestResult, Source
from .routing import filtering
from .storage import FileSystemStorage, StorageArea
from .storage.running import ReconcileReport, RunningMarkers
from .upload import AnonymousBlob, PendingAnonymization, Upload
from .workers import WorkerPool, tasks
from .workers.pool import Call

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds a blob or temp file must have existed before a crash repair removes it while other servers
#: share database and storage (it may be their ingest in flight, between blob and row)
SHARED_RECONCILE_GRACE_S = 600.0
#: the node's pseudonym secret (mode 0600) in the data directory; never in storage, never served
PSEUDONYM_KEY_FILE = "anonymization.key"


#: ``<uuid hex>.<source id>.<digest>``: what a blob without a row needs to be indexed again
_BLOB_KEY = re.compile(r"^([0-9a-f]{32})\.([0-9]+)\.([0-9a-f]{32})$")


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
        #: per-image CPU work (validation, attributes, anonymization, rendering): ``SliceboxApp.workers``
        self.workers = WorkerPool(0)
        self._spool: Path | None = None
        #: images indexed again by :meth:`reconcile` at start, announced once the services listen
        self.reindexed: list[tuple[IngestResult, Source]] = []
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
        workers: int = 0,
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
            context.workers = WorkerPool(workers)
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
                    f"{report.orphan_blobs_removed} partial blobs, "
                    f"{report.blobs_reindexed} blobs indexed again, "
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
        self.workers.close()
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
        self.index.engine.dispose()

    def reconcile(self, written_before: float | None = None) -> ReconcileReport:
        """Make storage and index agree after an unclean shutdown: every blob has its row, every row its blob.

        A blob without a row whose content matches the digest in its key is an image that was (or
        might have been) acknowledged while its rows' commit had not reached the disk: it is indexed
        again, under the source its key names, unless its image was since stored again from a newer
        blob.  A blob whose content does not match (a write cut short), or whose key has no digest
        (written before keys had one: never acknowledged), is removed; so are the leftovers of
        streamed writes.  Then rows whose blob is gone (a deletion cut short) are removed.

        Only blobs and temp files written before ``written_before`` (a ``time.time()``; None: all)
        are looked at: another server sharing the storage may be writing the younger ones now.
        """
        report = ReconcileReport(temporary_files_removed=self.storage.remove_incomplete(written_before))
        # blobs listed before the rows are read: a row committed meanwhile keeps its blob
        stored = list(self.storage.keys(written_before))
        indexed = set(self.index.storage_keys())
        for key in stored:
            if key in indexed:
                continue
            found = self._reindex(key)
            if found is None:
                self.storage.delete(key)
                report.orphan_blobs_removed += 1
            else:
                self.reindexed.append(found)
                report.blobs_reindexed += 1
                if found[0].replaced_storage_key:
                    self.storage.delete(found[0].replaced_storage_key)
        indexed = set(self.index.storage_keys())
        missing = [key for key in indexed if not self.storage.exists(key)]
        if missing:
            # looked up after the blob check: an image another server re-ingested meanwhile (new blob, old
            # one deleted) no longer has the missing key and stays
            lost = self.index.images_by_storage_keys(missing)
            self.index.delete_images(image.id for image in lost)
            report.rows_without_blob_removed = len(lost)
            log.warning("%d indexed images had no stored file (a deletion cut short) and were removed", len(lost))
        return report

    def announce_reindexed(self) -> None:
        """Publish ``ImageAdded`` for the images :meth:`reconcile` indexed again (call once the services
        that act on new images, such as forwarding and series types, are listening)."""
        reindexed, self.reindexed = self.reindexed, []
        for result, source in reindexed:
            self.events.publish(ImageAdded(result.image, source, not result.image_added))

    def _reindex(self, key: str) -> tuple[IngestResult, Source] | None:
        """Index a blob found without a row again, or None when it must go (see :meth:`reconcile`)."""
        match = _BLOB_KEY.match(key)
        if match is None:
            return None
        try:
            data = self.storage.read(key)
        except NotFound:
            return None
        digest = tasks.blob_digest()
        digest.update(data)
        if digest.hexdigest() != match.group(3):
            return None
        try:
            inspected = tasks.inspect(None, data)
        except InvalidInput:
            return None
        try:
            source = self.index.get_source(int(match.group(2)))
        except NotFound:
            log.error("blob %s names source %s, which is unknown: indexed as an import", key, match.group(2))
            source = Source("import", "recovered")
        current = self.index.find_image(
            inspected.attributes.series["SeriesInstanceUID"], inspected.attributes.image["SOPInstanceUID"]
        )
        if current is not None and self._blob_time(current.storage_key) > self._blob_time(key):
            return None  # the image was stored again later, from a blob that did reach the index
        return self.index.ingest(inspected.attributes, source, key, len(data)), source

    def _blob_time(self, key: str) -> float:
        return self.storage.modified(key) if self.storage.exists(key) else 0.0

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
        """Store one DICOM file from ``source``; the one way in (house rule 3) for bytes at hand.

        Returns only when the image would survive a crash or a power cut.  Raises ``InvalidDicom``
        for bytes that are not an acceptable Part-10 file; nothing is stored then.  The tag filters
        attached to ``source`` are applied first (``routing/filtering.py``); then anonymous data
        (PatientIdentityRemoved=YES) matching an anonymization key is re-identified when ``source``
        is one of :attr:`reidentify_sources` (``reidentify=False``: never, for the node's own
        anonymized results).  ``also(conn, result)`` writes rows that belong with the image in its
        own transaction (``Index.ingest``), which then commits durably.
        """
        upload = self.upload(source)
        try:
            upload.write(data)
        except BaseException:
            upload.discard()
            raise
        return upload.store(reidentify=reidentify, also=also)

    def upload(self, source: Source) -> Upload:
        """An image that arrives in pieces (a request body as it streams in): :meth:`Upload.write` each,
        then :meth:`Upload.store` (or :meth:`Upload.discard` when the body is cut short)."""
        prefix = uuid.uuid4().hex
        return Upload(prefix, self.storage.create(prefix), source, self._store)

    def _store(
        self,
        upload: Upload,
        reidentify: bool,
        also: IngestAlso | None,
        rewrite: bool = True,
        reidentified: bool = False,
        accept: Callable[[IndexedAttributes], None] | None = None,
        inspected: tasks.Inspected | None = None,
    ) -> IngestResult:
        """Name, flush, validate and index ``upload``; ``rewrite=False``: the file is already the node's
        filtered or re-identified version (``reidentified``: the latter) and is stored as it is."""
        source = upload.source
        key = tasks.blob_key(upload.prefix, self.index.source_id(source), upload.hexdigest())
        writer = upload.writer
        path = writer.name(key)
        try:
            # a worker process validates the file while this thread waits for the disk (the one flush);
            # the rows are written only after both (house rule 1: never a row whose blob is not durable)
            call = None
            if inspected is None:  # the header, inspected while the rest of the body arrived, may settle it
                inspected = upload.inspected_early()
            if inspected is None:
                call = self.workers.start(tasks.inspect, path, None if path else self.storage.read(key))
            try:
                writer.flush()
            except BaseException:
                if call is not None:
                    call.settle()  # the worker is free again; the flush's error is the one to report
                raise
            if call is not None:
                inspected = call.result()
            assert inspected is not None
        except BaseException:
            writer.discard()
            raise
        return self._index_blob(key, writer.size, source, inspected, reidentify, also, rewrite, reidentified, accept)

    def adopt_received(self, key: str, size: int, source: Source, inspected: tasks.Inspected) -> IngestResult:
        """Index a blob that a worker serving an association (``net/receivers.py``) validated, named ``key`` and
        flushed, as :meth:`ingest` indexes its own: the rest of the one ingest path runs here, in the server."""
        match = _BLOB_KEY.match(key)
        if match is None or int(match.group(2)) != self.index.source_id(source):
            raise InvalidInput(f"blob {key!r} is not one the source {source.source_type}:{source.source_name} wrote")
        return self._index_blob(key, size, source, inspected, reidentify=True, also=None)

    def inspect_head(self, head: bytes) -> Future[tasks.HeadInspected | None] | None:
        """Start inspecting a file from its first bytes while the rest of its body arrives (never blocks: the
        event loop calls it); give the answer to its :class:`Upload` (``inspect_early``).  Only with worker
        processes: without them there is no core to overlap with."""
        if self.workers.workers == 0:
            return None
        return self.workers.submit(tasks.inspect_head, head)

    def _index_blob(
        self,
        key: str,
        size: int,
        source: Source,
        inspected: tasks.Inspected,
        reidentify: bool,
        also: IngestAlso | None,
        rewrite: bool = True,
        reidentified: bool = False,
        accept: Callable[[IndexedAttributes], None] | None = None,
    ) -> IngestResult:
        """The durable, validated blob ``key`` into the index (filtered or re-identified first where the source
        asks for it); on any failure the blob is deleted: nothing is half-stored."""
        try:
            if accept is not None:
                accept(inspected.attributes)
            tag_filter = filtering.filter_for_source(self.index, source) if rewrite else None
            eligible = reidentify and self._reidentifies(source, inspected.match_values)
            if tag_filter is not None or eligible:  # may rewrite the file (rare): done here, in-process
                parsed = dicom.parse_part10(self.storage.read(key))
                filtered = tag_filter is not None and tag_filter.apply(parsed.dataset)
                restored = self._reidentified(parsed, source) if eligible else None
                from_keys = restored is not None
                if restored is None and filtered:
                    restored = dicom.write_part10(parsed.dataset)
                if restored is not None:  # store the filtered or re-identified file instead
                    self.storage.delete(key)
                    again = self.upload(source)
                    again.write(restored)
                    return self._store(again, False, also, rewrite=False, reidentified=from_keys)
            # the rows are derived from the blob (reconcile re-indexes it after a power cut), so their
            # commit need not wait for the disk, unless they hold what the blob cannot give back
            result = self.index.ingest(inspected.attributes, source, key, size, also, durable=also is not None)
        except BaseException:
            self.storage.delete(key)
            raise
        return self._indexed(result, source, reidentified)

    def _indexed(self, result: IngestResult, source: Source, reidentified: bool = False) -> IngestResult:
        """After an image's rows are committed: the blob it replaced goes, and ``ImageAdded`` is published."""
        if result.replaced_storage_key:
            self.storage.delete(result.replaced_storage_key)
        self.events.publish(ImageAdded(result.image, source, not result.image_added, reidentified=reidentified))
        return result

    def _reidentifies(self, source: Source, matched_by: dict[str, str] | None) -> bool:
        """An anonymous file from a source configured for it, whose values (the worker's parse) a key matches."""
        wanted = self.reidentify_sources
        configured = source.source_type in wanted or f"{source.source_type}:{source.source_name}" in wanted
        return configured and matched_by is not None and keystore.matches_a_key(self.index, matched_by)

    def _reidentified(self, parsed: dicom.ParsedDicom, source: Source) -> bytes | None:
        """The anonymous file re-identified from the anonymization keys, or None (no key matches)."""
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

    def read_pixels(self, image_ids: Sequence[int], profile: Profile) -> Iterator[tuple[int, report.PixelReading]]:
        """Each image's pixels read as the anonymizer will read them under ``profile`` (the node's, see
        :meth:`node_profile`), in order: Tesseract in the worker processes, as many images at a time as
        there are workers."""
        pending: list[tuple[int, Call[report.PixelReading]]] = []
        try:
            for image_id in image_ids:
                key = self.index.get_image(image_id).storage_key
                path = self.storage.local_path(key)
                if len(pending) >= max(1, self.workers.workers):
                    done, call = pending.pop(0)
                    yield done, call.result()
                data = None if path else self.storage.read(key)
                pending.append((image_id, self.workers.start(tasks.read_pixels, path, data, profile)))
            while pending:
                done, call = pending.pop(0)
                yield done, call.result()
        finally:
            for _, call in pending:  # the consumer stopped or a call failed: free the others' workers
                call.settle()

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

    def anonymized_copy(self, image_id: int, profile: Profile, tag_values: Sequence[TagValue] = ()) -> tasks.Anonymized:
        """As :meth:`anonymized_bytes`, as a spool file to stream (then :meth:`release` it)."""
        return self.anonymized_file(self.index.get_image(image_id), profile, tag_values)

    def anonymize_in_place(
        self, image_id: int, profile: Profile, tag_values: Sequence[TagValue] = (), delete_original: bool = True
    ) -> IngestResult:
        """Replace the image by its de-identified version, ingested under its series' source.

        The old image is deleted after the new one is durable, unless the result has the old
        image's identity (then the ingest already replaced its file).  The result is not
        re-identified on its way in (it matches the key just recorded).
        """
        outcome = self.anonymize_many([image_id], profile, {image_id: tag_values})[0]
        if isinstance(outcome, SliceboxError):
            raise outcome
        if outcome.image.id != image_id and delete_original:
            self.delete_images([image_id])
        return outcome

    def anonymize_many(
        self,
        image_ids: Sequence[int],
        profile: Profile,
        tag_values: Mapping[int, Sequence[TagValue]],
        pool: Executor | None = None,
    ) -> list[IngestResult | SliceboxError]:
        """:meth:`anonymize_in_place` of each image, originals kept (a bulk job deletes them per chunk), in
        ``pool``'s threads: each image's result, or why it was not done (NotFound: it is gone).

        The index work is done once for all: one read of the images and their sources, the keys in
        one durable transaction (before any anonymous blob is named, so none exists without its key),
        the rows in one transaction after the blobs' flushes.  Under one GIL, that work per image was
        what capped a bulk job.  A job overlaps chunks: :meth:`start_anonymizing` the next one, then
        :meth:`finish_anonymizing` this one (with another pool for the flushes)."""
        return self.finish_anonymizing(self.start_anonymizing(image_ids, profile, tag_values, pool), pool)

    def start_anonymizing(
        self,
        image_ids: Sequence[int],
        profile: Profile,
        tag_values: Mapping[int, Sequence[TagValue]],
        pool: Executor | None = None,
        per_call: int | None = None,
    ) -> PendingAnonymization:
        """Have the workers write the images' anonymous copies into new, unnamed blobs, ``per_call`` images to
        a worker's call (default: the images spread evenly over the workers), in ``pool``'s threads, returning
        at once (without a pool, here).  Then :meth:`finish_anonymizing` or ``discard`` them."""
        found = self.index.images_with_sources(image_ids)
        ids = list(image_ids)
        per_call = max(1, per_call or -(-len(ids) // max(1, self.workers.workers)))

        def write(batch: Sequence[int]) -> list[AnonymousBlob | IngestResult | BaseException]:
            try:
                return self._anonymous_blobs([found.get(i) or i for i in batch], profile, tag_values)
            except BaseException as error:  # kept until every write is done: then nothing is left behind
                return [error] * len(batch)

        batches = [ids[at : at + per_call] for at in range(0, len(ids), per_call)]
        if pool is not None:
            return PendingAnonymization([pool.submit(write, batch) for batch in batches])
        return PendingAnonymization([_done(write(batch)) for batch in batches])

    def finish_anonymizing(
        self, pending: PendingAnonymization, pool: Executor | None = None
    ) -> list[IngestResult | SliceboxError]:
        """Record the keys of the written copies, flush them (in ``pool``'s threads) and index them: each
        image's result or error, in order (see :meth:`anonymize_many`)."""
        outcomes = pending.outcomes()
        written = [o for o in outcomes if isinstance(o, AnonymousBlob)]
        try:
            _raise_unexpected(outcomes)
            keystore.store_key_records(self.index, [(blob.done.key, blob.image.id) for blob in written])
        except BaseException:
            for blob in written:
                blob.upload.discard()
            raise
        run: Callable[..., Iterator[Any]] = pool.map if pool is not None else map
        flushed = list(run(AnonymousBlob.flush, written))  # the one flush of each
        ready = [b for b in flushed if isinstance(b, AnonymousBlob)]
        try:
            _raise_unexpected(flushed)
        except BaseException:
            for blob in ready:
                self.storage.delete(blob.key)
            raise
        flushes, indexed = iter(flushed), iter(self._index_anonymous(ready))

        def answer(outcome: object) -> IngestResult | SliceboxError:
            if isinstance(outcome, AnonymousBlob):  # its flush's error, or what indexing it gave
                outcome = next(flushes)
                outcome = next(indexed) if isinstance(outcome, AnonymousBlob) else outcome
            assert isinstance(outcome, IngestResult | SliceboxError), outcome  # others were raised above
            return outcome

        return [answer(outcome) for outcome in outcomes]

    def _anonymous_blobs(
        self,
        images: Sequence[tuple[Image, Source] | int],
        profile: Profile,
        tag_values: Mapping[int, Sequence[TagValue]],
    ) -> list[AnonymousBlob | IngestResult | BaseException]:
        """The images (with their series' sources; an id alone: not found) de-identified by one worker's call into
        new blobs, not yet named (their keys are not yet durable): each image's blob, or why it has none."""
        out: dict[int, AnonymousBlob | IngestResult | BaseException] = {}
        calls: list[tuple[int, Image, Source, Upload]] = []
        items: list[tuple[str, str, tuple[TagValue, ...]]] = []
        for at, found in enumerate(images):
            if isinstance(found, int):
                out[at] = NotFound(f"image {found} not found")
                continue
            image, source = found
            values = tuple(tag_values.get(image.id, ()))
            try:
                upload = self.upload(source)
                blob_path, source_path = upload.writer.path, self.storage.local_path(image.storage_key)
                if blob_path is None or source_path is None:  # storage without files (tests): through bytes
                    upload.discard()
                    out[at] = self._replace(image, self._anonymized(image, profile, values), delete_original=False)
                    continue
            except BaseException as error:
                out[at] = error
                continue
            calls.append((at, image, source, upload))
            items.append((source_path, blob_path, values))
        try:
            how = self._deidentification(profile, ())
            answers: list[Any] = self.workers.run(tasks.anonymize_each_into, items, how) if items else []
        except Exception as error:  # the worker died: each of its images fails with that (a SliceboxError)
            answers = [error] * len(calls)
        except BaseException:
            for _, _, _, upload in calls:
                upload.discard()
            raise
        for (at, image, source, upload), answer in zip(calls, answers, strict=True):
            try:
                if isinstance(answer, BaseException):
                    raise answer
                upload.adopt(answer.size, answer.digest)
                key = tasks.blob_key(upload.prefix, self.index.source_id(source), upload.hexdigest())
                out[at] = AnonymousBlob(image, source, upload, answer, key)
            except Exception as error:  # this image's blob goes, the others of the call stay
                upload.discard()
                out[at] = error
        return [out[at] for at in range(len(images))]

    def _index_anonymous(self, blobs: list[AnonymousBlob]) -> list[IngestResult | SliceboxError]:
        """Index flushed anonymous blobs (in order), in one transaction where no tag filter rewrites them; each
        alone where one does, or if that transaction fails (so one bad image fails alone)."""
        together = [i for i, b in enumerate(blobs) if filtering.filter_for_source(self.index, b.source) is None]
        done: dict[int, IngestResult] = {}
        if together:
            entries = [blobs[i].entry for i in together]
            try:
                results = self.index.ingest_many(entries, durable=False)  # derived from durable blobs
            except Exception:
                log.info("indexing %d anonymized images together failed: one at a time", len(together))
            else:
                done = {i: self._indexed(result, blobs[i].source) for i, result in zip(together, results, strict=True)}

        def alone(blob: AnonymousBlob) -> IngestResult | SliceboxError:
            try:
                return self._index_blob(blob.key, blob.done.size, blob.source, blob.done.inspected, False, None)
            except SliceboxError as error:  # the blob is gone again
                return error

        return [done[i] if i in done else alone(blob) for i, blob in enumerate(blobs)]

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

    def _deidentification(self, profile: Profile, tag_values: Sequence[TagValue]) -> tasks.Deidentification:
        """What a worker needs to de-identify an image as this node does: ``profile`` with the node's settings
        (:meth:`node_profile`), its pseudonym keys, the tag values, its key attributes."""
        return tasks.Deidentification(
            self.node_profile(profile), self.pseudonym_keys, tuple(tag_values), tuple(self.key_attributes)
        )

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

    def anonymized_file(
        self, image: Image, profile: Profile, tag_values: Sequence[TagValue] = (), sha256: bool = False
    ) -> tasks.Anonymized:
        """The image de-identified (in a worker process) into a spool file, once its key is durable.

        The caller streams the file and removes it (:meth:`release`)."""
        answer = self.anonymized_files([(image, tag_values)], profile, sha256)[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def anonymized_files(
        self, images: Sequence[tuple[Image, Sequence[TagValue]]], profile: Profile, sha256: bool = False
    ) -> list[tasks.Anonymized | Exception]:
        """:meth:`anonymized_file` of several images (each with its tag values) in one worker's call, their keys
        in one durable transaction (a push of several images to a box): each one's file, or why it has none."""
        items: list[tuple[str | None, bytes | None, tuple[TagValue, ...]] | Exception] = []
        for image, values in images:
            try:
                path = self.storage.local_path(image.storage_key)
                items.append((path, None if path else self.storage.read(image.storage_key), tuple(values)))
            except Exception as error:  # gone from storage meanwhile: this image's answer
                items.append(error)
        work = [item for item in items if not isinstance(item, Exception)]
        how = self._deidentification(profile, ())
        done = iter(self.workers.run(tasks.anonymize_files, work, how, str(self.spool), sha256) if work else [])
        answers = [item if isinstance(item, Exception) else next(done) for item in items]
        made = [(a, image.id) for a, (image, _) in zip(answers, images, strict=True) if isinstance(a, tasks.Anonymized)]
        try:
            if len(made) == 1:  # one image: a download again with the same key writes nothing
                keystore.store_key_record(self.index, made[0][0].key, made[0][1])
            else:
                keystore.store_key_records(self.index, [(answer.key, image_id) for answer, image_id in made])
        except BaseException:
            for answer, _ in made:
                self.release(answer)
            raise
        return answers

    @property
    def spool(self) -> Path:
        """Where worker processes leave anonymized copies for the server to stream (in RAM where Linux has
        /dev/shm); made on first use, removed by :meth:`close` (and when the context is collected)."""
        with self._keys_lock:
            if self._spool is None:
                self._spool = tasks.spool_folder()
                weakref.finalize(self, shutil.rmtree, self._spool, True)
            return self._spool

    def release(self, anonymized: tasks.Anonymized) -> None:
        Path(anonymized.path).unlink(missing_ok=True)

    def take(self, anonymized: tasks.Anonymized) -> bytes:
        """A spooled copy's bytes, its file released."""
        try:
            return Path(anonymized.path).read_bytes()
        finally:
            self.release(anonymized)

    def _anonymized(self, image: Image, profile: Profile, tag_values: Sequence[TagValue] = ()) -> bytes:
        return self.take(self.anonymized_file(image, profile, tag_values))

    # ------------------------------------------------------------------ deleting

    def delete_images(self, image_ids: Iterable[int]) -> list[int]:
        """Delete images: their blobs durably first, then their rows; unknown ids are ignored.

        In this order a crash or power cut in between leaves rows without blobs (removed at the next
        start), never a blob without a row, which the start would index again."""
        ids = list(image_ids)
        keys = self.index.storage_keys_of(ids)
        self.storage.delete_durably(keys)
        deleted = self.index.delete_images(ids)
        # an image stored again meanwhile got a new blob: it goes with its row
        late = [image.storage_key for image in deleted if image.storage_key not in keys]
        if late:
            self.storage.delete_durably(late)
        done = tuple(image.id for image in deleted)
        if done:
            self.events.publish(ImagesDeleted(done))
        return list(done)


def _done(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return future


def _raise_unexpected(outcomes: Iterable[object]) -> None:
    """Raise the first error among ``outcomes`` that is not an image's own (a SliceboxError)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, SliceboxError):
            raise outcome
