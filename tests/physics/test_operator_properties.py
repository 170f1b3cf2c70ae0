"""Properties every linear operator must have, checked on every operator of the package by name.

Adjointness (against the inner-product identity and against autograd), the data-term gradient, the
data-term prox (optimality, closed form == CG fallback == dense solve) and state_dict round trips.
Shapes include odd sizes, grey and colour, batch 2; everything runs in float64.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from converge.physics import (
    BayerMosaic,
    Downsample,
    GaussianBlur,
    Identity,
    KernelBlur,
    LinearOperator,
    PixelMask,
)

DTYPE = torch.float64


@dataclass(frozen=True)
class Case:
    build: Callable[[tuple[int, int, int, int], torch.Generator], LinearOperator]
    shapes: tuple[tuple[int, int, int, int], ...]
    closed_form_prox: bool


def _random_kernel(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    kernel = torch.rand(shape, generator=generator, dtype=DTYPE)
    return kernel / kernel.sum()


def _random_mask(shape: tuple[int, int, int, int], generator: torch.Generator) -> torch.Tensor:
    return (torch.rand((shape[0], 1, shape[2], shape[3]), generator=generator) > 0.4).to(DTYPE)


ANY_SIZE = ((2, 1, 16, 16), (2, 3, 15, 9), (2, 1, 7, 13))
COLOUR = ((2, 3, 16, 16), (2, 3, 15, 9), (2, 3, 7, 13))
EVEN = ((2, 1, 16, 12), (2, 3, 10, 14))
THIRDS = ((2, 1, 15, 9), (2, 3, 12, 21))

CASES: dict[str, Case] = {
    "identity": Case(lambda s, g: Identity(), ANY_SIZE, True),
    "gaussian_blur_circular": Case(lambda s, g: GaussianBlur(1.3, size=7), ANY_SIZE, True),
    "gaussian_blur_reflect": Case(lambda s, g: GaussianBlur(1.3, size=7, boundary="reflect"), ANY_SIZE, False),
    "kernel_blur_even_circular": Case(lambda s, g: KernelBlur(_random_kernel((4, 6), g)), ANY_SIZE, True),
    "kernel_blur_even_reflect": Case(
        lambda s, g: KernelBlur(_random_kernel((4, 6), g), boundary="reflect"), ANY_SIZE, False
    ),
    "kernel_blur_replicate": Case(
        lambda s, g: KernelBlur(_random_kernel((5, 4), g), boundary="replicate"), ANY_SIZE, False
    ),
    "kernel_blur_zeros": Case(lambda s, g: KernelBlur(_random_kernel((3, 5), g), boundary="zeros"), ANY_SIZE, False),
    "kernel_blur_larger_than_image_circular": Case(
        lambda s, g: KernelBlur(_random_kernel((25, 25), g)), ANY_SIZE, True
    ),
    "kernel_blur_larger_than_image_reflect": Case(
        lambda s, g: KernelBlur(_random_kernel((25, 25), g), boundary="reflect"), ANY_SIZE, False
    ),
    "downsample_bicubic_x2": Case(lambda s, g: Downsample(2), EVEN, True),
    "downsample_bicubic_x3": Case(lambda s, g: Downsample(3), THIRDS, True),
    "downsample_gaussian_x2": Case(lambda s, g: Downsample(2, kernel="gaussian", gaussian_sigma=1.0), EVEN, True),
    "downsample_custom_kernel_x3": Case(lambda s, g: Downsample(3, kernel=_random_kernel((4, 5), g)), THIRDS, True),
    "downsample_bicubic_x2_reflect": Case(lambda s, g: Downsample(2, boundary="reflect"), EVEN, False),
    "pixel_mask": Case(lambda s, g: PixelMask(_random_mask(s, g)), ANY_SIZE, True),
    "bayer_rggb": Case(lambda s, g: BayerMosaic("RGGB"), COLOUR, True),
    "bayer_bggr": Case(lambda s, g: BayerMosaic("BGGR"), COLOUR, True),
    "bayer_grbg": Case(lambda s, g: BayerMosaic("GRBG"), COLOUR, True),
    "bayer_gbrg": Case(lambda s, g: BayerMosaic("GBRG"), COLOUR, True),
}

PAIRS = [(name, shape) for name, case in CASES.items() for shape in case.shapes]
IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape in PAIRS]


def _setup(name: str, shape: tuple[int, int, int, int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    operator = CASES[name].build(shape, generator)
    x = torch.randn(shape, generator=generator, dtype=DTYPE)
    y = torch.randn(operator(x).shape, generator=generator, dtype=DTYPE)
    return operator, x, y, generator


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize(("name", "shape"), PAIRS, ids=IDS)
def test_adjoint_identity(name, shape):
    operator, x, y, _ = _setup(name, shape)
    forward_side = (operator(x) * y).sum()
    adjoint_side = (x * operator.adjoint(y)).sum()
    scale = operator(x).norm() * y.norm()
    assert abs(float(forward_side - adjoint_side)) <= 1e-10 * float(scale)
    assert abs(float(forward_side - adjoint_side)) <= 1e-10 * abs(float(forward_side)) + 1e-13 * float(scale)


@pytest.mark.parametrize(("name", "shape"), PAIRS, ids=IDS)
def test_adjoint_matches_autograd_vjp(name, shape):
    operator, x, y, _ = _setup(name, shape)
    x.requires_grad_(True)
    (vjp,) = torch.autograd.grad(operator(x), x, grad_outputs=y)
    assert _relative(operator.adjoint(y), vjp) < 1e-12


@pytest.mark.parametrize(("name", "shape"), PAIRS, ids=IDS)
def test_data_grad_matches_autograd(name, shape):
    operator, x, y, _ = _setup(name, shape)
    x.requires_grad_(True)
    (expected,) = torch.autograd.grad(0.5 * (operator(x) - y).pow(2).sum(), x)
    assert _relative(operator.data_grad(x.detach(), y), expected) < 1e-12


@pytest.mark.parametrize(("name", "shape"), PAIRS, ids=IDS)
def test_prox_is_optimal(name, shape):
    operator, x, y, generator = _setup(name, shape)
    z = torch.randn(shape, generator=generator, dtype=DTYPE)
    rho = torch.tensor([0.7, 0.03], dtype=DTYPE)
    solution = operator.prox_data(z, y, rho)
    rho_b = rho.reshape(-1, 1, 1, 1)
    stationarity = operator.data_grad(solution, y) + rho_b * (solution - z)
    scale = (operator.adjoint(y) + rho_b * z).norm()
    tolerance = 1e-10 if CASES[name].closed_form_prox else 1e-5
    assert float(stationarity.norm() / scale) < tolerance


CLOSED_FORM = [(name, shape) for name, shape in PAIRS if CASES[name].closed_form_prox]
CLOSED_FORM_IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape in CLOSED_FORM]


@pytest.mark.parametrize(("name", "shape"), CLOSED_FORM, ids=CLOSED_FORM_IDS)
def test_prox_with_scalar_rho_matches_constant_tensor(name, shape):
    operator, x, y, generator = _setup(name, shape)
    z = torch.randn(shape, generator=generator, dtype=DTYPE)
    by_scalar = operator.prox_data(z, y, 0.2)
    by_tensor = operator.prox_data(z, y, torch.full((shape[0],), 0.2, dtype=DTYPE))
    assert _relative(by_scalar, by_tensor) < 1e-9


@pytest.mark.parametrize(("name", "shape"), CLOSED_FORM, ids=CLOSED_FORM_IDS)
def test_closed_form_prox_agrees_with_cg_fallback(name, shape):
    operator, x, y, generator = _setup(name, shape)
    z = torch.randn(shape, generator=generator, dtype=DTYPE)
    rho = torch.tensor([0.4, 0.05], dtype=DTYPE)
    fallback = LinearOperator.prox_data(operator, z, y, rho)
    assert _relative(operator.prox_data(z, y, rho), fallback) < 1e-5


TINY = {name: (1, 3, 5, 7) for name in CASES if name.startswith("bayer")}
DENSE = [(name, TINY.get(name, (1, 1, 6, 6))) for name in CASES if CASES[name].closed_form_prox]


@pytest.mark.parametrize(("name", "shape"), DENSE, ids=[name for name, _ in DENSE])
def test_closed_form_prox_equals_dense_solve(name, shape):
    operator, x, y, generator = _setup(name, shape)
    z = torch.randn(shape, generator=generator, dtype=DTYPE)
    rho = 0.05
    matrix = torch.autograd.functional.jacobian(operator, x).reshape(y.numel(), x.numel())
    system = matrix.T @ matrix + rho * torch.eye(x.numel(), dtype=DTYPE)
    expected = torch.linalg.solve(system, matrix.T @ y.reshape(-1) + rho * z.reshape(-1)).reshape(shape)
    assert _relative(operator.prox_data(z, y, rho), expected) < 1e-10


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip(name):
    shape = CASES[name].shapes[0]
    source, x, _, _ = _setup(name, shape, seed=0)
    target, _, _, _ = _setup(name, shape, seed=1)
    target(x)  # fills any cached spectrum, which loading must invalidate
    target.load_state_dict(source.state_dict())
    assert torch.equal(target(x), source(x))


@pytest.mark.parametrize("name", list(CASES))
def test_float32_input_keeps_dtype(name):
    shape = CASES[name].shapes[0]
    operator, x, y, _ = _setup(name, shape)
    assert operator(x.float()).dtype == torch.float32
    assert operator.adjoint(y.float()).dtype == torch.float32
    assert _relative(operator(x.float()).double(), operator(x)) < 1e-5


@pytest.mark.parametrize(("name", "shape"), DENSE, ids=[name for name, _ in DENSE])
def test_closed_form_prox_is_differentiable(name, shape):
    operator, x, y, generator = _setup(name, shape)
    z = torch.randn(shape, generator=generator, dtype=DTYPE).requires_grad_(True)
    rho = torch.tensor([0.3], dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, y, rho: operator.prox_data(z, y, rho), (z, y.requires_grad_(True), rho))
