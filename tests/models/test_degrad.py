"""DE-GRAD: what is particular to it (the shared contract is tests/models/test_contract.py)."""

import pytest
import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models import RestoreInfo, build_model
from converge.models.degrad import DEGRAD, DEGRADConfig
from converge.physics import (
    Downsample,
    GaussianBlur,
    Identity,
    JPEGCompression,
    OperatorBatch,
    PixelMask,
    RandomPixelDrop,
)
from converge.physics.base import conjugate_gradient
from converge.train.trainer import load_init_weights
from converge.zoo import save_weights


def small(**overrides) -> DEGRAD:
    torch.manual_seed(0)
    options = {"channels": 1, "features": 8, "depth": 4, "max_iter": 8}
    return DEGRAD(DEGRADConfig(**{**options, **overrides})).eval()


def images(batch: int = 2, size: int = 16, channels: int = 1, seed: int = 1) -> Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def blur() -> GaussianBlur:
    # The paper's blur: 5x5 support, std 5, zero boundary.
    return GaussianBlur(5.0, size=5, boundary="zeros")


class Scale(nn.Module):
    """``S(x) = alpha x``: a linear regulariser whose equilibrium has a closed form."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return self.alpha * x


@pytest.mark.parametrize(
    "bad",
    [
        {"channels": 2},
        {"features": 0},
        {"depth": 1},
        {"eta_init": 0.0},
        {"eta_init": -1e-3},
        {"eta_init": float("inf")},
        {"backward": "exact"},
        {"start": "zeros"},
        {"start_cg_steps": 0},
        {"start_shift": -1.0},
        {"solver": "newton"},
        {"solver": "broyden", "m": 6},
    ],
)
def test_invalid_configs_raise(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DEGRADConfig(**bad)


def test_defaults_are_the_papers_setting() -> None:
    model = DEGRAD()
    config = model.config
    assert (config.channels, config.features, config.depth) == (3, 64, 17)
    assert model.deq.solver.__name__ == "anderson"
    assert model.deq.solver_options == {"max_iter": 50, "tol": 1e-3, "m": 5, "lam": 1e-4}
    assert model.deq.backward_mode.name == "jfb" and config.start == "adjoint"
    assert model.eta.item() == pytest.approx(1e-3)


def test_regulariser_has_depth_bias_free_convolutions_with_batchnorm_in_the_middle() -> None:
    layers = list(small(depth=5).prior.body)
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    assert len(convs) == 5 and all(conv.bias is None for conv in convs)
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in layers) == 3
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds[:2] == ["ParametrizedConv2d", "ReLU"] and kinds[-1] == "ParametrizedConv2d"
    assert kinds[2:5] == ["ParametrizedConv2d", "BatchNorm2d", "ReLU"]


def test_every_convolution_is_spectrally_normalised() -> None:
    model = small(depth=5)
    for module in model.prior.modules():
        if isinstance(module, nn.Conv2d):
            norm = float(torch.linalg.matrix_norm(module.weight.detach().flatten(1), 2))
            assert norm == pytest.approx(1.0, abs=1e-2)


def lipschitz_of_update(model: DEGRAD, points: int = 4) -> float:
    """Largest ``||J_f(x)||_2`` over random ``x`` ``(1, 1, 8, 8)`` for denoising (``A = I``).

    ``f`` is piecewise linear (ReLU, BatchNorm in eval mode), so its Lipschitz constant is the
    supremum of the spectral norm of its Jacobian, computed here exactly at each point.
    """
    d = images(1, 8, seed=3)
    worst = 0.0
    with model.update.acting_with(Identity()):
        for seed in range(points):
            x = images(1, 8, seed=10 + seed) * 2 - 0.5
            jacobian = torch.autograd.functional.jacobian(lambda z: model.update(z, d), x)
            worst = max(worst, float(torch.linalg.matrix_norm(jacobian.reshape(64, 64), 2)))
    return worst


def test_update_is_a_contraction_for_denoising_whatever_the_weight_scale() -> None:
    """For ``A = I``: ``f(x) = (1 - eta) x + eta d - eta S(x)``, so ``Lip(f) <= 1 - eta (1 - Lip(S))``,
    below 1 whenever ``Lip(S) < 1``. Spectral normalisation divides each weight by its own norm, so
    ``S`` (BatchNorm in eval mode, gains 1 at initialisation) does not change when the raw weights
    are scaled up 50 times, and ``f`` stays a contraction; the same weights without it make ``f``
    expansive, which is what this test would catch."""
    eta = 0.5
    for normalised in (True, False):
        model = small(eta_init=eta, depth=4, spectral_norm=normalised)
        with torch.no_grad():
            for name, parameter in model.prior.named_parameters():
                if "weight" in name and parameter.ndim == 4:
                    parameter.mul_(50.0)
        lipschitz = lipschitz_of_update(model)
        if normalised:
            assert lipschitz < 1.0
        else:
            assert lipschitz > 1.0
    # Random pairs agree: the update brings any two images closer.
    model = small(eta_init=eta)
    x1, x2, d = images(4, seed=4), images(4, seed=5) * 3 - 1, images(4, seed=6)
    with torch.no_grad(), model.update.acting_with(Identity()):
        ratio = (model.update(x1, d) - model.update(x2, d)).flatten(1).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    assert float(ratio.max()) < 1.0


def test_eta_moves_by_the_learning_rate_and_stays_positive() -> None:
    model = small(eta_init=1e-3).train()
    assert model.eta.item() == pytest.approx(1e-3)
    optimiser = torch.optim.Adam([model.update.step], lr=1e-3)
    model.update.step.grad = torch.tensor(-1.0)
    optimiser.step()
    assert model.eta.item() == pytest.approx(2e-3)
    model.update.step.grad = torch.tensor(1.0)
    torch.optim.SGD([model.update.step], lr=0.01).step()
    assert model.eta.item() == pytest.approx(8e-3)


@pytest.mark.parametrize("prox", [False, True])
def test_fixed_point_with_a_linear_regulariser_is_the_direct_solution(prox: bool) -> None:
    """With ``S(x) = alpha x`` the DE-GRAD equilibrium solves ``(A^T A + alpha I) x = A^T d``; the DE-Prox
    one ``x = beta (x - eta A^T (A x - d))`` with ``beta = 1 - alpha`` (the proximal step ``v - S(v)``),
    i.e. ``(beta eta A^T A + (1 - beta) I) x = beta eta A^T d``."""
    alpha, eta = 0.3, 0.6
    beta = 1 - alpha
    model = small(eta_init=eta, prox=prox, tol=1e-11, max_iter=300).double()
    model.update.prior = Scale(alpha)
    operator = blur()
    d = operator(images(2, 12).double()) + 0.01 * images(2, 12, seed=7).double()
    with torch.no_grad():
        x_star = model(d, physics=operator)
        if prox:
            matrix = lambda v: beta * eta * operator.normal(v) + (1 - beta) * v  # noqa: E731
            rhs = beta * eta * operator.adjoint(d)
        else:
            matrix = lambda v: operator.normal(v) + alpha * v  # noqa: E731
            rhs = operator.adjoint(d)
        direct = conjugate_gradient(matrix, rhs, tol=1e-13, max_iter=1000)
    assert model.deq.last_info.all_converged
    assert float((x_star - direct).abs().max()) < 1e-6


def test_cg_start_solves_the_shifted_normal_equations() -> None:
    operator = GaussianBlur(1.0, size=5, boundary="circular")
    d = operator(images().double())
    model = small(start="cg", start_cg_steps=200, start_shift=0.05).double()
    expected = operator.prox_data(torch.zeros_like(d), d, 0.05)  # (A^T A + s I)^{-1} A^T d, by FFT
    assert torch.allclose(model.start_point(d, operator), expected, atol=1e-8)
    assert torch.equal(small().start_point(d, operator), operator.adjoint(d))


def training_batch(batch: int = 2) -> tuple[Tensor, Tensor, OperatorBatch]:
    operators = [GaussianBlur(5.0, size=5, boundary="zeros"), GaussianBlur(1.0, size=3, boundary="zeros")]
    x = images(batch, seed=8)
    y = torch.cat([operators[i % 2](x[i : i + 1]) for i in range(batch)])
    return y, x, OperatorBatch([operators[i % 2] for i in range(batch)])


@pytest.mark.parametrize("backward", ["jfb", "ift", "phantom", "unroll"])
def test_every_backward_mode_trains_the_same_model_with_a_config_change_only(backward: str) -> None:
    model = small(backward=backward, eta_init=0.1, max_iter=5, phantom_steps=3).train()
    y, x, operator = training_batch()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = (model.training_forward(y, operator, torch.full((2,), float("nan"))) - x).square().mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), name
    optimiser.step()
    assert all(not torch.equal(before[name], parameter) for name, parameter in model.named_parameters())


def test_jfb_is_one_unrolled_step_from_where_the_solver_stops() -> None:
    """With one solver evaluation the equilibrium estimate is ``x0``, so JFB's output ``f(x0)`` and its
    gradient are exactly those of one unrolled step."""
    y, x, operator = training_batch()
    results = []
    for backward in ("jfb", "unroll"):
        model = small(backward=backward, max_iter=1, eta_init=0.1).train()
        output = model(y, physics=operator)
        (output - x).square().sum().backward()
        results.append((output.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (jfb, jfb_grads), (unroll, unroll_grads) = results
    assert torch.allclose(jfb, unroll, atol=1e-6)
    for name, gradient in jfb_grads.items():
        assert torch.allclose(gradient, unroll_grads[name], rtol=1e-4, atol=1e-7), name


def test_ift_gradient_matches_finite_differences() -> None:
    """``ift`` differentiates the equilibrium itself: its gradient of ``<w, x*>`` equals central
    differences of re-solved equilibria (float64, denoising, where the update contracts)."""
    model = small(backward="ift", eta_init=0.5, tol=1e-12, max_iter=200, depth=3).double()
    y, weights = images(1, 8).double(), images(1, 8, seed=9).double() - 0.5
    (model(y) * weights).sum().backward()
    targets = [(model.prior.body[3].bias, 1), (model.prior.body[2].parametrizations.weight.original, (1, 2, 0, 1))]
    step = 1e-5
    for parameter, index in targets:
        with torch.no_grad():
            original = parameter[index].item()
            values = []
            for sign in (1, -1):
                parameter[index] = original + sign * step
                values.append(float((model(y) * weights).sum()))
            parameter[index] = original
        numeric = (values[0] - values[1]) / (2 * step)
        assert float(parameter.grad[index]) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_any_linear_operator_runs_and_a_mixed_batch_restores_each_sample_as_alone() -> None:
    model = small(max_iter=6, tol=0.0).double()
    x = images(3, 16, seed=11).double()
    mask = PixelMask((images(1, 16, seed=12) > 0.5).float())
    operators = [blur(), Downsample(2), mask]
    measurements = [operator(x[i : i + 1]) for i, operator in enumerate(operators)]
    alone = []
    with torch.no_grad():
        for operator, y in zip(operators, measurements, strict=True):
            restored = model(y, physics=operator)
            assert restored.shape == (1, 1, 16, 16) and bool(torch.isfinite(restored).all())
            alone.append(restored)
        grid = torch.cat([operator.to_grid(y) for operator, y in zip(operators, measurements, strict=True)])
        together = model(grid, physics=OperatorBatch(operators))
    assert torch.allclose(together, torch.cat(alone), atol=1e-10)
    assert model(images().double(), physics=None).shape == (2, 1, 16, 16)


@pytest.mark.parametrize(
    "physics",
    [JPEGCompression(10), RandomPixelDrop(0.5), OperatorBatch([Identity(), JPEGCompression(10)])],
    ids=["jpeg", "undrawn-mask", "batch-with-jpeg"],
)
def test_non_linear_physics_raises(physics) -> None:
    with pytest.raises(ConfigError, match="linear"):
        small()(images(), physics=physics)


def test_channel_mismatch_raises_and_the_operator_is_released() -> None:
    model = small()
    with pytest.raises(ConfigError, match="1-channel"):
        model(images(channels=3), physics=Identity())
    model(images())
    assert model.update._bound == []


def test_restore_reports_iterations_residuals_and_convergence_per_image() -> None:
    model = small(eta_init=0.3, tol=1e-3, max_iter=30)
    x, info = model.restore(images(3) * 1.4 - 0.2, physics=Identity())
    assert isinstance(info, RestoreInfo) and not x.requires_grad
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(info.iterations) == 3 and all(1 < count <= 30 for count in info.iterations)
    assert len(info.residuals) == max(info.iterations)
    assert info.converged == model.deq.last_info.converged.tolist() and all(isinstance(c, bool) for c in info.converged)
    assert all(info.converged) and info.residuals[-1] <= 1e-3


def test_de_prox_pretraining_fits_the_proximal_step_its_equilibrium_applies(tmp_path) -> None:
    """A DE-Prox pretraining model is the residual denoiser ``g - S(g)``, the very map the DE-Prox update
    applies after its gradient step: with ``eta`` near 0 and ``A`` the identity, one update is that map."""
    pretrain = small(pretrain=True, prox=True).eval()
    noisy = images() + 0.05 * images(seed=3)
    with torch.no_grad():
        denoised = pretrain(noisy, physics=None)
        assert torch.allclose(denoised, noisy - pretrain.prior(noisy))
    path = save_weights(pretrain, {"task": "denoise"}, tmp_path / "prox-pretrain.safetensors")
    model = small(prox=True, eta_init=1e-12).eval()
    load_init_weights(model, path)
    with torch.no_grad(), model.update.acting_with(Identity()):
        assert torch.allclose(model.update(noisy, noisy), denoised, atol=1e-6)


def test_pretraining_fits_the_regulariser_alone_and_starts_a_degrad_run(tmp_path) -> None:
    pretrain = small(pretrain=True, eta_init=0.3)
    assert pretrain.training_skips_parameters and not small().training_skips_parameters
    operator = Downsample(2)
    y = operator(images())
    with torch.no_grad():
        assert torch.equal(pretrain(y, physics=operator), pretrain.prior(operator.to_grid(y)))
    pretrain.train()(y, physics=operator).mean().backward()
    assert pretrain.update.step.grad is None
    assert all(p.grad is not None for name, p in pretrain.named_parameters() if "prior" in name)
    with torch.no_grad():
        pretrain.prior.body[3].bias.add_(0.25)
    path = save_weights(pretrain.eval(), {"task": "deblur"}, tmp_path / "pretrain.safetensors")

    model = small(eta_init=0.01, backward="ift", start="cg")
    load_init_weights(model, path)
    assert torch.equal(model.prior.body[3].bias, pretrain.prior.body[3].bias)
    assert model.eta.item() == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="features"):
        load_init_weights(small(features=4), path)
    dncnn = build_model("dncnn", {"depth": 3, "features": 4})
    other = save_weights(dncnn, {"task": "denoise"}, tmp_path / "dncnn.safetensors")
    with pytest.raises(ConfigError, match="not DE-GRAD"):
        load_init_weights(model, other)


def test_registry_builds_degrad() -> None:
    model = build_model("degrad", {"channels": 1, "features": 4, "depth": 3})
    assert isinstance(model, DEGRAD) and model.tasks == ("denoise", "deblur", "sr", "inpaint")
