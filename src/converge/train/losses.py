"""Training losses: each maps ``(x_hat, x, y)`` to a scalar, images ``(B, C, H, W)`` in [0, 1].

``y`` is the observation; only ``noise_mse`` uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from converge.errors import ConfigError

CHARBONNIER_EPS = 1e-3

Loss = Callable[[Tensor, Tensor, Tensor], Tensor]


def mse(x_hat: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error ``mean((x_hat - x)^2)``."""
    return (x_hat - x).square().mean()


def l1(x_hat: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute error ``mean(|x_hat - x|)``."""
    return (x_hat - x).abs().mean()


def charbonnier(x_hat: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Smooth L1: ``mean(sqrt((x_hat - x)^2 + eps^2))`` with ``eps = 1e-3``."""
    return torch.sqrt((x_hat - x).square() + CHARBONNIER_EPS**2).mean()


def noise_mse(x_hat: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """DnCNN's residual loss ``1/(2B) sum_i ||(y_i - x_hat_i) - (y_i - x_i)||^2``.

    It compares the predicted noise ``y - x_hat`` with the true noise ``y - x``; summed per image, so
    its gradients are ``H W C / 2`` times those of :func:`mse` (Adam is insensitive to that scale).
    """
    predicted_noise = y - x_hat
    true_noise = y - x
    return (predicted_noise - true_noise).square().sum() / (2 * x.shape[0])


LOSSES: dict[str, Loss] = {"mse": mse, "l1": l1, "charbonnier": charbonnier, "noise_mse": noise_mse}


def get_loss(name: str) -> Loss:
    """The loss registered under ``name``; unknown names raise :class:`ConfigError`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}") from None
