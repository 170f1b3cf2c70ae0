"""DE-GRAD: gradient descent on a learned objective run to its fixed point (Gilton, Ongie and Willett,
"Deep equilibrium architectures for inverse problems in imaging", IEEE TCI 2021), trained with
Jacobian-free backpropagation as Liu, Tong, Zhao and Wu Fung do ("Training implicit networks for image
deblurring using Jacobian-free backpropagation").

For a measurement ``d = A x + noise`` through any linear operator ``A`` (blur, masked pixels,
super-resolution, the identity for denoising) the estimate is the fixed point of one update:

.. math::

    x^* = f(x^*), \\qquad f(x) = x - \\eta \\left(A^T (A x - d) + S_\\theta(x)\\right)
    \\qquad \\text{(DE-GRAD, the paper's eq. 2.4)}

or, with ``prox=True``, of a proximal-gradient update (DE-Prox) whose proximal step is a learned
denoiser in residual form, ``v - S_theta(v)`` (the authors' code applies ``S_theta`` itself; see
``docs/models/degrad.md`` for why this one does not)

.. math::

    f(x) = v - S_\\theta(v), \\qquad v = x - \\eta A^T (A x - d),

started from ``x0 = A^T d`` (or a few conjugate-gradient steps on ``(A^T A + s I) x = A^T d``, as
Gilton et al.). ``S_theta`` is a 17-layer DnCNN-shaped network without bias, every convolution
spectrally normalised; DE-GRAD uses its output directly as the regulariser's gradient::

    conv(C -> F) + ReLU,  (depth - 2) x [conv(F -> F) + BatchNorm + ReLU],  conv(F -> C)

``eta`` is a learned scalar, as in the authors' code (used as ``|step|``, so it stays positive). The
fixed point is found by a :class:`~converge.deq.DEQ` (Anderson, ``m = 5``, ``lam = 1e-4``, at most 50
steps, tolerance 1e-3) and differentiated by ``jfb`` (the paper), ``ift``, ``phantom`` or ``unroll``: a
change of config only. Images are ``(B, C, H, W)`` in [0, 1]; the measurement lives in the operator's
range (a low-resolution image for :class:`~converge.physics.downsample.Downsample`, the image grid for
an :class:`~converge.physics.batch.OperatorBatch`). ``sigma`` is not an input: one model per noise level.

Example::

    >>> import torch
    >>> from converge.physics import GaussianBlur
    >>> model = DEGRAD(DEGRADConfig(channels=1, features=4, depth=3, max_iter=5)).eval()
    >>> blur = GaussianBlur(1.0, size=5, boundary="zeros")
    >>> x, info = model.restore(blur(torch.rand(2, 1, 16, 16)), physics=blur)
    >>> x.shape, len(info.iterations), len(info.converged)
    (torch.Size([2, 1, 16, 16]), 2, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from converge.deq import DEQ, available_backward_modes, get_solver
from converge.errors import ConfigError
from converge.models.base import Restorer, RestoreInfo, Sigma
from converge.models.registry import register_model
from converge.physics.base import Identity, LinearOperator, Operator, conjugate_gradient
from converge.physics.batch import OperatorBatch

STARTS = ("adjoint", "cg")
# Hyper-parameters that size tensors: weights saved with other values cannot be adopted.
_ARCHITECTURE = ("channels", "features", "depth", "spectral_norm")
_ETA_KEY = "deq.f.step"


@dataclass(frozen=True)
class DEGRADConfig:
    """DE-GRAD hyper-parameters (defaults: the JFB paper's setting).

    ``channels``: 1 gray or 3 colour (3: the paper trains on colour faces); ``features``: width of
    ``S_theta`` (64); ``depth``: its number of 3x3 convolutions (17); ``spectral_norm``: normalise every
    convolution's weight (reshaped to ``out x in*3*3``) by its largest singular value, one power
    iteration per forward pass (True). ``eta_init``: the initial step (1e-3 in the JFB code; Gilton et
    al. start at 0.2). ``prox``: the DE-Prox update ``x <- v - S(v)``, ``v = x - eta A^T(Ax - d)``, instead
    of DE-GRAD.

    Solver: ``solver`` (``anderson``; ``m`` past iterates, Tikhonov ``lam``, Anderson's own options),
    at most ``max_iter`` evaluations (50), stopping per sample when ``||f(x) - x|| / ||f(x)||`` is at most
    ``tol`` (1e-3). For DE-GRAD that residual carries the factor ``eta``: it compares ``eta ||A^T(Ax - d) + S(x)||``
    against ``||x||``. ``backward``: ``jfb`` (the paper), ``ift``, ``phantom``
    (``phantom_steps`` ``T``, ``phantom_lam``) or ``unroll`` (``max_iter`` differentiable plain steps
    from ``x0``, no solver).

    Start: ``start="adjoint"`` (``x0 = A^T d``, the paper) or ``"cg"``: ``start_cg_steps`` conjugate-
    gradient steps on ``(A^T A + start_shift I) x = A^T d`` (Gilton et al.: 60 steps, shift 1e-2).

    ``pretrain``: the forward pass is ``S_theta`` alone on the measurement ``g`` (on the image grid),
    ``S(g)`` for DE-GRAD, how the authors pretrain ``S_theta`` (``d -> x``) before the equilibrium
    training, and the proximal step ``g - S(g)`` for DE-Prox (a denoiser, trained on noisy crops);
    ``eta`` is then unused. A DE-GRAD run starts from those weights with ``init_weights`` (see
    :meth:`DEGRAD.adopt_weights`).
    """

    channels: int = 3
    features: int = 64
    depth: int = 17
    eta_init: float = 1e-3
    spectral_norm: bool = True
    prox: bool = False
    solver: str = "anderson"
    m: int = 5
    lam: float = 1e-4
    tol: float = 1e-3
    max_iter: int = 50
    backward: str = "jfb"
    phantom_steps: int = 8
    phantom_lam: float = 0.8
    start: str = "adjoint"
    start_cg_steps: int = 60
    start_shift: float = 1e-2
    pretrain: bool = False

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"DE-GRAD channels must be 1 or 3, got {self.channels}")
        if self.features < 1:
            raise ConfigError(f"DE-GRAD features must be positive, got {self.features}")
        if self.depth < 2:
            raise ConfigError(f"DE-GRAD depth must be at least 2 convolutions, got {self.depth}")
        if not (math.isfinite(self.eta_init) and self.eta_init > 0):
            raise ConfigError(f"DE-GRAD eta_init must be a positive step, got {self.eta_init}")
        get_solver(self.solver)
        if self.solver != "anderson" and (self.m, self.lam) != (5, 1e-4):
            raise ConfigError(f"m and lam are options of the anderson solver, not of {self.solver!r}: remove them")
        if self.backward not in available_backward_modes():
            raise ConfigError(
                f"DE-GRAD backward must be one of {', '.join(available_backward_modes())}, got {self.backward!r}"
            )
        if self.start not in STARTS:
            raise ConfigError(f"DE-GRAD start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.start_cg_steps < 1:
            raise ConfigError(f"DE-GRAD start_cg_steps must be a positive integer, got {self.start_cg_steps}")
        if not self.start_shift >= 0:
            raise ConfigError(f"DE-GRAD start_shift must be non-negative, got {self.start_shift}")


class Regulariser(nn.Module):
    """``S_theta``: ``depth`` bias-free 3x3 convolutions, ``(B, C, H, W) -> (B, C, H, W)``; the output is
    used as is. ReLU after the first convolution, BatchNorm + ReLU after each middle one."""

    def __init__(self, channels: int, features: int, depth: int, normalised: bool) -> None:
        super().__init__()

        def conv(inputs: int, outputs: int) -> nn.Module:
            layer = nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)
            return spectral_norm(layer, n_power_iterations=1) if normalised else layer

        layers: list[nn.Module] = [conv(channels, features), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [conv(features, features), nn.BatchNorm2d(features), nn.ReLU()]
        layers.append(conv(features, channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class GradientStep(nn.Module):
    """The update ``f(x, d)``: ``x - eta (A^T(Ax - d) + S(x))``, or with ``prox`` the proximal step
    :meth:`proximal` of ``x - eta A^T(Ax - d)``.

    ``x`` ``(B, C, H, W)``; ``d`` the measurement in ``A``'s range. ``A`` is bound for the length of a
    solve with :meth:`acting_with` (the :class:`~converge.deq.DEQ` passes only the state and ``d``).
    ``eta = |step|``: the optimiser moves ``step`` by about its learning rate a step, as it moves the
    authors' plain ``eta`` (an exponential parameterisation would move ``eta`` by that fraction of
    itself, a thousandth a step from 1e-3), and the absolute value keeps the step a descent step.
    """

    def __init__(self, config: DEGRADConfig) -> None:
        super().__init__()
        self.prior = Regulariser(config.channels, config.features, config.depth, config.spectral_norm)
        self.step = nn.Parameter(torch.tensor(config.eta_init))
        self.prox = config.prox
        # A plain list, not an attribute: a module stored on a module would join its state_dict.
        self._bound: list[LinearOperator] = []

    @property
    def eta(self) -> Tensor:
        """The step ``eta > 0`` (a 0-d tensor carrying the gradient of ``step``)."""
        return self.step.abs()

    @contextmanager
    def acting_with(self, operator: LinearOperator) -> Iterator[None]:
        """Bind ``operator`` as ``A`` inside the block."""
        self._bound.append(operator)
        try:
            yield
        finally:
            self._bound.pop()

    def forward(self, x: Tensor, d: Tensor) -> Tensor:
        if not self._bound:
            raise ConfigError("the DE-GRAD update needs its operator: call it inside acting_with(operator)")
        gradient = self._bound[-1].data_grad(x, d)
        if self.prox:
            return self.proximal(x - self.eta * gradient)
        return x - self.eta * (gradient + self.prior(x))

    def proximal(self, v: Tensor) -> Tensor:
        """DE-Prox's learned proximal step ``v - S(v)``: ``S`` estimates what to take away, as a residual
        denoiser does."""
        return v - self.prior(v)


@register_model("degrad")
class DEGRAD(Restorer):
    """DE-GRAD (or DE-Prox) for one linear degradation at one noise level.

    ``forward(y, physics)`` needs a :class:`~converge.physics.base.LinearOperator` (``None`` means the
    identity: denoising); a non-linear one (JPEG, an undrawn random mask) raises :class:`ConfigError`.
    ``y`` must have the model's channel count. ``training_forward`` is the default: the batch's
    :class:`~converge.physics.batch.OperatorBatch` is the operator, so one batch may mix degradations.
    """

    config_class = DEGRADConfig
    tasks = ("denoise", "deblur", "sr", "inpaint")
    example_params = {"features": 4, "depth": 3, "max_iter": 6}

    def __init__(self, config: DEGRADConfig | None = None) -> None:
        super().__init__()
        self.config = config or DEGRADConfig()
        solver_options: dict[str, Any] = {"max_iter": self.config.max_iter, "tol": self.config.tol}
        if self.config.solver == "anderson":
            solver_options.update(m=self.config.m, lam=self.config.lam)
        self.deq = DEQ(
            GradientStep(self.config),
            solver=self.config.solver,
            solver_options=solver_options,
            backward=self.config.backward,
            backward_options=self._backward_options(),
        )

    def _backward_options(self) -> dict[str, int | float] | None:
        if self.config.backward == "phantom":
            return {"T": self.config.phantom_steps, "lam": self.config.phantom_lam}
        if self.config.backward == "unroll":
            return {"K": self.config.max_iter}
        return None

    @property
    def update(self) -> GradientStep:
        """The update ``f``, owned (and saved) by the DEQ as ``deq.f``."""
        return self.deq.f

    @property
    def prior(self) -> nn.Module:
        """``S_theta``."""
        return self.update.prior

    @property
    def eta(self) -> Tensor:
        """The learned step ``eta > 0``."""
        return self.update.eta

    @property
    def training_skips_parameters(self) -> bool:  # type: ignore[override]
        """Pretraining fits ``S_theta`` alone and leaves ``eta`` out."""
        return self.config.pretrain

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """The equilibrium ``x*`` ``(B, C, H, W)`` for measurement ``y`` of ``physics`` (not clamped);
        with ``pretrain``, ``S_theta`` of ``y`` on the image grid (DE-Prox: its proximal step)."""
        operator = _linear_operator(physics)
        if y.shape[1] != self.channels:
            raise ConfigError(f"this DE-GRAD expects {self.channels}-channel images, got {y.shape[1]} channels")
        with self._normalised_once():
            if self.config.pretrain:
                grid = operator.to_grid(y)
                return self.update.proximal(grid) if self.config.prox else self.prior(grid)
            x0 = self.start_point(y, operator)
            with self.update.acting_with(operator):
                return self.deq(y, z0=x0)

    def start_point(self, y: Tensor, operator: LinearOperator) -> Tensor:
        """``x0``: ``A^T y``, or ``start_cg_steps`` CG steps on ``(A^T A + s I) x = A^T y`` from 0."""
        with torch.no_grad():
            rhs = operator.adjoint(y)
            if self.config.start == "adjoint":
                return rhs
            shift = self.config.start_shift
            # tol 0: a fixed number of steps, as Gilton et al. run it.
            return conjugate_gradient(
                lambda v: operator.normal(v) + shift * v, rhs, tol=0.0, max_iter=self.config.start_cg_steps
            )

    @contextmanager
    def _normalised_once(self) -> Iterator[None]:
        """Spectral normalisation computed once per forward pass (one power iteration in training)
        rather than at every solver step, so the solver and the backward pass see one fixed map.

        The weights are computed here, before the solver's ``no_grad`` block: a cache filled inside it
        would carry no graph and the backward pass would miss them.
        """
        with parametrize.cached():
            for module in self.prior.modules():
                if parametrize.is_parametrized(module, "weight"):
                    module.weight  # noqa: B018 (fills the cache)
            yield

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: the clamped estimate and a :class:`RestoreInfo`.

        ``iterations``: solver steps per image; ``residuals``: per step, the largest relative residual
        over the images still iterating; ``converged``: per image; ``extra``: the solver's summary.
        A pretraining model (no loop) reports one iteration.
        """
        start = time.perf_counter()
        with torch.no_grad():
            x = self(y, physics=physics, sigma=sigma).clamp(0.0, 1.0)
        if self.config.pretrain:
            return x, RestoreInfo(iterations=1, seconds=time.perf_counter() - start)
        return x, RestoreInfo.from_solver(self.deq.last_info, time.perf_counter() - start)

    def adopt_weights(self, tensors: Mapping[str, Tensor], params: Mapping[str, Any], saved_model: str) -> None:
        """Start from DE-GRAD weights (``saved_model`` must be ``degrad``) saved with other training
        settings (solver, backward, start, ``prox``, ``pretrain``, ``eta_init``); ``channels``,
        ``features``, ``depth`` and ``spectral_norm`` must match.

        Weights of a pretraining run bring ``S_theta`` only: that run never used ``eta``, so this
        model keeps its own ``eta_init``. Others bring ``eta`` too. A mismatch raises :class:`ConfigError`.
        """
        if saved_model != "degrad":
            raise ConfigError(
                f"the weights were saved for a {saved_model} model, not DE-GRAD: start from DE-GRAD weights"
            )
        try:
            saved = DEGRADConfig(**dict(params))
        except (TypeError, ConfigError) as error:
            raise ConfigError(
                f"the weights were saved for DE-GRAD parameters this version cannot build ({error})"
            ) from None
        differing = [name for name in _ARCHITECTURE if getattr(saved, name) != getattr(self.config, name)]
        if differing:
            raise ConfigError(
                f"the weights were saved for a DE-GRAD with other {', '.join(differing)}: "
                f"only the training settings may differ, not {', '.join(_ARCHITECTURE)}"
            )
        state = dict(tensors)
        if saved.pretrain and not self.config.pretrain:
            state[_ETA_KEY] = self.update.step.detach().clone()
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ConfigError(f"the weights do not fit this DE-GRAD ({error})") from None


def _linear_operator(physics: Operator | None) -> LinearOperator:
    """``physics`` checked to be linear (every operator of a batch); ``None`` is the identity."""
    if physics is None:
        return Identity()
    if not isinstance(physics, LinearOperator):
        raise ConfigError(
            f"DE-GRAD needs a linear operator with an adjoint, got {type(physics).__name__}: "
            "restore a linear degradation (denoise, deblur, inpaint with a drawn mask, sr)"
        )
    if isinstance(physics, OperatorBatch):
        nonlinear = sorted({type(op).__name__ for op in physics.operators if not isinstance(op, LinearOperator)})
        if nonlinear:
            raise ConfigError(f"DE-GRAD needs linear operators, but the batch holds {', '.join(nonlinear)}")
    return physics

