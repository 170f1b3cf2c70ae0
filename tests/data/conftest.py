"""Shared fixtures: a private verification cache and an image reader for ``load_images``."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep verification markers out of the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CONVERGE_CACHE", str(cache))
    return cache


@pytest.fixture
def image_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use ``converge.imageio`` when it exists, else a Pillow stand-in with the same contract."""
    if importlib.util.find_spec("converge.imageio") is not None:
        return

    def read_image(path: Path) -> torch.Tensor:
        array = np.asarray(Image.open(path), dtype=np.float32) / 255.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array))[None]

    module = types.ModuleType("converge.imageio")
    module.read_image = read_image
    monkeypatch.setitem(sys.modules, "converge.imageio", module)
