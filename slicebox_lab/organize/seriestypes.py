"""Series types: classes of series ("CT chest", "MR T1") assigned by rules over attribute values.

A type has rules; a rule is a list of attribute conditions ``{"tag": <tag path>, "values": [...]}``.
A series has a type when ANY rule of the type matches it, and a rule matches when ALL its
conditions do.  A condition matches when the attribute's value (read from the series' first
stored image: the lowest image id) equals one of ``values``:

* the value is compared as text, stripped of padding; a multi-valued attribute as its DICOM form
  with ``\\`` between the values (``ORIGINAL\\PRIMARY\\AXIAL``); an absent or empty attribute is
  ``""``, so ``"values": [""]`` matches a series without it;
* a value with ``*`` (any run) or ``?`` (one character) is a DICOM wildcard pattern, as in C-FIND
  (``"*T1*"``); matching is case-sensitive;
* ``tag`` is a tag path (``dicom/tagpath.py``): ``Modality``, ``(0018,0087)``, or inside sequences
  ``ProcedureCodeSequence[0].CodeValue`` (``[*]``: any item).  Stored in one canonical spelling.

Decisions differing from Slicebox (§6.4): a rule without conditions matches NOTHING (Slicebox's
matched every series, so a half-edited rule typed the whole node); conditions are edited with their
rule (``PUT`` of the rule), not one by one; a manual assignment (``PUT /metadata/series/{id}/
seriestypes/{typeId}``) survives re-classification (Slicebox lost it); duplicate type names → 409.

When it runs.  :class:`SeriesTypeClassifier` (a node service) subscribes to ``ImageAdded``: the
subscriber only queues the series id (and only when rules exist and the series was not classified
since the last rule change), a worker thread reads the first image (without its pixel data) and
writes the series' rule-assigned types.  Any change to a rule, and deleting a type, re-classifies
every series as a job (kind ``classify_series_types``) with progress; so does
``POST /seriestypes/updatestatus``.  One lock serialises the classification of single series, so
the worker and a re-classification job never write results from stale rules over fresh ones.
The statements are ``index/seriestypes.py``.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from slicebox_lab.dicom.tagpath import TagPath
from slicebox_lab.errors import Conflict, InvalidInput, NotFound, SliceboxError
from slicebox_lab.events import ImageAdded
from slicebox_lab.index import Index
from slicebox_lab.index import seriestypes as rows
from slicebox_lab.index.query import MAX_COUNT, row_id
from slicebox_lab.index.unique import writing_unique
from slicebox_lab.jobs import FINISHED_STATES, Job, JobContext, JobState
from slicebox_lab.model import to_json

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = [
    "CLASSIFY_JOB",
    "Condition",
    "Rule",
    "SeriesType",
    "SeriesTypeClassifier",
    "classifier",
    "conditions_of",
    "create_rule",
    "create_type",
    "delete_rule",
    "delete_type",
    "get_rule",
    "get_type",
    "list_rules",
    "list_types",
    "rule_matches",
    "series_type_service_factory",
    "stored_conditions",
    "types_of_series",
    "update_rule",
    "update_type",
]

log = logging.getLogger(__name__)

CLASSIFY_JOB = "classify_series_types"
MAX_NAME_LENGTH = 200
MAX_CONDITIONS = 100
MAX_VALUES = 1000
MAX_VALUE_LENGTH = 1024
#: series remembered as classified (since the last rule change) before the memory is cleared
_MAX_REMEMBERED = 200_000
_BATCH = 500


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SeriesType:
    id: int
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class Condition:
    """One attribute of a rule: the attribute at ``tag`` must equal (or match) one of ``values``."""

    tag: str
    values: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "values": list(self.values)}

    def path(self) -> TagPath:
        return TagPath.parse(self.tag)


@dataclass(frozen=True)
class Rule:
    id: int
    series_type_id: int
    attributes: tuple[Condition, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "series_type_id": self.series_type_id,
            "attributes": [a.to_json() for a in self.attributes],
        }


# ---------------------------------------------------------------------------------------------- parsing


def _type_name(body: Any) -> str:
    value = body.get("name") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput('a series type needs a non-empty "name" (a string)')
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput(f"a series type name has at most {MAX_NAME_LENGTH} characters and no NUL")
    return name


def _condition(value: Any) -> Condition:
    if not isinstance(value, dict):
        raise InvalidInput('each rule attribute must be an object like {"tag": "Modality", "values": ["CT"]}')
    tag = value.get("tag", value.get("keyword", value.get("tag_path")))
    if isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag <= 0xFFFFFFFF:
        tag = f"{tag:08X}"
    path = TagPath.parse(tag)
    values = value.get("values")
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f'rule attribute {path.text!r}: "values" must be a non-empty list of strings')
    if len(values) > MAX_VALUES or any(len(v) > MAX_VALUE_LENGTH or "\x00" in v for v in values):
        raise InvalidInput(
            f"rule attribute {path.text!r}: at most {MAX_VALUES} values of at most {MAX_VALUE_LENGTH} characters"
        )
    return Condition(path.canonical, tuple(dict.fromkeys(v.strip() for v in values)))


def _conditions(body: Any) -> tuple[Condition, ...]:
    """``{"attributes": [...]}`` (or a bare list) → conditions; an empty list is a rule matching nothing."""
    value = body.get("attributes") if isinstance(body, dict) else body
    if not isinstance(value, list):
        raise InvalidInput('a rule is {"attributes": [{"tag": "Modality", "values": ["CT"]}, ...]}')
    if len(value) > MAX_CONDITIONS:
        raise InvalidInput(f"a rule has at most {MAX_CONDITIONS} attributes")
    return tuple(_condition(v) for v in value)


def conditions_of(value: Any) -> tuple[Condition, ...]:
    """Conditions from their JSON (``[{"tag": "Modality", "values": ["CT"]}]``), as a rule has them: what
    other parts that select series by attribute values (apps) validate their rules with."""
    return _conditions(value)


def stored_conditions(text: str) -> tuple[Condition, ...]:
    """Conditions from the JSON text :meth:`Condition.to_json` values were stored as."""
    return _stored_conditions(text)


def _stored_conditions(text: str) -> tuple[Condition, ...]:
    try:
        value = json.loads(text or "[]")
        return tuple(Condition(str(c["tag"]), tuple(str(v) for v in c["values"])) for c in value)
    except (ValueError, KeyError, TypeError):
        log.warning("a series type rule has unreadable attributes %r: it matches nothing", text)
        return ()


# ---------------------------------------------------------------------------------------------- matching


def _text(value: Any) -> str:
    if value is None or isinstance(value, (bytes, bytearray)):
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(_text(v) for v in value)
    return str(value).strip(" \x00")


def _holders(ds: Dataset, path: TagPath) -> list[Dataset]:
    current = [ds]
    for step in path.steps:
        following: list[Dataset] = []
        for holder in current:
            element = holder.get(step.tag)
            if element is None or element.VR != "SQ" or not element.value:
                continue
            items = list(element.value)
            if step.item == -1:
                following.extend(items)
            elif step.item is not None and step.item < len(items):
                following.append(items[step.item])
        current = following
    return current


def attribute_texts(ds: Dataset, path: TagPath) -> list[str]:
    """The attribute's value as text in each place the path leads to (``[""]`` when absent)."""
    texts = []
    for holder in _holders(ds, path):
        element = holder.get(path.tag)
        texts.append("" if element is None or element.VR == "SQ" else _text(element.value))
    return texts or [""]


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _matches(text: str, wanted: str) -> bool:
    if "*" not in wanted and "?" not in wanted:
        return text == wanted
    pattern = _PATTERNS.get(wanted)
    if pattern is None:
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted)
        pattern = _PATTERNS.setdefault(wanted, re.compile(body, re.DOTALL))
    return pattern.fullmatch(text) is not None


