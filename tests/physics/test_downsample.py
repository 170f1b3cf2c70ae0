import pytest
import torch

from converge.errors import ConfigError
from converge.physics.downsample import Downsample


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("kernel", ["bicubic", "gaussian"])
def test_constant_image_stays_that_constant(factor, kernel):
    image = torch.full((2, 3, 12 * factor, 6 * factor), 0.42, dtype=torch.float64)
    low = Downsample(factor, kernel=kernel)(image)
    assert low.shape == (2, 3, 12, 6)
    assert torch.allclose(low, torch.full_like(low, 0.42), atol=1e-14)


def test_keeps_pixels_from_the_documented_offset():
    # A delta kernel reduces the operator to plain decimation at offset (factor - 1) // 2.
    x = torch.arange(144, dtype=torch.float64).reshape(1, 1, 12, 12)
    for factor, offset in [(2, 0), (3, 1), (4, 1)]:
        low = Downsample(factor, kernel=torch.ones(1, 1))(x)
        assert torch.equal(low, x[..., offset::factor, offset::factor])


def test_adjoint_is_zero_filling_then_transposed_filter():
    sr = Downsample(3, kernel=torch.ones(1, 1, dtype=torch.float64))
    y = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    up = sr.adjoint(y)
    assert up.shape == (1, 2, 12, 15)
    assert torch.allclose(up[..., 1::3, 1::3], y, atol=1e-12)
    up[..., 1::3, 1::3] = 0
    assert float(up.abs().max()) < 1e-12


@pytest.mark.parametrize("factor", [2, 3])
def test_operator_norm_is_the_largest_aliased_gain(factor):
    sr = Downsample(factor)
    x0 = torch.rand(1, 1, 6 * factor, 6 * factor, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = sr.aliased_spectrum((6 * factor, 6 * factor), torch.float64, torch.device("cpu")).max().sqrt()
    assert float(sr.operator_norm(x0, tol=1e-10, max_iter=300)) == pytest.approx(float(expected), rel=1e-3)


def test_sizes_that_are_not_multiples_of_the_factor_raise():
    sr = Downsample(4)
    with pytest.raises(ConfigError, match="multiple"):
        sr(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ConfigError, match="multiple"):
        sr.prox_data(torch.zeros(1, 1, 32, 30), torch.zeros(1, 1, 8, 7), 0.1)


def test_invalid_configuration_raises():
    with pytest.raises(ConfigError):
        Downsample(0)
    with pytest.raises(ConfigError):
        Downsample(2, kernel="lanczos")
    with pytest.raises(ConfigError):
        Downsample(2, kernel="bicubic", gaussian_sigma=1.0)
    with pytest.raises(ConfigError):
        Downsample(2, kernel="gaussian", gaussian_sigma=-1.0)
    with pytest.raises(ConfigError):
        Downsample(2, boundary="mirror")


def test_gaussian_kernel_uses_the_mtdeq_default_width():
    sr = Downsample(2, kernel="gaussian")
    assert sr.gaussian_sigma == 0.5
    assert sr.blur.kernel.shape == (5, 5)
