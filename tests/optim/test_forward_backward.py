"""Forward-backward with known fixed points, the identity-prior limit, divergence, the DPIR schedule, the registry."""

import math
import warnings

import pytest
import torch

from converge.errors import ConfigError
from converge.optim import (
    AlgorithmInfo,
    IdentityDenoiser,
    L2DataFidelity,
    algorithm_names,
    dpir_schedule,
    forward_backward,
    get_algorithm,
    register_algorithm,
)
from converge.optim import registry
from converge.optim.priors import Denoiser
from converge.physics import Downsample, GaussianBlur, Identity, PixelMask, conjugate_gradient


class Shrink:
    """The linear denoiser ``D(v) = c v``, a contraction for ``0 < c < 1``."""

    def __init__(self, c: float) -> None:
        self.c = c

    def denoise(self, x, sigma):
        return self.c * x


class RecordingDenoiser:
    """The identity, remembering each level it was called with."""

    def __init__(self) -> None:
        self.levels = []

    def denoise(self, x, sigma):
        self.levels.append(sigma)
        return x


class NaNAt:
    """The identity until call ``k`` (from 1), which returns NaN."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def denoise(self, x, sigma):
        self.calls += 1
        return torch.full_like(x, math.nan) if self.calls == self.k else 0.9 * x


def measurement(operator, shape=(2, 1, 16, 16), seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=generator, dtype=torch.float64)
    return operator(clean) + 0.02 * torch.randn(operator(clean).shape, generator=generator, dtype=torch.float64)


def test_test_denoisers_satisfy_the_protocol():
    assert isinstance(Shrink(0.5), Denoiser) and isinstance(RecordingDenoiser(), Denoiser)


def test_shrinkage_on_identity_converges_to_the_scalar_fixed_point():
    """``x = c (x - eta (x - y))`` gives ``x = c eta y / (1 - c + c eta)``."""
    c, eta = 0.6, 0.8
    y = measurement(Identity())
    x, info = forward_backward(y, Identity(), Shrink(c), sigma=0.1, eta=eta, tol=1e-12, max_iter=500)
    expected = c * eta * y / (1 - c + c * eta)
    assert info.converged and not info.diverged
    assert float((x - expected).abs().max()) < 1e-10
    # The iteration map is v -> c (1 - eta) v + const: the change shrinks by c (1 - eta) = 0.12 per step
    # (the norms in the relative change settle as fast), so 1e-12 takes 12 to 14 steps.
    ratios = [b / a for a, b in zip(info.relative_change[4:], info.relative_change[5:9])]
    assert all(abs(r - c * (1 - eta)) < 1e-3 for r in ratios)
    assert 12 <= info.iterations <= 14


def test_shrinkage_on_circular_blur_converges_to_the_fft_fixed_point():
    """``((1 - c) I + c eta A^T A) x = c eta A^T y``, diagonal in Fourier for a circular blur."""
    c = 0.7
    blur = GaussianBlur(1.2, size=9).to(torch.float64)
    y = measurement(blur)
    x, info = forward_backward(y, blur, Shrink(c), sigma=0.1, tol=1e-12, max_iter=500)
    eta = 1.0  # ||A|| = 1 for a normalised non-negative kernel; the default step must find it
    spectrum = blur.transfer_function(y.shape[-2:], torch.float64, y.device)
    expected = torch.fft.irfft2(
        c * eta * spectrum.conj() * torch.fft.rfft2(y) / ((1 - c) + c * eta * spectrum.abs() ** 2), s=y.shape[-2:]
    )
    assert info.converged and info.iterations < 500
    assert float((x - expected).abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["mask", "downsample"])
def test_shrinkage_converges_to_the_conjugate_gradient_fixed_point(name):
    generator = torch.Generator().manual_seed(3)
    if name == "mask":
        operator = PixelMask((torch.rand(1, 1, 16, 16, generator=generator) > 0.5).float()).to(torch.float64)
    else:
        operator = Downsample(2).to(torch.float64)
    c, eta = 0.5, 0.9
    y = measurement(operator)
    x, info = forward_backward(y, operator, Shrink(c), sigma=0.1, eta=eta, tol=1e-12, max_iter=500)
    rhs = c * eta * operator.adjoint(y)
    expected = conjugate_gradient(lambda v: (1 - c) * v + c * eta * operator.normal(v), rhs, tol=1e-14, max_iter=500)
    assert info.converged
    assert float((x - expected).abs().max()) < 1e-5


def test_identity_prior_is_gradient_descent_with_a_decreasing_residual():
    blur = GaussianBlur(1.6, size=11).to(torch.float64)
    y = measurement(blur, seed=4)
    eta = 1.9  # < 2 / ||A||^2 = 2
    fidelity, x = L2DataFidelity(), blur.adjoint(y)
    values = [fidelity.value(x, y, blur)]
    for _ in range(30):
        x_next, info = forward_backward(y, blur, IdentityDenoiser(), sigma=0.1, eta=eta, x0=x, max_iter=1)
        assert torch.allclose(x_next, x - eta * blur.adjoint(blur(x) - y), atol=1e-14)
        x = x_next
        values.append(fidelity.value(x, y, blur))
    values = torch.stack(values)
    assert bool((values[1:] < values[:-1]).all())
    assert bool((values[-1] < 0.5 * values[0]).all())


def test_a_step_far_too_large_diverges_with_a_warning_and_a_finite_result():
    blur = GaussianBlur(1.6, size=11).to(torch.float64)
    y = measurement(blur)
    with pytest.warns(RuntimeWarning, match="diverged"):
        x, info = forward_backward(y, blur, IdentityDenoiser(), sigma=0.1, eta=5.0, max_iter=200)
    assert info.diverged and not info.converged
    assert info.iterations < 10 and len(info.relative_change) == info.iterations
    assert bool(torch.isfinite(x).all())
    assert float(x.abs().max()) < 10 * float(blur.adjoint(y).abs().max())


def test_a_non_finite_iterate_stops_the_run_and_returns_the_best_finite_one():
    y = measurement(Identity())
    with pytest.warns(RuntimeWarning, match="diverged at iteration 4"):
        x, info = forward_backward(y, Identity(), NaNAt(4), sigma=0.1, eta=0.5, max_iter=50)
    assert info.diverged and info.iterations == 4 and math.isinf(info.relative_change[-1])
    # The three finite iterates shrink by a constant factor, so the third has the lowest change.
    third = y
    for _ in range(3):
        third = 0.9 * (third - 0.5 * (third - y))
    assert torch.allclose(x, third, atol=1e-14)


def test_a_convergent_run_does_not_warn():
    y = measurement(Identity())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = forward_backward(y, Identity(), Shrink(0.5), sigma=0.1, x0=torch.zeros_like(y), max_iter=200)
    assert info.converged and not info.diverged


def test_a_schedule_runs_its_full_length_with_its_levels_in_order():
    sigmas, _ = dpir_schedule(6, 10 / 255)
    denoiser = RecordingDenoiser()
    _, info = forward_backward(measurement(Identity()), Identity(), denoiser, schedule=sigmas)
    assert info.iterations == 6 and not info.converged
    assert denoiser.levels == pytest.approx(sigmas.tolist(), rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sigma": 0.1, "schedule": torch.ones(3)},
        {"schedule": torch.ones(3), "tol": 1e-3},
        {"sigma": 0.1, "max_iter": 0},
        {"sigma": 0.1, "eta": -1.0},
    ],
)
def test_options_that_do_not_fit_raise(options):
    with pytest.raises(ConfigError):
        forward_backward(measurement(Identity()), Identity(), IdentityDenoiser(), **options)


def test_dpir_schedule_is_log_spaced_from_49_to_the_noise_level():
    noise, lam = 15 / 255, 0.23
    sigmas, rhos = dpir_schedule(8, noise, lam=lam)
    assert sigmas.shape == rhos.shape == (8,)
    assert sigmas[0].item() == pytest.approx(49 / 255, rel=1e-12)
    assert sigmas[-1].item() == pytest.approx(noise, rel=1e-12)
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-10)
    assert ratios[0].item() == pytest.approx((noise / (49 / 255)) ** (1 / 7), rel=1e-10)
    assert torch.allclose(rhos, lam * noise**2 / sigmas**2, rtol=1e-12)


def test_dpir_schedule_floors_the_noise_level():
    sigmas, rhos = dpir_schedule(5, 0.0)
    assert sigmas[-1].item() == pytest.approx(0.255 / 255, rel=1e-12)
    assert rhos[-1].item() == pytest.approx(0.23, rel=1e-12)
    with pytest.raises(ConfigError):
        dpir_schedule(0, 0.1)


def test_forward_backward_registers_itself_and_the_registry_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_ALGORITHMS", dict(registry._ALGORITHMS))
    assert "forward_backward" in algorithm_names()
    assert get_algorithm("forward_backward") is forward_backward
    with pytest.raises(ConfigError, match="already registered"):
        register_algorithm("forward_backward", lambda *args: None)
    assert get_algorithm("forward_backward") is forward_backward

    def mine(y, operator, denoiser):
        return y, AlgorithmInfo("mine", 0, [], converged=True, diverged=False)

    register_algorithm("mine", mine)
    assert get_algorithm("mine") is mine and "mine" in algorithm_names()
    register_algorithm("mine", forward_backward, overwrite=True)
    assert get_algorithm("mine") is forward_backward


def test_an_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="forward_backward"):
        get_algorithm("nope")
