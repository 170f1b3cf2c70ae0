"""PnP-ADMM, HQS and RED: closed-form fixed points, the scaling of rho, schedules, divergence, the registry.

With the linear shrinkage ``D(v) = c v`` (``0 < c < 1``) and a fixed penalty every algorithm has a fixed
point in closed form. Writing ``a`` for the weight of the identity in ``(A^T A + a I) s = A^T y``:

- HQS: ``x = (A^T A + rho I)^{-1} (A^T y + rho c x)``, so ``a = rho (1 - c)`` and the returned ``z = c s``;
- ADMM: at convergence ``x = z`` and ``u`` is constant; ``z = c (x + u)`` gives ``u = (1 - c) / c z``, and the
  x-step ``(A^T A + rho I) z = A^T y + rho (z - u)`` gives ``a = rho (1 - c) / c`` and ``z = s`` (the shrinkage
  is the prox of ``rho (1 - c) / (2 c) ||z||^2``, and ADMM minimises the sum exactly);
- RED: ``A^T (A x - y) + lam (1 - c) x = 0``, so ``a = lam (1 - c)`` and ``x = s``.
"""

import math
import warnings

import pytest
import torch

from converge.errors import ConfigError
from converge.eval.metrics import psnr
from converge.imageio import read_image
from converge.optim import (
    IdentityDenoiser,
    L2DataFidelity,
    admm,
    algorithm_names,
    dpir_schedule,
    get_algorithm,
    hqs,
    make_denoiser,
    red,
    register_algorithm,
)
from converge.optim import registry
from converge.physics import Downsample, GaussianBlur, Identity, PixelMask, conjugate_gradient

PARROTS = "src/converge/examples/parrots.png"


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


class RecordingFidelity(L2DataFidelity):
    """Least squares, remembering each prox weight ``gamma`` it was called with."""

    def __init__(self) -> None:
        self.gammas = []

    def prox(self, z, y, operator, gamma):
        self.gammas.append(gamma)
        return super().prox(z, y, operator, gamma)


