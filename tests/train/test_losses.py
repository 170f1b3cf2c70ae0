import math

import pytest
import torch

from converge.errors import ConfigError
from converge.train.losses import CHARBONNIER_EPS, LOSSES, get_loss


def test_values_on_a_constant_error() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x_hat = x + 0.5
    y = x + 0.1
    assert float(get_loss("mse")(x_hat, x, y)) == pytest.approx(0.25)
    assert float(get_loss("l1")(x_hat, x, y)) == pytest.approx(0.5)
    assert float(get_loss("charbonnier")(x_hat, x, y)) == pytest.approx(math.sqrt(0.25 + CHARBONNIER_EPS**2))


def test_noise_mse_is_dncnn_residual_loss() -> None:
    torch.manual_seed(0)
    x, y, x_hat = torch.rand(3, 2, 5, 5), torch.rand(3, 2, 5, 5), torch.rand(3, 2, 5, 5)
    expected = sum(((y[i] - x_hat[i]) - (y[i] - x[i])).square().sum() for i in range(3)) / (2 * 3)
    assert torch.allclose(get_loss("noise_mse")(x_hat, x, y), expected)
    scale = 2 * 5 * 5 / 2
    assert torch.allclose(get_loss("noise_mse")(x_hat, x, y), scale * get_loss("mse")(x_hat, x, y))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_zero_at_the_target_and_differentiable(name: str) -> None:
    x = torch.rand(1, 1, 6, 6)
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    loss = get_loss(name)(x_hat, x, x + 0.2)
    loss.backward()
    assert x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0
    floor = CHARBONNIER_EPS if name == "charbonnier" else 0.0
    assert float(get_loss(name)(x, x, x + 0.2)) == pytest.approx(floor)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_weights_weigh_each_pixels_error_and_equal_weights_change_nothing(name: str) -> None:
    torch.manual_seed(1)
    x, y, x_hat = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    loss = get_loss(name)
    assert torch.allclose(loss(x_hat, x, y, torch.ones(1, 1, 4, 5)), loss(x_hat, x, y))
    weights = torch.zeros(1, 1, 4, 5)
    weights[..., 1, 2] = 20.0  # mean 1, all the weight on one pixel
    one_pixel = loss(x_hat[..., 1:2, 2:3], x[..., 1:2, 2:3], y[..., 1:2, 2:3])
    pixels = 1 if name == "noise_mse" else 20  # noise_mse sums, the others average over the 20 pixels
    assert torch.allclose(loss(x_hat, x, y, weights), one_pixel * 20 / pixels)


def test_unknown_loss_raises() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        get_loss("huber")