def condition_matches(condition: Condition, ds: Dataset) -> bool:
    texts = attribute_texts(ds, condition.path())
    return any(_matches(text, wanted) for text in texts for wanted in condition.values)


def rule_matches(rule: Rule, ds: Dataset) -> bool:
    """All conditions match; a rule without conditions matches nothing."""
    return bool(rule.attributes) and all(condition_matches(c, ds) for c in rule.attributes)


def matching_types(rules: Iterable[Rule], ds: Dataset) -> set[int]:
    return {rule.series_type_id for rule in rules if rule_matches(rule, ds)}


# ---------------------------------------------------------------------------------------------- types


def _key(value: Any, what: str) -> int:
    key = row_id(value, what)
    if key is None:
        raise NotFound(f"{what} {value} not found")
    return key


def _found_type(row: rows.TypeRow | None, type_id: int) -> SeriesType:
    if row is None:
        raise NotFound(f"series type {type_id} not found")
    return SeriesType(*row)


def _name_taken(found: int | None, name: str, other_than: int | None = None) -> None:
    """``found``: the id of the type named ``name``, if any."""
    if found is not None and found != other_than:
        raise Conflict(f"a series type named {name!r} already exists")


def list_types(index: Index, start_index: int = 0, count: int = 20) -> list[SeriesType]:
    return [SeriesType(*row) for row in rows.types_page(index, start_index, min(count, MAX_COUNT))]


