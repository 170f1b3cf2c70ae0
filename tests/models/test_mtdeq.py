import math
from pathlib import Path

import pytest
import torch

from converge.baselines import bicubic_upsample
from converge.deq import relative_residual
from converge.errors import ConfigError
from converge.models import build_model
from converge.models.mtdeq import MTDEQ, MTDEQConfig
from converge.models.unet import UNetDenoiser
from converge.physics import Downsample, GaussianBlur, Identity, OperatorBatch, PixelMask, RandomPixelDrop
from converge.train.trainer import load_init_weights
from converge.zoo import load_weights, save_weights

TINY = {"channels": 1, "widths": (4, 8, 8, 8), "blocks": 1}
SIZE = 24


def tiny(**overrides) -> MTDEQ:
    torch.manual_seed(0)
    return MTDEQ(MTDEQConfig(**{**TINY, "max_iter": 8, **overrides})).eval()


def clean(batch: int = 1, channels: int = 1, seed: int = 1) -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(batch, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def fb_step(model: MTDEQ, z: torch.Tensor, y: torch.Tensor, operator: OperatorBatch, sigma: torch.Tensor) -> torch.Tensor:
    """One forward-backward step written out from the operator's forward and adjoint."""
    eta = model.config.eta
    gradient = operator.adjoint(operator(z) - y)
    return model.prior.denoise(z - eta * gradient, eta * sigma)


def mask(seed: int = 2, p: float = 0.5) -> PixelMask:
    return RandomPixelDrop(p).sample((1, 1, SIZE, SIZE), torch.Generator().manual_seed(seed))


def test_the_solution_is_a_forward_backward_fixed_point() -> None:
    model = tiny(max_iter=200, tol=1e-10).double()
    operator = OperatorBatch([GaussianBlur(1.2, size=9), Downsample(2)])
    x = clean(2).double()
    y = operator(x) + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    y = torch.cat([y[:1], operator.operators[1].to_grid(operator.operators[1].from_grid(y[1:]))])
    sigma = torch.tensor([0.02, 0.02], dtype=torch.float64)
    with torch.no_grad():
        z_star = model(y, physics=operator, sigma=sigma)
        residual = relative_residual(z_star, fb_step(model, z_star, y, operator, sigma))
    info = model.deq.last_info
    assert info.all_converged and bool((info.iterations > 2).all())
    assert bool((residual <= 1e-10).all())
    assert not torch.allclose(z_star, y)


def test_the_prior_is_told_eta_times_the_noise_level() -> None:
    model = tiny(max_iter=1)
    seen = []
    model.prior.register_forward_hook(lambda module, args, kwargs, out: seen.append(kwargs["sigma"]), with_kwargs=True)
    with torch.no_grad():
        model(clean(2), physics=Identity(), sigma=torch.tensor([0.1, 0.2]))
    assert torch.allclose(seen[0], 0.49 * torch.tensor([0.1, 0.2]))


def test_jfb_gradients_are_those_of_one_step_at_the_equilibrium_and_reach_the_prior() -> None:
    model = tiny(tol=1e-4, max_iter=30).train()
    operator = OperatorBatch([GaussianBlur(1.6, size=9), mask()])
    x = clean(2)
    y = operator(x)
    level = torch.tensor([5.0, 0.0])
    model.training_forward(y, operator, level).sub(x).square().mean().backward()
    gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    assert set(gradients) == {f"prior.{name}" for name, _ in model.prior.named_parameters()}
    assert all(bool(gradient.abs().sum() > 0) for gradient in gradients.values())

    model.zero_grad()
    with torch.no_grad():
        z_star = model(y, physics=operator, sigma=level / 255)
    fb_step(model, z_star, y, operator, level / 255).sub(x).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, gradients[name], rtol=1e-4, atol=1e-7), name


def test_each_sample_of_a_multi_task_batch_is_restored_with_its_own_operator() -> None:
    model = tiny(max_iter=6)
    blur, downsample, drop = GaussianBlur(1.2, size=9), Downsample(2), mask()
    x = clean(3)
    generator = torch.Generator().manual_seed(4)
    own = [blur(x[:1]), downsample(x[1:2]), drop(x[2:])]
    own = [measured + 0.01 * torch.randn(measured.shape, generator=generator) for measured in own]
    batch = OperatorBatch([blur, downsample, drop])
    grid = torch.cat([operator.to_grid(measured) for operator, measured in zip(batch.operators, own)])
    sigma = torch.tensor([0.01, 0.02, 0.0])
    with torch.no_grad():
        together = model(grid, physics=batch, sigma=sigma)
        for index, (operator, measured) in enumerate(zip(batch.operators, own)):
            alone = model(measured, physics=operator, sigma=float(sigma[index]))
            assert alone.shape == (1, 1, SIZE, SIZE)
            assert torch.allclose(together[index : index + 1], alone, atol=1e-5), index
    assert not torch.allclose(together[0], together[1], atol=1e-2)


def test_start_points_upsample_sr_and_fill_missing_pixels_with_a_half() -> None:
    x = clean(3)
    downsample, drop = Downsample(2), mask(p=0.6)
    batch = OperatorBatch([downsample, drop, GaussianBlur(1.6, size=9)])
    y = batch(x)
    start = MTDEQ.start_point(y, batch)
    assert torch.equal(start[0:1], bicubic_upsample(downsample(x[0:1]), 2))
    kept = drop.mask.bool().expand_as(y[1:2])
    assert torch.equal(start[1:2][kept], y[1:2][kept])
    assert bool((start[1:2][~kept] == 0.5).all()) and bool((~kept).any())
    assert torch.equal(start[2], y[2])


