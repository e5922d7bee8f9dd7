"""The anonymization area of the client: profiles, the de-identification report, anonymizing, keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .base import ClientBase, frame, profile_body

__all__ = ["AnonymizationMixin"]

KEY_COLUMNS = [
    "id",
    "created",
    "imageId",
    "profile",
    "PatientName",
    "AnonPatientName",
    "PatientID",
    "AnonPatientID",
    "StudyInstanceUID",
    "AnonStudyInstanceUID",
    "SeriesInstanceUID",
    "AnonSeriesInstanceUID",
    "SOPInstanceUID",
    "AnonSOPInstanceUID",
]
REPORT_COLUMNS = ["tag", "keyword", "vr", "path", "occurrences", "outcome", "decided_by", "risk"]


class AnonymizationMixin(ClientBase):
    """``anonymization`` routes and the per-image anonymize/modify verbs."""

    def anonymization_options(self) -> list[dict[str, Any]]:
        return list(self.get("anonymization/options"))

    def review(
        self, image_ids: Iterable[int] = (), options: Any = None, *, series_ids: Iterable[int] = ()
    ) -> pd.DataFrame:
        """What the profile would do to each attribute path of the selection (values never included);
        the report's summary is in ``df.attrs["summary"]``, the text found in the pixels (rows shown masked,
        thumbnails) in ``df.attrs["pixel_text"]``."""
        body = {
            **profile_body(options),
            "imageIds": [int(i) for i in image_ids],
            "seriesIds": [int(i) for i in series_ids],
        }
        report = self.post("anonymization/report", json=body)
        df = frame(report.get("attributes", []), REPORT_COLUMNS)
        df.attrs["summary"] = report.get("summary", {})
        df.attrs["pixel_text"] = report.get("pixel_text") or {}
        return df

    def anonymize_images(self, image_ids: Iterable[int], options: Any = None) -> dict[str, Any]:
        """Anonymize images in place, as a job (see :meth:`wait_job`)."""
        return dict(
            self.post(
                "anonymization/anonymize", json={**profile_body(options), "imageIds": [int(i) for i in image_ids]}
            )
        )

    def anonymize_image(self, image_id: int, options: Any = None) -> dict[str, Any]:
        """Replace one stored image by its de-identified version; the new image record."""
        return dict(self.put(f"images/{int(image_id)}/anonymize", json=profile_body(options)))

    def anonymized_bytes(self, image_id: int, options: Any = None) -> bytes:
        """The image de-identified, as a file (nothing stored changes)."""
        return self.request(
            "POST", f"images/{int(image_id)}/anonymized", json=profile_body(options), headers={"Accept": "*/*"}
        ).content

    def modify_image(self, image_id: int, tag_values: Any) -> dict[str, Any]:
        """Write tag values (``{"PatientName": "x"}`` or TagValue dicts) into a stored image; the new record."""
        if isinstance(tag_values, Mapping):
            tag_values = [{"tagPath": k, "value": v} for k, v in tag_values.items()]
        return dict(self.put(f"images/{int(image_id)}/modify", json=list(tag_values)))

    def keys(
        self,
        filter: str | None = None,
        *,
        order_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
    ) -> pd.DataFrame:
        params = {"filter": filter, "orderby": order_by, "orderascending": ascending}
        return frame(self.get_all("anonymization/keys", params, limit=limit), KEY_COLUMNS)

    def key_values(self, key_id: int) -> pd.DataFrame:
        return frame(
            self.get(f"anonymization/keys/{int(key_id)}/keyvalues"),
            ["id", "keyId", "tagPath", "level", "value", "anonymizedValue"],
        )

    def delete_key(self, key_id: int) -> None:
        self.delete(f"anonymization/keys/{int(key_id)}")

    def export_keys_csv(self) -> str:
        return str(self.get("anonymization/keys/export/csv"))
