"""The DICOM networking area of the client: this node's SCPs, remote nodes (SCUs) and the verbs on them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .base import ClientBase, frame

__all__ = ["NetworkingMixin"]

NODE_COLUMNS = ["id", "name", "ae_title", "host", "port"]
SCP_COLUMNS = [*NODE_COLUMNS, "running"]


class NetworkingMixin(ClientBase):
    """``scps`` and ``scus`` routes: listeners, remote nodes, C-ECHO, C-FIND, C-MOVE/C-GET, C-STORE."""

    def scps(self) -> pd.DataFrame:
        return frame(self.get_all("scps"), SCP_COLUMNS)

    def add_scp(self, name: str, ae_title: str, port: int, host: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "ae_title": ae_title, "port": int(port)}
        if host is not None:
            body["host"] = host
        return dict(self.post("scps", json=body))

    def delete_scp(self, scp_id: int) -> None:
        self.delete(f"scps/{int(scp_id)}")

    def scus(self) -> pd.DataFrame:
        return frame(self.get_all("scus"), NODE_COLUMNS)

    def add_scu(self, name: str, ae_title: str, host: str, port: int) -> dict[str, Any]:
        return dict(self.post("scus", json={"name": name, "ae_title": ae_title, "host": host, "port": int(port)}))

    def delete_scu(self, scu_id: int) -> None:
        self.delete(f"scus/{int(scu_id)}")

    def echo_scu(self, scu_id: int | str) -> dict[str, Any]:
        return dict(self.post(f"scus/{self._id_by_name(scu_id, self.scus, 'remote node')}/echo"))

    def query_scu(self, scu_id: int | str, level: str = "STUDY", **identifier: Any) -> pd.DataFrame:
        """C-FIND a remote node: keywords with a value to match, or "" to have them returned."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        rows = self.post(f"scus/{scu}/query", json={"level": level.upper(), "identifier": identifier})
        return pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(identifier))

    def retrieve_scu(
        self,
        scu_id: int | str,
        level: str,
        identifier: Mapping[str, Any],
        *,
        method: str = "move",
        destination_scp_id: int | None = None,
    ) -> dict[str, Any]:
        """C-MOVE (into one of this node's SCPs) or C-GET from a remote node, as a job."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        body: dict[str, Any] = {"level": level.upper(), "identifier": dict(identifier), "method": method}
        if destination_scp_id is not None:
            body["destination_scp_id"] = int(destination_scp_id)
        return dict(self.post(f"scus/{scu}/retrieve", json=body))

    def send_to_scu(self, scu_id: int | str, image_ids: Iterable[int]) -> dict[str, Any]:
        """C-STORE images to a remote node (id or name), as a job (see :meth:`wait_job`)."""
        scu = self._id_by_name(scu_id, self.scus, "remote node")
        return dict(self.post(f"scus/{scu}/send", json={"image_ids": [int(i) for i in image_ids]}))
