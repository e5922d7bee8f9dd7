"""Lists and queries: paging, ordering, filters, operators, cross-level properties, sources, bad input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from listing import list_patients, list_series, list_studies
from pg import pg_engine, postgresql_url  # noqa: F401

from slicebox_lab import errors
from slicebox_lab.index import MAX_COUNT, Index, Query, QueryProperty
from slicebox_lab.model import IndexedAttributes, Source

AttributesFactory = Callable[..., IndexedAttributes]
SCP, USER, BOX = Source("scp", "PACS"), Source("user", "alice"), Source("box", "partner")

INJECTIONS = ["x' OR '1'='1", "'; DROP TABLE patients; --", '" OR ""="', "%", "_", "\\", "*/", "1) OR (1=1"]

# patient: (PatientName, PatientID, PatientBirthDate, PatientSex,
#           [(StudyInstanceUID, StudyDescription, StudyDate,
#             [(SeriesInstanceUID, Modality, SeriesDescription, source, [SOP suffixes])])])
DATA: list[tuple[str, str, str, str, list[tuple[str, str, str, list[tuple[str, str, str, Source, list[str]]]]]]] = [
    ("Doe^John", "PID1", "19700101", "M", [
        ("1", "Head CT", "20200101", [("1.1", "CT", "Axial", SCP, ["1", "2", "3"]),
                                      ("1.2", "MR", "T1", USER, ["1"])]),
    ]),
    ("Smith^Jane", "PID2", "19800202", "F", [
        ("2", "Chest", "20210101", [("2.1", "CT", "Lung", BOX, ["1"]), ("2.2", "CT", "Soft", BOX, ["1"])]),
    ]),
    ("O'Brien^Pat", "PID_3", "", "O", [("3", "100% done", "20190101", [("3.1", "US", "Echo", USER, ["1"])])]),
    ("Doe^Jim", "PID4", "19900101", "M", [("4", "Knee", "20220101", [("4.1", "MR", "PD", SCP, ["1"])])]),
    ("Müller^Zoë", "PID5", "20000101", "F", [("5", "Spine", "20230101", [("5.1", "CT", "Sag", SCP, ["1"])])]),
]  # fmt: skip


@dataclass
class World:
    index: Index
    patient: dict[str, int]  # PatientID → id
    study: dict[str, int]  # StudyInstanceUID → id
    series: dict[str, int]  # SeriesInstanceUID → id
    image: dict[str, int]  # SOPInstanceUID → id
    source: dict[str, int]  # source_type → id


@pytest.fixture
def world(index: Index, attributes: AttributesFactory) -> World:
    w = World(index, {}, {}, {}, {}, {})
    for name, pid, birth, sex, studies in DATA:
        for study_uid, description, date, series in studies:
            for series_uid, modality, series_description, source, sops in series:
                for sop in sops:
                    sop_uid = f"{series_uid}.{sop}"
                    result = index.ingest(
                        attributes(PatientName=name, PatientID=pid, PatientBirthDate=birth, PatientSex=sex,
                                   StudyInstanceUID=study_uid, StudyDescription=description, StudyDate=date,
                                   SeriesInstanceUID=series_uid, Modality=modality,
                                   SeriesDescription=series_description, SOPInstanceUID=sop_uid,
                                   InstanceNumber=sop),
                        source, f"key-{sop_uid}", 100,
                    )  # fmt: skip
                    w.image[sop_uid] = result.image.id
                    w.series[series_uid] = result.image.series_id
                    flat = index.get_flat_series(result.image.series_id)
                    w.study[study_uid] = flat.study.id
                    w.patient[pid] = flat.patient.id
                    w.source[source.source_type] = flat.series.source_id
    return w


def pids(records: list[Any]) -> list[str]:
    return [r.PatientID for r in records]


def uids(records: list[Any], name: str) -> list[str]:
    return [getattr(r, name) for r in records]


def q(*properties: tuple[str, str, str], **options: Any) -> Query:
    return Query(query_properties=[QueryProperty(*p) for p in properties], **options)


# ---------------------------------------------------------------------------------------------
# lists


def test_list_patients_paging_and_order(world: World) -> None:
    index = world.index
    assert pids(list_patients(index)) == ["PID1", "PID2", "PID_3", "PID4", "PID5"]  # by id
    assert pids(list_patients(index, start_index=1, count=2)) == ["PID2", "PID_3"]
    assert list_patients(index, count=0) == []
    assert list_patients(index, start_index=5) == []
    assert pids(list_patients(index, order_by="PatientBirthDate")) == ["PID_3", "PID1", "PID2", "PID4", "PID5"]
    assert pids(list_patients(index, order_by="PatientBirthDate", order_ascending=False, count=2)) == [
        "PID5",
        "PID4",
    ]
    # ties (sex M twice, F twice) are broken by id, so pages never overlap
    by_sex = [pids(list_patients(index, order_by="PatientSex", start_index=i, count=1)) for i in range(5)]
    assert by_sex == [["PID2"], ["PID5"], ["PID1"], ["PID4"], ["PID_3"]]
    assert pids(list_patients(index, order_by="id", order_ascending=False)) == ["PID5", "PID4", "PID_3", "PID2", "PID1"]


def test_list_patients_filter_and_sources(world: World) -> None:
    index = world.index
    assert pids(list_patients(index, filter="doe")) == ["PID1", "PID4"]
    assert pids(list_patients(index, filter="DOE^J")) == ["PID1", "PID4"]
    assert pids(list_patients(index, filter="pid_")) == ["PID_3"]  # "_" is literal
    assert pids(list_patients(index, filter="19700101")) == ["PID1"]
    assert pids(list_patients(index, filter="f")) == ["PID2", "PID5"]  # PatientSex
    assert pids(list_patients(index, filter="zoë")) == ["PID5"]
    assert pids(list_patients(index, sources=[world.source["box"]])) == ["PID2"]
    assert pids(list_patients(index, sources=[world.source["user"]])) == ["PID1", "PID_3"]
    assert pids(list_patients(index, sources=[world.source["scp"], world.source["box"]])) == [
        "PID1", "PID2", "PID4", "PID5",
    ]  # fmt: skip
    assert list_patients(index, sources=[424242]) == []
    assert list_patients(index, sources=[2**40]) == []
    assert pids(list_patients(index, filter="doe", sources=[world.source["user"]])) == ["PID1"]


def test_list_studies_and_series(world: World) -> None:
    index = world.index
    assert uids(list_studies(index, world.patient["PID1"]), "StudyInstanceUID") == ["1"]
    assert list_studies(index, world.patient["PID1"], sources=[world.source["box"]]) == []
    assert list_studies(index, 987654) == []
    assert uids(list_series(index, world.study["1"]), "SeriesInstanceUID") == ["1.1", "1.2"]
    assert uids(list_series(index, world.study["1"], order_by="Modality", order_ascending=False), "Modality") == [
        "MR", "CT",
    ]  # fmt: skip
    assert uids(list_series(index, world.study["1"], sources=[world.source["user"]]), "SeriesInstanceUID") == ["1.2"]
    assert uids(list_series(index, world.study["2"], start_index=1, count=5), "SeriesInstanceUID") == ["2.2"]
    assert uids(list_studies(index, world.patient["PID2"], order_by="StudyDate"), "StudyInstanceUID") == ["2"]


def test_list_images(world: World) -> None:
    index, series = world.index, world.series["1.1"]
    assert uids(index.list_images(series), "SOPInstanceUID") == ["1.1.1", "1.1.2", "1.1.3"]
    assert uids(index.list_images(series, order_by="InstanceNumber", order_ascending=False), "InstanceNumber") == [
        "3", "2", "1",
    ]  # fmt: skip
    assert uids(index.list_images(series, filter="1.1.2"), "SOPInstanceUID") == ["1.1.2"]
    assert uids(index.list_images(series, filter="primary"), "SOPInstanceUID") == ["1.1.1", "1.1.2", "1.1.3"]
    assert uids(index.list_images(series, start_index=2, count=10), "SOPInstanceUID") == ["1.1.3"]
    assert index.list_images(series, filter="%") == []
    assert len(index.list_images(series, order_by="created")) == 3
    assert len(index.list_images(series, order_by="size")) == 3


def test_list_flat_series(world: World) -> None:
    index = world.index
    flat = index.list_flat_series(count=100)
    assert [f.series.SeriesInstanceUID for f in flat] == ["1.1", "1.2", "2.1", "2.2", "3.1", "4.1", "5.1"]
    assert all(f.id == f.series.id and f.study.id == f.series.study_id and f.patient.id == f.study.patient_id
               for f in flat)  # fmt: skip
    assert [f.id for f in index.list_flat_series(order_by="id", order_ascending=False, count=2)] == [
        world.series["5.1"], world.series["4.1"],
    ]  # fmt: skip
    by_date = index.list_flat_series(order_by="StudyDate", order_ascending=False)
    assert [f.study.StudyDate for f in by_date][:3] == ["20230101", "20220101", "20210101"]
    by_name = index.list_flat_series(order_by="PatientBirthDate")
    assert [f.series.SeriesInstanceUID for f in by_name] == ["3.1", "1.1", "1.2", "2.1", "2.2", "4.1", "5.1"]
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(filter="knee")] == ["4.1"]
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(filter="mr")] == ["1.2", "4.1"]
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(filter="100%")] == ["3.1"]
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(filter="%")] == ["3.1"]  # a literal %
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(sources=[world.source["box"]])] == [
        "2.1", "2.2",
    ]  # fmt: skip
    assert [f.series.SeriesInstanceUID for f in index.list_flat_series(start_index=5, count=1)] == ["4.1"]


# ---------------------------------------------------------------------------------------------
# queries


def test_query_operators(world: World) -> None:
    index = world.index
    assert pids(index.query_patients(q(("PatientName", "=", "Doe^John")))) == ["PID1"]
    assert index.query_patients(q(("PatientName", "=", "doe^john"))) == []  # "=" is exact
    assert pids(index.query_patients(q(("PatientName", "like", "OE^J")))) == ["PID1", "PID4"]
    assert pids(index.query_patients(q(("PatientID", "like", "_")))) == ["PID_3"]
    assert pids(index.query_patients(q(("PatientName", "like", "")))) == ["PID1", "PID2", "PID_3", "PID4", "PID5"]
    assert pids(index.query_patients(q(("PatientName", "wildcard", "doe*")))) == ["PID1", "PID4"]
    assert pids(index.query_patients(q(("PatientName", "wildcard", "?oe^J*")))) == ["PID1", "PID4"]
    assert pids(index.query_patients(q(("PatientName", "wildcard", "doe^j?hn")))) == ["PID1"]
    assert index.query_patients(q(("PatientName", "wildcard", "doe"))) == []  # whole value, not substring
    assert index.query_patients(q(("PatientName", "wildcard", "D_e*"))) == []  # "_" is literal
    assert pids(index.query_patients(q(("PatientID", "wildcard", "*5*")))) == ["PID5"]
    assert pids(index.query_patients(q(("PatientID", "wildcard", "PID_3")))) == ["PID_3"]
    assert len(index.query_patients(q(("PatientName", "wildcard", "*")))) == 5
    assert len(index.query_patients(q(("PatientName", "wildcard", "")))) == 5  # universal matching
    assert pids(index.query_patients(q(("PatientBirthDate", "=", "")))) == ["PID_3"]
    assert pids(index.query_patients(q(("PatientSex", "=", "M"), ("PatientName", "like", "jim")))) == ["PID4"]
    assert pids(index.query_patients(q(("id", "=", str(world.patient["PID2"]))))) == ["PID2"]
    assert index.query_patients(q(("id", "=", "99999999999999999999"))) == []
    assert pids(index.query_patients(q(("id", "like", str(world.patient["PID2"]))))) != []


def test_query_across_levels(world: World) -> None:
    index = world.index
    # a patient with two CT series is returned once
    assert pids(index.query_patients(q(("Modality", "=", "CT")))) == ["PID1", "PID2", "PID5"]
    assert pids(index.query_patients(q(("Modality", "=", "MR")))) == ["PID1", "PID4"]
    assert pids(index.query_patients(q(("StudyDescription", "like", "head"), ("Modality", "=", "MR")))) == ["PID1"]
    # lower-level properties hold for one and the same series
    assert index.query_patients(q(("Modality", "=", "MR"), ("SeriesDescription", "=", "Axial"))) == []
    assert uids(index.query_studies(q(("PatientName", "wildcard", "doe*"))), "StudyInstanceUID") == ["1", "4"]
    assert uids(index.query_studies(q(("Modality", "=", "CT"))), "StudyInstanceUID") == ["1", "2", "5"]
    assert uids(index.query_studies(q(("patient_id", "=", str(world.patient["PID4"])))), "StudyInstanceUID") == ["4"]
    series = index.query_series(q(("PatientSex", "=", "F"), ("Modality", "=", "CT"), order_by="PatientBirthDate",
                                  order_ascending=False))  # fmt: skip
    assert uids(series, "SeriesInstanceUID") == ["5.1", "2.1", "2.2"]
    images = index.query_images(q(("PatientName", "=", "Doe^John"), ("InstanceNumber", "=", "2")))
    assert uids(images, "SOPInstanceUID") == ["1.1.2"]
    images = index.query_images(q(("SOPInstanceUID", "like", "1.1."), order_by="InstanceNumber",
                                  order_ascending=False))  # fmt: skip
    assert uids(images, "SOPInstanceUID") == ["1.1.3", "1.1.2", "1.1.1"]
    images = index.query_images(q(("StudyDate", "wildcard", "2021*"), order_by="SeriesInstanceUID"))
    assert uids(images, "SOPInstanceUID") == ["2.1.1", "2.2.1"]
    flat = index.query_flat_series(q(("Modality", "=", "CT"), order_by="PatientBirthDate", order_ascending=False))
    assert [f.series.SeriesInstanceUID for f in flat] == ["5.1", "2.1", "2.2", "1.1"]
    flat = index.query_flat_series(q(("PatientName", "wildcard", "*^j*"), ("StudyDescription", "like", "knee")))
    assert [f.series.SeriesInstanceUID for f in flat] == ["4.1"]


def test_query_sources_and_paging(world: World) -> None:
    index, src = world.index, world.source
    assert pids(index.query_patients(Query(sources=[src["box"]]))) == ["PID2"]
    assert pids(index.query_patients(q(("Modality", "=", "MR"), sources=[src["user"]]))) == ["PID1"]
    assert uids(index.query_studies(Query(sources=[src["user"]])), "StudyInstanceUID") == ["1", "3"]
    assert uids(index.query_series(Query(sources=[src["user"], src["box"]])), "SeriesInstanceUID") == [
        "1.2", "2.1", "2.2", "3.1",
    ]  # fmt: skip
    assert uids(index.query_images(Query(sources=[src["user"]])), "SOPInstanceUID") == ["1.2.1", "3.1.1"]
    assert [f.id for f in index.query_flat_series(Query(sources=[src["box"]]))] == [
        world.series["2.1"], world.series["2.2"],
    ]  # fmt: skip
    assert (
        index.query_series(Query(sources=[src["user"]], query_properties=[QueryProperty("Modality", "=", "CT")])) == []
    )
    paged = index.query_patients(Query(start_index=1, count=1, order_by="PatientBirthDate", order_ascending=False))
    assert pids(paged) == ["PID4"]
    assert pids(index.query_patients(Query(start_index=3, count=10))) == ["PID4", "PID5"]
    assert index.query_patients(Query(count=0)) == []
    assert len(index.query_images(Query(count=10**9))) == 9  # capped at MAX_COUNT, not refused
    assert MAX_COUNT == 10_000


# ---------------------------------------------------------------------------------------------
# hostile and invalid input


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_match_nothing(world: World, value: str) -> None:
    index = world.index
    before = index.counts()
    # "_", "%" and "\\" are literal: they find only the values that contain them (PID_3, "100% done")
    assert pids(list_patients(index, filter=value)) == (["PID_3"] if value == "_" else [])
    images = index.list_images(world.series["1.1"], filter=value)
    assert len(images) == (3 if value == "\\" else 0)  # ImageType ORIGINAL\\PRIMARY
    flat = [f.series.SeriesInstanceUID for f in index.list_flat_series(filter=value)]
    assert flat == (["3.1"] if value in ("_", "%") else [])
    for operator in ("=", "like", "wildcard"):
        for name in ("PatientName", "Modality", "SOPInstanceUID"):
            assert index.query_images(q((name, operator, value))) == []
        assert index.query_patients(q(("PatientName", operator, value))) == []
    with pytest.raises(errors.InvalidInput, match="does not exist"):
        list_patients(index, order_by=value)
    with pytest.raises(errors.InvalidInput, match="does not exist"):
        index.query_patients(q((value, "=", "x")))
    assert index.list_log(subject=value) == []
    assert index.counts() == before
    assert len(list_patients(index)) == 5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i: list_patients(i, order_by="Nope"), "Property Nope does not exist"),
        (lambda i: list_patients(i, order_by="Modality"), "Property Modality does not exist"),
        (lambda i: list_studies(i, 1, order_by="PatientName"), "Property PatientName does not exist"),
        (lambda i: i.list_images(1, order_by="storage_key"), "Property storage_key does not exist"),
        (lambda i: i.list_flat_series(order_by="SOPInstanceUID"), "Property SOPInstanceUID does not exist"),
        (lambda i: i.query_patients(Query(order_by="Modality")), "Property Modality does not exist"),
        (lambda i: i.query_patients(q(("SOPInstanceUID", "=", "1"))), "Property SOPInstanceUID does not exist"),
        (lambda i: i.query_images(q(("storage_key", "=", "k"))), "Property storage_key does not exist"),
        (lambda i: i.query_series(q(("patientName", "=", "x"))), "Property patientName does not exist"),
        (lambda i: i.query_patients(q(("PatientName", "~", "x"))), "Unknown operator"),
        (lambda i: i.query_patients(q(("PatientName", "LIKE", "x"))), "Unknown operator"),
        (lambda i: i.query_patients(q(("id", "=", "abc"))), "integer"),
        (lambda i: i.query_images(q(("created", "like", "2024"))), "not supported"),
        (lambda i: i.query_images(q(("created", "=", "yesterday"))), "ISO-8601"),
        (lambda i: list_patients(i, start_index=-1), "startindex must be non-negative"),
        (lambda i: list_patients(i, count=-1), "count must be non-negative"),
        (lambda i: i.list_flat_series(count=-1), "count must be non-negative"),
        (lambda i: i.list_images(1, start_index=-3), "startindex must be non-negative"),
        (lambda i: i.query_studies(Query(start_index=-1)), "startindex must be non-negative"),
        (lambda i: i.query_flat_series(Query(count=-1)), "count must be non-negative"),
        (lambda i: i.query_patients(Query(sources=["1"])), "sources"),  # type: ignore[list-item]
        (lambda i: list_patients(i, order_ascending="false"), "orderascending"),
        (lambda i: list_patients(i, filter="a\x00b"), "NUL"),
        (lambda i: i.query_patients(q(("PatientName", "=", "a\x00"))), "NUL"),
    ],
)
def test_invalid_input(world: World, call: Callable[[Index], Any], message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        call(world.index)


def test_case_folding_beyond_ascii(world: World) -> None:
    """PostgreSQL folds case by the server's LC_CTYPE; SQLite (and a C locale) folds ASCII letters only."""
    index = world.index
    folds_unicode = False
    if index.engine.dialect.name == "postgresql":
        with index.engine.connect() as conn:
            folds_unicode = conn.exec_driver_sql("SHOW lc_ctype").scalar() not in ("C", "POSIX")
    # ASCII letters fold everywhere; non-ASCII letters written as stored always match
    assert pids(list_patients(index, filter="MüLLER^ZOë")) == ["PID5"]
    assert pids(index.query_patients(q(("PatientName", "wildcard", "Mü*")))) == ["PID5"]
    expected = ["PID5"] if folds_unicode else []
    assert pids(list_patients(index, filter="MÜLLER^ZOË")) == expected
    assert pids(index.query_patients(q(("PatientName", "wildcard", "MÜ*")))) == expected


def test_created_can_be_queried_exactly(world: World) -> None:
    image = world.index.get_image(world.image["1.1.1"])
    found = world.index.query_images(q(("created", "=", image.created)))
    assert image.id in [i.id for i in found]
