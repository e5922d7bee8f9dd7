"""What an app is handed (:class:`AppInputs`) and what it may hand back (:class:`AppResult`).

An app is ``def my_app(inputs, **parameters)``: ``inputs`` gives the series run on as the client's objects
(a :class:`~slicebox_lab.client.volume.Volume` with its geometry, a DataFrame of attributes, pydicom
datasets, file paths); it returns DICOM datasets (a Segmentation built with highdicom, an SR, a derived
series), plain values, both as an :class:`AppResult`, or None.  A notebook app gets the same inputs as
variables of its parameters cell (``files``, ``series``, ``output_dir``, ``app_name``, ``app_version`` and each
parameter by name) and
leaves DICOM files in ``output_dir`` (values in ``output_dir/values.json``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AppInputs", "AppResult"]

#: the root of the deterministic UIDs of app results (``AppInputs.uid``): 2.25 + a decimal UUID-sized number
_UID_ROOT = "2.25."


@dataclass
class AppResult:
    """What an app returns when it has both DICOM results and plain values (or wants to be explicit)."""

    datasets: Sequence[Any] = ()
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class AppInputs:
    """The series (or the study's series) an app runs on, as files and as the client's objects."""

    #: name and version of the app, and the parameters it runs with (defaults and the run's own)
    app: str
    version: str
    parameters: dict[str, Any]
    #: the stored DICOM files, grouped by series (in ``series`` order)
    files: list[str]
    #: per file: the id of its series on the node
    file_series: list[int]
    #: one dict per series run on: the series', study's and patient's indexed attributes, ``series_id``
    series_records: list[dict[str, Any]]
    #: a folder the app may write into (a notebook app leaves its DICOM results there)
    output_dir: str
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("slicebox_lab.app"))

    @property
    def series(self) -> Any:
        """The series run on as a pandas DataFrame (one row each: patient, study and series attributes)."""
        import pandas as pd

        return pd.DataFrame(self.series_records)

    def files_of(self, series_id: int | None = None) -> list[str]:
        """The files of one series (the first one by default)."""
        wanted = self.series_records[0]["series_id"] if series_id is None else int(series_id)
        return [path for path, sid in zip(self.files, self.file_series, strict=True) if sid == wanted]

    def datasets(self, series_id: int | None = None, pixels: bool = True) -> list[Any]:
        """The series' images as pydicom datasets (the first series by default), in their stored order."""
        import pydicom

        return [pydicom.dcmread(path, stop_before_pixels=not pixels) for path in self.files_of(series_id)]

    def volume(self, series_id: int | None = None) -> Any:
        """The series as a volume sorted along the slice normal, rescaled (HU for CT): the client's ``Volume``."""
        from ..client.volume import slices_of, stack_volume

        slices = []
        for n, path in enumerate(self.files_of(series_id)):
            import pydicom

            slices.extend(slices_of(n, pydicom.dcmread(path)))
        return stack_volume(slices)

    def uid(self, *parts: object) -> str:
        """A UID derived from the app, its version, the series run on and ``parts``: the same run again gives
        the same UIDs, so its results replace the earlier ones instead of adding copies."""
        source = "|".join(str(r.get("SeriesInstanceUID", "")) for r in self.series_records)
        text = "|".join([self.app, self.version, source, *map(str, parts)])
        return _UID_ROOT + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))
