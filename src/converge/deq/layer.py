"""The deep-equilibrium layer: solve ``z* = f(z*, x)`` without a graph, then attach gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from converge.deq.backward import EquilibriumGradient, GradientMode, UnrolledGradient, make_backward
from converge.deq.solvers import Solver, SolverInfo, check_solver_options, get_solver, solver_default
from converge.errors import ConfigError

EquilibriumMap = Callable[[Tensor, Tensor], Tensor]


class DEQ(nn.Module):
    """A layer whose output is the fixed point ``z* = f(z*, x)``.

    Calling convention of ``f``: ``f(z, x)`` takes the state ``z`` of shape ``(B, *S)`` and the
    injection ``x`` (the layer's input, any shape with the same batch size) and returns the next
    state, shape ``(B, *S)``. ``f`` is called on the whole batch at every solver step. Anything
    else the update needs (a degradation operator, a noise level) belongs to ``f`` itself. When
    ``f`` is an ``nn.Module`` it is registered as the submodule ``f``, so its parameters belong to
    this layer; ``train()``/``eval()`` reach it as usual.

    Forward: with autograd enabled, the equilibrium is found without a graph by ``solver`` and the
    returned tensor carries the gradient of ``backward`` with respect to the parameters of ``f``
    and to ``x`` (see :mod:`converge.deq.backward`); with autograd disabled the solver's iterate is
    returned as is. ``backward="unroll"`` instead runs ``K`` differentiable plain iterations from
    ``z0`` in both cases (the explicit baseline; the solver is not used). The solve's
    :class:`SolverInfo` is kept in ``last_info`` and, for ``ift``, the adjoint solve's in
    ``last_backward_info`` after each backward pass.

    Args:
        f: the update ``f(z, x) -> z``.
        solver: a registered solver name (``anderson``, ``broyden``, ``fixed_point``) or a solver.
        solver_options: keyword options of the solver (``max_iter``, ``tol``, ``m``, ...).
        backward: ``ift``, ``phantom``, ``jfb``, ``unroll`` or a mode instance.
        backward_options: options of the named mode (``{"T": 8, "lam": 0.8}`` for phantom).

    Raises:
        ConfigError: for an unknown solver, backward mode or option, or a value out of range.

    Example:
        >>> f = nn.Linear(4, 4)
        >>> with torch.no_grad():
        ...     _ = f.weight.mul_(0.5 / torch.linalg.matrix_norm(f.weight, 2))
        >>> deq = DEQ(lambda z, x: torch.tanh(f(z) + x), solver="anderson", backward="ift")
        >>> z = deq(torch.randn(2, 4))
        >>> deq.last_info.all_converged
        True
    """

    def __init__(
        self,
        f: EquilibriumMap,
        *,
        solver: str | Solver = "anderson",
        solver_options: Mapping[str, Any] | None = None,
        backward: str | GradientMode = "phantom",
        backward_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.f = f
        self.solver = get_solver(solver) if isinstance(solver, str) else solver
        self.solver_options = check_solver_options(self.solver, solver_options or {})
        if isinstance(backward, str):
            self.backward_mode: GradientMode = make_backward(backward, backward_options)
        elif isinstance(backward, (EquilibriumGradient, UnrolledGradient)):
            if backward_options:
                raise ConfigError("Pass backward_options only with a backward mode name, not with an instance.")
            self.backward_mode = backward
        else:
            raise ConfigError(f"backward must be a mode name or a mode instance, got {type(backward).__name__}.")
        # Only the unrolled baseline needs it, to report convergence on the solver's terms.
        self._unroll_tol = float(self.solver_options.get("tol", solver_default(self.solver, "tol")) or 0.0)
        self.last_info: SolverInfo | None = None
        self.last_backward_info: SolverInfo | None = None

    def forward(self, x: Tensor, z0: Tensor | None = None) -> Tensor:
        """Equilibrium state ``z*`` ``(B, *S)`` for injection ``x``.

        Args:
            x: the injection, ``(B, ...)``.
            z0: starting state ``(B, *S)``; zeros shaped like ``x`` when omitted (give ``z0``
                whenever the state's shape differs from the injection's). No gradient flows to it.
        """
        # The state, the solver's arithmetic and its stopping test stay in at least float32 when f runs
        # under bfloat16 autocast (whose rounding, about 4e-3, is coarser than solver tolerances): the
        # autocast of the caller applies inside f only.
        device = x.device.type
        autocast = torch.is_autocast_enabled(device)
        low_precision = torch.get_autocast_dtype(device)
        state_dtype = torch.promote_types(x.dtype, torch.float32)
        z0 = (torch.zeros_like(x) if z0 is None else z0).detach().to(state_dtype)

        def step(z: Tensor) -> Tensor:
            with torch.autocast(device, dtype=low_precision, enabled=autocast):
                return self.f(z, x).to(state_dtype)

        with torch.autocast(device, enabled=False):
            if isinstance(self.backward_mode, UnrolledGradient):
                z, self.last_info = self.backward_mode.unroll(step, z0, self._unroll_tol)
                return z
            with torch.no_grad():
                z_star, self.last_info = self.solver(step, z0, **self.solver_options)
            if not torch.is_grad_enabled():
                return z_star
            return self.backward_mode.attach(step, z_star, self._record_backward_info)

    def set_solver_limits(self, max_iter: int | None = None, tol: float | None = None) -> None:
        """Change the solver's iteration limit or tolerance for later solves (``None``: keep), checked."""
        options = dict(self.solver_options)
        if max_iter is not None:
            options["max_iter"] = max_iter
        if tol is not None:
            options["tol"] = tol
        self.solver_options = check_solver_options(self.solver, options)

    def _record_backward_info(self, info: SolverInfo) -> None:
        self.last_backward_info = info

    def extra_repr(self) -> str:
        name = getattr(self.solver, "__name__", repr(self.solver))
        return f"solver={name}, solver_options={self.solver_options}, backward={self.backward_mode}"
