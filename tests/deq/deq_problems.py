"""Contractive toy problems with known convergence behaviour, shared by the DEQ tests.

``f(z, x) = tanh(W z + U x)``; imported by the test modules of this folder (not a conftest, so
its name cannot clash with other folders' helpers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TanhLayer(nn.Module):
    """``f(z, x) = tanh(z W^T + x U^T)`` for states ``(B, n)`` and injections ``(B, p)``.

    ``tanh`` is 1-Lipschitz, so ``f`` contracts with constant ``||W||_2`` in ``z``.
    """

    def __init__(self, weight: Tensor, injection: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.injection = nn.Parameter(injection)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(z @ self.weight.T + x @ self.injection.T)

    def zero_state(self, x: Tensor) -> Tensor:
        """The starting state ``(B, n)`` for injection ``x``."""
        return x.new_zeros(x.shape[0], self.weight.shape[0])


def gaussian_weight(n: int, norm: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """A Gaussian ``n x n`` matrix rescaled to spectral norm ``norm``."""
    weight = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return (norm * weight / torch.linalg.matrix_norm(weight, 2)).to(dtype)


def symmetric_weight(n: int, norm: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """A symmetric ``n x n`` matrix with eigenvalues evenly spread over ``[-norm, norm]``."""
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.linspace(-norm, norm, n, dtype=torch.float64)
    return ((basis * eigenvalues) @ basis.T).to(dtype)


def make_problem(
    n: int = 16,
    p: int = 5,
    batch: int = 3,
    *,
    hard: bool = False,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[TanhLayer, Tensor]:
    """Easy: Gaussian ``W`` with ``||W|| = 0.9``, unit input. Hard: symmetric ``W`` with
    ``||W|| = 0.99`` and input scaled by 0.01 (nearly linear, plain iteration converges at 0.99)."""
    generator = torch.Generator().manual_seed(seed)
    weight = symmetric_weight(n, 0.99, generator, dtype) if hard else gaussian_weight(n, 0.9, generator, dtype)
    injection = (torch.randn(n, p, generator=generator, dtype=torch.float64) / p**0.5).to(dtype)
    x = ((0.01 if hard else 1.0) * torch.randn(batch, p, generator=generator, dtype=torch.float64)).to(dtype)
    return TanhLayer(weight, injection), x
