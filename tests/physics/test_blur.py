import pytest
import torch

from converge.errors import ConfigError
from converge.physics.blur import GaussianBlur, KernelBlur
from converge.physics.kernels import PADDING_MODES


def test_gaussian_blur_kernel_sums_to_one():
    for sigma, size in [(1.6, 25), (2.0, None), (0.7, 4)]:
        blur = GaussianBlur(sigma, size=size)
        assert abs(float(blur.kernel.sum()) - 1.0) < 1e-14


@pytest.mark.parametrize("boundary", ["circular", "reflect", "replicate"])
def test_normalised_blur_keeps_constant_images(boundary):
    image = torch.full((2, 3, 9, 12), 0.37, dtype=torch.float64)
    assert torch.allclose(GaussianBlur(1.2, size=6, boundary=boundary)(image), image, atol=1e-14)


def test_zero_boundary_darkens_the_border_only():
    image = torch.ones(1, 1, 12, 12, dtype=torch.float64)
    out = GaussianBlur(1.0, size=5, boundary="zeros")(image)
    assert torch.allclose(out[..., 2:-2, 2:-2], image[..., 2:-2, 2:-2])
    assert float(out[0, 0, 0, 0]) < 0.9


@pytest.mark.parametrize("boundary", PADDING_MODES)
def test_boundaries_agree_away_from_the_border(boundary):
    generator = torch.Generator().manual_seed(0)
    kernel = torch.rand(5, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(1, 2, 20, 20, generator=generator, dtype=torch.float64)
    reference = KernelBlur(kernel, "circular")(x)
    assert torch.allclose(KernelBlur(kernel, boundary)(x)[..., 5:-5, 5:-5], reference[..., 5:-5, 5:-5], atol=1e-12)


@pytest.mark.parametrize("boundary", PADDING_MODES)
def test_kernel_origin_convention(boundary):
    x = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    centred = torch.zeros(4, 4, dtype=torch.float64)
    centred[2, 2] = 1.0
    assert torch.allclose(KernelBlur(centred, boundary)(x), x)
    shifted_down = torch.zeros(4, 4, dtype=torch.float64)
    shifted_down[3, 2] = 1.0
    out = KernelBlur(shifted_down, boundary)(x)
    assert torch.allclose(out[..., 1:, :], x[..., :-1, :])


def test_reflect_boundary_mirrors_about_the_edge_pixel():
    x = torch.zeros(1, 1, 1, 6, dtype=torch.float64)
    x[..., 1] = 1.0
    kernel = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # y[n] = x[n - 1]
    out = KernelBlur(kernel, "reflect")(x)
    assert out[0, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_circular_prox_reduces_to_identity_prox_for_a_delta_kernel():
    blur = KernelBlur(torch.ones(1, 1))
    z, y = torch.rand(2, 1, 5, 5, dtype=torch.float64), torch.rand(2, 1, 5, 5, dtype=torch.float64)
    assert torch.allclose(blur.prox_data(z, y, 0.5), (y + 0.5 * z) / 1.5)


def test_cached_spectrum_follows_in_place_kernel_changes():
    blur = GaussianBlur(1.0, size=5)
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    before = blur(x)
    blur.kernel.zero_()
    blur.kernel[2, 2] = 1.0
    assert not torch.allclose(blur(x), before)
    assert torch.allclose(blur(x), x)


def test_blur_is_differentiable_in_the_image():
    blur = GaussianBlur(1.0, size=5, boundary="reflect")
    x = torch.randn(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blur, (x,))


@pytest.mark.parametrize(("boundary", "expected"), [("circular", "one"), ("reflect", "dense")])
def test_operator_norm(boundary, expected):
    blur = GaussianBlur(1.5, size=9, boundary=boundary)
    x0 = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if expected == "one":
        reference = 1.0  # a normalised non-negative kernel on the torus passes constants and shrinks the rest
    else:
        matrix = torch.autograd.functional.jacobian(blur, x0).reshape(144, 144)
        reference = float(torch.linalg.matrix_norm(matrix, ord=2))  # above 1: the folded border counts twice
    assert float(blur.operator_norm(x0, tol=1e-10, max_iter=500)) == pytest.approx(reference, rel=1e-4)


def test_invalid_configuration_raises():
    with pytest.raises(ConfigError):
        GaussianBlur(1.0, boundary="periodic")
    with pytest.raises(ConfigError):
        KernelBlur(torch.ones(3))
    with pytest.raises(ConfigError):
        GaussianBlur(-1.0)
