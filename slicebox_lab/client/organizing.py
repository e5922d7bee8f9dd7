"""The organizing area of the client: series tags and series types (the names browsing filters by)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .base import ClientBase, _listify, frame

__all__ = ["OrganizingMixin"]


class OrganizingMixin(ClientBase):
    """``metadata/seriestags`` and ``seriestypes`` routes."""

    # ------------------------------------------------------------------ series tags

    def series_tags(self) -> pd.DataFrame:
        return frame(self.get_all("metadata/seriestags"), ["id", "name", "series_count"])

    def add_series_tag(self, name: str) -> dict[str, Any]:
        return dict(self.post("metadata/seriestags", json={"name": name}))

    def rename_series_tag(self, tag_id: int, name: str) -> dict[str, Any]:
        return dict(self.put(f"metadata/seriestags/{int(tag_id)}", json={"name": name}))

    def delete_series_tag(self, tag_id: int) -> None:
        self.delete(f"metadata/seriestags/{int(tag_id)}")

    def tag_series(self, series_id: int, name: str) -> dict[str, Any]:
        return dict(self.post(f"metadata/series/{int(series_id)}/seriestags", json={"name": name}))

    def untag_series(self, series_id: int, tag_id: int) -> None:
        self.delete(f"metadata/series/{int(series_id)}/seriestags/{int(tag_id)}")

    # ------------------------------------------------------------------ series types

    def series_types(self) -> pd.DataFrame:
        return frame(self.get_all("seriestypes"), ["id", "name"])

    def series_type_rules(self, series_type_id: int) -> pd.DataFrame:
        return frame(self.get(f"seriestypes/{int(series_type_id)}/rules"), ["id", "series_type_id", "attributes"])

    def add_series_type(self, name: str) -> dict[str, Any]:
        return dict(self.post("seriestypes", json={"name": name}))

    def delete_series_type(self, series_type_id: int) -> None:
        self.delete(f"seriestypes/{int(series_type_id)}")

    def add_series_type_rule(self, series_type_id: int, attributes: Any) -> dict[str, Any]:
        """A rule from ``{"Modality": ["CT"]}`` or ``[{"tag", "values"}]``."""
        if isinstance(attributes, Mapping):
            attributes = [{"tag": k, "values": list(_listify(v))} for k, v in attributes.items()]
        return dict(self.post(f"seriestypes/{int(series_type_id)}/rules", json={"attributes": list(attributes)}))

    def delete_series_type_rule(self, series_type_id: int, rule_id: int) -> None:
        self.delete(f"seriestypes/{int(series_type_id)}/rules/{int(rule_id)}")

    def update_series_types(self) -> dict[str, Any]:
        """Re-classify every series now (a job)."""
        return dict(self.post("seriestypes/updatestatus"))