def get_type(index: Index, type_id: int) -> SeriesType:
    key = _key(type_id, "series type")
    with index.reading() as conn:
        return _found_type(rows.type_by_id(conn, key), key)


def create_type(index: Index, body: Any) -> SeriesType:
    """``{"name"}`` → the new type (no rules yet: it types nothing); a taken name → 409."""
    name = _type_name(body)
    with writing_unique(index, f"a series type named {name!r} already exists") as conn:
        _name_taken(rows.type_id_named(conn, name), name)
        return SeriesType(rows.insert_type(conn, name, _now()), name)


def update_type(index: Index, type_id: int, body: Any) -> SeriesType:
    """Rename (no re-classification: the rules are unchanged)."""
    key = _key(type_id, "series type")
    name = _type_name(body)
    with index.writing() as conn:
        _found_type(rows.type_by_id(conn, key), key)
        _name_taken(rows.type_id_named(conn, name), name, key)
        rows.rename_type(conn, key, name)
    return SeriesType(key, name)


def delete_type(context: SliceboxContext, type_id: int) -> None:
    """Delete the type, its rules and its assignments (idempotent: an unknown id is not an error)."""
    key = row_id(type_id, "series type id")
    if key is None:
        return
    if rows.delete_type(context.index, key):
        classifier(context).rules_changed(reclassify=False)  # the cascade removed its assignments


# ---------------------------------------------------------------------------------------------- rules


def _rule(row: rows.RuleRow) -> Rule:
    return Rule(row.id, row.series_type_id, _stored_conditions(row.attributes))


def list_rules(index: Index, type_id: int) -> list[Rule]:
    key = _key(type_id, "series type")
    with index.reading() as conn:
        _found_type(rows.type_by_id(conn, key), key)
        return [_rule(row) for row in rows.rules_of_type(conn, key)]


def all_rules(index: Index) -> list[Rule]:
    return [_rule(row) for row in rows.all_rules(index)]


def _found_rule(row: rows.RuleRow | None, type_id: int, rule_id: Any) -> Rule:
    if row is None:
        raise NotFound(f"series type {type_id} has no rule {rule_id}")
    return _rule(row)


def get_rule(index: Index, type_id: int, rule_id: int) -> Rule:
    key = _key(type_id, "series type")
    with index.reading() as conn:
        _found_type(rows.type_by_id(conn, key), key)
        return _found_rule(rows.rule_by_id(conn, key, _key(rule_id, "series type rule")), key, rule_id)


def _dump(conditions: Sequence[Condition]) -> str:
    return json.dumps([c.to_json() for c in conditions])


def create_rule(context: SliceboxContext, type_id: int, body: Any) -> Rule:
    """Add a rule; every series is then re-classified (a job)."""
    key = _key(type_id, "series type")
    conditions = _conditions(body)
    with context.index.writing() as conn:
        _found_type(rows.type_by_id(conn, key), key)
        rule = Rule(rows.insert_rule(conn, key, _dump(conditions), _now()), key, conditions)
    classifier(context).rules_changed()
    return rule


def update_rule(context: SliceboxContext, type_id: int, rule_id: int, body: Any) -> Rule:
    """Replace the rule's attributes; every series is then re-classified (a job)."""
    key = _key(type_id, "series type")
    conditions = _conditions(body)
    with context.index.writing() as conn:
        _found_type(rows.type_by_id(conn, key), key)
        old = _found_rule(rows.rule_by_id(conn, key, _key(rule_id, "series type rule")), key, rule_id)
        rows.set_rule_attributes(conn, old.id, _dump(conditions))
    classifier(context).rules_changed()
    return Rule(old.id, key, conditions)


def delete_rule(context: SliceboxContext, type_id: int, rule_id: int) -> None:
    """Delete a rule (idempotent); every series is then re-classified (a job)."""
    type_key, rule_key = row_id(type_id, "series type id"), row_id(rule_id, "series type rule id")
    if type_key is None or rule_key is None:
        return
    if rows.delete_rule(context.index, type_key, rule_key):
        classifier(context).rules_changed()


