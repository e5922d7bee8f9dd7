"""The package as a user gets it: a wheel built from this checkout, installed in a fresh venv outside it.

Why: a node run from the checkout finds notebooks/, server_extension/ and widgets/ beside the code,
so it cannot show that the wheel ships them.  The venv sees the machine's site-packages (the
dependencies, already installed) but the package only from the wheel; ``jupyter slicebox`` then runs
from a folder under /tmp with no ``PYTHONPATH``, so nothing of the checkout can leak in.

Jupyter finds data files (Voila's templates, the widget labextensions, kernels) under ``sys.prefix``,
which is the venv's: the dependencies' files are linked in from the base prefix where they were
installed, as ``pip install`` would have put them in a venv of their own; the wheel's own files
(``etc/jupyter``, the Voila template) are the wheel's, never linked over.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def _link_missing(source: Path, target: Path) -> None:
    """Link every entry of ``source`` that ``target`` lacks; where both have a folder, look inside."""
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        there = target / entry.name
        if there.is_dir() and entry.is_dir() and not there.is_symlink():
            _link_missing(entry, there)
        elif not there.exists() and not there.is_symlink():
            there.symlink_to(entry)


def install(work: Path) -> Installed:
    wheel = build_wheel(work / "dist")
    env_dir = work / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing the wheel failed:\n{done.stdout}\n{done.stderr}")
    base = Path(sys.base_prefix if sys.prefix == sys.base_prefix else sys.prefix)
    for folder in ("share/jupyter", "etc/jupyter"):
        _link_missing(base / folder, env_dir / folder)
    installed = Installed(env_dir, wheel)
    check = installed.run("-c", "import slicebox_lab; print(slicebox_lab.__file__)", cwd=work)
    where = Path(check.stdout.strip())
    if check.returncode != 0 or not where.is_relative_to(env_dir):
        raise RuntimeError(f"the venv does not import the wheel: {check.stdout} {check.stderr}")
    return installed
