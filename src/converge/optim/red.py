"""Regularisation by denoising (RED; Romano, Elad and Milanfar, SIAM J. Imaging Sci. 2017), gradient form.

.. math:: x_{k+1} = x_k - \\mu \\left(A^T (A x_k - y) + \\lambda \\left(x_k - D(x_k, \\sigma)\\right)\\right)

is gradient descent on :math:`\\tfrac12 \\|A x - y\\|^2 + \\tfrac{\\lambda}{2} x^T (x - D(x, \\sigma))` when the
denoiser is locally homogeneous with a symmetric Jacobian (RED's conditions; a trained network meets them
only roughly, and the iteration is then a fixed-point method that need not minimise anything). The
denoiser level ``sigma`` is fixed: RED's regulariser is defined by one denoiser, so there is no schedule.

**Scaling of lambda.** Romano et al. weigh the data term by :math:`1 / (2\\sigma_n^2)`; here it is
unweighted, so ``lam`` is their :math:`\\lambda \\sigma_n^2` (with :math:`\\lambda` and :math:`\\sigma_n` on the
same intensity scale the product does not depend on that scale).

The step defaults to :math:`\\mu = 1 / (\\|A\\|^2 + \\lambda)` (``||A||`` by power iteration from the start
point): the inverse Lipschitz constant of the gradient for a denoiser whose Jacobian ``J`` has
``0 <= J <= I``. With ``D(v) = c v`` the fixed point solves ``(A^T A + lam (1 - c) I) x = A^T y``.
The returned iterate is ``x``; relative change, stopping test and divergence guard are those of
:mod:`~converge.optim.forward_backward`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.optim.admm import _check_guard, _start, _warn_diverged
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


def red(
    y: Tensor,
    operator: LinearOperator,
    denoiser: Denoiser,
    *,
    sigma: Sigma,
    lam: float | Tensor,
    mu: float | Tensor | None = None,
    x0: Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    data_fidelity: DataFidelity | None = None,
    divergence_threshold: float = 1.0,
    patience: int = 3,
) -> tuple[Tensor, AlgorithmInfo]:
    """RED by gradient steps: ``x_{k+1} = x_k - mu (grad f(x_k) + lam (x_k - D(x_k, sigma)))``.

    ``y`` is the measurement (the operator's output shape); ``x`` is ``(B, C, H, W)``, started at ``x0`` or
    ``A^T y`` (for a mask: missing pixels at 0; pass ``x0`` to start elsewhere), and not clamped. ``sigma``
    is the denoiser's fixed level (float or ``(B,)``, [0, 1] scale), ``lam > 0`` the prior's weight against
    ``0.5 ||A x - y||^2`` and ``mu`` the step (each a float or ``(B,)``; ``mu`` defaults to
    ``1 / (||A||^2 + lam)``). Iterates
    until the relative change is at most ``tol`` (default 1e-5) or ``max_iter`` (default 100). Returns ``x``
    and an :class:`AlgorithmInfo` named ``red``.

    >>> from converge.physics import Identity
    >>> from converge.optim.priors import IdentityDenoiser
    >>> y = torch.full((1, 1, 4, 4), 0.5)
    >>> x, info = red(y, Identity(), IdentityDenoiser(), sigma=0.1, lam=0.5)
    >>> torch.equal(x, y), info.iterations, info.converged
    (True, 1, True)
    """
    sigmas = _sigma_sequence(sigma, None, max_iter, tol)
    tol = _check_guard(tol, divergence_threshold, patience)
    fidelity = L2DataFidelity() if data_fidelity is None else data_fidelity
    x = _start(y, operator, x0)
    weight = _per_sample(lam, x, "lam, the prior's weight,")
    step = _default_step(operator, x, weight) if mu is None else _per_sample(mu, x, "The step mu")
    best = _BestIterate(x, torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device))
    changes: list[float] = []
    for k, sigma_k in enumerate(sigmas):
        residual = x - _checked(denoiser.denoise(x, sigma_k), x)
        x_next = x - step * (fidelity.grad(x, y, operator) + weight * residual)
        change = _relative_change(x_next, x)
        changes.append(float(change.max()))
        report("iteration", k + 1, len(sigmas), x_next)
        best.update(x_next, change)
        if not bool(_finite_per_sample(x_next).all()) or _growing(changes, divergence_threshold, patience):
            _warn_diverged("red", k + 1, changes[-1], "lower the step mu")
            return best.x, AlgorithmInfo("red", k + 1, changes, converged=False, diverged=True)
        x = x_next
        if changes[-1] <= tol:
            return x, AlgorithmInfo("red", k + 1, changes, converged=True, diverged=False)
    return x, AlgorithmInfo("red", len(changes), changes, converged=False, diverged=False)


def _default_step(operator: LinearOperator, start: Tensor, lam: Tensor) -> Tensor:
    """``1 / (||A||^2 + lam)``, the norm by power iteration from ``start`` (from ones when ``start`` is zero);
    ``lam`` already broadcast against ``start``."""
    probe = start.detach() if bool(start.detach().abs().sum() > 0) else torch.ones_like(start)
    return 1.0 / (operator.operator_norm(probe).square() + lam)


def _per_sample(value: float | Tensor, like: Tensor, name: str) -> Tensor:
    """A positive scalar or ``(B,)`` value as a tensor broadcastable against ``like`` ``(B, ...)``."""
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if tensor.ndim > 1 or tensor.numel() == 0 or not bool((torch.isfinite(tensor) & (tensor > 0)).all()):
        raise ConfigError(f"{name} must be a finite positive number (or one per sample), got {value!r}.")
    return tensor if tensor.ndim == 0 else tensor.reshape(-1, *([1] * (like.ndim - 1)))


register_algorithm("red", red)