class NaNAt:
    """A shrinkage by 0.9 until call ``k`` (from 1), which returns NaN."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def denoise(self, x, sigma):
        self.calls += 1
        return torch.full_like(x, math.nan) if self.calls == self.k else 0.9 * x


def measurement(operator, shape=(2, 1, 16, 16), seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=generator, dtype=torch.float64)
    return operator(clean) + 0.02 * torch.randn(operator(clean).shape, generator=generator, dtype=torch.float64)


def make_operator(name: str):
    if name == "identity":
        return Identity()
    if name == "blur":
        return GaussianBlur(1.2, size=9).to(torch.float64)
    if name == "downsample":
        return Downsample(2).to(torch.float64)
    raise AssertionError(name)


def regularised_solution(operator, y, a):
    """``(A^T A + a I)^{-1} A^T y``: exact for the identity, by FFT for a circular blur, by CG otherwise."""
    if isinstance(operator, Identity):
        return y / (1 + a)
    if isinstance(operator, GaussianBlur):
        spectrum = operator.transfer_function(y.shape[-2:], torch.float64, y.device)
        return torch.fft.irfft2(spectrum.conj() * torch.fft.rfft2(y) / (spectrum.abs() ** 2 + a), s=y.shape[-2:])
    rhs = operator.adjoint(y)
    return conjugate_gradient(lambda v: operator.normal(v) + a * v, rhs, tol=1e-14, max_iter=1000)


def run(name, y, operator, denoiser, weight, **options):
    """Run algorithm ``name`` with a fixed level; ``weight`` is ``rho`` for the splittings, ``lam`` for RED."""
    key = "lam" if name == "red" else "rho"
    return get_algorithm(name)(y, operator, denoiser, sigma=0.1, **{key: weight}, **options)


def expected_fixed_point(name, operator, y, c, weight):
    if name == "hqs":
        return c * regularised_solution(operator, y, weight * (1 - c))
    if name == "admm":
        return regularised_solution(operator, y, weight * (1 - c) / c)
    return regularised_solution(operator, y, weight * (1 - c))


ALGORITHMS = ["admm", "hqs", "red"]
SPLITTINGS = ["admm", "hqs"]


@pytest.mark.parametrize("operator_name", ["identity", "blur", "downsample"])
@pytest.mark.parametrize("name", ALGORITHMS)
def test_shrinkage_converges_to_the_closed_form_fixed_point(name, operator_name):
    operator = make_operator(operator_name)
    y = measurement(operator)
    c, weight = 0.7, 0.5
    x, info = run(name, y, operator, Shrink(c), weight, tol=1e-12, max_iter=3000)
    assert info.algorithm == name and info.converged and not info.diverged
    assert info.iterations < 3000 and len(info.relative_change) == info.iterations
    assert float((x - expected_fixed_point(name, operator, y, c, weight)).abs().max()) < 1e-8


def test_admm_and_hqs_fixed_points_differ():
    """The dual variable matters: with ``c = 0.5`` ADMM's weight is ``rho``, HQS's ``rho / 2``."""
    blur = make_operator("blur")
    y = measurement(blur)
    z_admm, _ = admm(y, blur, Shrink(0.5), sigma=0.1, rho=0.5, tol=1e-12, max_iter=3000)
    z_hqs, _ = hqs(y, blur, Shrink(0.5), sigma=0.1, rho=0.5, tol=1e-12, max_iter=3000)
    assert float((z_admm - z_hqs).abs().max()) > 1e-2


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_per_sample_weight_gives_each_sample_its_own_fixed_point(name):
    blur = make_operator("blur")
    y = measurement(blur)
    c, weights = 0.6, torch.tensor([0.2, 1.0], dtype=torch.float64)
    x, info = run(name, y, blur, Shrink(c), weights, tol=1e-12, max_iter=3000)
    assert info.converged
    for b in range(2):
        expected = expected_fixed_point(name, blur, y[b : b + 1], c, float(weights[b]))
        assert float((x[b : b + 1] - expected).abs().max()) < 1e-8


@pytest.mark.parametrize("name", SPLITTINGS)
def test_identity_prior_converges_to_the_least_squares_solution(name):
    """With ``D = I`` both splittings are the proximal-point method on ``0.5 ||A x - y||^2``."""
    y = measurement(Identity())
    x, info = get_algorithm(name)(y, Identity(), IdentityDenoiser(), sigma=0.1, rho=0.5, x0=torch.zeros_like(y))
    assert info.converged
    assert float((x - y).abs().max()) < 1e-4  # contraction 1/3 per step, stopped at a relative change of 1e-5
    blur = GaussianBlur(0.5, size=3).to(torch.float64)  # |K| >= 0.32: full rank and well conditioned
    y = measurement(blur, seed=5)
    x, info = get_algorithm(name)(y, blur, IdentityDenoiser(), sigma=0.1, rho=0.05, tol=1e-13, max_iter=500)
    spectrum = blur.transfer_function(y.shape[-2:], torch.float64, y.device)
    least_squares = torch.fft.irfft2(torch.fft.rfft2(y) / spectrum, s=y.shape[-2:])
    assert info.converged and float((x - least_squares).abs().max()) < 1e-9


@pytest.mark.parametrize("name", SPLITTINGS)
def test_the_data_step_is_the_operators_prox_with_rho_unchanged(name):
    """One step with ``D = I`` from ``x0`` is ``(A^T A + rho I)^{-1} (A^T y + rho x0)``: no 1/rho, no sigma_n^2."""
    blur = make_operator("blur")
    y = measurement(blur)
    x0 = torch.rand(y.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    rho = 0.3
    x, info = get_algorithm(name)(y, blur, IdentityDenoiser(), sigma=0.1, rho=rho, x0=x0, max_iter=1)
    spectrum = blur.transfer_function(y.shape[-2:], torch.float64, y.device)
    expected = torch.fft.irfft2(
        (spectrum.conj() * torch.fft.rfft2(y) + rho * torch.fft.rfft2(x0)) / (spectrum.abs() ** 2 + rho),
        s=y.shape[-2:],
    )
    assert info.iterations == 1 and torch.allclose(x, expected, atol=1e-12)


@pytest.mark.parametrize("stop", [{"max_iter": 1}, {"tol": 10.0}])
@pytest.mark.parametrize("name", SPLITTINGS)
def test_the_returned_iterate_is_the_denoisers_output(name, stop):
    """From ``x0`` with ``u_0 = 0`` the first data step is ``x_1 = (y + rho x0) / (1 + rho)`` on the identity;
    both splittings return ``z_1 = c x_1``, not ``x_1``, whether the run ends by count or by tolerance."""
    y = measurement(Identity())
    x0 = torch.rand(y.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    z, info = get_algorithm(name)(y, Identity(), Shrink(0.5), sigma=0.1, rho=1.0, x0=x0, **stop)
    assert info.iterations == 1 and info.converged == ("tol" in stop)
    assert torch.allclose(z, 0.5 * (y + x0) / 2, atol=1e-15)


def test_the_dpir_weight_solves_dpirs_own_data_step():
    """DPIR's x-step minimises ``||A x - y||^2 / (2 sigma_n^2) + mu_k / 2 ||x - z||^2`` with
    ``mu_k = lam / sigma_k^2``; HQS with ``rho_k`` from :func:`dpir_schedule` must land on its minimiser."""
    noise, lam = 0.01, 0.23
    sigmas, rhos = dpir_schedule(5, noise, lam=lam)
    blur = make_operator("blur")
    y = measurement(blur)
    z = torch.rand(y.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for k in range(5):
        x, _ = hqs(y, blur, IdentityDenoiser(), schedule=sigmas[k : k + 1], rho=rhos[k : k + 1], x0=z)
        x = x.requires_grad_(True)
        mu = lam / sigmas[k] ** 2
        objective = (blur(x) - y).square().sum() / (2 * noise**2) + mu / 2 * (x - z).square().sum()
        (gradient,) = torch.autograd.grad(objective, x)
        scale = (mu * (x - z)).detach().norm()
        assert float(gradient.norm() / scale) < 1e-9


@pytest.mark.parametrize("name", SPLITTINGS)
def test_a_schedule_runs_its_full_length_with_its_levels_and_weights_in_order(name):
    sigmas, rhos = dpir_schedule(6, 10 / 255)
    denoiser, fidelity = RecordingDenoiser(), RecordingFidelity()
    y = measurement(Identity())
    _, info = get_algorithm(name)(y, Identity(), denoiser, schedule=sigmas, rho=rhos, data_fidelity=fidelity)
    assert info.iterations == 6 and len(info.relative_change) == 6
    assert not info.converged and not info.diverged
    assert denoiser.levels == pytest.approx(sigmas.tolist(), rel=1e-12)
    assert fidelity.gammas == pytest.approx((1 / rhos).tolist(), rel=1e-12)


@pytest.mark.parametrize("name", SPLITTINGS)
def test_a_schedule_takes_per_sample_levels_and_weights(name):
    sigmas = torch.stack([dpir_schedule(4, 0.01)[0], dpir_schedule(4, 0.05)[0]], dim=1)
    rhos = torch.stack([dpir_schedule(4, 0.01)[1], dpir_schedule(4, 0.05)[1]], dim=1)
    denoiser, fidelity = RecordingDenoiser(), RecordingFidelity()
    _, info = get_algorithm(name)(
        measurement(Identity()), Identity(), denoiser, schedule=sigmas, rho=rhos, data_fidelity=fidelity
    )
    assert info.iterations == 4
    assert all(torch.equal(level, sigmas[k]) for k, level in enumerate(denoiser.levels))
    assert all(torch.allclose(gamma, 1 / rhos[k], rtol=1e-12) for k, gamma in enumerate(fidelity.gammas))


def by_hand(name, y, c, weight, iterations):
    """The iterates of each algorithm on the identity operator with ``D(v) = c v``, written out."""
    z, u, iterates = y.clone(), torch.zeros_like(y), []
    for _ in range(iterations):
        if name == "hqs":
            z = c * (y + weight * z) / (1 + weight)
        elif name == "admm":
            x = (y + weight * (z - u)) / (1 + weight)
            z_next = c * (x + u)
            u, z = u + x - z_next, z_next
        else:
            mu = 1 / (1 + weight)
            z = z - mu * ((z - y) + weight * (z - c * z))
        iterates.append(z)
    return iterates


@pytest.mark.parametrize("name", ALGORITHMS)
def test_info_reports_each_iterations_relative_change(name):
    y = measurement(Identity(), seed=2) + torch.tensor([0.0, 0.5], dtype=torch.float64).reshape(2, 1, 1, 1)
    c, weight = 0.8, 0.4
    _, info = run(name, y, Identity(), Shrink(c), weight, max_iter=7, tol=0.0)
    iterates = [y] + by_hand(name, y, c, weight, 7)
    expected = [
        float(((after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)).max())
        for before, after in zip(iterates, iterates[1:])
    ]
    assert info.iterations == 7 and not info.converged
    assert info.relative_change == pytest.approx(expected, rel=1e-9)


def test_red_with_a_step_far_too_large_diverges_with_a_warning_and_a_finite_result():
    """The Hessian of RED with ``D = 0.5 I`` on a blur is ``A^T A + lam / 2``; ``mu = 5`` makes the map expand."""
    blur = make_operator("blur")
    y = measurement(blur)
    with pytest.warns(RuntimeWarning, match="red diverged.*lower the step mu"):
        x, info = red(y, blur, Shrink(0.5), sigma=0.1, lam=0.5, mu=5.0, max_iter=200)
    assert info.diverged and not info.converged
    assert info.iterations < 10 and len(info.relative_change) == info.iterations
    assert bool(torch.isfinite(x).all())
    assert float(x.abs().max()) < 10 * float(blur.adjoint(y).abs().max())


@pytest.mark.parametrize("name", ALGORITHMS)
def test_an_expanding_denoiser_diverges_with_a_warning_and_a_finite_result(name):
    """``D(v) = c v`` with ``c = 5`` on the identity: with ``a = rho / (1 + rho) = 0.9`` the iterate grows by
    ``c a = 4.5`` per HQS step and, ADMM's map being of rank one, by ``c a + (1 - c)(1 - a) = 4.1`` per ADMM
    step (at ``rho = 1`` that is 0.5 for every ``c``: ADMM would converge); RED with ``lam = 2`` grows by 10/3."""
    y = measurement(Identity())
    with pytest.warns(RuntimeWarning, match=f"{name} diverged at iteration 3"):
        x, info = run(name, y, Identity(), Shrink(5.0), 2.0 if name == "red" else 9.0, max_iter=100)
    assert info.diverged and not info.converged and info.iterations == 3
    assert bool(torch.isfinite(x).all())


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_non_finite_iterate_stops_the_run_and_returns_a_finite_one(name):
    y = measurement(Identity())
    with pytest.warns(RuntimeWarning, match=f"{name} diverged at iteration 4"):
        x, info = run(name, y, Identity(), NaNAt(4), 0.5, max_iter=50)
    assert info.diverged and info.iterations == 4 and math.isinf(info.relative_change[-1])
    # The three finite iterates approach the fixed point geometrically, so the third has the lowest change.
    assert torch.allclose(x, by_hand(name, y, 0.9, 0.5, 3)[-1], atol=1e-14)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_convergent_run_does_not_warn(name):
    y = measurement(Identity())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = run(name, y, Identity(), Shrink(0.5), 0.5, x0=torch.zeros_like(y), max_iter=500)
    assert info.converged and not info.diverged


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_start_is_the_adjoint_unless_x0_is_given(name):
    """On a mask, missing pixels keep their start value through a step with ``D = I``: 0 from ``A^T y``."""
    mask = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5).to(torch.float64)
    operator = PixelMask(mask).to(torch.float64)
    y = measurement(operator)
    missing = (mask == 0).expand_as(y)
    x, _ = run(name, y, operator, IdentityDenoiser(), 0.5, max_iter=1)
    assert bool((x[missing] == 0).all())
    x, _ = run(name, y, operator, IdentityDenoiser(), 0.5, max_iter=1, x0=torch.full_like(y, 0.5))
    assert bool((x[missing] == 0.5).all())


@pytest.mark.parametrize(
    "options",
    [
        {"rho": 0.5},
        {"sigma": 0.1},
        {"sigma": 0.1, "schedule": torch.ones(3), "rho": 0.5},
        {"sigma": 0.1, "rho": -1.0},
        {"sigma": 0.1, "rho": torch.ones(2, 2)},
        {"schedule": torch.ones(3), "rho": torch.ones(4)},
        {"schedule": torch.ones(3), "rho": 0.5, "max_iter": 3},
        {"sigma": 0.1, "rho": 0.5, "tol": -1.0},
        {"sigma": 0.1, "rho": 0.5, "x0": torch.full((2, 1, 16, 16), math.nan)},
    ],
)
@pytest.mark.parametrize("name", SPLITTINGS)
def test_splitting_options_that_do_not_fit_raise(name, options):
    with pytest.raises(ConfigError):
        get_algorithm(name)(measurement(Identity()), Identity(), IdentityDenoiser(), **options)


@pytest.mark.parametrize(
    "options",
    [{"lam": 0.0}, {"lam": math.inf}, {"lam": 0.5, "mu": -1.0}, {"lam": 0.5, "max_iter": 0}],
)
def test_red_options_that_do_not_fit_raise(options):
    with pytest.raises(ConfigError):
        red(measurement(Identity()), Identity(), IdentityDenoiser(), sigma=0.1, **options)


def test_every_algorithm_registers_itself_and_duplicates_are_refused(monkeypatch):
    monkeypatch.setattr(registry, "_ALGORITHMS", dict(registry._ALGORITHMS))
    assert {"forward_backward", "admm", "hqs", "red"} <= set(algorithm_names())
    for name, algorithm in {"admm": admm, "hqs": hqs, "red": red}.items():
        assert get_algorithm(name) is algorithm
        with pytest.raises(ConfigError, match="already registered"):
            register_algorithm(name, lambda *args: None)
        assert get_algorithm(name) is algorithm


def test_admm_with_a_trained_denoiser_and_the_dpir_schedule_deblurs():
    """Smoke test: 8 DPIR iterations with DnCNN on a textured 32x32 crop beat the blurred input."""
    clean = read_image(PARROTS)[..., 64:96, 160:192]
    blur = GaussianBlur(1.6, size=25)
    y = blur(clean) + 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    sigmas, rhos = dpir_schedule(8, 0.01)
    z, info = admm(y, blur, make_denoiser("dncnn-s25"), schedule=sigmas, rho=rhos)
    assert info.iterations == 8 and not info.diverged
    assert float(psnr(z, clean)) > float(psnr(y, clean)) + 3.0
