"""The notebooks in the repository are what ``notebooks/_make_notebooks.py`` writes, byte for byte: an edit made
to a notebook instead of the generator (or a generator change not run) fails here, and running the generator
twice changes no file (cell ids follow from the notebook's name and the cell's place, not nbformat's random ones).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_make_notebooks", ROOT / "notebooks" / "_make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
COMMITTED = {
    **{name: ROOT / "notebooks" / f"{name}.ipynb" for name in GENERATOR.TUTORIALS},
    **{name: ROOT / "notebooks" / "dashboards" / f"{name}.ipynb" for name in GENERATOR.DASHBOARDS},
    "body_and_lungs": ROOT / "slicebox_lab" / "apps" / "examples" / "body_and_lungs.ipynb",
}


def _cells(name: str) -> list:
    if name == "body_and_lungs":
        return GENERATOR.EXAMPLE_APP
    return {**GENERATOR.TUTORIALS, **GENERATOR.DASHBOARDS}[name]


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_committed_notebook_is_the_generators(name: str, tmp_path: Path):
    first = GENERATOR.write(tmp_path / "1", name, _cells(name)).read_bytes()
    again = GENERATOR.write(tmp_path / "2", name, _cells(name)).read_bytes()
    assert first == again, "the generator wrote different bytes for the same notebook"
    assert COMMITTED[name].read_bytes() == first, (
        f"{COMMITTED[name].relative_to(ROOT)} differs from what notebooks/_make_notebooks.py writes: "
        "edit the generator and run it"
    )
