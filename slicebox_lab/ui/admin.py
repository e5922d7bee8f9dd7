"""Configure a node from a notebook: SCPs, SCUs, folder watches, boxes, forwarding rules, tag filters,
series types, users and anonymization keys, one tab each.

Every panel is the same shape — a table of what exists (with Delete and other per-row buttons), a
form to add one, Refresh, and a status line — so that what the node refuses (a port in use, a
forbidden action for a USER) reads the same everywhere: the server's own message.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ._common import Grid, StatusLine, reporting
from ._common import records as _records

__all__ = [
    "AdminPanel",
    "ScpPanel",
    "ScuPanel",
    "WatchPanel",
    "BoxPanel",
    "ForwardingPanel",
    "FilterPanel",
    "SeriesTypePanel",
    "UserPanel",
    "KeysPanel",
]

SOURCE_TYPES = ("scp", "directory", "box", "user", "import", "app")


def _text(description: str, placeholder: str = "") -> widgets.Text:
    return widgets.Text(description=description, placeholder=placeholder, layout=widgets.Layout(width="auto"))


class EntityPanel(widgets.VBox):
    """A table of the node's entries of one kind, an add form, per-row buttons, Refresh and a status line."""

    title = ""
    columns: tuple[str, ...] = ("id", "name")
    noun = "entry"
    #: the client's methods that list the entries and delete one by id (every panel lists and deletes alike)
    listing = ""
    deleting = ""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client
        self.status = StatusLine()
        self.table = Grid()
        self.frame = pd.DataFrame()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.add_button = widgets.Button(description=f"Add {self.noun}", icon="plus", button_style="primary")
        self.add_button.on_click(lambda _b: self._add_clicked())
        form = self.form()
        parts: list[widgets.Widget] = [self.refresh_button, self.table]
        if form:
            parts.append(widgets.HTML(f"<b>Add {html.escape(self.noun)}</b>"))
            parts.append(widgets.VBox([*form, self.add_button]))
        parts.extend(self.extra())
        parts.append(self.status)
        self.children = parts
        self.refresh(quiet=True)

    # to override ---------------------------------------------------------------------------------
    def form(self) -> list[widgets.Widget]:
        """The add form's fields (kept as attributes by the subclass)."""
        return []

    def extra(self) -> list[widgets.Widget]:
        return []

    def fetch(self) -> Any:
        return getattr(self.client, self.listing)()

    def add(self) -> Any:
        """Create an entry from the form's values; returns what the node answered."""
        raise NotImplementedError

    def remove(self, entry_id: Any) -> None:
        getattr(self.client, self.deleting)(int(entry_id))

    def actions(self) -> list[tuple[str, Callable[[Any], None]]]:
        return [("Delete", self.delete)]

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        """A row as shown (flatten what the table cannot show as is)."""
        return record

    # behaviour -----------------------------------------------------------------------------------
    def refresh(self, quiet: bool = False) -> None:
        """Reload the table from the node."""
        with reporting(self.status, f"listing {self.noun}s") as outcome:
            frame = self.fetch()
            self.frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(_records(frame))
            records = [self.describe(r) for r in _records(self.frame)]
            columns = [c for c in self.columns if not records or c in records[0]]
            self.table.set_rows(records, columns, key="id", actions=self.actions())
        if not outcome.failed and not quiet:
            self.status.info(f"{len(self.frame)} {self.noun}(s)")

    def ids(self) -> list[Any]:
        return list(self.table.row_ids)

    def _add_clicked(self) -> None:
        with reporting(self.status, f"adding the {self.noun}") as outcome:
            answer = self.add()
        if outcome.failed:
            return
        self.refresh(quiet=True)
        name = answer.get("name") or answer.get("user") or answer.get("id") if isinstance(answer, dict) else ""
        self.status.ok(f"added {self.noun} {name}".rstrip())

    def delete(self, entry_id: Any) -> None:
        with reporting(self.status, f"deleting the {self.noun}") as outcome:
            self.remove(entry_id)
        if outcome.failed:
            return
        self.refresh(quiet=True)
        self.status.ok(f"deleted {self.noun} {entry_id}")

    def button(self, label: str, entry_id: Any) -> widgets.Button:
        """The per-row button ``label`` of entry ``entry_id`` (Delete, Echo)."""
        return self.table.buttons[(label, entry_id)]


