"""Training losses: each maps ``(x_hat, x, y, weights)`` to a scalar, images ``(B, C, H, W)`` in [0, 1].

``y`` is the observation; only ``noise_mse`` uses it. ``weights``: ``None`` (every value counts the
same), or a tensor that broadcasts to ``x``, a weight per pixel with mean 1 (a model's
:meth:`~converge.models.base.Restorer.training_loss_weights`); each loss then weighs each value's
error by it, so equal weights give the unweighted loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from converge.errors import ConfigError

CHARBONNIER_EPS = 1e-3

Loss = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _weighted(errors: Tensor, weights: Tensor | None) -> Tensor:
    """``errors`` times ``weights`` (broadcast), or ``errors`` when there are none."""
    return errors if weights is None else errors * weights


def mse(x_hat: Tensor, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error ``mean(w (x_hat - x)^2)``."""
    return _weighted((x_hat - x).square(), weights).mean()


def l1(x_hat: Tensor, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean absolute error ``mean(w |x_hat - x|)``."""
    return _weighted((x_hat - x).abs(), weights).mean()


def charbonnier(x_hat: Tensor, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Smooth L1: ``mean(w sqrt((x_hat - x)^2 + eps^2))`` with ``eps = 1e-3``."""
    return _weighted(torch.sqrt((x_hat - x).square() + CHARBONNIER_EPS**2), weights).mean()


def noise_mse(x_hat: Tensor, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """DnCNN's residual loss ``1/(2B) sum_i ||(y_i - x_hat_i) - (y_i - x_i)||^2`` (each squared error times ``w``).

    It compares the predicted noise ``y - x_hat`` with the true noise ``y - x``; summed per image, so
    its gradients are ``H W C / 2`` times those of :func:`mse` (Adam is insensitive to that scale).
    """
    predicted_noise = y - x_hat
    true_noise = y - x
    return _weighted((predicted_noise - true_noise).square(), weights).sum() / (2 * x.shape[0])


LOSSES: dict[str, Loss] = {"mse": mse, "l1": l1, "charbonnier": charbonnier, "noise_mse": noise_mse}


def get_loss(name: str) -> Loss:
    """The loss registered under ``name``; unknown names raise :class:`ConfigError`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}") from None
