"""Forward-backward splitting with a denoiser as the prior (plug-and-play proximal gradient, PnP-PGD).

.. math:: x_{k+1} = D\\left(x_k - \\eta \\nabla f(x_k), \\sigma_k\\right), \\qquad f(x) = \\tfrac12 \\|A x - y\\|^2

The gradient step is the forward (explicit) step on the data term; the denoiser ``D`` stands in for the
proximal (backward) step of the prior. ``sigma_k`` is constant (fixed-sigma mode: iterate until the
relative change reaches ``tol``) or follows a schedule (DPIR: :func:`dpir_schedule`, run to its end).

Divergence guard: the run stops when an iterate turns non-finite, or when the relative change
``||x_{k+1} - x_k|| / ||x_k||`` (batch maximum) exceeds ``divergence_threshold`` (default 1: a step longer
than the iterate itself) at ``patience`` (default 3) consecutive iterations. It then returns, per sample,
the finite iterate with the lowest relative change seen (the start point if none), marks the run diverged
and warns. A convergent run shrinks its steps, so three steps each longer than the image are a reliable
sign that the step ``eta`` is too large for the operator.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.optim.data_fidelity import DataFidelity, L2DataFidelity
from converge.optim.priors import Denoiser, Sigma
from converge.optim.registry import AlgorithmInfo, register_algorithm
from converge.physics.base import LinearOperator
from converge.progress import report

DPIR_SIGMA_MAX = 49.0 / 255.0
DPIR_SIGMA_MIN = 0.255 / 255.0


def dpir_schedule(
    iterations: int,
    noise_sigma: float,
    sigma_max: float = DPIR_SIGMA_MAX,
    lam: float = 0.23,
    *,
    sigma_min: float = DPIR_SIGMA_MIN,
) -> tuple[Tensor, Tensor]:
    """DPIR's per-iteration denoiser levels and penalty weights (Zhang et al., TPAMI 2021), float64 ``(K,)``.

    .. math:: \\sigma_k = \\text{logspace}(\\log_{10}\\sigma_{max}, \\log_{10}\\bar\\sigma, K), \\qquad
              \\rho_k = \\lambda \\bar\\sigma^2 / \\sigma_k^2, \\qquad \\bar\\sigma = \\max(\\sigma_n, \\sigma_{min})

    All levels are on the [0, 1] scale. ``rho_k`` is the data-term weight of ADMM/HQS-style splitting;
    forward-backward uses ``sigma_k`` only. A one-iteration schedule is the end level alone.

    >>> sigmas, rhos = dpir_schedule(8, 25 / 255)
    >>> round(sigmas[0].item() * 255, 6), round(sigmas[-1].item() * 255, 6), round(rhos[-1].item(), 6)
    (49.0, 25.0, 0.23)
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}.")
    if not 0.0 <= noise_sigma <= 1.0:
        raise ConfigError(f"noise_sigma is on the [0, 1] image scale (25/255 for noise level 25), got {noise_sigma}.")
    if not (0.0 < sigma_min and 0.0 < sigma_max <= 1.0 and lam > 0.0):
        raise ConfigError(f"sigma_min, sigma_max and lam must be positive, got {sigma_min}, {sigma_max}, {lam}.")
    end = max(noise_sigma, sigma_min)
    if iterations == 1:
        sigmas = torch.tensor([end], dtype=torch.float64)
    else:
        sigmas = torch.logspace(math.log10(sigma_max), math.log10(end), iterations, dtype=torch.float64)
        sigmas[-1] = end  # exact, not 10 ** log10(end)
    return sigmas, lam * end**2 / sigmas.square()


@dataclass
class _BestIterate:
    """Each sample's finite iterate with the lowest relative change so far."""

    x: Tensor
    change: Tensor

    def update(self, x: Tensor, change: Tensor) -> None:
        better = torch.isfinite(change) & (change < self.change) & _finite_per_sample(x)
        self.x = torch.where(_expand(better, x), x, self.x)
        self.change = torch.where(better, change, self.change)