class ScpPanel(EntityPanel):
    """DICOM listeners of this node."""

    title = "SCPs"
    noun = "SCP"
    columns = ("id", "name", "ae_title", "host", "port", "running")
    listing = "scps"
    deleting = "delete_scp"

    def form(self) -> list[widgets.Widget]:
        self.name = _text("Name")
        self.ae_title = _text("AE title")
        self.port = widgets.BoundedIntText(value=11112, min=0, max=65535, description="Port")
        return [self.name, self.ae_title, self.port]

    def add(self) -> Any:
        return self.client.add_scp(self.name.value.strip(), self.ae_title.value.strip(), int(self.port.value))


class ScuPanel(EntityPanel):
    """Remote DICOM nodes (C-ECHO, C-STORE, C-MOVE destinations)."""

    title = "SCUs"
    noun = "SCU"
    columns = ("id", "name", "ae_title", "host", "port")
    listing = "scus"
    deleting = "delete_scu"

    def form(self) -> list[widgets.Widget]:
        self.name = _text("Name")
        self.ae_title = _text("AE title")
        self.host = _text("Host", "127.0.0.1")
        self.port = widgets.BoundedIntText(value=104, min=1, max=65535, description="Port")
        return [self.name, self.ae_title, self.host, self.port]

    def add(self) -> Any:
        return self.client.add_scu(self.name.value.strip(), self.ae_title.value.strip(), self.host.value.strip(),
                                   int(self.port.value))  # fmt: skip

    def actions(self) -> list[tuple[str, Callable[[Any], None]]]:
        return [("Echo", self.echo), ("Delete", self.delete)]

    def echo(self, entry_id: Any) -> None:
        """C-ECHO the remote node; the answer (or the server's reason it failed) goes to the status line."""
        self.status.info(f"echoing SCU {entry_id}…")
        with reporting(self.status, "echo") as outcome:
            self.client.echo_scu(int(entry_id))
        if not outcome.failed:
            self.status.ok(f"echo SCU {entry_id}: ok")


class WatchPanel(EntityPanel):
    """Folders of the server's file system whose DICOM files are imported."""

    title = "Watches"
    noun = "watch"
    columns = ("id", "name", "path", "delete_on_import", "created")
    listing = "watches"
    deleting = "delete_watch"

    def form(self) -> list[widgets.Widget]:
        self.name = _text("Name")
        self.path = _text("Folder", "/absolute/path")
        self.delete_on_import = widgets.Checkbox(value=False, description="delete files once imported")
        return [self.name, self.path, self.delete_on_import]

    def add(self) -> Any:
        return self.client.add_watch(self.name.value.strip(), self.path.value.strip(),
                                     delete_on_import=bool(self.delete_on_import.value))  # fmt: skip