# ---------------------------------------------------------------------------------------------- series


def _require_series(exists: bool, series_id: int) -> None:
    if not exists:
        raise NotFound(f"series {series_id} not found")


def types_of_series(index: Index, series_id: int) -> list[SeriesType]:
    key = _key(series_id, "series")
    with index.reading() as conn:
        _require_series(rows.series_exists(conn, key), key)
        return [SeriesType(*row) for row in rows.types_of_series(conn, key)]


def types_of_many_series(index: Index, body: Any) -> list[dict[str, Any]]:
    """``{"series_ids": [...]}`` (or Slicebox's ``{"ids": [...]}``) → ``[{"series_id", "series_type"}]``.

    Unknown ids contribute nothing; at most :data:`MAX_COUNT` ids.
    """
    ids = body.get("series_ids", body.get("ids")) if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput('give the series as {"series_ids": [1, 2, 3]}')
    if len(ids) > MAX_COUNT:
        raise InvalidInput(f"at most {MAX_COUNT} series ids per query")
    keys = sorted({key for key in (row_id(i, "series id") for i in ids) if key is not None})
    return [
        {"series_id": series_key, "series_type": SeriesType(*row).to_json()}
        for series_key, row in rows.types_of_many_series(index, keys)
    ]


def assign_type(index: Index, series_id: int, type_id: int) -> None:
    """Manual assignment (kept by re-classification); idempotent; unknown series or type → 404."""
    series_key, type_key = _key(series_id, "series"), _key(type_id, "series type")
    with index.writing() as conn:
        _require_series(rows.series_exists(conn, series_key), series_key)
        _found_type(rows.type_by_id(conn, type_key), type_key)
        rows.assign(conn, series_key, type_key)


def unassign_types(index: Index, series_id: int, type_id: int | None = None) -> None:
    """Remove one (or every) type of a series, manual or not; idempotent.  Rules add them back on the
    next re-classification."""
    series_key = row_id(series_id, "series id")
    type_key = None if type_id is None else row_id(type_id, "series type id")
    if series_key is None or (type_id is not None and type_key is None):
        return
    rows.unassign(index, series_key, type_key)


# ---------------------------------------------------------------------------------------------- classifier


