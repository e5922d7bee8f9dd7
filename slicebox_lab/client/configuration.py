"""The configuration area of the client: the node's health, users, folder watches, filters, forwarding rules."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from .base import ClientBase, frame

__all__ = ["ConfigurationMixin"]

WATCH_COLUMNS = ["id", "name", "path", "delete_on_import", "created"]


class ConfigurationMixin(ClientBase):
    """``system``, ``users``, ``directorywatches``, ``filtering`` and ``forwarding`` routes."""

    # ------------------------------------------------------------------ system and users

    def health(self) -> dict[str, Any]:
        return dict(self.get("system/health"))

    def information(self) -> dict[str, Any]:
        return dict(self.get("system/information"))

    def current_user(self) -> dict[str, Any]:
        return dict(self.get("users/current"))

    def users(self) -> pd.DataFrame:
        return frame(self.get_all("users"), ["id", "user", "role", "created"])

    def add_user(self, user: str, password: str, role: str = "USER") -> dict[str, Any]:
        return dict(self.post("users", json={"user": user, "password": password, "role": role}))

    def delete_user(self, user_id: int) -> None:
        self.delete(f"users/{int(user_id)}")

    # ------------------------------------------------------------------ watches

    def watches(self) -> pd.DataFrame:
        return frame(self.get_all("directorywatches"), WATCH_COLUMNS)

    def add_watch(self, name: str, path: str | os.PathLike[str], *, delete_on_import: bool = False) -> dict[str, Any]:
        return dict(
            self.post("directorywatches", json={"name": name, "path": str(path), "delete_on_import": delete_on_import})
        )

    def delete_watch(self, watch_id: int) -> None:
        self.delete(f"directorywatches/{int(watch_id)}")

    # ------------------------------------------------------------------ filters

    def filters(self) -> pd.DataFrame:
        return frame(self.get("filtering/filters"), ["id", "name", "type", "tagPaths"])

    def filter_associations(self) -> pd.DataFrame:
        return frame(
            self.get("filtering/associations"),
            ["id", "sourceType", "sourceName", "sourceId", "filterId", "filterName"],
        )

    def add_filter(self, name: str, type: str, tag_paths: Iterable[str] = ()) -> dict[str, Any]:
        return dict(
            self.post("filtering/filters", json={"name": name, "type": type.upper(), "tagPaths": list(tag_paths)})
        )

    def delete_filter(self, filter_id: int) -> None:
        self.delete(f"filtering/filters/{int(filter_id)}")

    def add_filter_association(
        self, filter_id: int, source_type: str, source_name: str | None = None, source_id: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"filterId": int(filter_id), "sourceType": source_type}
        if source_name is not None:
            body["sourceName"] = source_name
        if source_id is not None:
            body["sourceId"] = int(source_id)
        return dict(self.post("filtering/associations", json=body))

    def delete_filter_association(self, association_id: int) -> None:
        self.delete(f"filtering/associations/{int(association_id)}")

    # ------------------------------------------------------------------ forwarding

    def forwarding_rules(self) -> pd.DataFrame:
        return frame(
            self.get_all("forwarding/rules"),
            ["id", "source", "destination", "keepImages", "quietSeconds", "created", "queuedImageCount"],
        )

    def forwarding_batches(self, rule_id: int) -> pd.DataFrame:
        return frame(self.get_all(f"forwarding/rules/{int(rule_id)}/batches"))

    def add_forwarding_rule(
        self,
        source_type: str,
        source_name: str,
        destination_type: str,
        destination_id: int,
        *,
        keep_images: bool = True,
        quiet_seconds: float = 30,
    ) -> dict[str, Any]:
        body = {
            "source": {"sourceType": source_type, "sourceName": source_name},
            "destination": {"type": destination_type, "id": int(destination_id)},
            "keepImages": keep_images,
            "quietSeconds": quiet_seconds,
        }
        return dict(self.post("forwarding/rules", json=body))

    def delete_forwarding_rule(self, rule_id: int) -> None:
        self.delete(f"forwarding/rules/{int(rule_id)}")
