"""Data-fidelity terms ``f(x)`` that tie an image estimate to its measurement ``y`` through an operator.

A data-fidelity term is the part of a variational objective that an iterative algorithm reaches through
its gradient or its proximal map. The maths of the operator (adjoint, closed-form data prox) stays with
the operator (:class:`~converge.physics.base.LinearOperator`): this module only rescales it.
Images are ``(B, C, H, W)`` float tensors in [0, 1]; ``y`` has the operator's measurement shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import LinearOperator


class DataFidelity(ABC):
    """A data term ``f(x) = f(x; y, A)`` with its value, gradient and proximal map."""

    @abstractmethod
    def value(self, x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
        """``f(x)`` for each sample: a ``(B,)`` tensor."""

    @abstractmethod
    def grad(self, x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
        """``grad f(x)``, image-shaped like ``x``."""

    @abstractmethod
    def prox(self, z: Tensor, y: Tensor, operator: LinearOperator, gamma: float | Tensor) -> Tensor:
        """``prox_{gamma f}(z) = argmin_x gamma f(x) + 0.5 ||x - z||^2``; ``gamma`` a float or ``(B,)``."""


class L2DataFidelity(DataFidelity):
    """Least squares: ``f(x) = 0.5 ||A x - y||^2`` (Gaussian noise of any level; the level goes in the step).

    .. math:: \\nabla f(x) = A^T (A x - y), \\qquad
              \\mathrm{prox}_{\\gamma f}(z) = (A^T A + \\gamma^{-1} I)^{-1} (A^T y + \\gamma^{-1} z)

    The prox is the operator's own :meth:`~converge.physics.base.LinearOperator.prox_data` with
    ``rho = 1 / gamma``: FFTs for a circular blur or super-resolution, pixel-wise for a mask, conjugate
    gradients for the others.

    >>> from converge.physics import Identity
    >>> L2DataFidelity().value(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), Identity())
    tensor([2.])
    """

    def value(self, x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
        residual = operator(x) - y
        return 0.5 * residual.square().flatten(1).sum(dim=1)

    def grad(self, x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
        return operator.data_grad(x, y)

    def prox(self, z: Tensor, y: Tensor, operator: LinearOperator, gamma: float | Tensor) -> Tensor:
        return operator.prox_data(z, y, rho=1.0 / _positive(gamma, "gamma"))


def _positive(value: float | Tensor, name: str) -> float | Tensor:
    """``value`` unchanged once every entry of it is a finite positive number; else :class:`ConfigError`."""
    entries = torch.as_tensor(value, dtype=torch.float64).detach()
    if entries.numel() == 0 or not bool((torch.isfinite(entries) & (entries > 0)).all()):
        raise ConfigError(f"{name} must be a finite positive number (or one per sample), got {value!r}.")
    return value
