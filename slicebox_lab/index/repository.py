"""The index: upserts into the patient → study → series → image hierarchy, reads, deletes, log.

Concurrency.  ``Index`` is shared by many worker threads and possibly by several processes on one
database.  Each level is found or created with "select, else ``INSERT ... ON CONFLICT DO NOTHING
RETURNING id``, else select again", which is race-free on both backends: a losing inserter waits
for the winner's commit (PostgreSQL) or never runs at the same time (SQLite).

* SQLite allows one writer at a time anyway.  Writers start with ``BEGIN IMMEDIATE`` (no
  read-to-write lock upgrade, which SQLite cannot wait for) and, within this process, queue on a
  ``threading.Lock`` first: a waiting thread wakes the moment the lock is free instead of polling
  in SQLite's busy handler (which sleeps up to 100 ms per try).
* PostgreSQL runs ingests concurrently.  The image row is read ``FOR UPDATE``, so concurrent
  re-ingests of one SOP instance take turns and each sees the storage key the previous one left:
  every replaced key is handed back exactly once.  Parent rows are updated only when a value
  changes, so ingests into one series do not queue on its row.  Ingests hold a shared advisory
  lock and deletes an exclusive one: a delete never removes a series or patient that a concurrent
  ingest is adding an image to (which would fail that ingest or, with the cascades, lose its row).
  Deadlocks and serialization failures (should any remain) are retried.

Group commit (SQLite file databases): see ``groupcommit.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, Unpack

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from slicebox_lab import errors
from slicebox_lab.index import _records, query
from slicebox_lab.index.database import configure_sqlite, inserted_id, is_sqlite_memory, write_connection
from slicebox_lab.index.groupcommit import GroupCommit
from slicebox_lab.index.hotpath import HotPath
from slicebox_lab.index.query import Query
from slicebox_lab.index.schema import images, log, patients, series, sources, studies
from slicebox_lab.model import (
    IMAGE_ATTRIBUTES,
    PATIENT_ATTRIBUTES,
    SERIES_ATTRIBUTES,
    SOURCE_TYPES,
    STUDY_ATTRIBUTES,
    FlatSeries,
    Image,
    IndexedAttributes,
    IngestResult,
    LogEntry,
    Patient,
    Series,
    Source,
    Study,
)

LOG_ENTRY_TYPES: tuple[str, ...] = ("DEFAULT", "INFO", "WARN", "ERROR")
#: ids per ``IN (...)`` list: well below every backend's bound-parameter limit
BATCH_SIZE = 500
#: advisory lock key: ingests hold it shared, deletes exclusive (PostgreSQL only)
PG_HIERARCHY_LOCK = 0x5B0C_0002
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_ATTEMPTS = 5

T = TypeVar("T")
#: the ``also`` of :meth:`Index.ingest`: writes rows that belong with the image, in its transaction
IngestAlso = Callable[[sa.Connection, IngestResult], None]


class IngestEntry(NamedTuple):
    """One image for :meth:`Index.ingest_many`: its indexed attributes, source, blob and the blob's size."""

    attributes: IndexedAttributes
    source: Source
    storage_key: str
    size: int


class _Prepared(NamedTuple):
    """One ingest's cleaned values, ready for its transaction."""

    patient: dict[str, str]
    study: dict[str, str]
    series: dict[str, str]
    image: dict[str, Any]
    source_key: tuple[str, str]


class _Level:
    """Prepared statements for finding, creating and updating the rows of one table by its key."""

    def __init__(self, table: sa.Table, key: Sequence[str], columns: Sequence[str], insert: Any) -> None:
        self.table = table
        self.key = tuple(key)
        #: read back by ``find``: the values an upsert compares and overwrites
        self.updatable = tuple(name for name in columns if name not in key)
        where = [table.c[name] == sa.bindparam(name) for name in key]
        self.find = sa.select(table.c.id, *(table.c[name] for name in self.updatable)).where(*where)
        self.find_for_update = self.find.with_for_update()
        self.insert = insert(table).on_conflict_do_nothing(index_elements=list(key)).returning(table.c.id)
        self.update = sa.update(table).where(table.c.id == sa.bindparam("row_id"))


