"""L2 data fidelity: gradient against autograd, prox against its optimality condition, on every operator."""

import pytest
import torch

from converge.errors import ConfigError
from converge.optim import L2DataFidelity
from converge.physics import Downsample, GaussianBlur, Identity, KernelBlur, PixelMask

SHAPE = (2, 3, 16, 16)


def make_operator(name: str):
    generator = torch.Generator().manual_seed(1)
    if name == "identity":
        return Identity()
    if name == "blur_circular":
        return GaussianBlur(1.5, size=9)
    if name == "blur_reflect":  # no closed form: the conjugate-gradient fallback
        return KernelBlur(torch.rand(5, 4, generator=generator, dtype=torch.float64), boundary="reflect")
    if name == "mask":
        return PixelMask((torch.rand(1, 1, 16, 16, generator=generator) > 0.4).float())
    if name == "downsample":
        return Downsample(2)
    raise AssertionError(name)


OPERATORS = ["identity", "blur_circular", "blur_reflect", "mask", "downsample"]
# The CG fallback stops at a relative residual of 1e-6 of the normal equations; closed forms are exact to rounding.
PROX_TOLERANCE = {"blur_reflect": 1.01e-6}


def problem(name: str):
    generator = torch.Generator().manual_seed(2)
    operator = make_operator(name).to(torch.float64)
    x = torch.rand(SHAPE, generator=generator, dtype=torch.float64)
    y = operator(torch.rand(SHAPE, generator=generator, dtype=torch.float64)) + 0.05 * torch.randn(
        operator(x).shape, generator=generator, dtype=torch.float64
    )
    return operator, x, y


@pytest.mark.parametrize("name", OPERATORS)
def test_value_is_half_the_squared_residual_per_sample(name):
    operator, x, y = problem(name)
    value = L2DataFidelity().value(x, y, operator)
    assert value.shape == (SHAPE[0],)
    for b in range(SHAPE[0]):
        expected = 0.5 * (operator(x[b : b + 1]) - y[b : b + 1]).square().sum()
        assert torch.allclose(value[b], expected, rtol=1e-12)


@pytest.mark.parametrize("name", OPERATORS)
def test_gradient_matches_autograd_of_the_value(name):
    operator, x, y = problem(name)
    fidelity = L2DataFidelity()
    x = x.requires_grad_(True)
    (autograd,) = torch.autograd.grad(fidelity.value(x, y, operator).sum(), x)
    assert torch.allclose(fidelity.grad(x.detach(), y, operator), autograd, atol=1e-10)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("gamma", [0.7, torch.tensor([0.3, 2.5], dtype=torch.float64)], ids=["scalar", "per_sample"])
def test_prox_satisfies_its_optimality_condition(name, gamma):
    """``x = prox_{gamma f}(z)`` iff ``gamma A^T (A x - y) + (x - z) = 0``."""
    operator, z, y = problem(name)
    x = L2DataFidelity().prox(z, y, operator, gamma)
    gamma_b = torch.as_tensor(gamma, dtype=torch.float64).reshape(-1, 1, 1, 1)
    optimality = gamma_b * operator.adjoint(operator(x) - y) + (x - z)
    scale = (gamma_b * operator.adjoint(y) + z).flatten(1).norm(dim=1)
    relative = optimality.flatten(1).norm(dim=1) / scale
    assert float(relative.max()) < PROX_TOLERANCE.get(name, 1e-12)
    assert float((x - z).abs().max()) > 1e-3  # the data term moved it: the test is not vacuous


def test_prox_of_a_per_sample_gamma_is_each_sample_on_its_own():
    operator, z, y = problem("blur_circular")
    gamma = torch.tensor([0.3, 2.5], dtype=torch.float64)
    batched = L2DataFidelity().prox(z, y, operator, gamma)
    for b in range(2):
        alone = L2DataFidelity().prox(z[b : b + 1], y[b : b + 1], operator, float(gamma[b]))
        assert torch.allclose(batched[b : b + 1], alone, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("inf"), torch.tensor([1.0, 0.0])])
def test_prox_rejects_a_non_positive_step(gamma):
    operator, z, y = problem("identity")
    with pytest.raises(ConfigError, match="gamma"):
        L2DataFidelity().prox(z, y, operator, gamma)
