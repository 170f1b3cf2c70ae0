"""MTDEQ: a multi-task prior trained inside a forward-backward deep equilibrium (Willingham, Sjöström and
Guillemot, "Prior for Multi-Task Inverse Problems in Image Reconstruction Using Deep Equilibrium Models").

For an observation ``y = A x + n`` (``A`` linear, ``n`` white Gaussian noise of level ``sigma_n``) the
restored image is the fixed point of one forward-backward step whose proximal step is a U-Net
denoiser ``Q`` told its noise level (the DRUNet-style :class:`~converge.models.unet.UNetDenoiser`):

.. math::

    z^* = f(z^*), \\qquad f(z) = Q\\big(z - \\eta A^T (A z - y),\\ \\eta \\sigma_n\\big),
    \\qquad \\eta = 0.49

per sample, each with its own operator and level. The equilibrium is found by a
:class:`~converge.deq.DEQ` and differentiated Jacobian-free (``jfb``: the gradient of one application
of ``f`` at ``z*``, the paper's Eq. 4). Training exposes the one prior to many degradations and noise
levels (:mod:`converge.data.multitask`); at test time the paper plugs the trained prior into
plug-and-play ADMM, which here is :attr:`MTDEQ.prior` given to :mod:`converge.optim` (for instance
``ModelDenoiser(model.prior)``), while :meth:`MTDEQ.restore` runs the training-time FB equilibrium.

Stopping. The paper stops when the mean squared difference of two iterates falls below ``1e-7``,
``||f(z) - z||^2 / d < 1e-7``; our solvers stop per sample on the relative residual
``||f(z) - z|| / ||f(z)|| <= tol``. With ``||f(z)|| = sqrt(d) rms(f(z))`` the two agree for
``tol = sqrt(1e-7) / rms(z)``, per image. The solvers have no absolute criterion, so the default
``tol`` takes the root mean square of a typical training image, 0.48 (the mean over CBSD400; 5% to 95%
of its images lie in 0.28 to 0.63): ``tol = 3.16e-4 / 0.48 = 6.6e-4``, which is the paper's
criterion for an image of that RMS and a threshold on the MSE between 0.34e-7 and 1.7e-7 for 90% of
images. The solver also gives up after ``max_iter`` = 350 iterations or when a coordinate exceeds
``bound`` = 1e10 in absolute value, as in the paper.

Start point (the paper's resizing ``P``): the observation itself for denoising and deblurring; for
super-resolution the bicubic upsampling of the low-resolution image
(:func:`converge.baselines.bicubic_upsample`, the test protocol's start); for pixel completion the
observation with the missing pixels set to 0.5.

Example::

    >>> import torch
    >>> from converge.physics import GaussianBlur
    >>> model = MTDEQ(MTDEQConfig(channels=1, widths=(4, 8, 8, 8), blocks=1, max_iter=4)).eval()
    >>> x, info = model.restore(torch.rand(1, 1, 24, 24), physics=GaussianBlur(1.6, size=9), sigma=0.01)
    >>> x.shape, len(info.iterations)
    (torch.Size([1, 1, 24, 24]), 1)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from converge.baselines import bicubic_upsample
from converge.deq import (
    DEQ,
    available_backward_modes,
    available_solvers,
    check_solver_options,
    get_solver,
    make_backward,
)
from converge.errors import ConfigError
from converge.models.base import Restorer, RestoreInfo, Sigma
from converge.models.registry import register_model
from converge.models.unet import UNetConfig, UNetDenoiser
from converge.physics.base import Identity, Operator
from converge.physics.batch import OperatorBatch, as_operator_batch
from converge.physics.downsample import Downsample
from converge.physics.mask import MaskOperator

GREY_LEVELS = 255.0
MISSING_PIXEL_START = 0.5
# The paper's stop, MSE(z_k - z_{k-1}) < 1e-7, as a relative residual for an image of RMS 0.48
# (module docstring): sqrt(1e-7) / 0.48.
PAPER_TOL = 6.6e-4
_SOLVE_SETTINGS = ("max_iter", "tol", "bound")


@dataclass(frozen=True)
class MTDEQConfig:
    """MTDEQ hyper-parameters (defaults: the paper's model).

    Prior: a :class:`~converge.models.unet.UNetDenoiser` of ``channels`` (1 gray, 3 colour: the paper
    trains in colour), ``widths`` features at its 4 scales (DRUNet's 64-128-256-512) and ``blocks``
    residual blocks per scale and side (4). ``eta``: the forward-backward step size (0.49); the prior
    is told ``eta * sigma_n``.

    Solver: ``solver`` a registered name (``anderson``; ``fixed_point`` is the paper's plain
    iteration) with its own ``solver_options`` (``m``, ``beta``, ``lam`` for Anderson), at most
    ``max_iter`` evaluations (350), stopping per sample when ``||f(z) - z|| / ||f(z)|| <= tol``
    (6.6e-4: the paper's MSE below 1e-7 for an image of RMS 0.48, see the module docstring) and
    giving up on a sample whose iterate exceeds ``bound`` (1e10). ``backward``: ``jfb`` (the paper),
    ``ift``, ``phantom`` (``phantom_steps``, ``phantom_lam``) or ``unroll`` (``max_iter``
    differentiable plain steps from the start point, no solver).
    """

    channels: int = 3
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: int = 4
    eta: float = 0.49
    solver: str = "anderson"
    solver_options: dict[str, Any] = field(default_factory=dict)
    max_iter: int = 350
    tol: float = PAPER_TOL
    bound: float = 1e10
    backward: str = "jfb"
    phantom_steps: int = 8
    phantom_lam: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "solver_options", dict(self.solver_options))
        for name in ("eta", "tol", "bound", "phantom_lam"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        UNetConfig(channels=self.channels, widths=self.widths, blocks=self.blocks)
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ConfigError(f"MTDEQ eta must be a positive step size, got {self.eta}")
        if self.solver not in available_solvers():
            raise ConfigError(f"MTDEQ solver must be one of {', '.join(available_solvers())}, got {self.solver!r}")
        clashes = sorted(set(_SOLVE_SETTINGS) & set(self.solver_options))
        if clashes:
            raise ConfigError(f"set {', '.join(clashes)} as MTDEQ parameters of their own, not in solver_options")
        check_solver_options(get_solver(self.solver), self.solve_options)
        if self.backward not in available_backward_modes():
            raise ConfigError(
                f"MTDEQ backward must be one of {', '.join(available_backward_modes())}, got {self.backward!r}"
            )

    @property
    def prior_config(self) -> UNetConfig:
        """The U-Net prior's parameters (what a ``unet`` weights file must hold to start this model)."""
        return UNetConfig(channels=self.channels, widths=self.widths, blocks=self.blocks)

    @property
    def solve_options(self) -> dict[str, Any]:
        """Every option the solver is called with."""
        return {**self.solver_options, "max_iter": self.max_iter, "tol": self.tol, "bound": self.bound}


@register_model("mtdeq")
class MTDEQ(Restorer):
    """The forward-backward equilibrium of a U-Net prior: ``z* = Q(z* - eta A^T(A z* - y), eta sigma_n)``.

    ``forward(y, physics, sigma)``: ``y`` is the measurement of ``physics`` in its own shape
    (``(B, C, H / f, W / f)`` for super-resolution by ``f``), or on the image grid when ``physics``
    is an :class:`~converge.physics.batch.OperatorBatch` (training batches); the output is the image
    ``(B, C, H, W)``. ``physics=None`` is denoising. ``sigma``: the noise level on the [0, 1] scale, a
    float or ``(B,)``. ``None`` estimates it from each observation that is a full image (denoising,
    deblurring: :func:`~converge.physics.noise.estimate_noise_sigma`) and takes 0 for
    super-resolution and completion, whose observations the estimator cannot read (a low-resolution
    image may be too small; dropped pixels read as image content): the command line passes ``None``
    for a task without noise, so pass the level to restore a noisy one. ``training_forward`` takes
    the level in 8-bit grey levels, as the trainer records it (a NaN level is treated as ``None``).

    The prior is the submodule :attr:`prior` (its tensors saved under ``prior.``): plug-and-play
    algorithms use it as their denoiser, as the paper tests its prior in ADMM.
    """

    config_class = MTDEQConfig
    tasks = ("denoise", "deblur", "sr", "inpaint")
    plug_and_play_prior = "prior"
    example_params = {"widths": (4, 8, 8, 8), "blocks": 1, "max_iter": 8}

    def __init__(self, config: MTDEQConfig | None = None) -> None:
        super().__init__()
        self.config = config or MTDEQConfig()
        self.prior = UNetDenoiser(self.config.prior_config)
        # The DEQ's update is a bound method, not a module, so the prior's tensors stay under prior.;
        # each solve sets the operator and levels the update reads (_problem).
        self.deq = DEQ(
            self._update,
            solver=self.config.solver,
            solver_options=self.config.solve_options,
            backward=self.config.backward,
            backward_options=self._backward_options(self.config.max_iter),
        )
        self._problem: tuple[OperatorBatch, Tensor] | None = None

    def _backward_options(self, max_iter: int) -> dict[str, int | float] | None:
        if self.config.backward == "phantom":
            return {"T": self.config.phantom_steps, "lam": self.config.phantom_lam}
        if self.config.backward == "unroll":
            return {"K": max_iter}
        return None

    def _update(self, z: Tensor, y: Tensor) -> Tensor:
        """``f(z) = Q(z - eta A^T(A z - y), eta sigma_n)`` for the operator and levels of the current solve."""
        if self._problem is None:
            raise RuntimeError("MTDEQ's update runs only inside a solve")
        operator, sigma = self._problem
        eta = self.config.eta
        return self.prior(z - eta * operator.data_grad(z, y), sigma=eta * sigma)

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """The equilibrium image ``(B, C, H, W)`` for the measurement ``y`` of ``physics`` (not clamped)."""
        physics = Identity() if physics is None else physics
        grid = physics.to_grid(y)
        operator = as_operator_batch(physics, grid.shape[0])
        return self.solve(grid, operator, self._noise_levels(sigma, grid, operator))

    def training_forward(self, y: Tensor, operator: Operator, level: Tensor) -> Tensor:
        """The equilibrium for grid measurements ``y`` ``(B, C, H, W)`` of the batch's ``operator`` at
        ``level`` ``(B,)`` (noise sigma, 8-bit levels; NaN ones estimated)."""
        operator = as_operator_batch(operator, y.shape[0])
        sigma = level.detach().to(device=y.device, dtype=y.dtype) / GREY_LEVELS
        unknown = torch.isnan(sigma)
        if bool(unknown.any()):
            sigma = torch.where(unknown, self._noise_levels(None, y, operator), sigma)
        return self.solve(y, operator, sigma)

    def solve(self, y: Tensor, operator: OperatorBatch, sigma: Tensor) -> Tensor:
        """``z*`` ``(B, C, H, W)`` for grid measurements ``y`` of ``operator`` at noise levels ``sigma``
        ``(B,)`` ([0, 1] scale), started from :meth:`start_point`; the solve's
        :class:`~converge.deq.SolverInfo` is ``self.deq.last_info``."""
        z0 = self.start_point(y, operator)
        self._problem = (operator, sigma)
        try:
            return self.deq(y, z0)
        finally:
            self._problem = None

    @staticmethod
    def start_point(y: Tensor, operator: OperatorBatch) -> Tensor:
        """The first iterate for grid measurements ``y`` ``(B, C, H, W)``, per sample: the bicubic
        upsampling of the low-resolution image for a :class:`~converge.physics.downsample.Downsample`,
        the observation with its missing pixels at 0.5 for a mask, else the observation."""

        def start(physics: Operator, samples: Tensor) -> Tensor:
            if isinstance(physics, Downsample):
                low = physics.from_grid(samples)
                return low if physics.factor == 1 else bicubic_upsample(low, physics.factor)
            if isinstance(physics, MaskOperator):
                kept = physics(torch.ones_like(samples))
                return kept * samples + (1.0 - kept) * MISSING_PIXEL_START
            return samples

        return _per_operator(operator, y, start)

    def _noise_levels(self, sigma: Sigma | None, y: Tensor, operator: OperatorBatch) -> Tensor:
        """``sigma`` as ``(B,)`` levels ([0, 1] scale) for grid measurements ``y``; ``None``: estimated
        from each full-image observation, 0 for super-resolution and completion (``forward``)."""
        if sigma is None:
            from converge.physics.noise import estimate_noise_sigma

            def estimate(physics: Operator, samples: Tensor) -> Tensor:
                if isinstance(physics, MaskOperator) or (isinstance(physics, Downsample) and physics.factor > 1):
                    return samples.new_zeros(samples.shape[0])
                return estimate_noise_sigma(samples).to(y.dtype)

            return _per_operator(operator, y, estimate)
        levels = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).reshape(-1)
        if levels.numel() == 1:
            return levels.expand(y.shape[0])
        if levels.numel() != y.shape[0]:
            raise ConfigError(f"sigma has {levels.numel()} values for a batch of {y.shape[0]} images")
        return levels

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: the clamped equilibrium and a :class:`RestoreInfo`.

        ``iterations``: solver iterations per image; ``residuals``: per iteration, the largest
        relative residual over the images still iterating; ``converged``: per image; ``extra``: the
        solver's one-line ``summary`` and which images ``diverged`` (beyond ``bound`` or not finite).
        """
        start = time.perf_counter()
        with torch.no_grad():
            x = self(y, physics=physics, sigma=sigma).clamp(0.0, 1.0)
        info = self.deq.last_info
        seconds = time.perf_counter() - start
        return x, RestoreInfo.from_solver(info, seconds, diverged=info.diverged.tolist())

    def set_inference(self, max_iter: int | None = None, tol: float | None = None) -> None:
        """Change the solver's iteration limit or tolerance for later calls (``None``: keep); not saved
        with the weights (``config`` keeps the trained values). For ``backward="unroll"`` ``max_iter``
        sets the number of unrolled steps."""
        self.deq.set_solver_limits(max_iter, tol)
        if self.config.backward == "unroll" and max_iter is not None:
            self.deq.backward_mode = make_backward("unroll", self._backward_options(max_iter))

    def adopt_weights(self, tensors: Mapping[str, Tensor], params: Mapping[str, Any], saved_model: str) -> None:
        """Start from a trained Gaussian-denoiser prior, as the paper does: ``tensors`` of a ``unet``
        whose parameters ``params`` equal this model's prior's load into :attr:`prior`. Weights of any
        other model or parameters raise :class:`ConfigError`."""
        if saved_model != "unet":
            raise ConfigError(
                f"the weights were saved for a {saved_model} model: an MTDEQ starts from its own weights "
                "or from those of a unet with its prior's channels, widths and blocks"
            )
        try:
            saved = UNetConfig(**dict(params))
        except (TypeError, ConfigError) as error:
            raise ConfigError(
                f"the weights were saved for U-Net parameters this version cannot build ({error})"
            ) from None
        wanted = self.prior.config
        if saved != wanted:
            raise ConfigError(
                f"the weights were saved for a unet with channels {saved.channels}, widths {list(saved.widths)}, "
                f"blocks {saved.blocks}, but this MTDEQ's prior has channels {wanted.channels}, widths "
                f"{list(wanted.widths)}, blocks {wanted.blocks}: give the MTDEQ the prior's parameters"
            )
        try:
            self.prior.load_state_dict(dict(tensors), strict=True)
        except RuntimeError:
            raise ConfigError("the unet weights' tensors do not fit the parameters saved with them") from None


def _number(name: str, value: Any) -> float:
    """``value`` as a float; a string too, since YAML reads ``1.0e10`` (no exponent sign) as one."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"MTDEQ {name} must be a number, got {value!r}") from None


def _per_operator(operator: OperatorBatch, y: Tensor, apply: Callable[[Operator, Tensor], Tensor]) -> Tensor:
    """``apply(physics, samples)`` on the samples of ``y`` that each distinct operator of the batch
    degraded, reassembled in batch order (results ``(n, ...)``)."""
    parts = []
    for physics, indices in operator.groups():
        indices = indices.to(y.device)
        parts.append((indices, apply(physics, y[indices])))
    out = parts[0][1].new_empty((y.shape[0], *parts[0][1].shape[1:]))
    for indices, part in parts:
        out[indices] = part
    return out
