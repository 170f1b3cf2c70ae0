"""Half-quadratic splitting with a denoiser as the prior (plug-and-play HQS, as in DPIR).

.. math:: x_k = \\mathrm{prox}_{f / \\rho_k}(z_{k-1}) = (A^T A + \\rho_k I)^{-1} \\left(A^T y + \\rho_k z_{k-1}\\right),
          \\qquad z_k = D(x_k, \\sigma_k)

with the data term :math:`f(x) = \\tfrac12 \\|A x - y\\|^2`, started at ``z_0 = x0`` (``A^T y`` by default).
HQS alternately minimises :math:`f(x) + \\Phi(z) + \\tfrac{\\rho}{2}\\|x - z\\|^2` over ``x`` and ``z``: it is
ADMM (:mod:`~converge.optim.admm`) without the dual variable. The x-step is the operator's own
:meth:`~converge.physics.base.LinearOperator.prox_data` with ``rho = rho_k``, reached through the
data-fidelity term as ``prox_{gamma f}`` with ``gamma = 1 / rho_k``.

**The penalty rho.** DPIR's ``alpha_k = lambda sigma_n^2 / sigma_k^2`` weighs ``||x - z||^2`` against
``||A x - y||^2``, which is the same minimiser as ``rho_k / 2`` against ``1/2 ||A x - y||^2``: the ``rho`` of
:func:`~converge.optim.forward_backward.dpir_schedule` goes to ``prox_data`` unchanged (the derivation from
DPIR's ``1 / (2 sigma_n^2)``-weighted objective is in :mod:`~converge.optim.admm`).

**The returned iterate is z**, the last denoiser output, as DPIR returns it. With a fixed ``rho`` and a
linear shrinkage ``D(v) = c v`` the fixed point has ``(A^T A + rho (1 - c) I) x = A^T y`` and ``z = c x``.
Relative change, stopping test and divergence guard (:mod:`~converge.optim.forward_backward`) apply to ``z``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from converge.optim.admm import Penalty, _check_guard, _penalty_sequence, _start, _warn_diverged
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


def hqs(
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
    """Plug-and-play half-quadratic splitting: ``x_k = prox_data(z_{k-1}, y, rho_k)``, ``z_k = D(x_k, sigma_k)``.

    Options as in :func:`~converge.optim.admm.admm`: exactly one of a fixed ``sigma`` (with a float or
    ``(B,)`` ``rho``; run to ``tol``, default 1e-5, or ``max_iter``, default 100) and a ``schedule`` of
    ``(K,)`` or ``(K, B)`` levels (with ``rho`` a float or ``(K,)`` / ``(K, B)``: DPIR is
    ``hqs(y, A, D, schedule=sigmas, rho=rhos)`` with ``sigmas, rhos = dpir_schedule(K, noise_sigma)``), run
    for all ``K`` iterations. The estimate is ``(B, C, H, W)``, started at ``x0`` or ``A^T y`` (for a mask:
    missing pixels at 0), not clamped. Returns ``z`` and an :class:`AlgorithmInfo` named ``hqs``.

    >>> from converge.physics import Identity
    >>> from converge.optim.priors import IdentityDenoiser
    >>> y = torch.full((1, 1, 4, 4), 0.5)
    >>> z, info = hqs(y, Identity(), IdentityDenoiser(), sigma=0.1, rho=1.0)
    >>> torch.equal(z, y), info.iterations, info.converged
    (True, 1, True)
    """
    sigmas = _sigma_sequence(sigma, schedule, max_iter, tol)
    rhos = _penalty_sequence(rho, len(sigmas), per_iteration=schedule is not None)
    tol = _check_guard(tol, divergence_threshold, patience)
    fidelity = L2DataFidelity() if data_fidelity is None else data_fidelity
    z = _start(y, operator, x0)
    best = _BestIterate(z, torch.full((z.shape[0],), math.inf, dtype=torch.float64, device=z.device))
    changes: list[float] = []
    for k, (sigma_k, rho_k) in enumerate(zip(sigmas, rhos)):
        x = fidelity.prox(z, y, operator, 1.0 / rho_k)
        z_next = _checked(denoiser.denoise(x, sigma_k), z)
        change = _relative_change(z_next, z)
        changes.append(float(change.max()))
        report("iteration", k + 1, len(sigmas), z_next)
        best.update(z_next, change)
        if not bool(_finite_per_sample(z_next).all()) or _growing(changes, divergence_threshold, patience):
            _warn_diverged("hqs", k + 1, changes[-1], "check the denoiser's level and raise rho")
            return best.x, AlgorithmInfo("hqs", k + 1, changes, converged=False, diverged=True)
        z = z_next
        if schedule is None and changes[-1] <= tol:
            return z, AlgorithmInfo("hqs", k + 1, changes, converged=True, diverged=False)
    return z, AlgorithmInfo("hqs", len(changes), changes, converged=False, diverged=False)


register_algorithm("hqs", hqs)
