"""DICOM test data made with pydicom: small, valid Part-10 files with chosen identities."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

_IMPL_UID = "1.2.826.0.1.3680043.10.1289.1"


def ct_dataset(
    *,
    PatientName: str = "Doe^John",
    PatientID: str = "PID-1",
    StudyInstanceUID: str | None = None,
    SeriesInstanceUID: str | None = None,
    SOPInstanceUID: str | None = None,
    rows: int = 16,
    columns: int = 16,
    InstanceNumber: int = 1,
    Modality: str = "CT",
    seed: int = 0,
    **attributes: object,
) -> Dataset:
    """A CT image (16-bit signed, rescale slope/intercept, a default window) with file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOPInstanceUID or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = _IMPL_UID
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = PatientName
    ds.PatientID = PatientID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = StudyInstanceUID or generate_uid()
    ds.SeriesInstanceUID = SeriesInstanceUID or generate_uid()
    ds.StudyDate = "20240102"
    ds.StudyDescription = "Test study"
    ds.SeriesDescription = "Test series"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.Modality = Modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = InstanceNumber
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = generate_uid()
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 2000, size=(rows, columns), dtype=np.int16)
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ct_bytes(**kwargs: object) -> bytes:
    """A CT image as Part-10 bytes; keyword arguments as for :func:`ct_dataset`."""
    return to_bytes(ct_dataset(**kwargs))  # type: ignore[arg-type]


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def rt_structure_set(ct: Dataset) -> Dataset:
    """An RT Structure Set whose nested references point at ``ct`` (image, series, study, frame of reference)."""
    rs = ct_dataset(PatientName=str(ct.PatientName), PatientID=ct.PatientID, StudyInstanceUID=ct.StudyInstanceUID)
    for keyword in (
        "Rows",
        "Columns",
        "PixelData",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "RescaleIntercept",
        "RescaleSlope",
        "WindowCenter",
        "WindowWidth",
        "ImageType",
        "FrameOfReferenceUID",
    ):
        delattr(rs, keyword)
    rs.SOPClassUID = rs.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    rs.Modality = "RTSTRUCT"
    image = _item(ReferencedSOPClassUID=ct.SOPClassUID, ReferencedSOPInstanceUID=ct.SOPInstanceUID)
    series = _item(SeriesInstanceUID=ct.SeriesInstanceUID, ContourImageSequence=Sequence([image]))
    study = _item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
        ReferencedSOPInstanceUID=ct.StudyInstanceUID,
        RTReferencedSeriesSequence=Sequence([series]),
    )
    rs.ReferencedFrameOfReferenceSequence = Sequence(
        [_item(FrameOfReferenceUID=ct.FrameOfReferenceUID, RTReferencedStudySequence=Sequence([study]))]
    )
    rs.StructureSetROISequence = Sequence(
        [_item(ROINumber=1, ReferencedFrameOfReferenceUID=ct.FrameOfReferenceUID, ROIName="GTV")]
    )
    contour_image = _item(ReferencedSOPClassUID=ct.SOPClassUID, ReferencedSOPInstanceUID=ct.SOPInstanceUID)
    contour = _item(
        ContourImageSequence=Sequence([contour_image]),
        ContourGeometricType="POINT",
        NumberOfContourPoints=1,
        ContourData=[0.0, 0.0, 0.0],
    )
    rs.ROIContourSequence = Sequence([_item(ReferencedROINumber=1, ContourSequence=Sequence([contour]))])
    return rs


def ultrasound_with_burned_name(
    *,
    PatientName: str = "Lindqvist^Maja",
    PatientID: str = "US-PID-1",
    rows: int = 120,
    columns: int = 320,
    **attributes: object,
) -> Dataset:
    """An 8-bit ultrasound image WITHOUT BurnedInAnnotation whose top rows show the patient's name and ID
    in white pixels, as an ultrasound scanner burns them in; the text lies in rows 0..31."""
    from PIL import Image, ImageDraw

    ds = ct_dataset(PatientName=PatientName, PatientID=PatientID, rows=rows, columns=columns, Modality="US")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "FrameOfReferenceUID"):
        delattr(ds, keyword)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(7)
    canvas = Image.fromarray(rng.integers(0, 60, size=(rows, columns), dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), PatientName.replace("^", " "), fill=255, font_size=12)
    draw.text((4, 16), PatientID, fill=255, font_size=12)
    ds.PixelData = np.asarray(canvas, dtype=np.uint8).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds
