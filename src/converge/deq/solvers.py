"""Batched fixed-point solvers: find ``z`` with ``z = f(z)``, stopping per sample.

Every solver is a pure function ``solver(f, z0, *, max_iter, tol, bound, ...) -> (z, SolverInfo)``:

- ``f`` maps a state of shape ``(B, *S)`` to a tensor of the same shape and is always called on
  the whole batch (models with batch statistics or attention need that);
- each sample stops on its own when its relative residual ``||f(z) - z|| / ||f(z)||`` is at most
  ``tol``; a stopped sample is frozen (its state no longer changes and its history is no longer
  updated) while the others continue;
- a sample whose iterate turns non-finite or exceeds ``bound`` in absolute value is stopped and
  reported as diverged;
- the iterate returned for each sample is the lowest-residual one seen, never a non-finite one.

One iteration costs one evaluation of ``f`` for every solver here, so iteration counts are
comparable across solvers. Solvers run without building an autograd graph; gradients through an
equilibrium are the job of :mod:`converge.deq.backward`.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.progress import report

FixedPointMap = Callable[[Tensor], Tensor]
Solver = Callable[..., tuple[Tensor, "SolverInfo"]]
# propose(z, fz, g, active, all_active) -> next iterate, all flat (B, D); g = fz - z, active is the
# (B,) bool mask of samples still iterating and all_active says whether it is all true.
_Proposal = Callable[[Tensor, Tensor, Tensor, Tensor, bool], Tensor]

DEFAULT_BOUND = 1e10


@dataclass(frozen=True)
class SolverInfo:
    """What a solve did, per sample. All tensors live on the CPU.

    Attributes:
        solver: registry name of the solver.
        iterations: ``(B,)`` int64, evaluations of ``f`` spent on each sample before it stopped.
        residual: ``(B,)`` relative residual ``||f(z) - z|| / ||f(z)||`` of the returned iterate
            (``inf`` when no finite one was seen).
        residual_history: ``(K, B)`` relative residual of each sample's iterate at each iteration;
            ``NaN`` once the sample has stopped.
        converged: ``(B,)`` bool, ``residual <= tol``.
        diverged: ``(B,)`` bool, stopped by the divergence guard (non-finite or beyond ``bound``).
        tol: the tolerance the solve was asked for.
        f_evals: number of (batched) calls of ``f``.
        wall_time: seconds spent in the solver.
    """

    solver: str
    iterations: Tensor
    residual: Tensor
    residual_history: Tensor
    converged: Tensor
    diverged: Tensor
    tol: float
    f_evals: int
    wall_time: float

    @property
    def all_converged(self) -> bool:
        """Whether every sample reached the tolerance."""
        return bool(self.converged.all())

    def summary(self) -> str:
        """One line for logs: converged count, iteration range, worst residual, time."""
        batch = self.converged.numel()
        return (
            f"{self.solver}: {int(self.converged.sum())}/{batch} converged, "
            f"{int(self.diverged.sum())} diverged, iterations {int(self.iterations.min())}-"
            f"{int(self.iterations.max())}, max residual {float(self.residual.max()):.2e} "
            f"(tol {self.tol:.0e}), {self.wall_time:.3f} s"
        )


_SOLVERS: dict[str, Solver] = {}


def register_solver(name: str, solver: Solver, *, overwrite: bool = False) -> None:
    """Make ``solver`` available to configs and :class:`~converge.deq.layer.DEQ` as ``name``.

    The solver must follow the contract of this module: ``solver(f, z0, *, max_iter, tol, ...)``
    returning ``(z, SolverInfo)``, with every option keyword-only.
    """
    if name in _SOLVERS and not overwrite:
        raise ConfigError(f"A solver named '{name}' is already registered; pass overwrite=True to replace it.")
    _SOLVERS[name] = solver


def get_solver(name: str) -> Solver:
    """The registered solver called ``name`` (``fixed_point``, ``anderson``, ``broyden``, ...)."""
    if name not in _SOLVERS:
        raise ConfigError(f"Unknown solver '{name}'; choose one of {sorted(_SOLVERS)}.")
    return _SOLVERS[name]


def available_solvers() -> list[str]:
    """Names of all registered solvers, sorted."""
    return sorted(_SOLVERS)


def solver_option_names(solver: Solver) -> list[str]:
    """The keyword-only options ``solver`` accepts."""
    params = inspect.signature(solver).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_solver_options(solver: Solver, options: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``options`` as a dict after checking that ``solver`` accepts them.

    Raises ``ConfigError`` for an option ``solver`` does not take, and for a value it rejects
    (found by a dry run on a one-element state, so bad values fail when a model is configured,
    not in the middle of training).
    """
    valid = solver_option_names(solver)
    unknown = sorted(set(options) - set(valid))
    name = getattr(solver, "__name__", repr(solver))
    if unknown:
        raise ConfigError(f"Unknown option(s) {unknown} for solver '{name}'; valid options are {valid}.")
    try:
        solver(lambda z: z, torch.zeros(1, 1), **options)
    except TypeError as error:
        raise ConfigError(f"Solver '{name}' rejected options {dict(options)}: {error}.") from error
    return dict(options)


