"""The DICOM files bundled with pydicom and pydicom-data, as test data."""

from __future__ import annotations

import warnings

import pydicom
import pydicom.data


def bundled_part10_files() -> list[str]:
    """pydicom's (and pydicom-data's) files that dcmread reads and that carry a Transfer Syntax UID."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom.data.get_testdata_files():
            try:
                ds = pydicom.dcmread(path)
            except Exception:
                continue
            if ds.file_meta.get("TransferSyntaxUID"):
                found.append(path)
    return sorted(found)
