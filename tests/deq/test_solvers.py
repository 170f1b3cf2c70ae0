"""Solvers: reach the fixed point, accelerate where theory says, stop per sample, report honestly."""

from __future__ import annotations

import math

import pytest
import torch
from deq_problems import make_problem, symmetric_weight
from torch import Tensor

from converge.deq import anderson, broyden, check_solver_options, fixed_point, get_solver, register_solver
from converge.deq.solvers import _SOLVERS, available_solvers, relative_residual
from converge.errors import ConfigError

SOLVERS = ["fixed_point", "anderson", "broyden"]


def solve(name: str, f, z0: Tensor, **options):
    with torch.no_grad():
        return get_solver(name)(f, z0, **options)


def reference_fixed_point(f, z0: Tensor) -> Tensor:
    z, info = solve("fixed_point", f, z0, max_iter=5000, tol=1e-14)
    assert info.all_converged
    return z


@pytest.mark.parametrize("name", SOLVERS)
def test_reaches_the_fixed_point_of_long_plain_iteration(name: str) -> None:
    layer, x = make_problem()
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(3, 16, dtype=torch.float64)
    z, info = solve(name, f, z0, max_iter=200, tol=1e-11)
    assert info.all_converged and not info.diverged.any()
    reference = reference_fixed_point(f, z0)
    assert float((z - reference).norm() / reference.norm()) < 1e-9


def test_acceleration_on_symmetric_weight_with_norm_099() -> None:
    """Plain iteration contracts at 0.99 per step; Anderson and Broyden must need far fewer steps."""
    layer, x = make_problem(n=64, batch=4, hard=True)
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(4, 64, dtype=torch.float64)
    iterations = {}
    for name in SOLVERS:
        _, info = solve(name, f, z0, max_iter=2000, tol=1e-4)
        assert info.all_converged, name
        iterations[name] = info.iterations
    assert int(iterations["fixed_point"].min()) > 250
    assert int(iterations["anderson"].max()) < 120
    assert int(iterations["broyden"].max()) < 90
    assert 3 * int(iterations["anderson"].max()) < int(iterations["fixed_point"].min())
    assert 4 * int(iterations["broyden"].max()) < int(iterations["fixed_point"].min())


