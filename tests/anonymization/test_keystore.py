"""Anonymization keys and re-identification on ingest, through the one way to anonymize (a real SQLite
index, and a real PostgreSQL one)."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator

import pydicom
import pytest
import sqlalchemy as sa
from generators import ct_bytes, ct_dataset, to_bytes
from pg import index_engine, pg_engine, postgresql_url  # noqa: F401
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from slicebox_lab.anonymization import Option, Profile, anonymize, keystore
from slicebox_lab.context import SliceboxContext
from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.errors import InvalidInput, NotFound
from slicebox_lab.index import Index
from slicebox_lab.model import Source
from slicebox_lab.storage import MemoryStorage

USER = Source("user", "alice")
BOX = Source("box", "university")
BASIC = Profile()


@pytest.fixture
def context(index_engine: sa.Engine) -> Iterator[SliceboxContext]:  # noqa: F811 - the imported fixture
    context = SliceboxContext(MemoryStorage(), Index(index_engine))
    try:
        yield context
    finally:
        context.close()  # its job heartbeat stops before the database does


def parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def real_ct(**kwargs: object) -> bytes:
    attributes: dict[str, object] = {
        "PatientName": "Real^Person",
        "PatientID": "MRN-0042",
        "PatientBirthDate": "19610203",
        "PatientSex": "F",
        "AccessionNumber": "ACC-77",
        "StudyDate": "20240115",
        "StudyDescription": "CT CHEST",
        "SeriesDescription": "AXIAL 1mm",
        **kwargs,
    }
    return ct_bytes(**attributes)


def test_each_anonymization_records_one_key_with_its_key_attributes(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    out = parse(context.anonymized_bytes(image.id, BASIC))
    created = keystore.list_keys(context.index)[0].created
    context.anonymized_bytes(image.id, BASIC)  # the same image again: the same key, not even rewritten
    keys = keystore.list_keys(context.index)
    assert keys[0].created == created
    assert len(keys) == 1
    key = keys[0]
    real = parse(context.image_bytes(image.id))
    assert (key.PatientName, key.PatientID, key.imageId) == ("Real^Person", "MRN-0042", image.id)
    assert (key.AnonPatientName, key.AnonPatientID) == (str(out.PatientName), out.PatientID)
    assert (key.StudyInstanceUID, key.AnonStudyInstanceUID) == (real.StudyInstanceUID, out.StudyInstanceUID)
    assert (key.SOPInstanceUID, key.AnonSOPInstanceUID) == (real.SOPInstanceUID, out.SOPInstanceUID)
    values = {v.tagPath: (v.level, v.value, v.anonymizedValue) for v in keystore.key_values(context.index, key.id)}
    assert values["PatientBirthDate"] == ("PATIENT", "19610203", "")
    assert values["AccessionNumber"] == ("STUDY", "ACC-77", "")
    assert values["SeriesDescription"][:2] == ("SERIES", "AXIAL 1mm")
    assert "PatientIdentityRemoved" not in values  # the real data had none


def test_a_different_profile_of_the_same_image_is_another_key(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    context.anonymized_bytes(image.id, BASIC)
    context.anonymized_bytes(image.id, Profile(frozenset({Option.RETAIN_UIDS})))
    keys = keystore.list_keys(context.index, order_by="id")
    assert [k.profile for k in keys] == ["", "RETAIN_UIDS"]
    assert keys[1].AnonSOPInstanceUID == keys[1].SOPInstanceUID


def test_anonymized_data_coming_back_is_re_identified(context: SliceboxContext):
    data = real_ct()
    image = context.ingest(data, USER).image
    anonymous = context.anonymized_bytes(image.id, BASIC)
    context.delete_images([image.id])  # the original is gone; the key stays

    back = context.ingest(anonymous, BOX).image
    stored = parse(context.image_bytes(back.id))
    real = parse(data)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert stored[keyword].value == real[keyword].value, keyword
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate", "StudyDescription"):
        assert stored[keyword].value == real[keyword].value, keyword  # restored, though the profile removed it
    assert "PatientIdentityRemoved" not in stored and "DeidentificationMethod" not in stored
    assert stored.file_meta.MediaStorageSOPInstanceUID == real.SOPInstanceUID
    patient = context.index.get_patient(context.index.get_flat_series(back.series_id).patient.id)
    assert (patient.PatientName, patient.PatientID) == ("Real^Person", "MRN-0042")


def test_a_derived_series_lands_in_the_real_study_with_its_references_mapped(context: SliceboxContext):
    data = real_ct()
    image = context.ingest(data, USER).image
    anonymous = parse(context.anonymized_bytes(image.id, BASIC))
    real = parse(data)
    # a researcher's segmentation made from the anonymous image: new series and instance, same study
    seg = ct_dataset(
        PatientName=str(anonymous.PatientName),
        PatientID=anonymous.PatientID,
        StudyInstanceUID=anonymous.StudyInstanceUID,
        SeriesInstanceUID="1.2.826.0.1.3680043.10.999.1",
        SOPInstanceUID="1.2.826.0.1.3680043.10.999.1.1",
        PatientIdentityRemoved="YES",
    )
    reference = Dataset()
    reference.SeriesInstanceUID = anonymous.SeriesInstanceUID
    instance = Dataset()
    instance.ReferencedSOPInstanceUID = anonymous.SOPInstanceUID
    reference.ReferencedInstanceSequence = Sequence([instance])
    seg.ReferencedSeriesSequence = Sequence([reference])
    back = context.ingest(to_bytes(seg), BOX).image
    stored = parse(context.image_bytes(back.id))
    assert stored.StudyInstanceUID == real.StudyInstanceUID
    assert (stored.PatientName, stored.PatientID) == (real.PatientName, real.PatientID)
    assert stored.SeriesInstanceUID == "1.2.826.0.1.3680043.10.999.1"  # its own, not the key's
    assert stored.SOPInstanceUID == "1.2.826.0.1.3680043.10.999.1.1"
    assert stored.AccessionNumber == "ACC-77"  # study level restored
    assert stored.get("SeriesDescription", "") != "AXIAL 1mm"  # series level not: it is another series
    ref = stored.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == real.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == real.SOPInstanceUID


def test_data_matching_no_key_and_identified_data_are_left_alone(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    anonymous = parse(context.anonymized_bytes(image.id, BASIC))
    # anonymous data from elsewhere: no key matches
    stranger = real_ct(PatientName="ANON^X", PatientID="ANON-X", PatientIdentityRemoved="YES")
    stored = context.ingest(stranger, BOX).image
    assert context.image_bytes(stored.id) == stranger
    # identified data that happens to carry the anonymous patient ID is never changed
    lookalike = real_ct(PatientName=str(anonymous.PatientName), PatientID=anonymous.PatientID)
    stored = context.ingest(lookalike, BOX).image
    assert context.image_bytes(stored.id) == lookalike


def test_the_file_is_parsed_again_only_when_a_key_matches_the_values_its_inspection_read(
    context: SliceboxContext, monkeypatch: pytest.MonkeyPatch
):
    restored: list[str] = []
    reidentified = SliceboxContext._reidentified

    def spy(self: SliceboxContext, parsed: object, source: Source) -> bytes | None:
        restored.append(source.source_name)
        return reidentified(self, parsed, source)  # type: ignore[arg-type]

    monkeypatch.setattr(SliceboxContext, "_reidentified", spy)
    image = context.ingest(real_ct(), USER).image
    anonymous = context.anonymized_bytes(image.id, BASIC)
    context.delete_images([image.id])
    stranger = real_ct(PatientName="ANON^X", PatientID="ANON-X", PatientIdentityRemoved="YES")
    stored = context.ingest(stranger, BOX).image
    assert restored == [] and context.image_bytes(stored.id) == stranger  # no key: the inspection's values said so
    back = context.ingest(anonymous, BOX).image
    assert restored == ["university"] and parse(context.image_bytes(back.id)).PatientID == "MRN-0042"


def test_re_identification_follows_the_configured_sources(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    anonymous = context.anonymized_bytes(image.id, BASIC)
    context.delete_images([image.id])
    context.reidentify_sources = frozenset({"box:hospital"})
    kept = context.ingest(anonymous, BOX).image  # box "university" is not configured
    assert context.image_bytes(kept.id) == anonymous
    context.delete_images([kept.id])
    back = context.ingest(anonymous, Source("box", "hospital")).image
    assert parse(context.image_bytes(back.id)).PatientID == "MRN-0042"


def test_in_place_anonymization_is_not_undone_by_its_own_ingest(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    result = context.anonymize_in_place(image.id, BASIC)
    stored = parse(context.image_bytes(result.image.id))
    assert stored.PatientIdentityRemoved == "YES" and stored.PatientID.startswith("ANON-")
    key = keystore.list_keys(context.index)[0]
    assert key.imageId == image.id  # the key outlives the original, so the data can come home
    with pytest.raises(NotFound):
        context.index.get_image(image.id)


def test_tag_values_override_the_profile_and_are_what_the_key_records(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    values = parse_tag_values([{"tagPath": "PatientName", "value": "anon 001"}])
    out = parse(context.anonymized_bytes(image.id, BASIC, values))
    assert out.PatientName == "anon 001"
    assert keystore.list_keys(context.index)[0].AnonPatientName == "anon 001"
    context.delete_images([image.id])
    back = context.ingest(to_bytes(out), BOX).image
    assert parse(context.image_bytes(back.id)).PatientName == "Real^Person"


def test_concurrent_anonymizations_of_one_series_give_one_pseudonym_and_one_key_each(context: SliceboxContext):
    ids = [
        context.ingest(
            real_ct(
                SOPInstanceUID=f"1.2.826.0.1.3680043.10.7.{n}",
                InstanceNumber=n,
                SeriesInstanceUID="1.2.826.0.1.3680043.10.7",
                StudyInstanceUID="1.2.826.0.1.3680043.10",
            ),
            USER,
        ).image.id
        for n in range(1, 21)
    ]
    outputs: list[str] = []

    def work(image_id: int) -> None:
        outputs.append(parse(context.anonymized_bytes(image_id, BASIC)).PatientID)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(outputs)) == 1 and len(outputs) == 40
    keys = keystore.list_keys(context.index, count=100)
    assert len(keys) == 20 and {k.AnonPatientID for k in keys} == set(outputs)


def test_listing_pages_orders_and_filters_by_prefix(context: SliceboxContext):
    for n, name in enumerate(["Alpha^A", "Beta^B", "alpine^C"]):
        image = context.ingest(real_ct(PatientName=name, PatientID=f"ID{n}"), USER).image
        context.anonymized_bytes(image.id, BASIC)
    assert [k.PatientName for k in keystore.list_keys(context.index, filter="al")] == ["Alpha^A", "alpine^C"]
    assert [k.PatientName for k in keystore.list_keys(context.index, filter="50%")] == []
    ordered = keystore.list_keys(context.index, order_by="PatientID", ascending=False)
    assert [k.PatientID for k in ordered] == ["ID2", "ID1", "ID0"]
    assert len(keystore.list_keys(context.index, start_index=1, count=1)) == 1
    with pytest.raises(InvalidInput, match="cannot order keys by"):
        keystore.list_keys(context.index, order_by="nope")
    with pytest.raises(NotFound):
        keystore.get_key(context.index, 999)


def test_csv_export_has_one_line_per_key_value_and_deleting_a_key_stops_re_identification(context: SliceboxContext):
    image = context.ingest(real_ct(), USER).image
    anonymous = context.anonymized_bytes(image.id, BASIC)
    rows = list(csv.reader(io.StringIO("".join(keystore.csv_lines(context.index, batch_size=1))), delimiter=";"))
    assert rows[0] == list(keystore.CSV_HEADER)
    key = keystore.list_keys(context.index)[0]
    assert len(rows) - 1 == len(keystore.key_values(context.index, key.id))
    assert {row[14] for row in rows[1:]} >= {"PatientBirthDate", "AccessionNumber"}
    assert all(row[4] == "Real^Person" for row in rows[1:])

    keystore.delete_key(context.index, key.id)
    keystore.delete_key(context.index, key.id)  # idempotent
    assert keystore.list_keys(context.index) == []
    context.delete_images([image.id])
    kept = context.ingest(anonymous, BOX).image
    assert context.image_bytes(kept.id) == anonymous


def test_key_attributes_are_configurable_and_validated():
    parsed = keystore.parse_key_attributes(["InstitutionName:study", "PatientAge"])
    assert parsed == (keystore.KeyAttribute("InstitutionName", "STUDY"), keystore.KeyAttribute("PatientAge", "IMAGE"))
    with pytest.raises(InvalidInput, match="not a DICOM keyword"):
        keystore.parse_key_attributes(["NoSuchThing:STUDY"])
    with pytest.raises(InvalidInput, match="level must be"):
        keystore.parse_key_attributes(["InstitutionName:WARD"])


def test_a_new_study_of_a_known_pseudonym_is_re_identified_at_patient_level_from_the_newest_key(
    context: SliceboxContext,
):
    older = context.ingest(real_ct(PatientBirthDate="19610203", seed=1), USER).image
    anonymous = parse(context.anonymized_bytes(older.id, BASIC))
    newer = context.ingest(real_ct(PatientBirthDate="19610204", StudyInstanceUID="1.2.3.4.2", seed=2), USER).image
    context.anonymized_bytes(newer.id, BASIC)  # same patient, same pseudonym: the newest key of the patient
    # a study the partner made of the pseudonymous patient: no UID of it is in any key
    new_study = ct_dataset(
        PatientName=str(anonymous.PatientName),
        PatientID=anonymous.PatientID,
        StudyInstanceUID="1.2.826.0.1.3680043.10.999.2",
        PatientIdentityRemoved="YES",
    )
    back = context.ingest(to_bytes(new_study), BOX).image
    stored = parse(context.image_bytes(back.id))
    assert (stored.PatientName, stored.PatientID) == ("Real^Person", "MRN-0042")
    assert stored.PatientBirthDate == "19610204"  # patient level, from the newer key
    assert stored.StudyInstanceUID == "1.2.826.0.1.3680043.10.999.2"
    assert stored.get("AccessionNumber", "") != "ACC-77"  # study level not restored: another study


def test_a_chunk_of_keys_is_stored_together_refreshing_known_ones(context: SliceboxContext):
    """``store_key_records`` (a bulk job's chunk: a few statements, one durable transaction) on both back-ends:
    new keys inserted with their attributes, a key already stored refreshed, a repeated identity stored once."""
    reals = [ct_dataset(PatientID="MRN-7", SOPInstanceUID=f"1.2.826.0.1.3680043.10.9.{n}") for n in range(4)]
    records = [keystore.key_record(real, anonymize(real, BASIC, context.pseudonym_keys), BASIC) for real in reals]
    keystore.store_key_records(context.index, [(records[0], 1)])  # one known before the chunk
    keystore.store_key_records(
        context.index, [(record, n + 10) for n, record in enumerate(records)] + [(records[3], 99)]
    )
    keys = keystore.list_keys(context.index, count=100, order_by="SOPInstanceUID")
    assert [k.SOPInstanceUID for k in keys] == [r.SOPInstanceUID for r in reals]
    assert [k.imageId for k in keys] == [10, 11, 12, 99]  # the known key refreshed, the repeated one stored once
    for key in keys:
        values = keystore.key_values(context.index, key.id)
        assert {v.tagPath for v in values} and all(v.keyId == key.id for v in values)
    assert len({(k.SOPInstanceUID, k.AnonSOPInstanceUID) for k in keys}) == 4
    keystore.store_key_records(context.index, [])  # nothing to store: no transaction


def test_the_key_a_recording_answers_is_the_key_stored_new_or_refreshed(context: SliceboxContext):
    real = parse(real_ct())
    anonymous = anonymize(real, BASIC, context.pseudonym_keys)
    first = keystore.record_key(context.index, real, anonymous, 7, BASIC)
    assert first == keystore.get_key(context.index, first.id)
    again = keystore.record_key(context.index, real, anonymous, 8, BASIC)  # refreshed in place: same id
    assert again.id == first.id and again.imageId == 8 and again == keystore.get_key(context.index, first.id)
    assert [v.tagPath for v in keystore.key_values(context.index, first.id)].count("PatientBirthDate") == 1


def test_the_same_anonymization_again_writes_nothing_and_answers_the_stored_key(context: SliceboxContext):
    """A repeated download: the check runs in the write transaction, which then writes no row (and on SQLite
    appends nothing to the WAL, so its commit waits for no disk)."""
    real = parse(real_ct())
    anonymous = anonymize(real, BASIC, context.pseudonym_keys)
    first = keystore.record_key(context.index, real, anonymous, 7, BASIC)
    written: list[str] = []

    def watch(conn, cursor, statement, parameters, execution_context, executemany):  # noqa: ANN001 - the event's
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            written.append(statement)

    sa.event.listen(context.index.engine, "before_cursor_execute", watch)
    try:
        again = keystore.record_key(context.index, real, anonymous, 7, BASIC)
    finally:
        sa.event.remove(context.index.engine, "before_cursor_execute", watch)
    assert written == [] and again == first == keystore.get_key(context.index, first.id)
