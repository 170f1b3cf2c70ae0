"""A batch of degradations: one operator per sample, each applied to its own image.

Training and multi-task restoration mix degradations in one batch (a blur for one sample, a mask or
a downsampling for another, each with its own parameters). :class:`OperatorBatch` holds one operator
per sample and applies each to its sample; samples sharing one operator object run together.

Measurements live on the image grid, so a batch of them is always one ``(B, C, H, W)`` tensor even
when an operator changes the size (super-resolution). Each operator maps its measurement to the grid
with :meth:`~converge.physics.base.Operator.to_grid` (the identity for same-size operators; zero
filling at the sampled pixels for :class:`~converge.physics.downsample.Downsample`) and back with
:meth:`~converge.physics.base.Operator.from_grid`. On the grid the batch is the linear operator
``G_i A_i`` per sample, where ``G_i`` is ``to_grid`` (``G_i^T G_i = I``): its adjoint is
``A_i^T G_i^T``, and the data-term gradient and prox are exactly those of ``A_i`` on the original
measurement, ``A_i^T (A_i x - y_i)`` and ``(A_i^T A_i + rho I)^{-1} (A_i^T y_i + rho z)``.

>>> from converge.physics import Downsample, Identity
>>> batch = OperatorBatch([Identity(), Downsample(2)])
>>> batch(torch.ones(2, 1, 4, 4)).shape
torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.physics.base import LinearOperator, Operator


class OperatorBatch(LinearOperator):
    """``operators[i]`` applied to sample ``i`` of a ``(B, C, H, W)`` batch, measurements on the image grid.

    The linear maps (:meth:`adjoint`, :meth:`data_grad`, :meth:`prox_data`) need every operator to be
    a :class:`~converge.physics.base.LinearOperator`; a batch holding a non-linear one (JPEG) only
    degrades (:meth:`forward`) and raises :class:`ConfigError` for them. ``rho`` of :meth:`prox_data`
    is a scalar or ``(B,)``.
    """

    def __init__(self, operators: Sequence[Operator]) -> None:
        super().__init__()
        if not operators:
            raise ConfigError("an OperatorBatch needs at least one operator")
        self.operators = list(operators)
        unique: dict[int, Operator] = {}
        for operator in self.operators:
            if not isinstance(operator, Operator):
                raise ConfigError(f"an OperatorBatch holds operators, got {type(operator).__name__}")
            unique.setdefault(id(operator), operator)
        # Registered once each, so .to(device) moves every distinct operator.
        self.distinct = nn.ModuleList(unique.values())

    def __len__(self) -> int:
        return len(self.operators)

    def extra_repr(self) -> str:
        return f"samples={len(self.operators)}, distinct={len(self.distinct)}"

    def groups(self) -> Iterator[tuple[Operator, Tensor]]:
        """Each distinct operator with the ``(n,)`` indices of the samples it applies to."""
        indices: dict[int, list[int]] = {}
        for position, operator in enumerate(self.operators):
            indices.setdefault(id(operator), []).append(position)
        for operator in self.distinct:
            yield operator, torch.tensor(indices[id(operator)])

    def _per_group(self, x: Tensor, apply: Callable[[Operator, Tensor, Tensor], Tensor]) -> Tensor:
        """``apply(operator, samples, indices)`` on each group of ``x``'s samples, reassembled in order."""
        if x.shape[0] != len(self.operators):
            raise ConfigError(f"an OperatorBatch of {len(self.operators)} operators got a batch of {x.shape[0]}")
        # The physics runs in the input's precision even inside a model's bfloat16 autocast: a data term
        # is not where rounding may be traded for speed.
        with torch.autocast(x.device.type, enabled=False):
            if len(self.distinct) == 1:
                return apply(self.distinct[0], x, torch.arange(x.shape[0]))
            parts = [
                (indices, apply(operator, x[indices.to(x.device)], indices)) for operator, indices in self.groups()
            ]
        out = parts[0][1].new_empty((x.shape[0], *parts[0][1].shape[1:]))
        for indices, part in parts:
            out[indices.to(x.device)] = part
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``G_i A_i x_i`` per sample: ``(B, C, H, W)`` images to grid measurements of the same shape."""
        return self._per_group(x, lambda operator, samples, _: operator.to_grid(operator(samples)))

    def adjoint(self, y: Tensor) -> Tensor:
        """``A_i^T G_i^T y_i`` per sample: grid measurements back to images."""
        return self._per_group(
            y, lambda operator, samples, _: self._linear(operator).adjoint(operator.from_grid(samples))
        )

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Each sample's data prox ``(A_i^T A_i + rho_i I)^{-1} (A_i^T y_i + rho_i z_i)`` (closed form where
        its operator has one)."""
        rho_b = torch.as_tensor(rho, dtype=z.dtype, device=z.device)
        stacked = torch.cat([z, y], dim=1)
        channels = z.shape[1]

        def prox(operator: Operator, samples: Tensor, indices: Tensor) -> Tensor:
            rho_i = rho_b if rho_b.ndim == 0 else rho_b[indices.to(rho_b.device)]
            measured = operator.from_grid(samples[:, channels:])
            return self._linear(operator).prox_data(samples[:, :channels], measured, rho_i)

        return self._per_group(stacked, prox)

    def to_grid(self, y: Tensor) -> Tensor:
        """A batch's measurements are on the grid already."""
        return y

    def from_grid(self, y: Tensor) -> Tensor:
        """A batch's measurements are on the grid already."""
        return y

    @staticmethod
    def _linear(operator: Operator) -> LinearOperator:
        if not isinstance(operator, LinearOperator):
            raise ConfigError(f"{type(operator).__name__} is not linear: it has no adjoint or data prox")
        return operator


def as_operator_batch(operator: Operator, batch: int) -> OperatorBatch:
    """``operator`` as an :class:`OperatorBatch` of ``batch`` samples (one shared operator, or itself)."""
    if isinstance(operator, OperatorBatch):
        if len(operator) != batch:
            raise ConfigError(f"an OperatorBatch of {len(operator)} operators does not fit a batch of {batch}")
        return operator
    return OperatorBatch([operator] * batch)


