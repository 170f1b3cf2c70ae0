"""How gradients reach the parameters of ``f`` (and the injection) through an equilibrium.

Given an equilibrium ``z* = f(z*, x)`` found without a graph, each mode returns a tensor whose value
is ``z*`` (up to one more application of ``f``) and whose backward pass is:

- ``ift`` (:class:`ImplicitGradient`): exact implicit differentiation. For an upstream gradient
  ``v = dL/dz*`` it solves the adjoint fixed point ``w = J_f(z*)^T w + v`` with a registered solver,
  using vector-Jacobian products only, then passes ``w`` through one application of ``f``:
  ``dL/dtheta = w^T df/dtheta``. Equal to differentiating ``(I - J_f)^{-1} df/dtheta``.
- ``phantom`` (:class:`PhantomGradient`): backpropagation through ``T`` damped steps
  ``z_i = lam f(z_{i-1}) + (1 - lam) z_{i-1}`` started at ``z*`` (Geng et al.; NERD: T=8, lam=0.8);
  tends to the ``ift`` gradient as ``T`` grows.
- ``jfb`` (:class:`JacobianFreeGradient`): one differentiable application ``f(z*)``; replaces
  ``(I - J_f)^{-1}`` by ``I`` (Fung et al.), a descent direction for contractive ``f``.
- ``unroll`` (:class:`UnrolledGradient`): the explicit baseline; ``K`` plain iterations from
  ``z0`` with the whole graph kept. It replaces the solver rather than following it.

Memory: ``ift``, ``phantom`` and ``jfb`` keep the graph of one (``T`` for phantom) application of
``f``, whatever the number of forward solver iterations; ``unroll`` keeps ``K``.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from converge.deq.solvers import (
    FixedPointMap,
    SolverInfo,
    check_solver_options,
    get_solver,
    relative_residual,
)
from converge.errors import ConfigError

InfoSink = Callable[[SolverInfo], None]


class EquilibriumGradient(ABC):
    """A backward mode that attaches gradients to an equilibrium found without a graph."""

    name: ClassVar[str]

    @abstractmethod
    def attach(self, step: FixedPointMap, z_star: Tensor, on_backward_info: InfoSink | None = None) -> Tensor:
        """Return ``z*`` ``(B, *S)`` carrying this mode's gradient.

        Args:
            step: ``z -> f(z, x)`` with the injection bound; it is called with autograd enabled so
                gradients reach the parameters of ``f`` and ``x``.
            z_star: the equilibrium ``(B, *S)``, any graph on it is ignored.
            on_backward_info: called with the :class:`SolverInfo` of any solve done in backward.
        """


@dataclass(frozen=True)
class ImplicitGradient(EquilibriumGradient):
    """Exact implicit differentiation with an adjoint fixed-point solve (``ift``).

    Args:
        solver: registered solver for the adjoint fixed point ``w = J^T w + v``.
        max_iter: at most this many vector-Jacobian products.
        tol: relative-residual tolerance of the adjoint solve (float32 models rarely get far below
            1e-6; ``last_backward_info`` says what was reached).
        solver_options: further options of ``solver`` (e.g. ``{"m": 6}`` for Anderson).
    """

    name: ClassVar[str] = "ift"
    solver: str = "anderson"
    max_iter: int = 50
    tol: float = 1e-5
    solver_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        solver = get_solver(self.solver)
        clashes = sorted({"max_iter", "tol"} & set(self.solver_options))
        if clashes:
            raise ConfigError(f"Set {clashes} as options of 'ift' itself, not inside its solver_options.")
        options = check_solver_options(solver, {**self.solver_options, "max_iter": self.max_iter, "tol": self.tol})
        del options["max_iter"], options["tol"]
        object.__setattr__(self, "solver_options", MappingProxyType(options))

    def attach(self, step: FixedPointMap, z_star: Tensor, on_backward_info: InfoSink | None = None) -> Tensor:
        z_in = z_star.detach().requires_grad_()
        fz = step(z_in)
        solver = get_solver(self.solver)

        solving = False

        def adjoint(v: Tensor) -> Tensor | None:
            nonlocal solving
            # The vector-Jacobian products below run backward through fz again, which calls
            # this hook again: those inner calls must leave their gradient alone. A non-finite
            # upstream gradient is passed on unchanged, as autograd itself would pass it.
            if solving or not bool(torch.isfinite(v).all()):
                return None

            def adjoint_map(w: Tensor) -> Tensor:
                (vjp,) = torch.autograd.grad(fz, z_in, w, retain_graph=True)
                return vjp + v

            solving = True
            try:
                w, info = solver(adjoint_map, v, max_iter=self.max_iter, tol=self.tol, **self.solver_options)
            finally:
                solving = False
            if on_backward_info is not None:
                on_backward_info(info)
            return w

        fz.register_hook(adjoint)
        return fz


@dataclass(frozen=True)
class PhantomGradient(EquilibriumGradient):
    """Backpropagate through ``T`` damped steps from ``z*`` (``phantom``).

    Args:
        T: number of unrolled steps, ``>= 1``.
        lam: damping in ``(0, 1]``: ``z <- lam f(z) + (1 - lam) z``.
    """

    name: ClassVar[str] = "phantom"
    T: int = 8
    lam: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.T, int) or self.T < 1:
            raise ConfigError(f"phantom T must be a positive integer, got {self.T!r}.")
        if not 0 < self.lam <= 1:
            raise ConfigError(f"phantom lam must lie in (0, 1], got {self.lam!r}.")

    def attach(self, step: FixedPointMap, z_star: Tensor, on_backward_info: InfoSink | None = None) -> Tensor:
        z = z_star.detach()
        for _ in range(self.T):
            z = self.lam * step(z) + (1 - self.lam) * z if self.lam != 1 else step(z)
        return z


@dataclass(frozen=True)
class JacobianFreeGradient(EquilibriumGradient):
    """One differentiable application of ``f`` at ``z*`` (``jfb``)."""

    name: ClassVar[str] = "jfb"

    def attach(self, step: FixedPointMap, z_star: Tensor, on_backward_info: InfoSink | None = None) -> Tensor:
        return step(z_star.detach())


@dataclass(frozen=True)
class UnrolledGradient:
    """The explicit baseline (``unroll``): ``K`` plain iterations from ``z0``, all differentiated.

    Args:
        K: number of iterations, ``>= 1``.
    """

    name: ClassVar[str] = "unroll"
    K: int

    def __post_init__(self) -> None:
        if not isinstance(self.K, int) or self.K < 1:
            raise ConfigError(f"unroll K must be a positive integer, got {self.K!r}.")

    def unroll(self, step: FixedPointMap, z0: Tensor, tol: float) -> tuple[Tensor, SolverInfo]:
        """Run ``z_{k+1} = f(z_k)`` ``K`` times from ``z0`` ``(B, *S)``; return ``z_K`` and its info.

        The info's residual history is measured along the way (detached); the residual of ``z_K``
        costs one extra application of ``f`` without a graph; ``converged`` compares it with ``tol``.
        """
        start = time.perf_counter()
        z = z0
        history = []
        for _ in range(self.K):
            z_next = step(z)
            history.append(relative_residual(z.detach(), z_next.detach()))
            z = z_next
        with torch.no_grad():
            residual = relative_residual(z, step(z))
        history.append(residual)
        batch = z0.shape[0]
        info = SolverInfo(
            solver="unroll",
            iterations=torch.full((batch,), self.K + 1, dtype=torch.int64),
            residual=residual.cpu(),
            residual_history=torch.stack(history).cpu(),
            converged=(residual <= tol).cpu(),
            diverged=(~torch.isfinite(residual)).cpu(),
            tol=float(tol),
            f_evals=self.K + 1,
            wall_time=time.perf_counter() - start,
        )
        return z, info


GradientMode = EquilibriumGradient | UnrolledGradient

_MODES: dict[str, type[EquilibriumGradient] | type[UnrolledGradient]] = {
    "ift": ImplicitGradient,
    "phantom": PhantomGradient,
    "jfb": JacobianFreeGradient,
    "unroll": UnrolledGradient,
}


def available_backward_modes() -> list[str]:
    """Names accepted by :func:`make_backward`."""
    return sorted(_MODES)


def make_backward(name: str, options: Mapping[str, Any] | None = None) -> GradientMode:
    """Build the backward mode ``name`` (``ift``, ``phantom``, ``jfb``, ``unroll``) from its options.

    Raises ``ConfigError`` for an unknown name, an unknown option, a missing required option or a
    value out of range.
    """
    if name not in _MODES:
        raise ConfigError(f"Unknown backward mode '{name}'; choose one of {available_backward_modes()}.")
    mode = _MODES[name]
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(mode)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {unknown} for backward mode '{name}'; valid options are {sorted(fields)}."
        )
    missing = sorted(
        n for n, f in fields.items()
        if n not in options and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ConfigError(f"Backward mode '{name}' needs option(s) {missing}.")
    return mode(**options)
