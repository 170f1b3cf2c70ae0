"""The DEQ layer: configuration, calling convention, interchangeable backward modes."""

from __future__ import annotations

import doctest

import pytest
import torch
from deq_problems import make_problem
from torch import Tensor, nn

import converge.deq
import converge.deq.layer
import converge.deq.solvers
from converge.deq import DEQ, PhantomGradient, fixed_point, get_solver, register_solver
from converge.deq.solvers import _SOLVERS
from converge.errors import ConfigError

MODES = [("ift", {}), ("phantom", {"T": 8, "lam": 0.8}), ("jfb", {}), ("unroll", {"K": 30})]


class ConvUpdate(nn.Module):
    """A small convolutional update ``tanh(0.5 conv(z) + x)`` on image-shaped states."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(0.5 / self.conv.weight.abs().sum(dim=(1, 2, 3), keepdim=True).amax())

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(self.conv(z) + x)


@pytest.mark.parametrize(("mode", "options"), MODES)
def test_every_mode_trains_the_same_model_code(mode: str, options: dict) -> None:
    torch.manual_seed(0)
    deq = DEQ(ConvUpdate(), solver="anderson", solver_options={"max_iter": 40, "tol": 1e-5},
              backward=mode, backward_options=options)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    z = deq(x)
    assert z.shape == x.shape and z.dtype == torch.float32
    assert deq.last_info is not None and deq.last_info.all_converged
    z.square().mean().backward()
    for grad in [x.grad, deq.f.conv.weight.grad, deq.f.conv.bias.grad]:
        assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_f_modules_are_registered_and_follow_train_and_eval() -> None:
    deq = DEQ(ConvUpdate())
    assert {name for name, _ in deq.named_parameters()} == {"f.conv.weight", "f.conv.bias"}
    deq.eval()
    assert not deq.f.training
    deq.train()
    assert deq.f.training


def test_without_autograd_the_layer_returns_the_solver_iterate() -> None:
    layer, x = make_problem()
    z0 = layer.zero_state(x)
    deq = DEQ(layer, solver="broyden", solver_options={"tol": 1e-9, "max_iter": 100}, backward="ift")
    with torch.no_grad():
        z = deq(x, z0)
        expected, info = get_solver("broyden")(lambda s: layer(s, x), z0, tol=1e-9, max_iter=100)
    assert torch.equal(z, expected) and not z.requires_grad
    assert torch.equal(deq.last_info.iterations, info.iterations)


def test_state_shape_may_differ_from_the_injection() -> None:
    layer, x = make_problem(n=7, p=3, batch=2)
    deq = DEQ(layer, backward="jfb")
    z = deq(x, layer.zero_state(x))
    assert z.shape == (2, 7)
    with torch.no_grad():
        residual = (layer(z, x) - z).norm() / layer(z, x).norm()
    assert float(residual) < 1e-3


def test_no_gradient_flows_into_the_starting_state() -> None:
    layer, x = make_problem()
    z0 = layer.zero_state(x).requires_grad_()
    DEQ(layer, backward="phantom")(x, z0).sum().backward()
    assert z0.grad is None


def test_ift_records_its_adjoint_solve() -> None:
    layer, x = make_problem()
    deq = DEQ(layer, backward="ift", backward_options={"solver": "broyden", "tol": 1e-8})
    deq(x, layer.zero_state(x)).sum().backward()
    assert deq.last_backward_info is not None
    assert deq.last_backward_info.solver == "broyden" and deq.last_backward_info.all_converged


def test_solver_and_backward_accept_objects_as_well_as_names() -> None:
    layer, x = make_problem()
    deq = DEQ(layer, solver=fixed_point, solver_options={"damping": 0.9}, backward=PhantomGradient(T=2))
    deq(x, layer.zero_state(x))
    assert deq.last_info.solver == "fixed_point"


def test_user_registered_solvers_are_usable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("converge.deq.solvers._SOLVERS", dict(_SOLVERS))

    def slow_picard(f, z0, *, max_iter: int = 500, tol: float = 1e-4):
        return fixed_point(f, z0, max_iter=max_iter, tol=tol, damping=0.5)

    register_solver("slow_picard", slow_picard)
    layer, x = make_problem()
    deq = DEQ(layer, solver="slow_picard", solver_options={"tol": 1e-6})
    deq(x, layer.zero_state(x))
    assert deq.last_info.all_converged


@pytest.mark.parametrize(
    "kwargs",
    [
        {"solver": "andersen"},
        {"solver_options": {"tool": 1e-3}},
        {"solver_options": {"max_iter": 0}},
        {"backward": "implicit"},
        {"backward": "phantom", "backward_options": {"lamda": 0.5}},
        {"backward": PhantomGradient(), "backward_options": {"T": 3}},
        {"backward": 3},
    ],
)
def test_bad_configuration_raises_at_construction(kwargs: dict) -> None:
    layer, _ = make_problem()
    with pytest.raises(ConfigError):
        DEQ(layer, **kwargs)


@pytest.mark.parametrize("module", [converge.deq, converge.deq.layer, converge.deq.solvers])
def test_docstring_examples_run(module) -> None:
    torch.manual_seed(0)
    result = doctest.testmod(module, extraglobs={"torch": torch, "nn": nn})
    assert result.attempted > 0 and result.failed == 0


def test_the_state_stays_float32_when_the_map_runs_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(0.2)
    seen = []

    def f(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        seen.append(z.dtype)
        return 0.5 * torch.tanh(conv(z)) + x

    deq = DEQ(f, solver="anderson", backward="jfb")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = deq(torch.randn(1, 2, 8, 8))
    assert z.dtype == torch.float32 and set(seen) == {torch.float32}
    assert deq.last_info.all_converged