def linear_problem(n: int, batch: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(3)
    weight = symmetric_weight(n, 0.99, generator, torch.float64)
    offset = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    return weight, offset


def test_full_memory_anderson_terminates_like_gmres_on_a_linear_map() -> None:
    """With memory above the dimension Anderson is GMRES in disguise: at most n + 1 steps."""
    n = 8
    weight, offset = linear_problem(n, 2)
    _, info = solve("anderson", lambda z: z @ weight.T + offset, torch.zeros(2, n, dtype=torch.float64),
                    max_iter=100, tol=1e-9, m=n + 2, lam=1e-12)
    assert info.all_converged
    assert int(info.iterations.max()) <= n + 2


def test_broyden_terminates_within_2n_steps_on_a_linear_map() -> None:
    """Gay's theorem: Broyden's method solves an n-dimensional linear system in at most 2n steps."""
    n = 8
    weight, offset = linear_problem(n, 2)
    _, info = solve("broyden", lambda z: z @ weight.T + offset, torch.zeros(2, n, dtype=torch.float64),
                    max_iter=100, tol=1e-9, memory=4 * n)
    assert info.all_converged
    assert int(info.iterations.max()) <= 2 * n + 2


def test_limited_memory_broyden_stays_stable_after_its_memory_wraps() -> None:
    layer, x = make_problem(n=64, batch=4, hard=True)
    _, info = solve("broyden", lambda z: layer(z, x), torch.zeros(4, 64, dtype=torch.float64),
                    max_iter=500, tol=1e-8, memory=5)
    assert info.all_converged and not info.diverged.any()
    assert int(info.iterations.min()) > 5


@pytest.mark.parametrize(("name", "key", "reachable"), [("broyden", "memory", 10), ("anderson", "m", 11)])
def test_memory_beyond_what_max_iter_can_fill_changes_nothing(name: str, key: str, reachable: int) -> None:
    """12 evaluations store at most 10 Broyden pairs or 11 Anderson iterates; the solvers cap their
    buffers there, so any longer memory gives the same iterates bit for bit and one slot less does not."""
    layer, x = make_problem(n=64, batch=4, hard=True)
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(4, 64, dtype=torch.float64)
    results = {size: solve(name, f, z0, max_iter=12, tol=0.0, **{key: size})
               for size in (reachable - 1, reachable, 30)}
    histories = {size: info.residual_history for size, (_, info) in results.items()}
    assert torch.equal(results[30][0], results[reachable][0])
    assert torch.equal(histories[30], histories[reachable])
    assert not torch.equal(histories[reachable - 1], histories[reachable])


def test_anderson_with_memory_one_is_plain_iteration() -> None:
    layer, x = make_problem()
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(3, 16, dtype=torch.float64)
    z_plain, info_plain = solve("fixed_point", f, z0, max_iter=60, tol=1e-9)
    z_anderson, info_anderson = solve("anderson", f, z0, max_iter=60, tol=1e-9, m=1)
    assert torch.equal(info_plain.iterations, info_anderson.iterations)
    torch.testing.assert_close(z_anderson, z_plain, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("name", "options"), [("fixed_point", {"damping": 0.6}), ("anderson", {"beta": 0.5})])
def test_damped_variants_reach_the_same_fixed_point(name: str, options: dict) -> None:
    layer, x = make_problem()
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(3, 16, dtype=torch.float64)
    z, info = solve(name, f, z0, max_iter=400, tol=1e-11, **options)
    assert info.all_converged
    reference = reference_fixed_point(f, z0)
    assert float((z - reference).norm() / reference.norm()) < 1e-9


@pytest.mark.parametrize("name", SOLVERS)
def test_a_warm_start_needs_fewer_iterations(name: str) -> None:
    layer, x = make_problem()
    f = lambda z: layer(z, x)  # noqa: E731
    z0 = torch.zeros(3, 16, dtype=torch.float64)
    reference = reference_fixed_point(f, z0)
    _, cold = solve(name, f, z0, max_iter=200, tol=1e-8)
    _, warm = solve(name, f, reference + 1e-6, max_iter=200, tol=1e-8)
    assert bool((warm.iterations < cold.iterations).all())


class RecordingMap:
    """Per-sample affine contraction ``f(z)_b = a_b z_b + c_b`` that records every input batch."""

    def __init__(self, rates: list[float], poison_sample: int | None = None, poison_after: int = 0) -> None:
        self.rates = torch.tensor(rates, dtype=torch.float64)[:, None]
        self.offset = torch.linspace(0.1, 0.2, len(rates), dtype=torch.float64)[:, None]
        self.poison_sample = poison_sample
        self.poison_after = poison_after
        self.inputs: list[Tensor] = []

    def __call__(self, z: Tensor) -> Tensor:
        self.inputs.append(z.clone())
        out = self.rates * torch.tanh(z) + self.offset
        if self.poison_sample is not None and len(self.inputs) > self.poison_after:
            out[self.poison_sample] = math.nan
        return out


@pytest.mark.parametrize("name", SOLVERS)
def test_converged_samples_are_frozen_while_the_rest_continue(name: str) -> None:
    f = RecordingMap([0.1, 0.95, 0.5])
    z, info = solve(name, f, torch.zeros(3, 4, dtype=torch.float64), max_iter=500, tol=1e-10)
    assert info.all_converged
    fast, slow = int(info.iterations[0]), int(info.iterations[1])
    assert fast < slow
    assert info.f_evals == int(info.iterations.max()) == len(f.inputs)
    # After its last evaluation the fast sample's state never changes, and it is what is returned.
    for later in f.inputs[fast - 1:]:
        assert torch.equal(later[0], z[0])
    history = info.residual_history
    assert history.shape == (info.f_evals, 3)
    assert bool(torch.isnan(history[fast:, 0]).all()) and not bool(torch.isnan(history[:fast, 0]).any())


@pytest.mark.parametrize("name", SOLVERS)
def test_each_sample_follows_the_trajectory_it_would_follow_alone(name: str) -> None:
    """Freezing one sample must not disturb the others' Anderson / Broyden histories."""
    generator = torch.Generator().manual_seed(5)
    rates = torch.tensor([0.2, 0.97, 0.6, 0.9], dtype=torch.float64)[:, None]
    mixing = torch.randn(4, 6, 6, generator=generator, dtype=torch.float64) / 6
    offsets = torch.randn(4, 6, generator=generator, dtype=torch.float64)

    def f_for(index: slice):
        return lambda z: rates[index] * torch.tanh(torch.einsum("bij,bj->bi", mixing[index], z)) + offsets[index]

    z_batch, info_batch = solve(name, f_for(slice(None)), torch.zeros(4, 6, dtype=torch.float64),
                                max_iter=300, tol=1e-10)
    assert len(set(info_batch.iterations.tolist())) > 1
    for b in range(4):
        z_alone, info_alone = solve(name, f_for(slice(b, b + 1)), torch.zeros(1, 6, dtype=torch.float64),
                                    max_iter=300, tol=1e-10)
        assert int(info_alone.iterations[0]) == int(info_batch.iterations[b])
        torch.testing.assert_close(z_batch[b], z_alone[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", SOLVERS)
def test_returns_the_lowest_residual_iterate_and_reports_it_truthfully(name: str) -> None:
    layer, x = make_problem(n=64, batch=4, hard=True)
    f = lambda z: layer(z, x)  # noqa: E731
    z, info = solve(name, f, torch.zeros(4, 64, dtype=torch.float64), max_iter=25, tol=1e-4)
    assert not info.converged.any() and not info.diverged.any()
    assert bool((info.iterations == 25).all())
    lowest = torch.stack([column[~torch.isnan(column)].min() for column in info.residual_history.T])
    torch.testing.assert_close(info.residual, lowest, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(relative_residual(z, f(z)).cpu(), info.residual, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_never_claims_a_tolerance_it_did_not_reach(name: str, tol: float) -> None:
    layer, x = make_problem(n=64, batch=4, hard=True)
    f = lambda z: layer(z, x)  # noqa: E731
    z, info = solve(name, f, torch.zeros(4, 64, dtype=torch.float64), max_iter=70, tol=tol)
    with torch.no_grad():
        measured = relative_residual(z, f(z)).cpu()
    assert bool((measured[info.converged] <= tol).all())
    assert bool((measured[~info.converged] > tol).all())


@pytest.mark.parametrize("name", SOLVERS)
def test_a_non_finite_sample_is_reported_as_diverged_and_never_returned(name: str) -> None:
    f = RecordingMap([0.5, 0.5, 0.5], poison_sample=1, poison_after=3)
    z, info = solve(name, f, torch.zeros(3, 4, dtype=torch.float64), max_iter=200, tol=1e-10)
    assert info.diverged.tolist() == [False, True, False]
    assert info.converged.tolist() == [True, False, True]
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(info.residual).all())
    assert int(info.iterations[1]) == 4
    # The diverged sample is parked on its best finite iterate; f never sees NaN as input.
    assert all(bool(torch.isfinite(seen).all()) for seen in f.inputs)


def test_an_exploding_sample_is_stopped_at_the_bound() -> None:
    def f(z: Tensor) -> Tensor:
        rates = torch.tensor([[2.0], [0.5]], dtype=z.dtype)
        return rates * z + 1.0

    seen: list[Tensor] = []
    recording = lambda z: (seen.append(z.clone()), f(z))[1]  # noqa: E731
    z, info = solve("fixed_point", recording, torch.zeros(2, 3, dtype=torch.float64), max_iter=500,
                    tol=1e-10, bound=1e3)
    assert info.diverged.tolist() == [True, False]
    assert info.converged.tolist() == [False, True]
    assert int(info.iterations[0]) < 20
    assert float(z[0].abs().max()) <= 1e3
    assert max(float(s[0].abs().max()) for s in seen) <= 1e3


@pytest.mark.parametrize("name", SOLVERS)
def test_a_zero_image_is_not_mistaken_for_divergence(name: str) -> None:
    z, info = solve(name, torch.zeros_like, torch.ones(2, 3), max_iter=10, tol=1e-6)
    assert info.all_converged and not info.diverged.any()
    assert torch.equal(z, torch.zeros(2, 3))
    assert float(info.residual_history[0, 0]) > 1e30


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_state_shape_and_dtype(name: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    f = lambda z: 0.5 * torch.tanh(z.flip(-1)) + x  # noqa: E731
    z, info = solve(name, f, torch.zeros_like(x), max_iter=100, tol=1e-5)
    assert z.shape == x.shape and z.dtype == dtype and z.device == x.device
    assert info.all_converged
    assert info.iterations.shape == info.converged.shape == info.residual.shape == (2,)
    assert float(relative_residual(z, f(z)).max()) <= 1e-5


def test_unknown_names_and_options_raise() -> None:
    with pytest.raises(ConfigError, match="brodyen"):
        get_solver("brodyen")
    with pytest.raises(ConfigError, match="tool"):
        check_solver_options(anderson, {"tool": 1e-3})
    with pytest.raises(ConfigError, match="memory"):
        check_solver_options(broyden, {"memory": 0})


@pytest.mark.parametrize(
    ("solver", "options"),
    [
        (fixed_point, {"max_iter": 0}),
        (fixed_point, {"tol": -1.0}),
        (fixed_point, {"damping": 0.0}),
        (anderson, {"m": 0}),
        (anderson, {"beta": 1.5}),
        (anderson, {"lam": -1.0}),
        (broyden, {"memory": 0}),
        (broyden, {"bound": 0.0}),
    ],
)
def test_out_of_range_values_raise(solver, options: dict) -> None:
    with pytest.raises(ConfigError):
        solver(lambda z: z, torch.zeros(1, 2), **options)


def test_contract_violations_raise() -> None:
    with pytest.raises(ConfigError, match="shape"):
        fixed_point(lambda z: z[:, :1], torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="finite"):
        fixed_point(lambda z: z, torch.tensor([[math.nan]]))


def test_registry_accepts_user_solvers_and_refuses_silent_overwrites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("converge.deq.solvers._SOLVERS", dict(_SOLVERS))

    def half_step(f, z0, *, max_iter: int = 10, tol: float = 1e-4):
        return fixed_point(f, z0, max_iter=max_iter, tol=tol, damping=0.5)

    register_solver("half_step", half_step)
    assert get_solver("half_step") is half_step
    assert "half_step" in available_solvers()
    with pytest.raises(ConfigError, match="already registered"):
        register_solver("anderson", half_step)