def test_a_plain_operator_takes_its_own_measurement_and_returns_the_image() -> None:
    model = tiny()
    low = Downsample(4)(clean(2, channels=3))
    x, info = model.restore(low, physics=Downsample(4), sigma=0.0)
    assert x.shape == (2, 3, SIZE, SIZE)
    assert isinstance(info.iterations, list) and len(info.iterations) == 2 and len(info.converged) == 2
    assert info.residuals and all(math.isfinite(value) for value in info.residuals)


def test_unknown_levels_are_estimated_for_full_images_and_zero_for_sr_and_completion() -> None:
    model = tiny()
    noisy = clean(1) + 0.1 * torch.randn(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    batch = OperatorBatch([Identity(), Downsample(2), mask()])
    levels = model._noise_levels(None, torch.cat([noisy] * 3), batch)
    assert float(levels[0]) > 0.05 and levels[1:].tolist() == [0.0, 0.0]
    with torch.no_grad():
        nan_level = model.training_forward(noisy, OperatorBatch([Identity()]), torch.tensor([math.nan]))
        estimated = model(noisy, sigma=float(levels[0]))
    assert torch.allclose(nan_level, estimated)


def test_weights_hold_the_prior_under_prior_and_round_trip(tmp_path: Path) -> None:
    model = tiny()
    assert all(name.startswith("prior.") for name in model.state_dict())
    loaded = load_weights(save_weights(model, {"task": None}, tmp_path / "mtdeq.safetensors"))
    y = clean(1)
    with torch.no_grad():
        assert torch.equal(loaded(y, sigma=0.05), model(y, sigma=0.05))


def test_a_run_starts_from_unet_weights_of_the_priors_parameters(tmp_path: Path) -> None:
    torch.manual_seed(7)
    gauss = UNetDenoiser(MTDEQConfig(**TINY).prior_config)
    path = save_weights(gauss, {"task": "denoise"}, tmp_path / "gauss.safetensors")
    model = tiny()
    load_init_weights(model, path)
    for name, tensor in gauss.state_dict().items():
        assert torch.equal(model.prior.state_dict()[name], tensor), name

    with pytest.raises(ConfigError, match=r"widths \[4, 8, 8, 16\].*give the MTDEQ the prior's parameters"):
        load_init_weights(tiny(widths=(4, 8, 8, 16)), path)
    dncnn = save_weights(build_model("dncnn", {"depth": 3, "features": 4}), None, tmp_path / "dncnn.safetensors")
    with pytest.raises(ConfigError, match="saved for a dncnn model"):
        load_init_weights(tiny(), dncnn)
    other = save_weights(tiny(max_iter=3), None, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="saved for a mtdeq model"):
        load_init_weights(tiny(), other)


def test_adopting_unet_weights_whose_tensors_do_not_fit_raises() -> None:
    tensors = {**UNetDenoiser(MTDEQConfig(**TINY).prior_config).state_dict(), "extra": torch.zeros(1)}
    with pytest.raises(ConfigError, match="do not fit"):
        tiny().adopt_weights(tensors, {"channels": 1, "widths": [4, 8, 8, 8], "blocks": 1}, "unet")
    with pytest.raises(ConfigError, match="cannot build"):
        tiny().adopt_weights(tensors, {"channels": 2}, "unet")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"eta": 0.0}, "eta must be a positive"),
        ({"solver_options": {"tol": 1e-3}}, "set tol as MTDEQ parameters of their own"),
        ({"solver_options": {"memory": 3}}, "Unknown option"),
        ({"solver": "newton"}, "solver must be one of"),
        ({"backward": "magic"}, "backward must be one of"),
        ({"widths": (4, 8)}, "widths must be 4"),
        ({"tol": "small"}, "tol must be a number"),
    ],
)
def test_bad_parameters_raise(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MTDEQConfig(**{**TINY, **overrides})


def test_numbers_that_yaml_reads_as_strings_are_numbers() -> None:
    assert MTDEQConfig(**TINY, bound="1.0e10").bound == 1e10


def test_the_defaults_are_the_papers() -> None:
    config = MTDEQConfig()
    assert (config.channels, config.widths, config.blocks) == (3, (64, 128, 256, 512), 4)
    assert (config.eta, config.max_iter, config.bound, config.backward) == (0.49, 350, 1e10, "jfb")
    # The paper's MSE(z_k - z_{k-1}) < 1e-7 for an image of RMS 0.48.
    assert config.tol == pytest.approx(math.sqrt(1e-7) / 0.48, rel=0.01)


def test_other_backward_modes_and_solvers_are_a_config_change() -> None:
    operator = OperatorBatch([GaussianBlur(1.2, size=9)])
    for overrides in ({"backward": "phantom", "phantom_steps": 2}, {"backward": "unroll", "max_iter": 3},
                      {"backward": "ift"}, {"solver": "fixed_point", "solver_options": {"damping": 0.8}}):
        model = tiny(**overrides).train()
        model.training_forward(operator(clean(1)), operator, torch.tensor([2.55])).square().mean().backward()
        assert all(parameter.grad is not None for parameter in model.parameters()), overrides


def test_set_inference_changes_the_solvers_budget() -> None:
    model = tiny(tol=0.0)
    model.set_inference(max_iter=3)
    _, info = model.restore(clean(1), sigma=0.05)
    assert info.iterations == [3]
    with pytest.raises(ConfigError):
        model.set_inference(max_iter=0)