def solver_default(solver: Solver, option: str) -> Any:
    """The default value of keyword ``option`` of ``solver`` (``None`` when it has none)."""
    param = inspect.signature(solver).parameters.get(option)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def relative_residual(z: Tensor, fz: Tensor) -> Tensor:
    """Per-sample ``||f(z) - z|| / ||f(z)||`` for states of shape ``(B, *S)``; returns ``(B,)``."""
    z_flat, fz_flat = z.reshape(z.shape[0], -1), fz.reshape(fz.shape[0], -1)
    tiny = torch.finfo(z.dtype).tiny
    return (fz_flat - z_flat).norm(dim=1) / (fz_flat.norm(dim=1) + tiny)


def _write_active(destination: Tensor, value: Tensor, active: Tensor, all_active: bool) -> None:
    """Copy ``value`` into ``destination`` (both ``(B, ...)``) for the active samples only."""
    if all_active:
        destination.copy_(value)
    else:
        mask = active.view(-1, *([1] * (value.dim() - 1)))
        destination.copy_(torch.where(mask, value, destination))


def _inner_products(vectors: Tensor, memory: Tensor) -> Tensor:
    """``(B, k, D) x (B, n, D) -> (B, k, n)`` of per-sample dot products.

    Written as rows times a transposed buffer: on CPU this runs about ten times faster than the
    equivalent ``bmm(memory, vectors^T)`` for the skinny shapes of solver histories.
    """
    return torch.bmm(vectors, memory.transpose(1, 2))


def _check_common(max_iter: int, tol: float, bound: float) -> None:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}.")
    if not tol >= 0:
        raise ConfigError(f"tol must be a non-negative number, got {tol!r}.")
    if not bound > 0:
        raise ConfigError(f"bound must be positive, got {bound!r}.")