class BoxPanel(EntityPanel):
    """Partner nodes: make a connection (and hand its URL over), or connect with a partner's URL."""

    title = "Boxes"
    noun = "box"
    columns = ("id", "name", "send_method", "online", "last_contact", "last_error")
    listing = "boxes"
    deleting = "delete_box"

    def form(self) -> list[widgets.Widget]:
        return []

    def extra(self) -> list[widgets.Widget]:
        self.create_name = _text("Name", "partner name")
        self.create_button = widgets.Button(description="Create connection", icon="plus", button_style="primary",
                                            layout=widgets.Layout(width="auto"))  # fmt: skip
        self.connection_url = widgets.Textarea(value="", description="URL", placeholder="hand this URL to the partner",
                                               layout=widgets.Layout(width="90%"))  # fmt: skip
        self.connect_name = _text("Name", "partner name")
        self.connect_url = _text("URL", "the URL the partner handed you")
        self.connect_button = widgets.Button(description="Connect", icon="link", button_style="primary")
        self.create_button.on_click(lambda _b: self.create_connection())
        self.connect_button.on_click(lambda _b: self.connect())
        return [
            widgets.HTML("<b>Create a connection</b> (the partner connects to this node with the URL)"),
            widgets.HBox([self.create_name, self.create_button]),
            self.connection_url,
            widgets.HTML("<b>Connect</b> with a URL from a partner"),
            widgets.HBox([self.connect_name, self.connect_url, self.connect_button]),
        ]

    def create_connection(self) -> dict[str, Any] | None:
        with reporting(self.status, "creating the connection") as outcome:
            box = self.client.create_box_connection(self.create_name.value.strip())
        if outcome.failed:
            return None
        self.connection_url.value = str(box.get("base_url", ""))
        self.refresh(quiet=True)
        self.status.ok(f"box {box.get('name')} created: hand the URL to the partner")
        return dict(box)

    def connect(self) -> dict[str, Any] | None:
        with reporting(self.status, "connecting") as outcome:
            box = self.client.connect_box(self.connect_name.value.strip(), self.connect_url.value.strip())
        if outcome.failed:
            return None
        self.refresh(quiet=True)
        self.status.ok(f"connected to box {box.get('name')}")
        return dict(box)


class ForwardingPanel(EntityPanel):
    """Rules forwarding what a source delivers to a box or an SCU."""

    title = "Forwarding"
    noun = "forwarding rule"
    columns = ("id", "source", "destination", "keepImages", "quietSeconds", "queuedImageCount")
    listing = "forwarding_rules"
    deleting = "delete_forwarding_rule"

    def form(self) -> list[widgets.Widget]:
        self.source_type = widgets.Dropdown(options=SOURCE_TYPES, value="scp", description="Source type")
        self.source_name = _text("Source name", "the SCP's or watch's name")
        self.destination = widgets.Dropdown(options=[], description="Destination")
        self.keep_images = widgets.Checkbox(value=True, description="keep images here after delivery")
        self.quiet_seconds = widgets.BoundedFloatText(value=30, min=0, max=604800, description="Quiet (s)")
        return [self.source_type, self.source_name, self.destination, self.keep_images, self.quiet_seconds]

    def fetch(self) -> Any:
        self._load_destinations()
        return super().fetch()

    def _load_destinations(self) -> None:
        options = [(f"box: {b['name']}", ("box", int(b["id"]))) for b in _records(self.client.boxes())]
        options += [(f"SCU: {s['name']}", ("scu", int(s["id"]))) for s in _records(self.client.scus())]
        self.destination.options = options

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        row = dict(record)
        source, destination = row.get("source"), row.get("destination")
        if isinstance(source, dict):
            row["source"] = f"{source.get('sourceType')}: {source.get('sourceName', '')}"
        if isinstance(destination, dict):
            row["destination"] = f"{destination.get('type')}: {destination.get('name') or destination.get('id')}"
        return row

    def add(self) -> Any:
        if self.destination.value is None:
            raise ValueError("choose a destination (make a box or an SCU first)")
        kind, target = self.destination.value
        return self.client.add_forwarding_rule(
            self.source_type.value,
            self.source_name.value.strip(),
            kind,
            target,
            keep_images=bool(self.keep_images.value),
            quiet_seconds=float(self.quiet_seconds.value),
        )


class FilterPanel(EntityPanel):
    """Tag filters (blacklists, whitelists of tag paths) applied to what sources deliver."""

    title = "Filters"
    noun = "filter"
    columns = ("id", "name", "type", "tagPaths")
    listing = "filters"
    deleting = "delete_filter"

    def form(self) -> list[widgets.Widget]:
        self.name = _text("Name")
        self.type = widgets.Dropdown(options=("BLACKLIST", "WHITELIST"), value="BLACKLIST", description="Type")
        self.tag_paths = widgets.Textarea(description="Tag paths", placeholder="one per line, e.g. PatientAddress")
        return [self.name, self.type, self.tag_paths]

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        row = dict(record)
        paths = row.get("tagPaths")
        if isinstance(paths, list):
            row["tagPaths"] = ", ".join(str(p.get("tagPath", p)) if isinstance(p, dict) else str(p) for p in paths)
        return row

    def add(self) -> Any:
        paths = [p.strip() for p in self.tag_paths.value.replace(",", "\n").splitlines() if p.strip()]
        return self.client.add_filter(self.name.value.strip(), self.type.value, paths)


