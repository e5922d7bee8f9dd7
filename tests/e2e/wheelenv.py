"""The package as a user gets it: a wheel built from this checkout, installed in a fresh venv outside it.

Why: a node run from the checkout finds notebooks/, server_extension/ and widgets/ beside the code,
so it cannot show that the wheel ships them.  The venv is a new one, without the machine's
site-packages: ``pip install <wheel>`` resolves the package's own dependency pins there, as it does for
a user (so the browser tests see the Voila, ipywidgets and jupyterlab_widgets the pins choose, whatever
this machine has installed), with its ``apps`` extra (the App runs dashboard's test runs the example app,
which makes its segmentation with highdicom), plus JupyterLab and Notebook 7 as the test extra names them
(the dashboards must work inside both).  Everything the venv has comes from PyPI (or pip's cache), nothing from the
checkout: ``jupyter slicebox`` then runs from a folder under /tmp with no ``PYTHONPATH``.

Built and installed once per test session (tests/e2e/conftest.py): about a minute with a warm pip cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass
class Installed:
    venv: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def jupyter_slicebox(self) -> Path:
        return self.venv / "bin" / "jupyter-slicebox"

    def env(self) -> dict[str, str]:
        """The environment of a user of this venv: no PYTHONPATH (nothing from the checkout), its bin first."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def run(self, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args], cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout
        )


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of the checkout (hatchling, fetched by pip's build isolation where it is not installed)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPOSITORY)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the wheel failed:\n{done.stdout}\n{done.stderr}")
    (wheel,) = out.glob("slicebox_lab-*.whl")
    return wheel


def _requirements_of_the_test_extra(*names: str) -> list[str]:
    """The test extra's requirement strings for these distributions (e.g. ``jupyterlab>=4``): one source of versions."""
    extra = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    chosen = [r for r in extra if re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() in names]
    assert len(chosen) == len(names), (names, chosen)
    return chosen


def install(work: Path) -> Installed:
    wheel = build_wheel(work / "dist")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    extras = _requirements_of_the_test_extra("jupyterlab", "notebook")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", f"{wheel}[apps]", *extras],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing the wheel failed:\n{done.stdout}\n{done.stderr}")
    installed = Installed(env_dir, wheel)
    check = installed.run("-c", "import slicebox_lab; print(slicebox_lab.__file__)", cwd=work)
    where = Path(check.stdout.strip())
    if check.returncode != 0 or not where.is_relative_to(env_dir):
        raise RuntimeError(f"the venv does not import the wheel: {check.stdout} {check.stderr}")
    return installed