def forward_backward(
    y: Tensor,
    operator: LinearOperator,
    denoiser: Denoiser,
    *,
    sigma: Sigma | None = None,
    schedule: Tensor | None = None,
    eta: float | Tensor | None = None,
    x0: Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    data_fidelity: DataFidelity | None = None,
    divergence_threshold: float = 1.0,
    patience: int = 3,
) -> tuple[Tensor, AlgorithmInfo]:
    """Plug-and-play forward-backward: ``x_{k+1} = D(x_k - eta grad f(x_k), sigma_k)``.

    ``y`` is the measurement (the operator's output shape); the estimate ``x`` is ``(B, C, H, W)``,
    started at ``x0`` or ``A^T y``, and not clamped. Give exactly one of:

    - ``sigma``: a fixed level (float or ``(B,)``, [0, 1] scale); iterate until the relative change
      ``max_b ||x_{k+1} - x_k|| / ||x_k||`` is at most ``tol`` (default 1e-5) or ``max_iter`` (default 100);
    - ``schedule``: ``(K,)`` or ``(K, B)`` levels, one per iteration (e.g. ``dpir_schedule(K, s)[0]``),
      run for all ``K`` iterations (``tol`` and ``max_iter`` do not apply and may not be given).

    ``eta`` defaults to ``1 / ||A||^2`` (power iteration from the start point); gradient descent on the
    data term needs ``eta < 2 / ||A||^2``. ``data_fidelity`` defaults to :class:`L2DataFidelity`. See the
    module docstring for the divergence guard (``divergence_threshold``, ``patience``).

    >>> from converge.physics import Identity
    >>> from converge.optim.priors import IdentityDenoiser
    >>> y = torch.full((1, 1, 4, 4), 0.5)
    >>> x, info = forward_backward(y, Identity(), IdentityDenoiser(), sigma=0.1)
    >>> torch.equal(x, y), info.iterations, info.converged
    (True, 1, True)
    """
    sigmas = _sigma_sequence(sigma, schedule, max_iter, tol)
    tol = 1e-5 if tol is None else tol
    if tol < 0 or divergence_threshold <= 0 or patience < 1:
        raise ConfigError(
            "tol must be >= 0, divergence_threshold > 0 and patience >= 1; "
            f"got {tol}, {divergence_threshold}, {patience}."
        )
    fidelity = L2DataFidelity() if data_fidelity is None else data_fidelity
    x = operator.adjoint(y) if x0 is None else x0
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("The start point contains NaN or inf; start forward-backward from a finite image.")
    step = _per_sample(_default_step(operator, x) if eta is None else eta, x)
    best = _BestIterate(x, torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device))
    changes: list[float] = []
    for k, sigma_k in enumerate(sigmas):
        x_next = _checked(denoiser.denoise(x - step * fidelity.grad(x, y, operator), sigma_k), x)
        change = _relative_change(x_next, x)
        changes.append(float(change.max()))
        report("iteration", k + 1, len(sigmas), x_next)
        if not bool(_finite_per_sample(x_next).all()) or _growing(changes, divergence_threshold, patience):
            best.update(x_next, change)
            warnings.warn(
                f"forward_backward diverged at iteration {k + 1} (relative change {changes[-1]:.3g}); "
                "returning the lowest-change finite iterate: lower the step eta.",
                RuntimeWarning,
                stacklevel=2,
            )
            return best.x, _info(k + 1, changes, converged=False, diverged=True)
        best.update(x_next, change)
        x = x_next
        if schedule is None and changes[-1] <= tol:
            return x, _info(k + 1, changes, converged=True, diverged=False)
    return x, _info(len(changes), changes, converged=False, diverged=False)


def _info(iterations: int, changes: list[float], *, converged: bool, diverged: bool) -> AlgorithmInfo:
    return AlgorithmInfo("forward_backward", iterations, changes, converged=converged, diverged=diverged)


def _sigma_sequence(
    sigma: Sigma | None, schedule: Tensor | None, max_iter: int | None, tol: float | None
) -> list[Sigma]:
    """The level of each iteration: ``sigma`` repeated ``max_iter`` times, or the rows of ``schedule``."""
    if (sigma is None) == (schedule is None):
        raise ConfigError("Give forward_backward exactly one of sigma (a fixed level) and schedule (per iteration).")
    if schedule is not None:
        if max_iter is not None or tol is not None:
            raise ConfigError("A schedule fixes the iterations: drop max_iter and tol, or pass a fixed sigma instead.")
        if schedule.ndim not in (1, 2) or len(schedule) == 0:
            raise ConfigError(f"A schedule is a (K,) or (K, B) tensor of levels, got shape {tuple(schedule.shape)}.")
        return [float(level) if level.ndim == 0 else level for level in schedule]
    max_iter = 100 if max_iter is None else max_iter
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}.")
    return [sigma] * max_iter


def _default_step(operator: LinearOperator, start: Tensor) -> Tensor:
    """``1 / ||A||^2``, the norm by power iteration from ``start`` (from ones when ``start`` is zero)."""
    probe = start.detach() if bool(start.detach().abs().sum() > 0) else torch.ones_like(start)
    norm = operator.operator_norm(probe)
    if not bool(norm > 0):
        raise ConfigError("The operator norm is zero on this start point; pass the step eta explicitly.")
    return 1.0 / norm.square()


def _checked(x_next: Tensor, x: Tensor) -> Tensor:
    if x_next.shape != x.shape:
        raise ConfigError(f"The denoiser returned shape {tuple(x_next.shape)} for an input of shape {tuple(x.shape)}.")
    return x_next


def _relative_change(x_next: Tensor, x: Tensor) -> Tensor:
    """``||x_next - x|| / ||x||`` per sample, float64 ``(B,)``: ``inf`` where ``x_next`` is not finite or
    moved away from ``x = 0``, and 0 where both are zero."""
    difference = (x_next - x).detach().flatten(1).to(torch.float64).norm(dim=1)
    size = x.detach().flatten(1).to(torch.float64).norm(dim=1)
    change = torch.where(size > 0, difference / size.clamp_min(torch.finfo(torch.float64).tiny), difference * math.inf)
    change = torch.nan_to_num(change, nan=0.0)  # 0 * inf: a zero iterate that stayed zero
    return torch.where(_finite_per_sample(x_next) & torch.isfinite(difference), change, math.inf)


def _growing(changes: list[float], threshold: float, patience: int) -> bool:
    """Whether the last ``patience`` relative changes all exceed ``threshold``."""
    return len(changes) >= patience and all(change > threshold for change in changes[-patience:])


def _finite_per_sample(x: Tensor) -> Tensor:
    return torch.isfinite(x.detach()).flatten(1).all(dim=1)


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))


def _per_sample(value: float | Tensor, like: Tensor) -> Tensor:
    """A scalar or ``(B,)`` positive step as a tensor broadcastable against ``like`` ``(B, ...)``."""
    step = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if step.numel() == 0 or not bool((torch.isfinite(step) & (step > 0)).all()):
        raise ConfigError(f"The step eta must be a finite positive number (or one per sample), got {value!r}.")
    return step if step.ndim == 0 else step.reshape(-1, *([1] * (like.ndim - 1)))


register_algorithm("forward_backward", forward_backward)
