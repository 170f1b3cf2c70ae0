"""The restorer contract every model follows.

A restorer maps an observation ``y`` (``(B, C, H, W)`` float in [0, 1]), optionally the degradation
that made it (``physics``) and the noise level ``sigma`` (on the same [0, 1] scale: ``25 / 255`` for
"sigma 25", a float or a ``(B,)`` tensor) to an estimate ``x`` of the clean image of the same layout.
``forward`` is the differentiable map used in training; ``restore`` is inference: no autograd, output
clamped to [0, 1], and a :class:`RestoreInfo` saying how the loop went.
"""

from __future__ import annotations

import time
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.physics.base import Operator

Sigma = float | Tensor


@dataclass
class RestoreInfo:
    """How one call to :meth:`Restorer.restore` went.

    ``iterations``: loop count, one int for the batch or one per sample; ``residuals``: relative
    fixed-point residual per iteration (``None`` for a model without a loop); ``seconds``: wall time;
    ``extra``: model-specific details (for instance a policy's stop probabilities).
    """

    iterations: int | list[int]
    residuals: list[float] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Restorer(nn.Module, metaclass=ABCMeta):
    """Base of every model: ``forward(y, physics, sigma) -> x`` plus a timed, gradient-free ``restore``."""

    training_skips_parameters = False
    """Whether :meth:`training_forward` leaves some parameters out (DURR's policy unit), which
    distributed training must then look for at every step."""

    @abstractmethod
    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Estimate ``x`` ``(B, C, H, W)`` from ``y``; differentiable, output not clamped."""

    def training_forward(self, y: Tensor, level: Tensor) -> Tensor:
        """The map the trainer fits: ``y`` ``(B, C, H, W)`` -> ``x`` ``(B, C, H, W)``, differentiable.

        ``level`` ``(B,)`` float is the degradation level each training sample was made at (noise
        sigma in 8-bit levels, JPEG quality, or NaN when the task has none). It is the hook through
        which a model may use what it was trained at (DURR unfolds each sample for the loops its
        refined policy assigns to that level); the default ignores it and returns ``self(y)``.
        """
        return self(y)

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: ``forward`` under ``torch.no_grad``, clamped to [0, 1], with a one-iteration info.

        Models with a loop override this to report their iteration counts and residuals.
        """
        start = time.perf_counter()
        with torch.no_grad():
            x = self(y, physics=physics, sigma=sigma).clamp(0.0, 1.0)
        return x, RestoreInfo(iterations=1, seconds=time.perf_counter() - start)

    def _on_model_channels(self, y: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply ``run`` to ``y`` ``(B, C, H, W)`` at the channel count in ``self.config.channels``.

        A gray model given a colour image processes each channel as its own gray image (valid for
        noise independent across channels); any other mismatch raises :class:`ConfigError`.
        """
        samples = self._channels_as_samples(y)
        return run(y) if samples is y else run(samples).reshape(y.shape)

    def _channels_as_samples(self, y: Tensor) -> Tensor:
        """``y`` ``(B, C, H, W)`` as the model's input: ``y`` itself at the model's channel count, each
        channel its own gray sample ``(B * C, 1, H, W)`` for a gray model; else :class:`ConfigError`."""
        expected = self.config.channels
        if y.shape[1] == expected:
            return y
        if expected == 1:
            return y.reshape(-1, 1, *y.shape[2:])
        raise ConfigError(f"this {type(self).__name__} expects {expected}-channel images, got {y.shape[1]} channels")