def _iterate(
    name: str,
    f: FixedPointMap,
    z0: Tensor,
    max_iter: int,
    tol: float,
    bound: float,
    propose: _Proposal,
) -> tuple[Tensor, SolverInfo]:
    """The loop every solver shares: evaluate, record, stop per sample, then step the active ones."""
    start = time.perf_counter()
    if not torch.is_floating_point(z0) or z0.dim() < 1:
        raise ConfigError("z0 must be a floating-point tensor with a leading batch dimension.")
    if not bool(torch.isfinite(z0).all()):
        raise ConfigError("z0 contains NaN or inf; start the solver from a finite state.")
    shape, batch = z0.shape, z0.shape[0]

    def f_flat(z: Tensor) -> Tensor:
        fz = f(z.view(shape))
        if fz.shape != shape:
            raise ConfigError(f"f returned shape {tuple(fz.shape)} for a state of shape {tuple(shape)}; "
                              "a fixed-point map must keep the state's shape.")
        # Maps often return transposed layouts (x @ W.T, sparse products); every later pass over
        # f(z) runs at memory speed only on a row-major copy.
        return fz.reshape(batch, -1).contiguous()

    # A copy, so that the returned state never aliases the caller's z0.
    z = z0.detach().reshape(batch, -1).clone()
    device = z.device
    nan = torch.tensor(math.nan, dtype=z.dtype, device=device)
    tiny = torch.finfo(z.dtype).tiny
    best_z, best_res = z, torch.full((batch,), math.inf, dtype=z.dtype, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    converged = torch.zeros_like(active)
    diverged = torch.zeros_like(active)
    iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    history: list[Tensor] = []
    f_evals = 0
    with torch.no_grad():
        for k in range(max_iter):
            fz = f_flat(z)
            f_evals += 1
            g = fz - z
            g_norm, fz_norm = g.norm(dim=1), fz.norm(dim=1)
            # Divergence is a non-finite f(z), not a huge ratio: f(z) = 0 gives res = inf legitimately.
            finite = torch.isfinite(g_norm) & torch.isfinite(fz_norm)
            res = g_norm / (fz_norm + tiny)
            improved = active & finite & (res < best_res)
            best_res = torch.where(improved, res, best_res)
            history.append(torch.where(active, res, nan))
            iterations = torch.where(active, k + 1, iterations)
            report("iteration", k + 1, max_iter)
            newly_converged = active & finite & (res <= tol)
            newly_diverged = active & ~finite
            converged |= newly_converged
            diverged |= newly_diverged
            active &= ~(newly_converged | newly_diverged)
            # One host sync per check; the all-true cases skip full-size masked copies.
            flags = torch.stack([improved.all(), active.all(), active.any()]).tolist()
            all_improved, all_active, any_active = flags
            best_z = z if all_improved else torch.where(improved[:, None], z, best_z)
            if k + 1 == max_iter or not any_active:
                break
            z_next = propose(z, fz, g, active, all_active)
            # amax is NaN for a NaN row, so one comparison catches non-finite and out-of-bound.
            blown = active & ~(z_next.abs().amax(dim=1) <= bound)
            diverged |= blown
            active &= ~blown
            all_active, any_active, any_diverged = (
                torch.stack([active.all(), active.any(), diverged.any()]).tolist()
            )
            if all_active:
                z = z_next
                continue
            if not any_active:
                break
            # A diverged sample goes back to its best iterate so f (which sees the whole batch)
            # never receives its non-finite or exploding state.
            held = torch.where(diverged[:, None], best_z, z) if any_diverged else z
            z = torch.where(active[:, None], z_next, held)
    info = SolverInfo(
        solver=name,
        iterations=iterations.cpu(),
        residual=best_res.cpu(),
        residual_history=torch.stack(history).cpu(),
        converged=converged.cpu(),
        diverged=diverged.cpu(),
        tol=float(tol),
        f_evals=f_evals,
        wall_time=time.perf_counter() - start,
    )
    return best_z.view(shape), info


def fixed_point(
    f: FixedPointMap,
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    bound: float = DEFAULT_BOUND,
    damping: float = 1.0,
) -> tuple[Tensor, SolverInfo]:
    r"""Damped fixed-point (Picard / Krasnosel'skii-Mann) iteration.

    .. math:: z_{k+1} = (1 - \delta) z_k + \delta f(z_k), \qquad \delta = \text{damping} \in (0, 1]

    Converges linearly at rate ``||J_f||`` for a contraction (``damping = 1`` is plain iteration).

    Args:
        f: the map, ``(B, *S) -> (B, *S)``.
        z0: starting state ``(B, *S)``, float32 or float64, any device.
        max_iter: at most this many evaluations of ``f``.
        tol: per-sample relative-residual tolerance.
        bound: a sample whose iterate exceeds this in absolute value is stopped as diverged.
        damping: weight of ``f(z)`` in the update.

    Returns:
        ``(z, info)``: the lowest-residual iterate per sample, ``(B, *S)``, and its
        :class:`SolverInfo`.

    Example:
        >>> z, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8, max_iter=100)
        >>> bool(info.all_converged), round(float(z[0, 0]), 6)
        (True, 2.0)
    """
    _check_common(max_iter, tol, bound)
    if not 0 < damping <= 1:
        raise ConfigError(f"damping must lie in (0, 1], got {damping!r}.")

    def propose(z: Tensor, fz: Tensor, g: Tensor, active: Tensor, all_active: bool) -> Tensor:
        return fz if damping == 1 else z + damping * g

    return _iterate("fixed_point", f, z0, max_iter, tol, bound, propose)


def anderson(
    f: FixedPointMap,
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    bound: float = DEFAULT_BOUND,
    m: int = 5,
    beta: float = 1.0,
    lam: float = 1e-4,
) -> tuple[Tensor, SolverInfo]:
    r"""Anderson acceleration (type II) with memory ``m``, mixing ``beta`` and Tikhonov ``lam``.

    With the last ``n <= m`` iterates ``x_i``, their images ``f_i = f(x_i)`` and residuals
    ``g_i = f_i - x_i`` (per sample), the weights solve

    .. math:: \alpha = \arg\min_{\sum_i \alpha_i = 1} \|\textstyle\sum_i \alpha_i g_i\|^2
              + \lambda s \|\alpha\|^2, \qquad s = \tfrac{1}{n} \textstyle\sum_i \|g_i\|^2,

    i.e. ``alpha = w / sum(w)`` with ``(G G^T + lam s I) w = 1``, and the next iterate is
    ``beta * sum_i alpha_i f_i + (1 - beta) * sum_i alpha_i x_i``. The regulariser is scaled by the
    mean squared residual ``s`` so that ``lam`` means the same at every scale of ``z`` and does not
    swamp the least-squares problem as the residuals shrink. The Gram matrix is updated by one row
    per iteration; the small ``n x n`` system is solved in float64, and a sample whose system
    cannot be solved takes a plain fixed-point step instead.

    Args:
        f: the map, ``(B, *S) -> (B, *S)``.
        z0: starting state ``(B, *S)``, float32 or float64, any device.
        max_iter: at most this many evaluations of ``f``.
        tol: per-sample relative-residual tolerance.
        bound: divergence guard on ``|z|``.
        m: number of past iterates mixed (memory), ``>= 1``; ``m = 1`` is fixed-point iteration.
        beta: mixing parameter in ``(0, 1]``.
        lam: relative Tikhonov regularisation, ``>= 0``.

    Returns:
        ``(z, info)`` as for :func:`fixed_point`.
    """
    _check_common(max_iter, tol, bound)
    if not isinstance(m, int) or m < 1:
        raise ConfigError(f"Anderson memory m must be a positive integer, got {m!r}.")
    if not 0 < beta <= 1:
        raise ConfigError(f"Anderson mixing beta must lie in (0, 1], got {beta!r}.")
    if not lam >= 0:
        raise ConfigError(f"Anderson regularisation lam must be non-negative, got {lam!r}.")

    batch = z0.shape[0]
    dim = z0[0].numel() if batch else 0
    # At most max_iter - 1 iterates are ever stored (the last evaluation proposes nothing).
    m = max(1, min(m, max_iter - 1))
    images = torch.zeros(batch, m, dim, dtype=z0.dtype, device=z0.device)
    residuals = torch.zeros_like(images)
    gram = torch.zeros(batch, m, m, dtype=torch.float64, device=z0.device)
    stored = 0

    def propose(z: Tensor, fz: Tensor, g: Tensor, active: Tensor, all_active: bool) -> Tensor:
        nonlocal stored
        slot = stored % m
        stored += 1
        n = min(stored, m)
        _write_active(images[:, slot], fz, active, all_active)
        _write_active(residuals[:, slot], g, active, all_active)
        row = _inner_products(residuals[:, slot, None], residuals[:, :n]).squeeze(1).double()
        if not all_active:
            row = torch.where(active[:, None], row, gram[:, slot, :n])
        gram[:, slot, :n] = row
        gram[:, :n, slot] = row

        system = gram[:, :n, :n]
        scale = system.diagonal(dim1=1, dim2=2).mean(dim=1)
        eye = torch.eye(n, dtype=torch.float64, device=z.device)
        system = system + (lam * scale)[:, None, None] * eye
        # Stopped samples get an identity system: their weights are discarded anyway.
        system = torch.where(active[:, None, None], system, eye)
        ones = torch.ones(batch, n, 1, dtype=torch.float64, device=z.device)
        w, status = torch.linalg.solve_ex(system, ones)
        alpha = w.squeeze(-1) / w.sum(dim=(1, 2))[:, None]
        solved = (status == 0) & torch.isfinite(alpha).all(dim=1)
        plain_step = torch.nn.functional.one_hot(torch.tensor(slot, device=z.device), n).double()
        alpha = torch.where(solved[:, None], alpha, plain_step).to(z.dtype)[:, None, :]

        mixed_images = torch.bmm(alpha, images[:, :n]).squeeze(1)
        if beta == 1:
            return mixed_images
        # sum alpha_i x_i = sum alpha_i f_i - sum alpha_i g_i
        return mixed_images - (1 - beta) * torch.bmm(alpha, residuals[:, :n]).squeeze(1)

    return _iterate("anderson", f, z0, max_iter, tol, bound, propose)


def broyden(
    f: FixedPointMap,
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    bound: float = DEFAULT_BOUND,
    memory: int = 30,
) -> tuple[Tensor, SolverInfo]:
    r"""Limited-memory ("good") Broyden's method on the root problem ``g(z) = f(z) - z = 0``.

    Each iteration steps ``z <- z - H g(z)``, where ``H`` approximates the inverse Jacobian of
    ``g``. ``H`` is what the good-Broyden (Sherman-Morrison) updates

    .. math:: H \leftarrow H + \frac{(s - H y)\, s^T H}{s^T H y}, \qquad
              s = z_{k+1} - z_k, \; y = g(z_{k+1}) - g(z_k)

    give when applied, oldest first, to ``H_0 = -I`` with only the latest ``memory`` pairs
    ``(s, y)`` (NERD's limited-memory variant). It is evaluated in the compact form

    .. math:: H = -I + (Y + S)\,\big(S^T Y + \mathrm{tril}_{-1}(S^T S)\big)^{-1} S^T

    (columns of ``S``, ``Y`` in chronological order), so dropping the oldest pair leaves a
    consistent ``H`` rather than corrections built on a matrix that no longer exists, which is what
    makes ring-buffer Broyden blow up once its memory wraps. The first step is a fixed-point step;
    a sample whose small system is singular takes a fixed-point step. No line search: one
    evaluation of ``f`` per iteration.

    Args:
        f: the map, ``(B, *S) -> (B, *S)``.
        z0: starting state ``(B, *S)`` (NERD starts from zeros), float32 or float64, any device.
        max_iter: at most this many evaluations of ``f``.
        tol: per-sample relative-residual tolerance.
        bound: divergence guard on ``|z|``.
        memory: number of ``(s, y)`` pairs kept, ``>= 1``.

    Returns:
        ``(z, info)`` as for :func:`fixed_point`.
    """
    _check_common(max_iter, tol, bound)
    if not isinstance(memory, int) or memory < 1:
        raise ConfigError(f"Broyden memory must be a positive integer, got {memory!r}.")

    batch = z0.shape[0]
    dim = z0[0].numel() if batch else 0
    # At most max_iter - 2 pairs are ever stored (the first step stores none, the last evaluation
    # proposes nothing), so a longer memory only allocates slots the ring never reaches: with
    # the default 30 and NERD's 17 steps, 15 unused pairs, 6 GB for a 1024x1024 compact NERD state.
    memory = max(1, min(memory, max_iter - 2))
    # Ring buffers of s and of a = y + s (the compact form only ever needs S and Y + S), and
    # their inner products indexed by slot: s_i.s_j and s_i.a_j, in float64.
    steps = torch.zeros(batch, memory, dim, dtype=z0.dtype, device=z0.device)
    sums = torch.zeros_like(steps)
    s_dot_s = torch.zeros(batch, memory, memory, dtype=torch.float64, device=z0.device)
    s_dot_a = torch.zeros_like(s_dot_s)
    stored = 0
    previous: tuple[Tensor, Tensor] | None = None

    def propose(z: Tensor, fz: Tensor, g: Tensor, active: Tensor, all_active: bool) -> Tensor:
        nonlocal stored, previous
        if previous is None:
            previous = (z, g)
            return fz
        s = z - previous[0]
        a = g - previous[1] + s
        previous = (z, g)
        slot = stored % memory
        stored += 1
        n = min(stored, memory)
        _write_active(steps[:, slot], s, active, all_active)
        _write_active(sums[:, slot], a, active, all_active)
        # One pass over S gives s_i.s_new, s_i.a_new and s_i.g; one over A gives a_i.s_new.
        s_products = _inner_products(torch.stack([steps[:, slot], sums[:, slot], g], dim=1), steps[:, :n])
        s_dot_s_new, s_dot_a_new, projection = s_products.double().unbind(dim=1)
        a_dot_s_new = _inner_products(steps[:, slot, None], sums[:, :n]).squeeze(1).double()
        if not all_active:
            keep = active[:, None]
            s_dot_s_new = torch.where(keep, s_dot_s_new, s_dot_s[:, slot, :n])
            s_dot_a_new = torch.where(keep, s_dot_a_new, s_dot_a[:, :n, slot])
            a_dot_s_new = torch.where(keep, a_dot_s_new, s_dot_a[:, slot, :n])
        s_dot_s[:, slot, :n] = s_dot_s_new
        s_dot_s[:, :n, slot] = s_dot_s_new
        s_dot_a[:, :n, slot] = s_dot_a_new
        s_dot_a[:, slot, :n] = a_dot_s_new

        # Slots hold pairs in ring order; the triangular part needs them oldest first, so only
        # the small matrices are permuted, never the (B, n, D) buffers.
        # K = S^T Y + tril_{-1}(S^T S) = S^T A - triu(S^T S).
        order = torch.tensor([(stored - n + i) % memory for i in range(n)], device=z.device)
        inner = s_dot_a[:, order][:, :, order] - torch.triu(s_dot_s[:, order][:, :, order])
        if not all_active:
            inner = torch.where(active[:, None, None], inner, torch.eye(n, dtype=torch.float64, device=z.device))
        solution, status = torch.linalg.solve_ex(inner, projection[:, order, None])
        solved = (status == 0) & torch.isfinite(solution).all(dim=(1, 2))
        solution = torch.where(solved[:, None, None], solution, 0.0)
        coefficients = torch.empty_like(solution)
        coefficients[:, order] = solution
        # z - H g = z + g - A K^{-1} S^T g
        correction = torch.bmm(coefficients.to(z.dtype).transpose(1, 2), sums[:, :n]).squeeze(1)
        return z + g - correction

    return _iterate("broyden", f, z0, max_iter, tol, bound, propose)


register_solver("fixed_point", fixed_point)
register_solver("anderson", anderson)
register_solver("broyden", broyden)