class SeriesTypeClassifier:
    """Classifies new series on ingest (queue + worker thread) and re-classifies all as a job."""

    name = "series types"

    def __init__(self, context: SliceboxContext) -> None:
        # weak: the registry below maps the context to this object, which must not keep it alive
        self._context_ref = weakref.ref(context)
        self._index = context.index
        self._lock = threading.Lock()  # caches and counters
        self._classify_lock = threading.Lock()  # one series classified at a time
        self._idle = threading.Condition(self._lock)
        self._rules: list[Rule] | None = None
        self._done: set[int] = set()
        self._pending: set[int] = set()
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None
        self._job_id: int | None = None
        context.jobs.register(CLASSIFY_JOB, self._run_job)

    @property
    def _context(self) -> SliceboxContext:
        context = self._context_ref()
        if context is None:
            raise SliceboxError("the node of this series type classifier is gone")
        return context

    # ------------------------------------------------------------------ service

    def start(self) -> None:
        if self._thread is not None:
            return
        self.rules()  # loaded now, so the ingest-thread subscriber never queries the database
        self._thread = threading.Thread(target=self._work, name="slicebox-series-types", daemon=True)
        self._thread.start()
        self._unsubscribe = self._context.events.subscribe(ImageAdded, self._on_image_added)

    def stop(self, timeout: float) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ rules cache

    def rules(self) -> list[Rule]:
        with self._lock:
            if self._rules is not None:
                return self._rules
        loaded = all_rules(self._index)
        with self._lock:
            self._rules = loaded
        return loaded

    def rules_changed(self, reclassify: bool = True, owner: str = "") -> Job | None:
        """Reload the cached rules; with ``reclassify``, re-classify every series (one pending job at most)."""
        loaded = all_rules(self._index)  # swapped in at once: the ingest subscriber never sees "no rules"
        with self._lock:
            self._rules = loaded
            self._done.clear()
        return self.reclassify(owner) if reclassify else None

    # ------------------------------------------------------------------ ingest

    def _on_image_added(self, event: ImageAdded) -> None:
        """On the ingest thread: queue the series when it may need classifying; never blocks."""
        series_id = event.image.series_id
        with self._lock:
            if not self._rules:  # None (not loaded: not started) or no rule at all
                return
            if series_id in self._pending or (series_id in self._done and not event.overwrite):
                return
            self._pending.add(series_id)
        self._queue.put(series_id)

    def _work(self) -> None:
        while True:
            series_id = self._queue.get()
            if series_id is None:
                return
            try:
                self.classify_series(series_id)
            except Exception:
                log.warning("series %d could not be classified by series type", series_id, exc_info=True)
            finally:
                with self._idle:
                    self._pending.discard(series_id)
                    self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no series waits to be classified (tests, benchmarks)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    # ------------------------------------------------------------------ classifying

    def _first_image_dataset(self, series_id: int) -> Dataset | None:
        image_id = rows.first_image_id(self._index, series_id)
        if image_id is None:
            return None
        try:
            _, stream = self._context.open_image(image_id)
        except NotFound:
            return None
        with stream:
            return pydicom.dcmread(stream, stop_before_pixels=True, force=True)

    def classify_series(self, series_id: int) -> set[int]:
        """Classify one series now; the types its rules give it."""
        with self._classify_lock:
            rules = self.rules()
            type_ids: set[int] = set()
            if rules:
                try:
                    ds = self._first_image_dataset(series_id)
                except (OSError, InvalidDicomError, SliceboxError) as e:
                    log.warning("series %d: first image unreadable for series types: %s", series_id, e)
                    ds = None
                if ds is None:
                    return set()
                type_ids = matching_types(rules, ds)
            rows.write_classification(self._index, series_id, type_ids)
            with self._lock:
                if len(self._done) >= _MAX_REMEMBERED:
                    self._done.clear()
                self._done.add(series_id)
            return type_ids

    # ------------------------------------------------------------------ re-classification job

    def reclassify(self, owner: str = "") -> Job:
        """Queue the re-classification of every series (reusing a job still pending)."""
        with self._lock:
            job_id = self._job_id
        if job_id is not None:
            job = self._context.jobs.get(job_id)
            if job.state == JobState.PENDING:
                return job
            if job.state not in FINISHED_STATES:
                try:
                    self._context.jobs.cancel(job_id)  # superseded: it read the old rules
                except Conflict:
                    pass  # it finished meanwhile
        total = rows.series_count(self._index)
        job = self._context.jobs.submit(CLASSIFY_JOB, "re-classify every series by series type", {}, owner, total)
        with self._lock:
            self._job_id = job.id
        return job

    def status(self) -> dict[str, Any]:
        """``{"running": bool, "job": <the latest re-classification job> | None}``."""
        with self._lock:
            job_id = self._job_id
            pending = bool(self._pending)
        job = None if job_id is None else self._context.jobs.get(job_id)
        running = pending or (job is not None and not job.is_finished)
        return {"running": running, "job": job}

    def _run_job(self, job: JobContext) -> dict[str, Any]:
        total = rows.series_count(self._index)
        job.progress(0, total)
        if not self.rules():  # nothing can match: one statement clears every rule-assigned type
            cleared = rows.clear_rule_assignments(self._index)
            job.progress(total, total)
            return {"series": total, "cleared": cleared}
        done, last, typed = 0, 0, 0
        while True:
            batch = rows.series_ids_after(self._index, last, _BATCH)
            if not batch:
                break
            for series_id in batch:
                job.check_cancelled()
                if self.classify_series(int(series_id)):
                    typed += 1
                    job.count("typed")
                done += 1
                job.progress(done, max(total, done))
            last = int(batch[-1])
        return {"series": done, "typed": typed}


_CLASSIFIERS: weakref.WeakKeyDictionary[SliceboxContext, SeriesTypeClassifier] = weakref.WeakKeyDictionary()
_CLASSIFIERS_LOCK = threading.Lock()


def classifier(context: SliceboxContext) -> SeriesTypeClassifier:
    """The context's classifier (created, and its job kind registered, on first use)."""
    with _CLASSIFIERS_LOCK:
        found = _CLASSIFIERS.get(context)
        if found is None:
            found = _CLASSIFIERS[context] = SeriesTypeClassifier(context)
        return found


def series_type_service_factory(context: SliceboxContext) -> SeriesTypeClassifier:
    """The factory ``services.service_factories`` lists: classification of new series on ingest."""
    return classifier(context)


def _now() -> datetime:
    return datetime.now(UTC)


def status_json(status: Mapping[str, Any]) -> dict[str, Any]:
    job = status.get("job")
    return {"running": bool(status.get("running")), "job": None if job is None else to_json(job)}
