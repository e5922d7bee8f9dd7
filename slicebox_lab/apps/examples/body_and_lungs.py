"""Example app: the body and the lungs of a CT series by thresholds, as a DICOM Segmentation (highdicom).

Body: voxels above ``body_hu`` (default -500 HU), holes filled slice by slice (so the air in the lungs
is inside the body).  Lungs: voxels below ``lung_hu`` (default -400 HU) inside the body.  Not a clinical
tool: it shows how an app gets a series, makes a standard result and hands it back.  Needs highdicom
and scipy (``pip install "slicebox_lab[apps]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..inputs import AppInputs, AppResult

__all__ = ["segment", "masks"]


def masks(hu: np.ndarray, body_hu: float = -500.0, lung_hu: float = -400.0) -> tuple[np.ndarray, np.ndarray]:
    """(body, lungs) boolean masks of a (slices, rows, columns) volume in Hounsfield units."""
    from scipy import ndimage

    outside = hu <= body_hu
    body = np.zeros(hu.shape, dtype=bool)
    for z in range(hu.shape[0]):
        # the largest part above the threshold is the body (a table or a cable is not), its holes filled
        labels, count = ndimage.label(~outside[z])
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            body[z] = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    lungs = body & (hu < lung_hu)
    return body, lungs


def segment(inputs: AppInputs, body_hu: float = -500.0, lung_hu: float = -400.0) -> AppResult:
    """The app: one Segmentation with two segments (body, lungs) of the series, in the series' study."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    images = inputs.datasets()
    for ds in images:  # type 2 attributes a Segmentation copies from its source: empty when the CT lacks them
        for keyword in ("StudyTime", "StudyDate", "ReferringPhysicianName", "AccessionNumber", "StudyID",
                        "PatientBirthDate", "PatientSex"):  # fmt: skip
            if keyword not in ds:
                setattr(ds, keyword, "")
    normal = np.cross(*np.array(images[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    images.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
    hu = np.stack(
        [ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0)) for ds in images]
    )
    body, lungs = masks(hu, body_hu, lung_hu)
    inputs.log.info("%d slices: body %d voxels, lungs %d voxels", len(images), int(body.sum()), int(lungs.sum()))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=inputs.app, version=inputs.version, family=codes.cid7162.ArtificialIntelligence
    )

    def description(number: int, label: str, kind: Any) -> hd.seg.SegmentDescription:
        return hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        )  # fmt: skip

    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=np.stack([body, lungs], axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description(1, "Body", codes.SCT.EntireBody), description(2, "Lungs", codes.SCT.Lung)],
        series_instance_uid=inputs.uid("series"),
        series_number=900,
        sop_instance_uid=inputs.uid("instance"),
        instance_number=1,
        manufacturer="slicebox_lab",
        manufacturer_model_name=inputs.app,
        software_versions=inputs.version,
        device_serial_number="1",
        series_description=f"{inputs.app} {inputs.version}: body and lungs",
    )
    voxel_ml = _voxel_ml(images)
    return AppResult(
        [seg], {"body_ml": round(float(body.sum()) * voxel_ml, 1), "lungs_ml": round(float(lungs.sum()) * voxel_ml, 1)}
    )


def _voxel_ml(images: list[Any]) -> float:
    spacing = [float(v) for v in images[0].get("PixelSpacing", [1, 1])]
    thickness = float(images[0].get("SliceThickness", 1) or 1)
    if len(images) > 1:
        a, b = (np.array(ds.ImagePositionPatient, dtype=float) for ds in images[:2])
        thickness = float(np.linalg.norm(b - a)) or thickness
    return spacing[0] * spacing[1] * thickness / 1000.0
