"""The worked example of docs/adding-a-model.md builds, registers and trains as the page says."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from converge.models import build_model, model_name, registry
from converge.train.config import config_from_dict
from converge.train.trainer import LOG, Trainer
from converge.zoo import load_weights

PAGE = Path(__file__).resolve().parents[1] / "docs" / "adding-a-model.md"


def block(language: str) -> str:
    """The first fenced ``language`` block of the page."""
    return re.search(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL).group(1)


@pytest.fixture
def example_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The page's module, registered for this test only."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry.registered_models()))
    module = types.ModuleType("tiny_denoiser_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(block("python"), str(PAGE), "exec"), module.__dict__)
    return module


def test_the_example_registers_and_trains_a_few_steps(example_module, tmp_path: Path) -> None:
    model = build_model("tiny-denoiser", {"features": 4})
    assert model_name(model) == "tiny-denoiser" and isinstance(model, example_module.TinyDenoiser)
    config = config_from_dict(yaml.safe_load(block("yaml")))
    images = [torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(seed)) for seed in range(2)]
    exported = Trainer(config, tmp_path / "run", progress=False, train_images=images).run()
    steps = [line for line in (tmp_path / "run" / LOG).read_text().splitlines() if '"loss"' in line]
    assert steps and '"step": 3' in steps[-1]
    trained = load_weights(exported)
    noisy = torch.rand(1, 1, 20, 20)
    restored, info = trained.restore(noisy, sigma=25 / 255)
    assert restored.shape == noisy.shape and info.iterations == 1
    assert not torch.equal(trained.body[0].weight, model.body[0].weight)
