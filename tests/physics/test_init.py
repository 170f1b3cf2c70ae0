import doctest
import importlib
import subprocess
import sys

import pytest

import converge.physics

MODULES = ["base", "kernels", "blur", "downsample", "mask", "mosaic", "jpeg", "noise", "tasks"]


def test_public_names_are_exported():
    for name in converge.physics.__all__:
        assert hasattr(converge.physics, name), name


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"converge.physics.{module}"))
    assert result.failed == 0


def test_import_stays_light():
    code = (
        "import sys, converge.physics; "
        "heavy = [m for m in ('PIL', 'scipy', 'skimage', 'bm3d', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