class SeriesTypePanel(EntityPanel):
    """Series types (their rules are edited through the client)."""

    title = "Series types"
    noun = "series type"
    columns = ("id", "name")
    listing = "series_types"
    deleting = "delete_series_type"

    def form(self) -> list[widgets.Widget]:
        self.name = _text("Name")
        return [self.name]

    def add(self) -> Any:
        return self.client.add_series_type(self.name.value.strip())


class UserPanel(EntityPanel):
    """Node-local users (basic auth and the dashboard login)."""

    title = "Users"
    noun = "user"
    columns = ("id", "user", "role", "created")
    listing = "users"
    deleting = "delete_user"

    def form(self) -> list[widgets.Widget]:
        self.user = _text("User")
        self.password = widgets.Password(description="Password")
        self.role = widgets.Dropdown(options=("USER", "ADMINISTRATOR"), value="USER", description="Role")
        return [self.user, self.password, self.role]

    def add(self) -> Any:
        try:
            return self.client.add_user(self.user.value.strip(), self.password.value, self.role.value)
        finally:
            self.password.value = ""  # never left in the widget state (saved notebooks keep widget state)


class KeysPanel(EntityPanel):
    """Anonymization keys (what each de-identified image was before), and their CSV export."""

    title = "Keys"
    noun = "key"
    columns = ("id", "created", "imageId", "PatientName", "AnonPatientName", "PatientID", "AnonPatientID", "profile")
    listing = "keys"
    deleting = "delete_key"

    def extra(self) -> list[widgets.Widget]:
        self.csv_bytes: bytes | None = None
        self.export_button = widgets.Button(description="Export CSV", icon="download")
        self.export_link = widgets.HTML("")
        self.export_button.on_click(lambda _b: self.export_csv())
        return [widgets.HBox([self.export_button, self.export_link])]

    def export_csv(self) -> bytes | None:
        """Fetch the key export; ``csv_bytes`` holds it and a download link appears."""
        with reporting(self.status, "exporting keys") as outcome:
            text = self.client.export_keys_csv()
        if outcome.failed:
            return None
        self.csv_bytes = text.encode("utf-8")
        encoded = base64.b64encode(self.csv_bytes).decode("ascii")
        self.export_link.value = (
            f'<a download="anonymization-keys.csv" href="data:text/csv;base64,{encoded}">'
            f"anonymization-keys.csv ({len(self.csv_bytes)} bytes)</a>"
        )
        self.status.ok("keys exported")
        return self.csv_bytes


PANELS: tuple[type[EntityPanel], ...] = (ScpPanel, ScuPanel, WatchPanel, BoxPanel, ForwardingPanel, FilterPanel,
                                         SeriesTypePanel, UserPanel, KeysPanel)  # fmt: skip


class AdminPanel(widgets.Tab):
    """Every admin panel in one Tab; ``admin.scps``, ``admin.users``... are the panels
    (the keys panel is ``admin.anonymization_keys``: ``keys`` is a trait of every widget)."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client
        self.scps = ScpPanel(client)
        self.scus = ScuPanel(client)
        self.watches = WatchPanel(client)
        self.boxes = BoxPanel(client)
        self.forwarding = ForwardingPanel(client)
        self.filters = FilterPanel(client)
        self.series_types = SeriesTypePanel(client)
        self.users = UserPanel(client)
        self.anonymization_keys = KeysPanel(client)
        self.panels: list[EntityPanel] = [
            self.scps, self.scus, self.watches, self.boxes, self.forwarding,
            self.filters, self.series_types, self.users, self.anonymization_keys,
        ]  # fmt: skip
        self.children = self.panels
        self.titles = tuple(p.title for p in self.panels)

    def refresh(self) -> None:
        for panel in self.panels:
            panel.refresh(quiet=True)