def _clean(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """The attribute values of one level: "" for absent ones, no NUL (PostgreSQL refuses it)."""
    out: dict[str, str] = {}
    for name in names:
        value = values.get(name)
        text = "" if value is None else str(value)
        out[name] = text.replace("\x00", "") if "\x00" in text else text
    return out


def _chunks(ids: Sequence[int], size: int = BATCH_SIZE) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


class Index:
    """The metadata index over one SQLAlchemy engine (SQLite or PostgreSQL); thread-safe, blocking."""

    def __init__(self, engine: sa.Engine) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise errors.SliceboxError(f"the index supports SQLite and PostgreSQL, not {dialect}")
        self._engine = engine
        self._pg = dialect == "postgresql"
        memory = is_sqlite_memory(engine)
        if configure_sqlite(engine) and not memory:
            engine.dispose()  # pooled connections were opened without the pragmas
        # one in-memory connection is shared by all threads: use it one at a time
        self._serial_lock = threading.RLock() if memory else None
        self._writer_lock = None if self._pg else threading.Lock()
        # one in-memory connection cannot hold a transaction open for others: no batching there
        self._group = None if self._pg or memory else GroupCommit(lambda durable: self._writing("shared", durable))
        self._source_ids: dict[tuple[str, str], int] = {}
        insert = pg_dialect.insert if self._pg else sqlite_dialect.insert
        self._sources = _Level(sources, ("source_type", "source_name"), (), insert)
        self._patients = _Level(patients, ("PatientName", "PatientID"), PATIENT_ATTRIBUTES, insert)
        self._studies = _Level(studies, ("patient_id", "StudyInstanceUID"), STUDY_ATTRIBUTES, insert)
        self._series = _Level(series, ("study_id", "SeriesInstanceUID"), (*SERIES_ATTRIBUTES, "source_id"), insert)
        image_columns = (*IMAGE_ATTRIBUTES, "TransferSyntaxUID", "NumberOfFrames", "size", "storage_key", "source_id")
        # "created" is read back (for the record) but never overwritten
        self._images = _Level(images, ("series_id", "SOPInstanceUID"), (*image_columns, "created"), insert)
        self._image_by_id = sa.select(*_records.IMAGE_COLUMNS).where(images.c.id == sa.bindparam("id"))
        self._hot = HotPath(engine.dialect, image_columns)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    # -----------------------------------------------------------------------------------------
    # transactions

    def _serial(self) -> AbstractContextManager[Any]:
        return self._serial_lock if self._serial_lock is not None else nullcontext()

    def _writer(self) -> AbstractContextManager[Any]:
        return self._writer_lock if self._writer_lock is not None else nullcontext()

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with self._serial(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _writing(self, hierarchy_lock: str | None = None, durable: bool = True) -> Iterator[sa.Connection]:
        """One write transaction; ``hierarchy_lock`` "shared" (ingest) or "exclusive" (delete).

        ``durable=False``: the commit returns without waiting for the disk (SQLite ``synchronous =
        NORMAL`` for this transaction, PostgreSQL ``synchronous_commit = off``).  The rows are never
        torn and survive a crash of the process; only a power cut or an OS crash can lose the last
        ones, until the next durable commit (on SQLite's WAL it syncs them too) or checkpoint.
        """
        with self._serial(), self._writer(), write_connection(self._engine) as conn:
            if not self._pg and self._serial_lock is None:
                _sqlite_synchronous(conn, "FULL" if durable else "NORMAL")
            with conn.begin():
                if self._pg and not durable:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                if self._pg and hierarchy_lock is not None:
                    lock = "pg_advisory_xact_lock_shared" if hierarchy_lock == "shared" else "pg_advisory_xact_lock"
                    conn.execute(sa.select(getattr(sa.func, lock)(PG_HIERARCHY_LOCK)))
                yield conn

    def reading(self) -> AbstractContextManager[sa.Connection]:
        """A read connection, for the node's other tables (SCPs, watches, jobs, ...)."""
        return self._reading()

    def writing(self, durable: bool = True) -> AbstractContextManager[sa.Connection]:
        """One write transaction with the same serialisation as the index's own writes.

        ``durable=False`` is for records whose last entries may be lost in a power cut (the audit
        trail): see :meth:`_writing`.
        """
        return self._writing(durable=durable)

    def grouped_writing(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(conn)`` in a write transaction shared with concurrent ingests and other grouped writes
        (on a SQLite file one fsynced commit serves all of them, see ``groupcommit.py``); returns after
        that commit.  For small rows written per image (anonymization keys) next to the ingest: a
        failing ``work`` is rolled back alone and its error raised here."""
        if self._group is not None:
            return self._group.run(work)
        with self._writing() as conn:
            return work(conn)

    def source_id(self, source: Source) -> int:
        """The id of ``source``'s row, created (durably: blob keys name it) when it is new."""
        source_key = (source.source_type, str(source.source_name))
        known = self._source_ids.get(source_key)
        if known is not None:
            return known
        if source.source_type not in SOURCE_TYPES:
            raise errors.InvalidInput(
                f"Unknown source type {source.source_type!r}: use one of {', '.join(SOURCE_TYPES)}"
            )

        def upsert(conn: sa.Connection) -> int:
            values = {"source_type": source_key[0], "source_name": source_key[1], "created": datetime.now(UTC)}
            return self._upsert(conn, self._sources, values)[0]

        with self._writing() as conn:
            source_id = upsert(conn)
        self._source_ids[source_key] = source_id
        return source_id

    def _retrying(self, work: Callable[[], T]) -> T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return work()
            except sa.exc.DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if attempt < _ATTEMPTS and sqlstate in _RETRYABLE_SQLSTATES:
                    continue
                raise
        raise AssertionError("unreachable")

    # -----------------------------------------------------------------------------------------
    # ingest

    def ingest(
        self,
        attributes: IndexedAttributes,
        source: Source,
        storage_key: str,
        size: int,
        also: IngestAlso | None = None,
        durable: bool = True,
    ) -> IngestResult:
        """Upsert the image and its parents in one transaction (Slicebox semantics).

        ``also(conn, result)`` writes rows that belong with the image in the same transaction (a
        box receipt): both are committed, or neither.  ``durable=False``: the commit does not wait
        for the disk (rows the context can derive again from the blob after a power cut).

        On SQLite files, concurrent ingests share one commit (group commit, module docstring).

        Patient, study and series are found by their keys and their other values updated to the
        new ones; the series remembers ``source`` as its latest.  An existing image (same series,
        same SOPInstanceUID) gets the new values, storage key, size and source, and its previous
        storage key is returned as ``replaced_storage_key``, for the caller to delete after commit
        (``None`` if the key did not change).  A storage key used by another image is a Conflict.
        """
        return self.ingest_many([IngestEntry(attributes, source, storage_key, size)], also=also, durable=durable)[0]

    def ingest_many(
        self,
        entries: Sequence[IngestEntry],
        before: Callable[[sa.Connection], None] | None = None,
        also: IngestAlso | None = None,
        durable: bool = True,
    ) -> list[IngestResult]:
        """:meth:`ingest` of each entry, all in one transaction (all are committed, or none): a bulk job's
        chunk costs one transaction and no per-image commit machinery.  ``before(conn)`` writes rows that
        belong with the whole batch first (the anonymization keys of the images)."""
        prepared = [self._prepare(*entry) for entry in entries]

        def rows(conn: sa.Connection) -> list[tuple[IngestResult, int]]:
            if before is not None:
                before(conn)
            done: list[tuple[IngestResult, int]] = []
            for entry in prepared:
                result, source_id = self._rows(conn, entry)
                if also is not None:
                    also(conn, result)
                done.append((result, source_id))
            return done

        def once() -> list[IngestResult]:
            if self._group is not None:
                done = self._group.run(rows, durable)
            else:
                with self._writing("shared", durable) as conn:
                    done = rows(conn)
            for entry, (_, source_id) in zip(prepared, done, strict=True):
                self._source_ids[entry.source_key] = source_id  # committed: safe to remember
            return [result for result, _ in done]

        try:
            return self._retrying(once)
        except sa.exc.IntegrityError as error:
            if "storage_key" in str(error.orig):
                keys = ", ".join(repr(entry.image["storage_key"]) for entry in prepared)
                raise errors.Conflict(f"storage key {keys} is already used by another image") from None
            raise

    @staticmethod
    def _prepare(attributes: IndexedAttributes, source: Source, storage_key: str, size: int) -> _Prepared:
        """The rows' values of one ingest, checked and cleaned before any transaction starts."""
        if source.source_type not in SOURCE_TYPES:
            raise errors.InvalidInput(
                f"Unknown source type {source.source_type!r}: use one of {', '.join(SOURCE_TYPES)}"
            )
        if not isinstance(storage_key, str) or not storage_key:
            raise errors.InvalidInput("storage key must be a non-empty string")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
            raise errors.InvalidInput("size must be a non-negative integer")
        frames = attributes.number_of_frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 0 <= frames <= query.MAX_ID:
            raise errors.InvalidInput(f"NumberOfFrames must be a non-negative integer, not {frames!r}")
        image: dict[str, Any] = {
            **_clean(attributes.image, IMAGE_ATTRIBUTES),
            "TransferSyntaxUID": _clean({"uid": attributes.transfer_syntax_uid}, ("uid",))["uid"],
            "NumberOfFrames": frames,
            "size": size,
            "storage_key": storage_key,
        }
        return _Prepared(
            _clean(attributes.patient, PATIENT_ATTRIBUTES),
            _clean(attributes.study, STUDY_ATTRIBUTES),
            _clean(attributes.series, SERIES_ATTRIBUTES),
            image,
            (source.source_type, str(source.source_name)),
        )

    def _rows(self, conn: sa.Connection, entry: _Prepared) -> tuple[IngestResult, int]:
        """Write one prepared ingest on ``conn``: its result, and the id of its source."""
        now = datetime.now(UTC)
        source_key = entry.source_key
        source_id = self._source_ids.get(source_key)
        if source_id is None:
            source_id, _ = self._upsert(
                conn,
                self._sources,
                {"source_type": source_key[0], "source_name": source_key[1], "created": now},
            )
        patient, study, the_series = entry.patient, entry.study, entry.series
        known = self._hot.parents(conn, patient, study, the_series, source_id)
        if known is not None:  # the common case: one lookup of all three (hotpath.py)
            patient_id, study_id, series_id = known.patient_id, known.study_id, known.series_id
            patient_added = study_added = series_added = False
            for level, row_id, changed in (
                (self._patients, patient_id, known.patient_changes),
                (self._studies, study_id, known.study_changes),
                (self._series, series_id, known.series_changes),
            ):
                if changed:
                    conn.execute(level.update, {"row_id": row_id, **changed})
        else:
            patient_id, patient_added = self._upsert(conn, self._patients, patient)
            study_id, study_added = self._upsert(conn, self._studies, {"patient_id": patient_id, **study})
            series_id, series_added = self._upsert(
                conn, self._series, {"study_id": study_id, **the_series, "source_id": source_id}
            )
        values = {"series_id": series_id, **entry.image, "source_id": source_id}
        new_id = self._hot.insert_image(conn, values, now)
        if new_id is not None:
            record, image_added, replaced = self._image_record(new_id, values, now), True, None
        else:  # sent again: overwrite it the general way
            record, image_added, replaced = self._upsert_image(conn, values, now)
        result = IngestResult(
            image=record,
            patient_added=patient_added,
            study_added=study_added,
            series_added=series_added,
            image_added=image_added,
            replaced_storage_key=replaced,
        )
        return result, source_id

    @staticmethod
    def _upsert(conn: sa.Connection, level: _Level, values: dict[str, Any]) -> tuple[int, bool]:
        """(id, added): find by key, else insert, else (lost a race) find; update changed values."""
        row = conn.execute(level.find, values).first()
        if row is None:
            new_id = conn.execute(level.insert, values).scalar()
            if new_id is not None:
                return int(new_id), True
            row = conn.execute(level.find, values).one()
        changed = {
            name: values[name] for name, old in zip(level.updatable, row[1:], strict=True) if old != values[name]
        }
        if changed:
            conn.execute(level.update, {"row_id": row[0], **changed})
        return int(row[0]), False

    def _upsert_image(
        self, conn: sa.Connection, values: dict[str, Any], now: datetime
    ) -> tuple[Image, bool, str | None]:
        """(record, added, replaced storage key or None): insert the image or overwrite it."""
        level = self._images
        values = {**values, "created": now, "updated": now}
        row = conn.execute(level.find_for_update, values).first()
        if row is None:
            new_id = conn.execute(level.insert, values).scalar()
            if new_id is not None:
                return self._image_record(int(new_id), values, now), True, None
            # another transaction inserted it first: wait for its row lock, then overwrite
            row = conn.execute(level.find_for_update, values).one()
        old = dict(zip(level.updatable, row[1:], strict=True))
        updates = {name: values[name] for name in level.updatable if name != "created"}
        conn.execute(level.update, {"row_id": row[0], **updates, "updated": now})
        # the same key again means the caller overwrote the blob in place: nothing to delete
        replaced = old["storage_key"] if old["storage_key"] != values["storage_key"] else None
        return self._image_record(int(row[0]), values, old["created"]), False, replaced

    @staticmethod
    def _image_record(image_id: int, values: Mapping[str, Any], created: datetime) -> Image:
        return Image(
            id=image_id,
            series_id=values["series_id"],
            SOPInstanceUID=values["SOPInstanceUID"],
            SOPClassUID=values["SOPClassUID"],
            ImageType=values["ImageType"],
            InstanceNumber=values["InstanceNumber"],
            TransferSyntaxUID=values["TransferSyntaxUID"],
            NumberOfFrames=values["NumberOfFrames"],
            size=values["size"],
            source_id=values["source_id"],
            created=_records.iso(created),
            storage_key=values["storage_key"],
        )

    # -----------------------------------------------------------------------------------------
    # reads

    def _one(self, statement: sa.Select[Any], record: Callable[[Any], T], missing: str) -> T:
        with self._reading() as conn:
            row = conn.execute(statement).first()
        if row is None:
            raise errors.NotFound(missing)
        return record(row)

    def _all(self, statement: sa.Select[Any], record: Callable[[Any], T]) -> list[T]:
        with self._reading() as conn:
            return [record(row) for row in conn.execute(statement)]

    @staticmethod
    def _key(value: Any, what: str) -> int:
        """``value`` as the id of an existing ``what``, or NotFound (also for ids out of range)."""
        key = query.row_id(value, f"{what} id")
        if key is None:
            raise errors.NotFound(f"{what} {value} not found")
        return key

    def get_patient(self, patient_id: int) -> Patient:
        statement = sa.select(*_records.PATIENT_COLUMNS).where(patients.c.id == self._key(patient_id, "patient"))
        return self._one(statement, _records.patient, f"patient {patient_id} not found")

    def get_study(self, study_id: int) -> Study:
        statement = sa.select(*_records.STUDY_COLUMNS).where(studies.c.id == self._key(study_id, "study"))
        return self._one(statement, _records.study, f"study {study_id} not found")

    def get_series(self, series_id: int) -> Series:
        statement = sa.select(*_records.SERIES_COLUMNS).where(series.c.id == self._key(series_id, "series"))
        return self._one(statement, _records.series_record, f"series {series_id} not found")

    def get_image(self, image_id: int) -> Image:
        with self._reading() as conn:
            row = conn.execute(self._image_by_id, {"id": self._key(image_id, "image")}).first()
        if row is None:
            raise errors.NotFound(f"image {image_id} not found")
        return _records.image(row)

    def get_flat_series(self, series_id: int) -> FlatSeries:
        statement = (
            sa.select(*_records.FLAT_SERIES_COLUMNS)
            .select_from(series.join(studies).join(patients))
            .where(series.c.id == self._key(series_id, "series"))
        )
        return self._one(statement, _records.flat_series, f"series {series_id} not found")

    def images_of_patient(self, patient_id: int) -> list[Image]:
        if query.row_id(patient_id, "patient id") is None:
            return []
        statement = (
            sa.select(*_records.IMAGE_COLUMNS)
            .select_from(images.join(series).join(studies))
            .where(studies.c.patient_id == patient_id)
            .order_by(images.c.id)
        )
        return self._all(statement, _records.image)

    def images_of_study(self, study_id: int) -> list[Image]:
        if query.row_id(study_id, "study id") is None:
            return []
        statement = (
            sa.select(*_records.IMAGE_COLUMNS)
            .select_from(images.join(series))
            .where(series.c.study_id == study_id)
            .order_by(images.c.id)
        )
        return self._all(statement, _records.image)

    def images_of_series(self, series_id: int) -> list[Image]:
        if query.row_id(series_id, "series id") is None:
            return []
        statement = sa.select(*_records.IMAGE_COLUMNS).where(images.c.series_id == series_id).order_by(images.c.id)
        return self._all(statement, _records.image)

    def images_by_storage_keys(self, keys: Iterable[str]) -> list[Image]:
        """The images stored under any of ``keys`` (unknown keys ignored), by id."""
        wanted = sorted(set(keys))
        found: list[Image] = []
        with self._reading() as conn:
            for start in range(0, len(wanted), BATCH_SIZE):
                batch = wanted[start : start + BATCH_SIZE]
                statement = sa.select(*_records.IMAGE_COLUMNS).where(images.c.storage_key.in_(batch))
                found.extend(_records.image(row) for row in conn.execute(statement))
        return sorted(found, key=lambda image: image.id)

    def storage_keys_of(self, image_ids: Iterable[int]) -> list[str]:
        """The storage keys of the images among ``image_ids`` (unknown ids ignored)."""
        wanted = sorted({i for i in image_ids if query.row_id(i, "image id") is not None})
        keys: list[str] = []
        with self._reading() as conn:
            for batch in _chunks(wanted):
                keys.extend(conn.execute(sa.select(images.c.storage_key).where(images.c.id.in_(batch))).scalars())
        return keys

    def find_image(self, series_instance_uid: str, sop_instance_uid: str) -> Image | None:
        """The image of that SOP instance in that series, if indexed."""
        statement = (
            sa.select(*_records.IMAGE_COLUMNS)
            .select_from(images.join(series))
            .where(series.c.SeriesInstanceUID == series_instance_uid, images.c.SOPInstanceUID == sop_instance_uid)
        )
        with self._reading() as conn:
            row = conn.execute(statement).first()
        return None if row is None else _records.image(row)

    def get_source(self, source_id: int) -> Source:
        statement = sa.select(*_records.SOURCE_COLUMNS).where(sources.c.id == self._key(source_id, "source"))
        return self._one(statement, _records.source, f"source {source_id} not found")

    def images_with_sources(self, image_ids: Iterable[int]) -> dict[int, tuple[Image, Source]]:
        """Each existing image among ``image_ids`` with the source of its series (unknown ids left out): what
        replacing an image under its series' source needs, for a whole chunk of a job in one read."""
        wanted = sorted({i for i in image_ids if query.row_id(i, "image id") is not None})
        found: dict[int, tuple[Image, Source]] = {}
        width = len(_records.IMAGE_COLUMNS)
        with self._reading() as conn:
            for batch in _chunks(wanted):
                statement = (
                    sa.select(*_records.IMAGE_COLUMNS, *_records.SOURCE_COLUMNS)
                    .select_from(images.join(series).join(sources, series.c.source_id == sources.c.id))
                    .where(images.c.id.in_(batch))
                )
                for row in conn.execute(statement):
                    image = _records.image(row[:width])
                    found[image.id] = (image, _records.source(row[width:]))
        return found

    def series_source(self, series_id: int) -> Source:
        """The source that last delivered images to the series."""
        statement = (
            sa.select(*_records.SOURCE_COLUMNS)
            .select_from(series.join(sources, series.c.source_id == sources.c.id))
            .where(series.c.id == self._key(series_id, "series"))
        )
        return self._one(statement, _records.source, f"series {series_id} not found")

    def sources(self) -> list[Source]:
        return self._all(sa.select(*_records.SOURCE_COLUMNS).order_by(sources.c.id), _records.source)

    def storage_keys(self, batch_size: int = 1000) -> Iterator[str]:
        """Every image's storage key, streamed in batches (each its own short read, by id)."""
        last = 0
        while True:
            statement = (
                sa.select(images.c.id, images.c.storage_key)
                .where(images.c.id > last)
                .order_by(images.c.id)
                .limit(batch_size)
            )
            with self._reading() as conn:
                rows = conn.execute(statement).all()
            if not rows:
                return
            for row in rows:
                yield row[1]
            last = rows[-1][0]

    def ping(self) -> None:
        """Answer only if the database does: a health check that stays cheap at a million images."""
        with self._reading() as conn:
            conn.execute(sa.select(sa.literal(1))).one()

    def counts(self) -> dict[str, int]:
        """Number of patients, studies, series and images."""
        names = {"patients": patients, "studies": studies, "series": series, "images": images}
        statement = sa.select(
            *(sa.select(sa.func.count()).select_from(t).scalar_subquery().label(n) for n, t in names.items())
        )
        with self._reading() as conn:
            row = conn.execute(statement).one()
        return {name: int(row[i]) for i, name in enumerate(names)}

    # -----------------------------------------------------------------------------------------
    # delete

    def delete_images(self, image_ids: Iterable[int]) -> list[Image]:
        """Delete images, then the series, studies and patients left empty; one transaction.

        Unknown ids are ignored.  Returns the deleted images (by id), whose blobs the caller
        deletes after this returns.
        """
        keys = (query.row_id(value, "image id") for value in image_ids)
        ids = sorted({key for key in keys if key is not None})
        if not ids:
            return []

        def once() -> list[Image]:
            deleted: list[Image] = []
            with self._writing("exclusive") as conn:
                for batch in _chunks(ids):
                    statement = images.delete().where(images.c.id.in_(batch)).returning(*_records.IMAGE_COLUMNS)
                    deleted.extend(_records.image(row) for row in conn.execute(statement))
                study_ids = self._delete_empty(
                    conn,
                    series,
                    images.c.series_id,
                    series.c.study_id,
                    {image.series_id for image in deleted},
                )
                patient_ids = self._delete_empty(conn, studies, series.c.study_id, studies.c.patient_id, study_ids)
                self._delete_empty(conn, patients, studies.c.patient_id, patients.c.id, patient_ids)
            return sorted(deleted, key=lambda image: image.id)

        return self._retrying(once)

    @staticmethod
    def _delete_empty(
        conn: sa.Connection,
        table: sa.Table,
        child_key: sa.Column[Any],
        returned: sa.Column[Any],
        ids: Iterable[int],
    ) -> set[int]:
        """Delete the rows of ``table`` among ``ids`` that no child refers to; their ``returned``."""
        parents: set[int] = set()
        for batch in _chunks(sorted(ids)):
            statement = (
                table.delete()
                .where(table.c.id.in_(batch), ~sa.exists().where(child_key == table.c.id))
                .returning(returned)
            )
            parents.update(int(value) for value in conn.execute(statement).scalars())
        return parents

    # -----------------------------------------------------------------------------------------
    # lists and queries (see query.py)

    def list_images(self, series_id: int, *, filter: str = "", **options: Unpack[query.Paging]) -> list[Image]:
        """``query.list_images`` on a read connection of its own."""
        with self._reading() as conn:
            return query.list_images(conn, series_id, filter=filter, **options)

    def list_flat_series(self, *, filter: str = "", **options: Unpack[query.Browsing]) -> list[FlatSeries]:
        """``query.list_flat_series`` on a read connection of its own."""
        with self._reading() as conn:
            return query.list_flat_series(conn, filter=filter, **options)

    def query_patients(self, q: Query) -> list[Patient]:
        with self._reading() as conn:
            return query.query_patients(conn, q)

    def query_studies(self, q: Query) -> list[Study]:
        with self._reading() as conn:
            return query.query_studies(conn, q)

    def query_series(self, q: Query) -> list[Series]:
        with self._reading() as conn:
            return query.query_series(conn, q)

    def query_images(self, q: Query) -> list[Image]:
        with self._reading() as conn:
            return query.query_images(conn, q)

    def query_flat_series(self, q: Query) -> list[FlatSeries]:
        with self._reading() as conn:
            return query.query_flat_series(conn, q)

    # -----------------------------------------------------------------------------------------
    # log

    def add_log(self, entry_type: str, subject: str, message: str) -> LogEntry:
        if entry_type not in LOG_ENTRY_TYPES:
            raise errors.InvalidInput(f"Unknown log entry type {entry_type!r}: use one of {', '.join(LOG_ENTRY_TYPES)}")
        now = datetime.now(UTC)
        subject, message = str(subject).replace("\x00", ""), str(message).replace("\x00", "")
        values = {"created": now, "entry_type": entry_type, "subject": subject, "message": message}
        with self._writing() as conn:
            entry_id = inserted_id(conn, log, **values)
        return LogEntry(
            id=int(entry_id),
            created=_records.iso(now),
            entry_type=entry_type,
            subject=subject,
            message=message,
        )

    def list_log(
        self,
        start_index: int = 0,
        count: int = 20,
        subject: str | None = None,
        entry_type: str | None = None,
    ) -> list[LogEntry]:
        """Log entries, newest first; ``subject`` matches exactly."""
        start, limit = query._page(start_index, count)
        statement = sa.select(*_records.LOG_COLUMNS).order_by(log.c.id.desc()).offset(start).limit(limit)
        if subject is not None:
            statement = statement.where(log.c.subject == query._text_value(subject, "subject"))
        if entry_type is not None:
            if entry_type not in LOG_ENTRY_TYPES:
                raise errors.InvalidInput(
                    f"Unknown log entry type {entry_type!r}: use one of {', '.join(LOG_ENTRY_TYPES)}"
                )
            statement = statement.where(log.c.entry_type == entry_type)
        return self._all(statement, _records.log_entry)

    def delete_log(self, entry_id: int | None = None) -> None:
        """Delete one entry (unknown ids ignored), or all with ``None``."""
        statement = log.delete()
        if entry_id is not None:
            key = query.row_id(entry_id, "log entry id")
            if key is None:
                return
            statement = statement.where(log.c.id == key)
        with self._writing() as conn:
            conn.execute(statement)


def _sqlite_synchronous(conn: sa.Connection, level: str) -> None:
    """Set ``PRAGMA synchronous`` of this pooled connection for its next transaction, when it differs from
    what the connection has (a run of ingests, all NORMAL, sets nothing); on the DBAPI connection itself,
    outside any transaction (through SQLAlchemy the statement would open one: our begin hook)."""
    info = conn.connection.info
    if info.get("synchronous") == level:
        return
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    dbapi.execute(f"PRAGMA synchronous = {level}")
    info["synchronous"] = level
