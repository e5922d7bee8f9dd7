"""slicebox_lab.server.memory: glibc's malloc is told to keep image-sized buffers; other C libraries are left alone."""

from __future__ import annotations

import platform
import subprocess
import sys

from slicebox_lab.app import SliceboxApp
from slicebox_lab.server.memory import tune_malloc


def test_tune_malloc_applies_on_glibc_and_changes_nothing_elsewhere():
    # in a fresh interpreter: the settings are process-wide
    code = "from slicebox_lab.server.memory import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")


def test_tune_malloc_can_be_applied_again():
    assert tune_malloc() == (platform.libc_ver()[0] == "glibc")
    assert tune_malloc() == (platform.libc_ver()[0] == "glibc")


def test_the_node_tunes_malloc_unless_configured_not_to():
    assert SliceboxApp.malloc_tuning.default_value is True
    assert "malloc" in SliceboxApp.class_get_trait_help(SliceboxApp.malloc_tuning)
