"""Fixtures of the index tests: an ``index`` on a SQLite file and on PostgreSQL, and attribute factories.

The PostgreSQL fixtures come from ``tests/pg.py``; each test module imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from slicebox_lab.index import Index, create_engine
from slicebox_lab.model import IndexedAttributes

AttributesFactory = Callable[..., IndexedAttributes]


@pytest.fixture
def engine(index_engine: sa.Engine) -> sa.Engine:
    """A migrated, empty index database: a SQLite file, then a fresh PostgreSQL database (``tests/pg.py``)."""
    return index_engine


@pytest.fixture
def index(engine: sa.Engine) -> Index:
    return Index(engine)


@pytest.fixture
def second_index(engine: sa.Engine) -> Iterator[Index]:
    """Another Index with its own engine on the same database, as a second process would have."""
    other = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        yield Index(other)
    finally:
        other.dispose()


def make_attributes(
    *,
    PatientName: str = "Doe^John",
    PatientID: str = "PID1",
    StudyInstanceUID: str = "1.2.1",
    SeriesInstanceUID: str = "1.2.1.1",
    SOPInstanceUID: str = "1.2.1.1.1",
    transfer_syntax_uid: str = "1.2.840.10008.1.2.1",
    number_of_frames: int = 1,
    **values: Any,
) -> IndexedAttributes:
    """Indexed attributes with the given keys; other keyword arguments go to their level."""
    from slicebox_lab.model import IMAGE_ATTRIBUTES, PATIENT_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES

    patient = {"PatientName": PatientName, "PatientID": PatientID, "PatientBirthDate": "19700101",
               "PatientSex": "O"}  # fmt: skip
    study = {"StudyInstanceUID": StudyInstanceUID, "StudyDescription": "Study", "StudyDate": "20240102"}
    series = {"SeriesInstanceUID": SeriesInstanceUID, "Modality": "CT", "SeriesDescription": "Series"}
    image = {"SOPInstanceUID": SOPInstanceUID, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
             "ImageType": "ORIGINAL\\PRIMARY", "InstanceNumber": "1"}  # fmt: skip
    for name, value in values.items():
        for names, level in ((PATIENT_ATTRIBUTES, patient), (STUDY_ATTRIBUTES, study),
                             (SERIES_ATTRIBUTES, series), (IMAGE_ATTRIBUTES, image)):  # fmt: skip
            if name in names:
                level[name] = value
                break
        else:
            raise TypeError(f"{name} is not an indexed attribute")
    return IndexedAttributes(
        patient=patient,
        study=study,
        series=series,
        image=image,
        transfer_syntax_uid=transfer_syntax_uid,
        number_of_frames=number_of_frames,
    )


@pytest.fixture
def attributes() -> AttributesFactory:
    """``make_attributes`` as a fixture (test modules cannot import conftest)."""
    return make_attributes
