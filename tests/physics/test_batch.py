"""OperatorBatch: each sample's own operator, measurements on the image grid, exact linear algebra."""

import pytest
import torch

from converge.errors import ConfigError
from converge.physics import (
    Downsample,
    GaussianBlur,
    Identity,
    JPEGCompression,
    OperatorBatch,
    PixelMask,
    as_operator_batch,
)

DTYPE = torch.float64
SHAPE = (1, 2, 12, 12)


def _mixed(generator: torch.Generator) -> OperatorBatch:
    mask = PixelMask((torch.rand((1, 1, 12, 12), generator=generator) > 0.5).to(DTYPE))
    blur = GaussianBlur(1.2, size=7)
    # The blur is shared by samples 1 and 4: they are applied together.
    return OperatorBatch([Identity(), blur, Downsample(2), mask, blur, Downsample(3, kernel="gaussian")])


def _random(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=DTYPE)


def test_each_sample_gets_its_own_operator_on_the_grid() -> None:
    generator = torch.Generator().manual_seed(0)
    batch = _mixed(generator)
    x = _random((6, *SHAPE[1:]), generator)
    measured = batch(x)
    assert measured.shape == x.shape
    for index, operator in enumerate(batch.operators):
        own = operator(x[index : index + 1])
        torch.testing.assert_close(operator.from_grid(measured[index : index + 1]), own, rtol=0, atol=1e-14)
    # A downsampled sample is zero off its sampling grid.
    sr = measured[2, :, 0::2, :]
    assert bool((sr[:, :, 1::2] == 0).all()) and bool((sr[:, :, 0::2] != 0).all())


def test_adjoint_identity_holds_on_the_grid() -> None:
    generator = torch.Generator().manual_seed(1)
    batch = _mixed(generator)
    x = _random((6, *SHAPE[1:]), generator)
    y = batch(_random((6, *SHAPE[1:]), generator))
    assert torch.allclose((batch(x) * y).sum(), (x * batch.adjoint(y)).sum(), rtol=1e-12, atol=0)


def test_data_gradient_and_prox_are_each_samples_own() -> None:
    generator = torch.Generator().manual_seed(2)
    batch = _mixed(generator)
    x = _random((6, *SHAPE[1:]), generator)
    z = _random((6, *SHAPE[1:]), generator)
    y = batch(_random((6, *SHAPE[1:]), generator))
    rho = torch.linspace(0.1, 2.0, 6, dtype=DTYPE)
    grad = batch.data_grad(x, y)
    prox = batch.prox_data(z, y, rho)
    for index, operator in enumerate(batch.operators):
        own_y = operator.from_grid(y[index : index + 1])
        sample = slice(index, index + 1)
        torch.testing.assert_close(grad[sample], operator.data_grad(x[sample], own_y), rtol=0, atol=1e-12)
        # Optimality of the prox: A^T (A p - y) + rho (p - z) = 0.
        residual = operator.data_grad(prox[sample], own_y) + rho[index] * (prox[sample] - z[sample])
        assert residual.abs().max() < 1e-6


def test_a_shared_operator_becomes_a_batch_of_itself() -> None:
    blur = GaussianBlur(1.0, size=5)
    batch = as_operator_batch(blur, 3)
    assert len(batch) == 3 and len(batch.distinct) == 1
    assert as_operator_batch(batch, 3) is batch
    with pytest.raises(ConfigError, match="does not fit a batch of 4"):
        as_operator_batch(batch, 4)


def test_non_linear_operators_degrade_but_have_no_adjoint() -> None:
    batch = OperatorBatch([JPEGCompression(30), Identity()])
    x = torch.rand(2, 1, 16, 16)
    assert batch(x).shape == x.shape
    with pytest.raises(ConfigError, match="not linear"):
        batch.adjoint(x)


def test_batch_size_must_match() -> None:
    with pytest.raises(ConfigError, match="got a batch of 3"):
        OperatorBatch([Identity(), Identity()])(torch.rand(3, 1, 4, 4))
    with pytest.raises(ConfigError, match="at least one"):
        OperatorBatch([])


def test_the_physics_keeps_its_precision_inside_a_bfloat16_autocast() -> None:
    blur = GaussianBlur(1.0, size=5, boundary="reflect")  # a convolution, which autocast would lower
    batch = OperatorBatch([blur, Identity()])
    x = torch.rand(2, 1, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        measured = batch(x)
    assert measured.dtype == torch.float32 and torch.allclose(measured[:1], blur(x[:1]), atol=1e-6)
