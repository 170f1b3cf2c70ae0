import pytest
import torch

from converge.errors import ConfigError
from converge.physics.mask import PixelMask, RandomPixelDrop


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8, 0.9])
def test_drop_fraction_is_close_to_p(p):
    mask = RandomPixelDrop(p).sample((2, 3, 64, 64), torch.Generator().manual_seed(0)).mask
    assert abs(1.0 - float(mask.mean()) - p) < 0.02


def test_mask_is_shared_by_the_channels_and_differs_between_images():
    drop = RandomPixelDrop(0.5)
    x = torch.rand(2, 3, 16, 16) + 0.1
    y = drop(x, torch.Generator().manual_seed(3))
    missing = y == 0
    assert torch.equal(missing[:, :1].expand_as(missing), missing)
    assert not torch.equal(missing[0], missing[1])


def test_sampling_is_reproducible_and_matches_calling_the_operator():
    drop = RandomPixelDrop(0.6)
    first = drop.sample((1, 1, 20, 20), torch.Generator().manual_seed(7)).mask
    second = drop.sample((1, 1, 20, 20), torch.Generator().manual_seed(7)).mask
    other = drop.sample((1, 1, 20, 20), torch.Generator().manual_seed(8)).mask
    assert torch.equal(first, second) and not torch.equal(first, other)
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(drop(x, torch.Generator().manual_seed(7)), x * first)


def test_drop_rule_uses_one_uniform_per_pixel():
    uniform = torch.rand((1, 1, 10, 10), generator=torch.Generator().manual_seed(5))
    mask = RandomPixelDrop(0.3).sample((1, 4, 10, 10), torch.Generator().manual_seed(5)).mask
    assert torch.equal(mask.bool(), uniform >= 0.3)


def test_zero_probability_keeps_everything():
    mask = RandomPixelDrop(0.0).sample((1, 1, 8, 8), torch.Generator().manual_seed(0)).mask
    assert bool(mask.all())


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_probability_raises(p):
    with pytest.raises(ConfigError):
        RandomPixelDrop(p)


def test_pixel_mask_validates_its_mask():
    with pytest.raises(ConfigError):
        PixelMask(torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ConfigError):
        PixelMask(torch.ones(4, 4))
    assert torch.equal(PixelMask(torch.ones(1, 1, 2, 2, dtype=torch.bool)).mask, torch.ones(1, 1, 2, 2))


def test_prox_keeps_observed_pixels_exactly_as_rho_vanishes():
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    operator = PixelMask(mask)
    z, y = torch.full((1, 1, 2, 2), 0.5), torch.tensor([[[[0.9, 0.0], [0.0, 0.1]]]])
    out = operator.prox_data(z, y, 1e-12)
    assert torch.allclose(out, torch.tensor([[[[0.9, 0.5], [0.5, 0.1]]]]))
