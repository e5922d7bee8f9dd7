"""Plain records shared by the index, the ingest path and the REST API.

Field names follow rule 7 of ARCHITECTURE.md: DICOM keywords for DICOM attributes,
snake_case for our own fields.  The ``*_ATTRIBUTES`` tuples are the indexed DICOM
attributes of each level; the tables of the index and the DICOM extraction are both
derived from them so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """The state of a job (``jobs/``), stored and shown as its name; the client and widgets read it too."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: the states of a job that is not running and never will be again
FINISHED_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class TransactionStatus(StrEnum):
    """The status of a box transaction (``box/``), outgoing or incoming (an incoming one is PROCESSING or
    FINISHED); the client and widgets read it too."""

    WAITING = "WAITING"
    PROCESSING = "PROCESSING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


#: the statuses of a transaction that moves no more images
TRANSACTION_ENDED: frozenset[TransactionStatus] = frozenset({TransactionStatus.FINISHED, TransactionStatus.FAILED})


PATIENT_ATTRIBUTES: tuple[str, ...] = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_ATTRIBUTES: tuple[str, ...] = (
    "StudyInstanceUID",
    "StudyDescription",
    "StudyDate",
    "StudyID",
    "AccessionNumber",
    "PatientAge",
)
SERIES_ATTRIBUTES: tuple[str, ...] = (
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesDate",
    "Modality",
    "ProtocolName",
    "BodyPartExamined",
    "Manufacturer",
    "StationName",
    "FrameOfReferenceUID",
)
IMAGE_ATTRIBUTES: tuple[str, ...] = ("SOPInstanceUID", "SOPClassUID", "ImageType", "InstanceNumber")

#: Source types, as in Slicebox (``directory`` is a watched folder; ``app`` the results of a registered app,
#: ``apps/``, named ``app:<name>``).
SOURCE_TYPES: tuple[str, ...] = ("user", "import", "scp", "directory", "box", "app", "unknown")


@dataclass(frozen=True)
class IndexedAttributes:
    """What the ingest path extracts from one DICOM file for the index.

    Every value is the first value of the element as a string ("" when absent),
    except ``ImageType``, whose values are joined with a backslash.
    """

    patient: Mapping[str, str]
    study: Mapping[str, str]
    series: Mapping[str, str]
    image: Mapping[str, str]
    transfer_syntax_uid: str
    number_of_frames: int = 1


@dataclass(frozen=True)
class Source:
    """Where images came from: a user, an import session, an SCP, a watched folder, a box."""

    source_type: str
    source_name: str
    source_id: int = -1


@dataclass(frozen=True)
class Patient:
    id: int
    PatientName: str
    PatientID: str
    PatientBirthDate: str
    PatientSex: str


@dataclass(frozen=True)
class Study:
    id: int
    patient_id: int
    StudyInstanceUID: str
    StudyDescription: str
    StudyDate: str
    StudyID: str
    AccessionNumber: str
    PatientAge: str


@dataclass(frozen=True)
class Series:
    id: int
    study_id: int
    SeriesInstanceUID: str
    SeriesDescription: str
    SeriesDate: str
    Modality: str
    ProtocolName: str
    BodyPartExamined: str
    Manufacturer: str
    StationName: str
    FrameOfReferenceUID: str
    source_id: int


@dataclass(frozen=True)
class Image:
    id: int
    series_id: int
    SOPInstanceUID: str
    SOPClassUID: str
    ImageType: str
    InstanceNumber: str
    TransferSyntaxUID: str
    NumberOfFrames: int
    size: int
    source_id: int
    created: str
    storage_key: str = dataclasses.field(repr=False, default="")


@dataclass(frozen=True)
class FlatSeries:
    """A series with its study and patient, as one row of a researcher's table."""

    id: int
    patient: Patient
    study: Study
    series: Series


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the image, and whether each level was new."""

    image: Image
    patient_added: bool
    study_added: bool
    series_added: bool
    image_added: bool
    #: storage key of the blob this ingest replaced (to delete after commit), if any
    replaced_storage_key: str | None = None


@dataclass(frozen=True)
class LogEntry:
    id: int
    created: str
    entry_type: str
    subject: str
    message: str


PRIVATE_FIELDS = frozenset({"storage_key"})


def to_json(record: Any) -> dict[str, Any]:
    """A record as the JSON object the REST API returns (internal fields left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in PRIVATE_FIELDS:
            continue
        value = getattr(record, f.name)
        out[f.name] = to_json(value) if dataclasses.is_dataclass(value) else value
    return out


def json_fields(record: type[Any]) -> list[str]:
    """The keys :func:`to_json` gives a ``record`` type, in order: the columns the client shows its rows in."""
    return [f.name for f in dataclasses.fields(record) if f.name not in PRIVATE_FIELDS]
