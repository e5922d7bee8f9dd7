"""A real `jupyter slicebox` node for the client tests (a synchronous client cannot share the test's event loop)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from nodeproc import NodeProcess, start_node  # noqa: E402

from slicebox_lab.client import SliceboxClient  # noqa: E402

FAST = ("--SliceboxApp.fsync=False", "--SliceboxApp.box_poll_interval=0.2")


@contextmanager
def running_node(base: Path, name: str = "node") -> Iterator[NodeProcess]:
    data_dir = base / name / "data"
    data_dir.mkdir(parents=True)
    node = start_node(data_dir, base / name, "client-token", *FAST)
    try:
        yield node
    finally:
        node.stop()


def client_of(node: NodeProcess) -> SliceboxClient:
    return SliceboxClient(node.url, token=node.token)
