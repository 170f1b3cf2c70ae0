"""Plug-and-play ADMM: the alternating direction method of multipliers with a denoiser as the prior.

.. math:: x_{k+1} = \\mathrm{prox}_{f / \\rho_k}(z_k - u_k)
          = (A^T A + \\rho_k I)^{-1} \\left(A^T y + \\rho_k (z_k - u_k)\\right)

.. math:: z_{k+1} = D(x_{k+1} + u_k, \\sigma_k), \\qquad u_{k+1} = u_k + x_{k+1} - z_{k+1}

with the data term :math:`f(x) = \\tfrac12 \\|A x - y\\|^2` and ``u`` the scaled dual variable, started at
``z_0 = x0`` (``A^T y`` by default) and ``u_0 = 0``. The x-step is the operator's own
:meth:`~converge.physics.base.LinearOperator.prox_data` with ``rho = rho_k`` (closed form for identity,
circular blur, mask and super-resolution; conjugate gradients otherwise), reached through the data-fidelity
term as ``prox_{gamma f}`` with ``gamma = 1 / rho_k``. The denoiser stands in for the prior's prox.

**The penalty rho and the DPIR schedule.** DPIR (Zhang et al., TPAMI 2021) writes the objective as
:math:`\\frac{1}{2\\sigma_n^2}\\|Ax - y\\|^2 + \\lambda \\Phi(x)` with penalty :math:`\\mu_k` and denoiser level
:math:`\\sigma_k = \\sqrt{\\lambda / \\mu_k}`. Multiplying the x-step objective by :math:`\\sigma_n^2` puts it
on our unweighted data term: :math:`\\tfrac12\\|Ax - y\\|^2 + \\tfrac{\\rho_k}{2}\\|x - v\\|^2` with

.. math:: \\rho_k = \\mu_k \\sigma_n^2 = \\lambda \\sigma_n^2 / \\sigma_k^2,

exactly the ``rho`` of :func:`~converge.optim.forward_backward.dpir_schedule`, passed to ``prox_data``
unchanged (no further factor of :math:`\\sigma_n^2`, 2 or :math:`1/\\rho`). The scaled dual is not rescaled
when ``rho_k`` changes, as in Chan et al.'s plug-and-play ADMM (IEEE TCI 3(1)) and deepinv's ADMM iterator
(Boyd et al.'s varying-penalty ADMM would multiply ``u`` by ``rho_{k-1} / rho_k``).

**The returned iterate is z**, the denoiser's output: the estimate the prior has shaped, as DPIR returns
its last denoiser output (the x-step output still carries the noise the data term lets through); at a
fixed point ``x = z`` and the two agree. The relative change, the
stopping test and the divergence guard of :mod:`~converge.optim.forward_backward` all apply to ``z``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.optim.data_fidelity import DataFidelity, L2DataFidelity
from converge.optim.forward_backward import (
    _BestIterate,
    _checked,
    _finite_per_sample,
    _growing,
    _relative_change,
    _sigma_sequence,
)
from converge.optim.priors import Denoiser, Sigma
from converge.optim.registry import AlgorithmInfo, register_algorithm
from converge.physics.base import LinearOperator
from converge.progress import report

Penalty = float | Tensor


def admm(
    y: Tensor,
    operator: LinearOperator,
    denoiser: Denoiser,
    *,
    sigma: Sigma | None = None,
    schedule: Tensor | None = None,
    rho: Penalty | None = None,
    x0: Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    data_fidelity: DataFidelity | None = None,
    divergence_threshold: float = 1.0,
    patience: int = 3,
) -> tuple[Tensor, AlgorithmInfo]:
    """Plug-and-play ADMM (see the module docstring for the iteration and the scaling of ``rho``).

    ``y`` is the measurement (the operator's output shape); the estimate is ``(B, C, H, W)``, started at
    ``x0`` or ``A^T y`` (for a mask: missing pixels at 0; pass ``x0`` to start elsewhere), and not clamped.
    Give exactly one of:

    - ``sigma``: a fixed level (float or ``(B,)``, [0, 1] scale) with a fixed ``rho`` (float or ``(B,)``);
      iterate until the relative change of ``z`` is at most ``tol`` (default 1e-5) or ``max_iter``
      (default 100);
    - ``schedule``: ``(K,)`` or ``(K, B)`` levels with ``rho`` a float or ``(K,)`` / ``(K, B)`` weights, one
      per iteration (``sigmas, rhos = dpir_schedule(K, noise_sigma)``), run for all ``K`` iterations.

    ``rho`` is the weight of ``0.5 rho ||x - v||^2`` against ``0.5 ||A x - y||^2`` in the x-step: larger
    ``rho`` trusts the prior more. Returns ``z`` and an :class:`AlgorithmInfo` named ``admm``.

    >>> from converge.physics import Identity
    >>> from converge.optim.priors import IdentityDenoiser
    >>> y = torch.full((1, 1, 4, 4), 0.5)
    >>> z, info = admm(y, Identity(), IdentityDenoiser(), sigma=0.1, rho=1.0)
    >>> torch.equal(z, y), info.iterations, info.converged
    (True, 1, True)
    """
    sigmas = _sigma_sequence(sigma, schedule, max_iter, tol)
    rhos = _penalty_sequence(rho, len(sigmas), per_iteration=schedule is not None)
    tol = _check_guard(tol, divergence_threshold, patience)
    fidelity = L2DataFidelity() if data_fidelity is None else data_fidelity
    z = _start(y, operator, x0)
    u = torch.zeros_like(z)
    best = _BestIterate(z, torch.full((z.shape[0],), math.inf, dtype=torch.float64, device=z.device))
    changes: list[float] = []
    for k, (sigma_k, rho_k) in enumerate(zip(sigmas, rhos)):
        x = fidelity.prox(z - u, y, operator, 1.0 / rho_k)
        z_next = _checked(denoiser.denoise(x + u, sigma_k), z)
        u = u + x - z_next
        change = _relative_change(z_next, z)
        changes.append(float(change.max()))
        report("iteration", k + 1, len(sigmas), z_next)
        best.update(z_next, change)
        if not bool(_finite_per_sample(z_next).all()) or _growing(changes, divergence_threshold, patience):
            _warn_diverged("admm", k + 1, changes[-1], "check the denoiser's level and raise rho")
            return best.x, AlgorithmInfo("admm", k + 1, changes, converged=False, diverged=True)
        z = z_next
        if schedule is None and changes[-1] <= tol:
            return z, AlgorithmInfo("admm", k + 1, changes, converged=True, diverged=False)
    return z, AlgorithmInfo("admm", len(changes), changes, converged=False, diverged=False)


def _penalty_sequence(rho: Penalty | None, iterations: int, *, per_iteration: bool) -> list[Penalty]:
    """The data-step weight of each iteration: ``rho`` repeated, or, beside a schedule, the rows of a
    ``(K,)`` or ``(K, B)`` ``rho``. A fixed level takes a float or ``(B,)`` ``rho``."""
    if rho is None:
        raise ConfigError(
            "Give rho, the weight of the data step: a float, or beside a schedule the per-iteration "
            "weights of dpir_schedule (sigmas, rhos = dpir_schedule(K, noise_sigma))."
        )
    values = torch.as_tensor(rho, dtype=torch.float64).detach()
    if values.numel() == 0 or not bool((torch.isfinite(values) & (values > 0)).all()):
        raise ConfigError(f"rho must be finite and positive (one value, per sample or per iteration), got {rho!r}.")
    if values.ndim == 0:
        return [float(values)] * iterations
    weights = rho if isinstance(rho, Tensor) else values
    if not per_iteration:
        if values.ndim != 1:
            raise ConfigError(f"With a fixed sigma, rho is a float or a (B,) tensor, got shape {tuple(values.shape)}.")
        return [weights] * iterations
    if values.ndim not in (1, 2) or len(values) != iterations:
        raise ConfigError(
            f"Beside a schedule of {iterations} levels, rho is a float or a ({iterations},) or ({iterations}, B) "
            f"tensor, got shape {tuple(values.shape)}."
        )
    return [float(row) if row.ndim == 0 else row for row in weights]


def _check_guard(tol: float | None, divergence_threshold: float, patience: int) -> float:
    """``tol`` (default 1e-5) once it and the divergence guard's settings are valid."""
    tol = 1e-5 if tol is None else tol
    if tol < 0 or divergence_threshold <= 0 or patience < 1:
        raise ConfigError(
            "tol must be >= 0, divergence_threshold > 0 and patience >= 1; "
            f"got {tol}, {divergence_threshold}, {patience}."
        )
    return tol


def _start(y: Tensor, operator: LinearOperator, x0: Tensor | None) -> Tensor:
    """``x0``, or ``A^T y`` when none is given; a start point with NaN or inf raises."""
    start = operator.adjoint(y) if x0 is None else x0
    if not bool(torch.isfinite(start).all()):
        raise ConfigError("The start point contains NaN or inf; start the algorithm from a finite image.")
    return start


def _warn_diverged(name: str, iteration: int, change: float, advice: str) -> None:
    warnings.warn(
        f"{name} diverged at iteration {iteration} (relative change {change:.3g}); "
        f"returning the lowest-change finite iterate: {advice}.",
        RuntimeWarning,
        stacklevel=3,
    )


register_algorithm("admm", admm)
