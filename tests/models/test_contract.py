"""The contract every registered model keeps, checked on each of them at its ``example_params``, on
every task it declares. A new model is enrolled by registering (``@register_model``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from converge.models import RestoreInfo, Restorer, build_model, registered_models
from converge.physics import OperatorBatch
from converge.physics.tasks import make_task
from converge.tiling import tiled_apply
from converge.train.trainer import task_level
from converge.zoo import load_weights, save_weights

SIZE = 40
CASES = [(name, task) for name, cls in registered_models().items() for task in cls.tasks]


def build(name: str, task: str) -> Restorer:
    torch.manual_seed(0)
    cls = registered_models()[name]
    channels = 3 if task == "demosaic" else 1
    return build_model(name, {**cls.example_params, "channels": channels}).eval()


def degraded(model: Restorer, task: str, batch: int, seed: int = 0) -> tuple[torch.Tensor, list, torch.Tensor]:
    """``batch`` degraded images (each with its own operator), the operators and the levels."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, model.channels, SIZE, SIZE, generator=generator) * 0.6 + 0.2
    made = make_task(task)
    pairs = [made.degrade(clean[index : index + 1], generator) for index in range(batch)]
    levels = torch.full((batch,), task_level(made), dtype=torch.float32)
    return torch.cat([y for y, _ in pairs]), [operator for _, operator in pairs], levels


@pytest.mark.parametrize(("name", "task"), CASES, ids=[f"{name}-{task}" for name, task in CASES])
def test_restore_keeps_the_layout_clamps_and_reports(name: str, task: str) -> None:
    model = build(name, task)
    y, operators, _ = degraded(model, task, batch=1)
    sigma = make_task(task).noise.sigma.item() if make_task(task).noise is not None else None
    # The image lies on the measurement's grid (larger than a super-resolution measurement).
    image_shape = operators[0].to_grid(y).shape
    with torch.no_grad():
        x = model(y, physics=operators[0], sigma=sigma)
    assert x.shape == image_shape and x.dtype == y.dtype
    restored, info = model.restore(y, physics=operators[0], sigma=sigma)
    assert restored.shape == image_shape and float(restored.min()) >= 0.0 and float(restored.max()) <= 1.0
    assert isinstance(info, RestoreInfo) and info.seconds >= 0.0
    assert torch.isfinite(restored).all()


@pytest.mark.parametrize(("name", "task"), CASES, ids=[f"{name}-{task}" for name, task in CASES])
def test_gradients_reach_the_parameters_through_a_batched_operator(name: str, task: str) -> None:
    model = build(name, task).train()
    measured, operators, levels = degraded(model, task, batch=2)
    # Training batches hold their measurements on the image grid (PatchDataset, collate_patches).
    y = torch.cat([operator.to_grid(measured[index : index + 1]) for index, operator in enumerate(operators)])
    batch = OperatorBatch(operators)
    x = model.training_forward(y, batch, levels)
    assert x.shape == y.shape
    x.square().mean().backward()
    gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    assert gradients and all(torch.isfinite(gradient).all() for gradient in gradients)
    assert any(bool(gradient.abs().sum() > 0) for gradient in gradients)
    if not model.training_skips_parameters:
        assert len(gradients) == len(list(model.parameters()))


@pytest.mark.parametrize(("name", "task"), CASES, ids=[f"{name}-{task}" for name, task in CASES])
def test_weights_round_trip_through_safetensors(name: str, task: str, tmp_path: Path) -> None:
    model = build(name, task)
    path = save_weights(model, {"task": task}, tmp_path / f"{name}.safetensors")
    loaded = load_weights(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    y, operators, _ = degraded(model, task, batch=1)
    with torch.no_grad():
        assert torch.equal(loaded(y, physics=operators[0]), model(y, physics=operators[0]))


TILED = [(name, task) for name, task in CASES if task in ("denoise", "deblock")]


@pytest.mark.parametrize(("name", "task"), TILED, ids=[f"{name}-{task}" for name, task in TILED])
def test_tiles_with_the_declared_radius_give_the_whole_image(name: str, task: str) -> None:
    model = build(name, task)
    radius = model.receptive_radius
    if radius is None:
        pytest.skip(f"{name} declares no receptive radius: it is never restored in tiles")
    y, operators, _ = degraded(model, task, batch=1)
    with torch.no_grad():
        whole = model(y, physics=operators[0])
        tiled = tiled_apply(lambda crop: model(crop, physics=operators[0]), y, tile=16, halo=radius, overlap=4)
    difference = float((tiled - whole).abs().max())
    if model.exact_tiling:
        assert difference < 1e-5
    else:
        # An approximate radius: close to the whole image, but not equal (else it should say exact).
        assert 0.0 < difference < 0.1


def test_every_registered_model_declares_valid_tasks_and_options() -> None:
    from converge.physics.tasks import task_names

    assert set(registered_models()) >= {"dncnn", "durr", "groupsc", "nerd", "unet"}
    for name, cls in registered_models().items():
        assert cls.registry_name == name and set(cls.tasks) <= set(task_names()), name
        for option in cls.inference_options.values():
            assert option.description and callable(option.check)
