"""Tiled inference reproduces whole-image inference for models whose receptive field fits in the halo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from converge.errors import ConfigError
from converge.tiling import tiled_apply

RADIUS = 3  # three stacked 3x3 convolutions


def conv_net(channels_in: int = 1, channels_out: int = 1, padding_mode: str = "zeros") -> nn.Module:
    """A random float64 CNN whose output depends on inputs within ``RADIUS`` pixels (and on the border)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(channels_in, 8, 3, padding=1, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode=padding_mode),
        nn.Tanh(),
        nn.Conv2d(8, channels_out, 3, padding=1, padding_mode=padding_mode),
    )
    return net.double()


@pytest.mark.parametrize("size", [(37, 53), (64, 41), (9, 130)])
@pytest.mark.parametrize(("tile", "halo", "overlap"), [(16, 3, 4), (23, 5, 0), (8, 3, 8), (40, 7, 5)])
def test_matches_whole_image_when_halo_covers_receptive_field(size, tile, halo, overlap):
    net = conv_net()
    y = torch.rand(1, 1, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(y)
        tiled = tiled_apply(net, y, tile=tile, halo=halo, overlap=overlap)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-12)


def test_reflect_padding_model_also_matches():
    net = conv_net(padding_mode="reflect")
    y = torch.rand(1, 1, 45, 38, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(tiled_apply(net, y, tile=12, halo=3, overlap=3), net(y), rtol=0, atol=1e-12)


def test_halo_smaller_than_receptive_field_differs():
    net = conv_net()
    y = torch.rand(1, 1, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        error = (tiled_apply(net, y, tile=16, halo=RADIUS - 1, overlap=4) - net(y)).abs().max()
    assert error > 1e-6


def test_batch_and_channel_change():
    net = conv_net(channels_in=3, channels_out=2)
    y = torch.rand(2, 3, 33, 29, dtype=torch.float64)
    with torch.no_grad():
        tiled = tiled_apply(net, y, tile=10, halo=4, overlap=3)
        torch.testing.assert_close(tiled, net(y), rtol=0, atol=1e-12)
    assert tiled.shape == (2, 2, 33, 29)


def test_float32_matches_to_float_tolerance():
    net = conv_net().float()
    y = torch.rand(1, 1, 51, 47)
    with torch.no_grad():
        torch.testing.assert_close(tiled_apply(net, y, tile=16, halo=3, overlap=6), net(y), rtol=0, atol=1e-5)


def test_pointwise_function_is_reproduced():
    y = torch.rand(2, 3, 41, 67, dtype=torch.float64)
    out = tiled_apply(lambda t: torch.sigmoid(5 * t - 2), y, tile=13, halo=0, overlap=5)
    torch.testing.assert_close(out, torch.sigmoid(5 * y - 2), rtol=0, atol=1e-14)


def test_constant_function_is_preserved():
    y = torch.rand(1, 1, 50, 31, dtype=torch.float64)
    out = tiled_apply(lambda t: torch.full_like(t, 0.7), y, tile=7, halo=2, overlap=3)
    torch.testing.assert_close(out, torch.full_like(y, 0.7), rtol=0, atol=1e-14)


def test_image_smaller_than_tile_is_one_call_on_the_whole_image():
    seen = []
    y = torch.rand(1, 1, 20, 30)
    out = tiled_apply(lambda t: seen.append(t.shape) or t * 2, y, tile=64)
    assert seen == [y.shape]
    torch.testing.assert_close(out, 2 * y)


def test_progress_counts_every_tile():
    calls = []
    tiled_apply(lambda t: t, torch.rand(1, 1, 50, 70), tile=16, halo=2, overlap=2, progress=lambda *a: calls.append(a))
    total = math.ceil(50 / 16) * math.ceil(70 / 16)
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_max_pixels_runs_whole_image_when_it_fits():
    seen = []
    y = torch.rand(1, 1, 40, 60)
    tiled_apply(lambda t: seen.append(t.shape) or t, y, max_pixels=40 * 60)
    assert seen == [y.shape]


def test_max_pixels_bounds_every_crop_and_stays_exact():
    net = conv_net()
    y = torch.rand(1, 1, 70, 83, dtype=torch.float64)
    budget = 30 * 30
    crops = []

    def recorded(t):
        crops.append(t.shape[-2] * t.shape[-1])
        return net(t)

    with torch.no_grad():
        out = tiled_apply(recorded, y, halo=3, overlap=4, max_pixels=budget)
        torch.testing.assert_close(out, net(y), rtol=0, atol=1e-12)
    assert len(crops) > 1
    assert max(crops) <= budget


def test_gradients_follow_the_caller():
    net = conv_net()
    y = torch.rand(1, 1, 30, 30, dtype=torch.float64, requires_grad=True)
    tiled_grad = torch.autograd.grad(tiled_apply(net, y, tile=8, halo=3, overlap=2).square().sum(), y)[0]
    whole_grad = torch.autograd.grad(net(y).square().sum(), y)[0]
    torch.testing.assert_close(tiled_grad, whole_grad, rtol=0, atol=1e-12)
    with torch.no_grad():
        assert not tiled_apply(net, y, tile=8, halo=3, overlap=2).requires_grad


@pytest.mark.parametrize(
    "options",
    [
        {"tile": 0},
        {"tile": -8},
        {"tile": 8, "overlap": 9},
        {"halo": -1},
        {"overlap": -1},
        {"tile": 32, "max_pixels": 10_000},
        {"max_pixels": 0},
        {"halo": 8, "overlap": 8, "max_pixels": 900},
    ],
)
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        tiled_apply(lambda t: t, torch.rand(1, 1, 64, 64), **options)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="non-empty"):
        tiled_apply(lambda t: t, torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="spatial size"):
        tiled_apply(lambda t: t[..., 1:, :], torch.rand(1, 1, 64, 64), tile=16)


def test_memory_plan_is_one_piece_when_the_image_fits_and_tiles_within_the_budget_otherwise():
    from converge.tiling import PROCESS_ALLOWANCE, tile_pixels_for_memory

    assert tile_pixels_for_memory((1, 1, 100, 100), 1, 400.0, halo=10, budget=PROCESS_ALLOWANCE + 10**7) is None
    budget = PROCESS_ALLOWANCE + 4 * 3 * 2000**2 + 400 * 300**2
    pixels = tile_pixels_for_memory((1, 1, 2000, 2000), 1, 400.0, halo=10, budget=budget)
    assert pixels is not None and 400 * pixels <= budget - PROCESS_ALLOWANCE - 4 * 3 * 2000**2
    assert pixels == pytest.approx(300**2, rel=1e-6)
    colour = tile_pixels_for_memory((1, 3, 2000, 2000), 3, 400.0, halo=10, budget=budget + 4 * 4 * 2000**2)
    assert colour == pytest.approx(300**2, rel=1e-6)
    with pytest.raises(ConfigError, match=r"2000x2000 image needs about .* GiB even in the smallest tiles"):
        tile_pixels_for_memory((1, 1, 2000, 2000), 1, 400.0, halo=10, budget=PROCESS_ALLOWANCE + 4 * 3 * 2000**2)
