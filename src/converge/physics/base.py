"""Operator contracts shared by every degradation.

A degradation owns its mathematics: callers never re-derive an adjoint or a proximal map.
Images are ``(B, C, H, W)`` float tensors in [0, 1]; measurements may have another shape
(a low-resolution image, for instance).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class Operator(nn.Module):
    """A (possibly non-linear) forward model ``y = A(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def to_grid(self, y: Tensor) -> Tensor:
        """A measurement ``y`` placed on the image grid, so measurements of any operator batch together
        (:class:`~converge.physics.batch.OperatorBatch`): the identity for operators that keep the size."""
        return y

    def from_grid(self, y: Tensor) -> Tensor:
        """The measurement that :meth:`to_grid` placed on the grid (its left inverse)."""
        return y


class LinearOperator(Operator):
    """A linear forward model with its adjoint, data-term gradient and data-term prox.

    Subclasses implement :meth:`forward` and :meth:`adjoint`; they override :meth:`prox_data`
    where a closed form exists. The fallback solves the normal equations by conjugate gradients.
    """

    def adjoint(self, y: Tensor) -> Tensor:
        """``A^T y``: maps a measurement back to image space."""
        raise NotImplementedError

    def normal(self, x: Tensor) -> Tensor:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))

    def data_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of ``0.5 ||A x - y||^2`` with respect to ``x``: ``A^T (A x - y)``."""
        return self.adjoint(self.forward(x) - y)

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """``argmin_x 0.5 ||A x - y||^2 + 0.5 rho ||x - z||^2``, i.e. ``(A^T A + rho I)^{-1} (A^T y + rho z)``.

        ``rho`` is a positive scalar or a ``(B,)`` tensor (one value per sample). This fallback runs
        conjugate gradients to a relative residual of 1e-6 (at most 200 iterations).
        """
        rho_b = _per_sample(rho, z)
        rhs = self.adjoint(y) + rho_b * z
        return conjugate_gradient(lambda v: self.normal(v) + rho_b * v, rhs, x0=z)

    def operator_norm(self, x0: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
        """Spectral norm ``||A||_2`` by power iteration on ``A^T A``, started from ``x0`` (an image-shaped tensor).

        The whole batch is treated as one vector, so per-sample operators give the largest norm among
        them. Stops when the Rayleigh quotient changes by less than ``tol`` (relative). Useful to pick a
        gradient step ``eta < 2 / ||A||^2``.
        """
        v = x0 / x0.norm()
        estimate = torch.zeros((), dtype=x0.dtype, device=x0.device)
        for _ in range(max_iter):
            w = self.normal(v)
            previous, estimate = estimate, (v * w).sum()
            v = w / w.norm().clamp_min(torch.finfo(x0.dtype).tiny)
            if (estimate - previous).abs() <= tol * estimate.abs():
                break
        return estimate.clamp_min(0).sqrt()


class Identity(LinearOperator):
    """``A = I``: denoising. ``prox_data(z, y, rho) = (y + rho z) / (1 + rho)``.

    >>> Identity()(torch.ones(1, 1, 2, 2)).sum().item()
    4.0
    """

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        rho_b = _per_sample(rho, z)
        return (y + rho_b * z) / (1 + rho_b)


def _per_sample(rho: float | Tensor, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(B,)`` value against ``like`` of shape ``(B, ...)``."""
    rho_t = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    if rho_t.ndim == 0:
        return rho_t
    return rho_t.reshape(-1, *([1] * (like.ndim - 1)))


def conjugate_gradient(
    apply_matrix: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``M x = rhs`` for a symmetric positive-definite ``M`` given as a function, per sample.

    ``rhs`` has shape ``(B, ...)``; each sample stops once ``||r|| <= tol ||rhs||``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    dims = tuple(range(1, rhs.ndim))
    r = rhs - apply_matrix(x)
    p = r.clone()
    rs = (r * r).sum(dims, keepdim=True)
    target = (tol**2) * (rhs * rhs).sum(dims, keepdim=True)
    for _ in range(max_iter):
        if bool((rs <= target).all()):
            break
        mp = apply_matrix(p)
        active = (rs > target).to(rhs.dtype)
        alpha = active * rs / (p * mp).sum(dims, keepdim=True).clamp_min(torch.finfo(rhs.dtype).tiny)
        x = x + alpha * p
        r = r - alpha * mp
        rs_new = (r * r).sum(dims, keepdim=True)
        p = r + (rs_new / rs.clamp_min(torch.finfo(rhs.dtype).tiny)) * p
        rs = rs_new
    return x
