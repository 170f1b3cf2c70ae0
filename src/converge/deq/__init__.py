"""Deep-equilibrium core: batched fixed-point solvers, gradient modes and the ``DEQ`` layer.

- :mod:`converge.deq.solvers`: ``fixed_point``, ``anderson``, ``broyden`` and a registry
  (``get_solver("broyden")``, ``register_solver``); each returns ``(z, SolverInfo)`` and stops per
  sample on the relative residual ``||f(z) - z|| / ||f(z)||``.
- :mod:`converge.deq.backward`: ``ift``, ``phantom``, ``jfb`` and ``unroll`` gradient modes.
- :mod:`converge.deq.layer`: ``DEQ(f, solver=..., backward=...)``, an ``nn.Module``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from converge.deq import DEQ
    >>> class Update(nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(8, 8, 3, padding=1)
    ...     def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    ...         return torch.tanh(0.5 * self.conv(z) + x)
    >>> deq = DEQ(Update(), solver="anderson", solver_options={"max_iter": 40, "tol": 1e-4},
    ...           backward="phantom", backward_options={"T": 8, "lam": 0.8})
    >>> x = torch.randn(2, 8, 16, 16)
    >>> z = deq(x)                          # (2, 8, 16, 16); the state starts at zeros like x
    >>> z.square().mean().backward()        # gradients reach deq.f's parameters
    >>> deq.last_info.converged.shape
    torch.Size([2])
"""

from converge.deq.backward import (
    EquilibriumGradient,
    ImplicitGradient,
    JacobianFreeGradient,
    PhantomGradient,
    UnrolledGradient,
    available_backward_modes,
    make_backward,
)
from converge.deq.layer import DEQ
from converge.deq.solvers import (
    SolverInfo,
    anderson,
    available_solvers,
    broyden,
    check_solver_options,
    fixed_point,
    get_solver,
    register_solver,
    relative_residual,
)

__all__ = [
    "DEQ",
    "EquilibriumGradient",
    "ImplicitGradient",
    "JacobianFreeGradient",
    "PhantomGradient",
    "SolverInfo",
    "UnrolledGradient",
    "anderson",
    "available_backward_modes",
    "available_solvers",
    "broyden",
    "check_solver_options",
    "fixed_point",
    "get_solver",
    "make_backward",
    "register_solver",
    "relative_residual",
]
