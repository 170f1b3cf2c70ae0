"""Backward modes: exact where they claim to be, approximations that behave as theory says."""

from __future__ import annotations

import pytest
import torch
from deq_problems import TanhLayer, make_problem
from torch import Tensor

from converge.deq import DEQ, ImplicitGradient, PhantomGradient, make_backward
from converge.deq.backward import available_backward_modes
from converge.errors import ConfigError

TIGHT = {"max_iter": 400, "tol": 1e-14}


def loss_weights(shape: torch.Size) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def gradients(deq: DEQ, x: Tensor) -> list[Tensor]:
    """Gradients of ``<c, z*>`` w.r.t. ``W``, ``U`` and the injection ``x``."""
    x = x.clone().requires_grad_()
    z = deq(x, deq.f.zero_state(x))
    loss = (loss_weights(z.shape) * z).sum()
    return list(torch.autograd.grad(loss, [deq.f.weight, deq.f.injection, x]))


def relative_error(estimate: list[Tensor], exact: list[Tensor]) -> float:
    numerator = sum(float((a - b).square().sum()) for a, b in zip(estimate, exact))
    denominator = sum(float(b.square().sum()) for b in exact)
    return (numerator / denominator) ** 0.5


def ift_deq(layer: TanhLayer, **adjoint: object) -> DEQ:
    options = {"tol": 1e-13, "max_iter": 200, **adjoint}
    return DEQ(layer, solver="anderson", solver_options=TIGHT, backward="ift", backward_options=options)


def test_ift_matches_finite_differences_in_every_input() -> None:
    layer, x = make_problem()
    deq = ift_deq(layer)
    grads = gradients(deq, x)
    c = loss_weights(torch.Size([3, 16]))
    generator = torch.Generator().manual_seed(11)
    directions = [torch.randn(g.shape, generator=generator, dtype=torch.float64) for g in grads]

    def loss_along(step: float) -> float:
        with torch.no_grad():
            shifted = TanhLayer(layer.weight + step * directions[0], layer.injection + step * directions[1])
            deq_shifted = DEQ(shifted, solver="anderson", solver_options=TIGHT)
            solved = deq_shifted(x + step * directions[2], layer.zero_state(x))
        return float((c * solved).sum())

    h = 1e-5
    finite_difference = (loss_along(h) - loss_along(-h)) / (2 * h)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    assert abs(analytic - finite_difference) < 1e-6 * abs(finite_difference)
    assert deq.last_backward_info is not None and deq.last_backward_info.all_converged


@pytest.mark.parametrize("adjoint_solver", ["anderson", "broyden", "fixed_point"])
def test_ift_matches_autograd_through_a_long_unroll(adjoint_solver: str) -> None:
    layer, x = make_problem()
    exact = gradients(ift_deq(layer, solver=adjoint_solver, max_iter=400), x)
    # ||W|| = 0.9: after 400 plain steps the unrolled map has forgotten z0 to 0.9^400 ~ 5e-19.
    unrolled = gradients(DEQ(layer, backward="unroll", backward_options={"K": 400}), x)
    assert relative_error(exact, unrolled) < 1e-6


def test_phantom_gradient_approaches_ift_as_t_grows() -> None:
    layer, x = make_problem()
    exact = gradients(ift_deq(layer), x)
    errors = []
    for steps in [1, 4, 16, 64]:
        deq = DEQ(layer, solver="anderson", solver_options=TIGHT, backward="phantom",
                  backward_options={"T": steps, "lam": 0.8})
        errors.append(relative_error(gradients(deq, x), exact))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_jfb_gives_a_descent_direction(seed: int) -> None:
    layer, x = make_problem(seed=seed)
    exact = gradients(ift_deq(layer), x)
    jfb = gradients(DEQ(layer, solver="anderson", solver_options=TIGHT, backward="jfb"), x)
    params_exact, params_jfb = exact[:2], jfb[:2]
    inner = sum(float((a * b).sum()) for a, b in zip(params_jfb, params_exact))
    assert inner > 0


def saved_tensor_count(deq: DEQ, x: Tensor) -> int:
    count = 0

    def pack(tensor: Tensor) -> Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        z = deq(x, deq.f.zero_state(x))
    z.sum().backward()
    return count


@pytest.mark.parametrize(("mode", "options"), [("ift", {}), ("phantom", {"T": 3}), ("jfb", {})])
def test_training_memory_does_not_grow_with_forward_iterations(mode: str, options: dict) -> None:
    layer, x = make_problem(n=64, batch=4, hard=True)
    counts = []
    for iterations in [5, 60]:
        # tol = 0 makes the solver spend all its iterations.
        deq = DEQ(layer, solver="anderson", solver_options={"max_iter": iterations, "tol": 0.0},
                  backward=mode, backward_options=options)
        counts.append(saved_tensor_count(deq, x))
        assert int(deq.last_info.f_evals) == iterations
    assert counts[0] == counts[1] > 0


def test_unrolled_memory_grows_with_its_iterations() -> None:
    """The explicit baseline keeps its whole graph; this is what the test above guards against."""
    layer, x = make_problem()
    short = saved_tensor_count(DEQ(layer, backward="unroll", backward_options={"K": 5}), x)
    long = saved_tensor_count(DEQ(layer, backward="unroll", backward_options={"K": 60}), x)
    assert long > 5 * short


def test_unroll_reports_truthful_convergence() -> None:
    layer, x = make_problem()
    deq = DEQ(layer, solver_options={"tol": 1e-6}, backward="unroll", backward_options={"K": 3})
    z = deq(x, layer.zero_state(x))
    assert not deq.last_info.converged.any()
    deq = DEQ(layer, solver_options={"tol": 1e-6}, backward="unroll", backward_options={"K": 300})
    z = deq(x, layer.zero_state(x))
    assert deq.last_info.all_converged
    assert float(deq.last_info.residual.max()) <= 1e-6
    assert z.requires_grad


def test_modes_are_built_by_name_and_validate_their_options() -> None:
    assert available_backward_modes() == ["ift", "jfb", "phantom", "unroll"]
    assert make_backward("phantom") == PhantomGradient(T=8, lam=0.8)
    assert make_backward("ift", {"solver": "broyden", "solver_options": {"memory": 10}}).solver == "broyden"
    with pytest.raises(ConfigError, match="Unknown backward mode"):
        make_backward("implicit")
    with pytest.raises(ConfigError, match="lamda"):
        make_backward("phantom", {"T": 8, "lamda": 0.8})
    with pytest.raises(ConfigError, match="needs"):
        make_backward("unroll")
    with pytest.raises(ConfigError):
        make_backward("phantom", {"T": 0})
    with pytest.raises(ConfigError):
        make_backward("phantom", {"lam": 0.0})
    with pytest.raises(ConfigError):
        make_backward("unroll", {"K": 0})
    with pytest.raises(ConfigError, match="Unknown solver"):
        ImplicitGradient(solver="newton")
    with pytest.raises(ConfigError, match="itself"):
        ImplicitGradient(solver_options={"tol": 1e-3})
    with pytest.raises(ConfigError, match="mm"):
        ImplicitGradient(solver_options={"mm": 3})
    with pytest.raises(ConfigError):
        ImplicitGradient(max_iter=0)
