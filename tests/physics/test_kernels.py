import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converge.errors import ConfigError
from converge.physics.downsample import Downsample
from converge.physics.kernels import (
    PADDING_MODES,
    apply_transfer_function,
    bicubic_kernel,
    cubic,
    default_gaussian_size,
    gaussian_kernel,
    kernel_transfer_function,
    pad,
    pad_adjoint,
    pad_indices,
)


@pytest.mark.parametrize(("sigma", "size"), [(0.5, None), (1.6, 25), (2.0, 6), (3.0, None)])
def test_gaussian_kernel_is_normalised_symmetric_and_peaked(sigma, size):
    kernel = gaussian_kernel(sigma, size)
    expected_size = default_gaussian_size(sigma) if size is None else size
    assert kernel.shape == (expected_size, expected_size)
    assert abs(float(kernel.sum()) - 1.0) < 1e-14
    assert torch.allclose(kernel, kernel.flip(0)) and torch.allclose(kernel, kernel.T)
    centre = (expected_size - 1) // 2
    assert float(kernel[centre, centre]) == pytest.approx(float(kernel.max()))


def test_gaussian_kernel_has_the_requested_spread():
    kernel = gaussian_kernel(1.5, 31)
    offsets = torch.arange(31, dtype=torch.float64) - 15
    variance = float((kernel.sum(1) * offsets**2).sum())
    assert variance == pytest.approx(1.5**2, rel=1e-6)


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_gaussian_kernel_rejects_non_positive_sigma(sigma):
    with pytest.raises(ConfigError):
        gaussian_kernel(sigma)


def test_cubic_interpolates_and_partitions_unity():
    assert float(cubic(torch.tensor(0.0))) == 1.0
    knots = torch.tensor([-2.0, -1.0, 1.0, 2.0, 2.5])
    assert torch.equal(cubic(knots), torch.zeros(5))
    shifts = torch.linspace(0, 1, 11, dtype=torch.float64)
    total = sum(cubic(shifts - k) for k in range(-2, 4))
    assert torch.allclose(total, torch.ones_like(shifts), atol=1e-14)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_bicubic_kernel_shape_sum_and_separability(factor):
    kernel = bicubic_kernel(factor)
    assert kernel.shape == (4 * factor, 4 * factor)
    assert abs(float(kernel.sum()) - 1.0) < 1e-14
    assert torch.linalg.matrix_rank(kernel) == 1


def test_bicubic_kernel_of_factor_one_is_the_identity_tap():
    kernel = bicubic_kernel(1)
    assert float(kernel[2, 2]) == 1.0 and float(kernel.abs().sum()) == 1.0


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_decimation_samples_matlab_pixel_centres(factor):
    size = 16 * factor
    ramp = torch.arange(size, dtype=torch.float64).expand(1, 1, size, size)
    low = Downsample(factor)(ramp)[0, 0, 0]
    centres = torch.arange(size // factor, dtype=torch.float64) * factor + (factor - 1) / 2
    assert torch.allclose(low[3:-3], centres[3:-3], atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_with_pillows_parameter_matches_pillow_resize(factor):
    from PIL import Image

    size = 12 * factor
    image = np.random.default_rng(factor).random((size, size), dtype=np.float32)
    pillow = np.asarray(Image.fromarray(image, mode="F").resize((size // factor,) * 2, Image.BICUBIC))
    ours = Downsample(factor, kernel=bicubic_kernel(factor, a=-0.5))(torch.from_numpy(image).double()[None, None])
    interior = slice(3, -3)
    assert np.abs(pillow - ours[0, 0].numpy())[interior, interior].max() < 1e-6


def _dense_circular_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    height, width = x.shape
    h, w = kernel.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out += kernel[i, j] * torch.roll(x, shifts=(i - h // 2, j - w // 2), dims=(0, 1))
    return out


@pytest.mark.parametrize(("kernel_shape", "image_shape"), [((3, 3), (8, 9)), ((4, 6), (7, 10)), ((11, 9), (5, 6))])
def test_transfer_function_matches_direct_circular_convolution(kernel_shape, image_shape):
    generator = torch.Generator().manual_seed(0)
    kernel = torch.rand(kernel_shape, generator=generator, dtype=torch.float64)
    x = torch.randn(image_shape, generator=generator, dtype=torch.float64)
    spectral = apply_transfer_function(x, kernel_transfer_function(kernel, image_shape))
    assert torch.allclose(spectral, _dense_circular_convolution(x, kernel), atol=1e-12)
    full = kernel_transfer_function(kernel, image_shape, onesided=False)
    assert full.shape == image_shape


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_matches_torch_for_small_pads(mode):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    pads = (2, 1, 3, 0)
    expected = F.pad(x, (pads[2], pads[3], pads[0], pads[1]), mode=mode)
    assert torch.equal(pad(x, pads, mode), expected)


def test_reflect_indices_repeat_the_reflection_for_long_pads():
    assert pad_indices(3, 5, 5, "reflect").tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]
    assert pad_indices(1, 2, 2, "reflect").tolist() == [0] * 5


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("pads", [(1, 2, 0, 3), (9, 4, 7, 12)])
def test_pad_adjoint_is_the_exact_transpose(mode, pads):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 5, 4, generator=generator, dtype=torch.float64)
    padded = pad(x, pads, mode)
    v = torch.randn(padded.shape, generator=generator, dtype=torch.float64)
    assert float((padded * v).sum()) == pytest.approx(float((x * pad_adjoint(v, pads, mode)).sum()), rel=1e-12)


def test_unknown_padding_mode_raises():
    with pytest.raises(ConfigError):
        pad(torch.zeros(1, 1, 4, 4), (1, 1, 1, 1), "mirror")
