"""Every notebook under notebooks/ (tutorials and dashboards) runs top to bottom, headless (nbclient),
against a real `jupyter slicebox` node that its kernel finds through SLICEBOX_URL / SLICEBOX_TOKEN."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nodeproc import NodeProcess, start_node

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
ALL = sorted(p.relative_to(NOTEBOOKS) for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    work = tmp_path_factory.mktemp("notebook-node")
    node = start_node(work / "data", work, "notebook-token", "--SliceboxApp.fsync=False")
    try:
        # the sample data through the command line, as a user without a notebook would load it
        out = subprocess.run(
            [sys.executable, "-m", "slicebox_lab.sample", "--into", f"{node.url}?token={node.token}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert "uploaded 102 sample images" in out.stdout
        yield node
    finally:
        node.stop()


def test_every_notebook_is_collected():
    names = {str(p) for p in ALL}
    assert {
        "01-getting-started.ipynb",
        "02-two-nodes-and-sending.ipynb",
        "03-pacs-query-retrieve.ipynb",
        "04-deidentification-options-and-keys.ipynb",
        "05-building-a-training-set.ipynb",
        "dashboards/send-to-partner.ipynb",
        "dashboards/incoming.ipynb",
        "dashboards/node-status.ipynb",
        "dashboards/viewer.ipynb",
        "06-writing-an-app.ipynb",
        "dashboards/app-runs.ipynb",
    } <= names


def _outputs(nb: nbformat.NotebookNode) -> str:
    """Text of every output (streams, text/plain, text/html), to check what the notebook showed."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            data = output.get("data", {})
            parts += [str(data.get("text/plain", "")), str(data.get("text/html", ""))]
    return "\n".join(parts)


@pytest.mark.parametrize("relative", ALL, ids=[str(p) for p in ALL])
def test_notebook_runs_top_to_bottom(
    relative: Path, node: NodeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # a copy: what a notebook writes next to itself stays out of the repository
    copy = tmp_path / relative
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / relative, copy)
    nb = nbformat.read(copy, as_version=4)
    monkeypatch.setenv("SLICEBOX_URL", node.url)
    monkeypatch.setenv("SLICEBOX_TOKEN", node.token)
    monkeypatch.delenv("SLICEBOX_PARTNER_URL", raising=False)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(copy.parent)}})
    client.execute()  # raises CellExecutionError with the cell and traceback when a cell fails
    nbformat.write(nb, copy)  # the executed notebook, to read when this fails
    text = _outputs(nb)
    name = relative.name
    assert "Traceback" not in text
    if name == "send-to-partner.ipynb":
        # this node has no partner: the dashboard says so, in words, and still shows the browser
        # (the widget's full text is in the notebook's saved widget state; text/plain cuts it short)
        assert "No partner is connected to this node yet" in json.dumps(nb) and "Browser(" in text
    else:
        assert "slicebox-problem" not in text, "a dashboard showed a failure message against a healthy node"
    if name.startswith("01-"):
        assert "Andersson^Anna" in text and "Berg^Erik" in text
    if name.startswith("02-"):
        # the partner shows what arrived, de-identified: no real name in its listing
        arrived = next(c for c in nb.cells if "arrived = partner.flat_series()" in c.source)
        shown = _outputs(nbformat.from_dict({"cells": [arrived]}))
        assert "Berg^Erik" not in shown and "CT" in shown
        assert "FINISHED" in text
    if name.startswith("03-"):
        back = next(c for c in nb.cells if c.source.startswith("back = sbx.flat_series"))
        assert "scp:tutorial-store" in _outputs(nbformat.from_dict({"cells": [back]}))
    if name.startswith("05-"):
        assert "(40, 256, 256)" in text  # both CT volumes as arrays
    if name.startswith("06-"):
        # the function's value, the example app's segmentation stored as its result, a cohort of two CTs
        assert "'lung_share'" in text and "'source_type': 'app'" in text and "'source_name': 'body-and-lungs'" in text
        assert "(2, 2, 'SUCCEEDED')" in text
    if name == "app-runs.ipynb":  # after tutorial 06 (in name order): its runs, in words
        shown = json.dumps(nb)
        assert "lung-share 1" in shown and "body-and-lungs 1.0" in shown and "Andersson^Anna" in shown


DASHBOARDS = [p for p in ALL if p.parts[0] == "dashboards"]


@pytest.mark.parametrize("relative", DASHBOARDS, ids=[str(p) for p in DASHBOARDS])
def test_dashboard_says_so_when_the_node_is_unreachable(
    relative: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No traceback on a clinician's screen: a dead node is a sentence."""
    copy = tmp_path / relative.name
    shutil.copy(NOTEBOOKS / relative, copy)
    nb = nbformat.read(copy, as_version=4)
    monkeypatch.setenv("SLICEBOX_URL", "http://127.0.0.1:9/")  # the discard port: nothing listens
    monkeypatch.setenv("SLICEBOX_TOKEN", "whatever")
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    everything = json.dumps(nb)
    assert "The node cannot be reached" in everything
    assert "Traceback" not in _outputs(nb)
