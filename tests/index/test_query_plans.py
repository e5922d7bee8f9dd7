"""The listings and lookups read index ranges, never a scan of a big table, on SQLite and PostgreSQL.

One database per backend is seeded with 5,000 patients → 10,000 studies → 20,000 series → 100,000
images (bulk inserts, then ``ANALYZE`` on PostgreSQL, as autovacuum would; SQLite is left without
statistics, as the node runs it).  Each case runs the real listing or query function, captures the
SQL and parameters it sent, and asks the database for the plan of exactly that statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg import postgresql_url  # noqa: F401
from sqlalchemy.engine import make_url

from slicebox_lab.index import Index, Query, QueryProperty, create_engine, query, sqlite_url, upgrade
from slicebox_lab.index.schema import images, patients, series, sources, studies

PATIENTS, STUDIES_PER_PATIENT, SERIES_PER_STUDY, IMAGES_PER_SERIES = 5000, 2, 2, 5
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sources.insert(), [{"id": 1, "source_type": "user", "source_name": "seed", "created": NOW}])
        conn.execute(
            patients.insert(),
            [{"id": p + 1, "PatientName": f"Name{p:05d}^Given", "PatientID": f"P{p:05d}"} for p in range(PATIENTS)],
        )
        n_studies = PATIENTS * STUDIES_PER_PATIENT
        conn.execute(
            studies.insert(),
            [{"id": s + 1, "patient_id": s // STUDIES_PER_PATIENT + 1, "StudyInstanceUID": f"1.2.3.{s}"}
             for s in range(n_studies)],
        )  # fmt: skip
        n_series = n_studies * SERIES_PER_STUDY
        conn.execute(
            series.insert(),
            [{"id": s + 1, "study_id": s // SERIES_PER_STUDY + 1, "SeriesInstanceUID": f"1.2.4.{s}", "source_id": 1}
             for s in range(n_series)],
        )  # fmt: skip
        conn.execute(
            images.insert(),
            [{"id": i + 1, "series_id": i // IMAGES_PER_SERIES + 1, "SOPInstanceUID": f"1.2.5.{i}", "size": 1,
              "storage_key": f"k{i}", "source_id": 1, "created": NOW, "updated": NOW}
             for i in range(n_series * IMAGES_PER_SERIES)],
        )  # fmt: skip
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """A migrated index with the seed rows: a SQLite file, or a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        engine = create_engine(sqlite_url(Path(tmp_path_factory.mktemp("plans")) / "index.sqlite"))
        upgrade(engine)
        _seed(engine)
        yield engine
        engine.dispose()
        return
    base = make_url(request.getfixturevalue("postgresql_url"))
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql('DROP DATABASE IF EXISTS "query_plans" WITH (FORCE)')
        conn.exec_driver_sql('CREATE DATABASE "query_plans"')
    engine = create_engine(base.set(database="query_plans").render_as_string(hide_password=False))
    try:
        upgrade(engine)
        _seed(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql('DROP DATABASE IF EXISTS "query_plans" WITH (FORCE)')
        admin.dispose()


def _plans(engine: sa.Engine, work: Callable[[sa.Connection], Any]) -> list[str]:
    """The plan of every SELECT that ``work`` sends, as one text each (SQLite's rows joined by newlines)."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            work(conn)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert sent, "the work sent no SELECT"
    plans = []
    with engine.connect() as conn:
        for statement, parameters in sent:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                plans.append("\n".join(str(row[-1]) for row in rows))
            else:
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
                plans.append("\n".join(str(row[0]) for row in rows))
    return plans


def _assert_indexed(engine: sa.Engine, plan: str, uses: list[str]) -> None:
    """No scan of a hierarchy table, and each of ``uses`` in the plan: an index name, "pk:<table>", or
    alternatives "a|b" (the planner may pick either unique or plain index that leads with the same key)."""
    for table in ("images", "series", "studies", "patients"):
        if engine.dialect.name == "sqlite":
            assert not any(line.strip().startswith(f"SCAN {table}") for line in plan.splitlines()), plan
        else:
            assert f"Seq Scan on {table}" not in plan, plan
    for name in uses:
        if name.startswith("pk:"):
            table = name[3:]
            expected = f"SEARCH {table} USING INTEGER PRIMARY KEY" if engine.dialect.name == "sqlite" else f"pk_{table}"
            assert expected in plan, plan
        else:
            assert any(alternative in plan for alternative in name.split("|")), plan


def _wildcard(name: str, value: str) -> Query:
    return Query(count=100, query_properties=[QueryProperty(name, "wildcard", value)])


def _equals(name: str, value: str) -> Query:
    return Query(count=100, query_properties=[QueryProperty(name, "=", value)])


CASES: dict[str, tuple[Callable[[sa.Connection], Any], list[str], int]] = {
    # the big listings, paged by keyset (afterid)
    "patients after id": (lambda c: query.list_patients(c, after_id=4000), ["pk:patients"], 20),
    "flat series after id": (
        lambda c: query.list_flat_series(c, after_id=15000),
        ["pk:series", "pk:studies", "pk:patients"],
        20,
    ),
    # children of one parent, also by keyset
    "studies of a patient": (lambda c: query.list_studies(c, 2500), ["ix_studies_patient_id_id"], 2),
    "series of a study": (lambda c: query.list_series(c, 5000), ["ix_series_study_id_id"], 2),
    "images of a series": (lambda c: query.list_images(c, 10000), ["ix_images_series_id_id"], 5),
    "images of a series after id": (
        lambda c: query.list_images(c, 10000, after_id=49997),
        ["ix_images_series_id_id"],
        3,
    ),
    # case-insensitive wildcards on names and IDs, at every level
    "patients by PatientName wildcard": (
        lambda c: query.query_patients(c, _wildcard("PatientName", "name0012*")),
        ["ix_patients_PatientName_lower"],
        10,
    ),
    "patients by PatientID wildcard": (
        lambda c: query.query_patients(c, _wildcard("PatientID", "p0012?")),
        ["ix_patients_PatientID_lower"],
        10,
    ),
    "studies by PatientName wildcard": (
        lambda c: query.query_studies(c, _wildcard("PatientName", "NAME0012*")),
        ["ix_patients_PatientName_lower", "ix_studies_patient_id_id|uq_studies_patient_id_StudyInstanceUID"],
        20,
    ),
    "images by PatientID wildcard": (
        lambda c: query.query_images(c, _wildcard("PatientID", "P00123")),
        ["ix_patients_PatientID_lower"],
        20,
    ),
    # lookups by UID (what QIDO-RS / WADO-RS ask)
    "study by StudyInstanceUID": (
        lambda c: query.query_studies(c, _equals("StudyInstanceUID", "1.2.3.777")),
        ["ix_studies_StudyInstanceUID"],
        1,
    ),
    "series by SeriesInstanceUID": (
        lambda c: query.query_series(c, _equals("SeriesInstanceUID", "1.2.4.777")),
        ["ix_series_SeriesInstanceUID"],
        1,
    ),
    "image by SOPInstanceUID": (
        lambda c: query.query_images(c, _equals("SOPInstanceUID", "1.2.5.777")),
        ["ix_images_SOPInstanceUID"],
        1,
    ),
    "series of a study by StudyInstanceUID": (
        lambda c: query.query_series(c, _equals("StudyInstanceUID", "1.2.3.777")),
        ["ix_studies_StudyInstanceUID"],
        2,
    ),
    "images of a series by SeriesInstanceUID": (
        lambda c: query.query_images(c, _equals("SeriesInstanceUID", "1.2.4.777")),
        ["ix_series_SeriesInstanceUID"],
        5,
    ),
    "images of a study by StudyInstanceUID": (
        lambda c: query.query_images(c, _equals("StudyInstanceUID", "1.2.3.777")),
        ["ix_studies_StudyInstanceUID"],
        10,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_listing_reads_an_index_range(seeded: sa.Engine, case: str) -> None:
    work, uses, expected = CASES[case]
    with seeded.connect() as conn:
        assert len(work(conn)) == expected
    (plan,) = _plans(seeded, work)
    _assert_indexed(seeded, plan, uses)


@pytest.mark.parametrize("level", ["patient", "study", "series"])
def test_images_below_a_parent_read_an_index_range(seeded: sa.Engine, level: str) -> None:
    index = Index(seeded)
    read = {"patient": lambda: index.images_of_patient(2500), "study": lambda: index.images_of_study(5000),
            "series": lambda: index.images_of_series(10000)}[level]  # fmt: skip
    assert len(read()) == {"patient": 20, "study": 10, "series": 5}[level]
    (plan,) = _plans(seeded, lambda conn: read())
    _assert_indexed(seeded, plan, ["ix_images_series_id_id|uq_images_series_id_SOPInstanceUID"])


def test_keyset_pages_walk_the_whole_listing_once(seeded: sa.Engine) -> None:
    """after_id = the last id of the previous page: every patient once, in order, like the offsets."""
    seen: list[int] = []
    with seeded.connect() as conn:
        after = 0
        while page := query.list_patients(conn, count=1000, after_id=after):
            seen.extend(p.id for p in page)
            after = page[-1].id
        by_offset = [p.id for p in query.list_patients(conn, start_index=1234, count=5)]
        by_key = [p.id for p in query.list_patients(conn, count=5, after_id=1234)]
        descending = [p.id for p in query.list_patients(conn, count=3, order_ascending=False, after_id=100)]
    assert seen == list(range(1, PATIENTS + 1))
    assert by_key == by_offset == [1235, 1236, 1237, 1238, 1239]
    assert descending == [99, 98, 97]


def test_case_insensitive_prefix_range_is_exact(seeded: sa.Engine) -> None:
    """The range added for a prefix changes no answer: upper, lower and mixed case, ``?``, no prefix."""
    with seeded.connect() as conn:
        for value, expected in (("NAME0012*", 10), ("name0012*", 10), ("nAmE00123^given", 1), ("Name0012?^*", 10),
                                ("*00123^GIVEN", 1), ("name0499?*", 10), ("name5*", 0), ("Name04999*", 1)):  # fmt: skip
            found = query.query_patients(conn, _wildcard("PatientName", value))
            assert len(found) == expected, value


def test_after_id_needs_id_order(seeded: sa.Engine) -> None:
    from slicebox_lab import errors

    with seeded.connect() as conn, pytest.raises(errors.InvalidInput, match="afterid"):
        query.list_patients(conn, order_by="PatientName", after_id=3)
