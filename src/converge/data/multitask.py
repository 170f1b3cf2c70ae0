"""Multi-task training degradations (MTDEQ, Willingham et al.): one problem and one noise level per patch.

A patch ``x`` ``(1, C, p, p)`` in [0, 1] is degraded by a problem ``A`` drawn uniformly from all the
configured ones (the paper picks ``(A_i, sigma_i)`` from ``A x Sigma``), then by white Gaussian noise
of a sigma drawn uniformly from the configured levels, added to the measurement::

    y = A x + sigma / 255 * n,   n ~ N(0, I) of the measurement's shape

The problems are bicubic downsampling by each SR factor (:class:`~converge.physics.downsample.Downsample`,
circular; factor 1 is the identity: MATLAB's ``imresize`` by 1 leaves the image as it is), Gaussian
blur of each width (:class:`~converge.physics.blur.GaussianBlur` on a square support, circular, as the
test protocol's 25x25 kernels) and pixel completion at each drop probability (a fresh
:class:`~converge.physics.mask.PixelMask` per patch, one value per pixel shared by the channels). The
returned level is the noise sigma in 8-bit levels, whatever the problem, so a model trained on the
mix knows each sample's noise (MTDEQ's prior is told ``eta * sigma``).

>>> import torch
>>> degrade = MultiTaskDegradation(sr_factors=(2,), blur_sigmas=(), drop_probabilities=(), noise_sigmas=(5.0,))
>>> y, operator, level = degrade(torch.rand(1, 3, 8, 8), torch.Generator().manual_seed(0))
>>> tuple(y.shape), type(operator).__name__, level
((1, 3, 4, 4), 'Downsample', 5.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Identity, Operator
from converge.physics.blur import GaussianBlur
from converge.physics.downsample import Downsample
from converge.physics.mask import RandomPixelDrop

GREY_LEVELS = 255.0


class MultiTaskDegradation:
    """``(x, generator) -> (y, operator, level)`` drawing one problem and one noise level per call.

    ``sr_factors``, ``blur_sigmas`` (pixels; ``blur_size`` the kernel's side) and
    ``drop_probabilities`` list the problems (an empty sequence leaves the family out);
    ``noise_sigmas``: the noise levels in 8-bit grey levels. ``problems`` lists ``(task, parameter)``
    in drawing order (``("sr", 2)``, ``("deblur", 1.6)``, ``("inpaint", 0.9)``). The downsampling and
    blur operators are built once and shared by the patches that draw them, so a batch applies each
    once to all its samples (:class:`~converge.physics.batch.OperatorBatch` groups them).
    """

    def __init__(
        self,
        sr_factors: Sequence[int],
        blur_sigmas: Sequence[float],
        drop_probabilities: Sequence[float],
        noise_sigmas: Sequence[float],
        blur_size: int = 25,
    ) -> None:
        self.noise_sigmas = [float(sigma) for sigma in noise_sigmas]
        if not self.noise_sigmas or any(not sigma >= 0 for sigma in self.noise_sigmas):
            raise ConfigError(f"noise_sigmas must list non-negative 8-bit levels, got {list(noise_sigmas)}")
        problems: list[tuple[str, float, Operator]] = []
        for factor in sr_factors:
            problems.append(("sr", int(factor), Identity() if factor == 1 else Downsample(int(factor))))
        for sigma in blur_sigmas:
            problems.append(("deblur", float(sigma), GaussianBlur(float(sigma), size=blur_size)))
        for p in drop_probabilities:
            problems.append(("inpaint", float(p), RandomPixelDrop(float(p))))
        if not problems:
            raise ConfigError("a multi-task degradation needs at least one SR factor, blur sigma or drop probability")
        self._problems = problems

    @property
    def problems(self) -> list[tuple[str, float]]:
        """Every ``(task, parameter)`` a patch may draw, each equally likely."""
        return [(task, parameter) for task, parameter, _ in self._problems]

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Operator, float]:
        """Degrade ``x`` ``(1, C, p, p)``: the measurement (``(1, C, p / f, p / f)`` for SR by ``f``), the
        operator that made it (the concrete mask for completion) and the noise sigma (8-bit levels)."""
        _, _, operator = self._problems[int(torch.randint(len(self._problems), (), generator=generator))]
        level = self.noise_sigmas[int(torch.randint(len(self.noise_sigmas), (), generator=generator))]
        if isinstance(operator, RandomPixelDrop):
            operator = operator.sample(x.shape, generator, x.device)
        measured = operator(x)
        if level > 0:
            noise = torch.randn(measured.shape, generator=generator, dtype=measured.dtype)
            measured = measured + level / GREY_LEVELS * noise.to(measured.device)
        return measured, operator, level
