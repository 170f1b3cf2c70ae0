import pytest
import torch

from converge.deq import relative_residual
from converge.errors import ConfigError
from converge.models import RestoreInfo, build_model, model_name
from converge.models.nerd import NERD, NERDConfig
from converge.zoo import load_weights, save_weights

TOL = 1e-3


def small(**overrides) -> NERD:
    """A tiny NERD whose small post-norm gain makes the update contractive enough for Broyden."""
    torch.manual_seed(0)
    options = {"features": 8, "heads": 2, "groups": 2, "window": 5, "expansion": 2, "max_iter": 40, "tol": TOL,
               "init_gain": 0.05}
    return NERD(NERDConfig(**{**options, **overrides})).eval()


def images(channels: int = 1, batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape_and_dtype(channels: int) -> None:
    y = images(channels)
    with torch.no_grad():
        x = small(channels=channels)(y)
    assert x.shape == y.shape and x.dtype == torch.float32


def test_gray_model_denoises_each_colour_channel_on_its_own() -> None:
    model = small()
    rgb = images(3, batch=1)
    with torch.no_grad():
        per_channel = torch.cat([model(rgb[:, c : c + 1]) for c in range(3)], dim=1)
        assert torch.allclose(model(rgb), per_channel, atol=1e-4)
    with pytest.raises(ConfigError, match="3-channel"):
        small(channels=3)(images(1))


def test_solve_reaches_the_equilibrium_of_the_implicit_layer() -> None:
    model = small()
    with torch.no_grad():
        z_star, s = model.solve(images())
        residual = relative_residual(z_star, model.implicit(z_star, s))
    info = model.deq.last_info
    assert info.all_converged
    assert bool((residual < TOL).all())
    assert bool((info.iterations > 1).all())


def test_noise_equilibrium_is_decoded_as_a_residual_and_image_equilibrium_directly() -> None:
    y = images()
    for equilibrium in ("noise", "image"):
        model = small(equilibrium=equilibrium)
        with torch.no_grad():
            z_star, _ = model.solve(y)
            decoded = model.decoder(z_star)
            expected = y + decoded if equilibrium == "noise" else decoded
            assert torch.allclose(model(y), expected, atol=1e-5)


@pytest.mark.parametrize("backward", ["phantom", "ift"])
def test_gradients_reach_every_parameter(backward: str) -> None:
    model = small(backward=backward, dropout=0.1).train()
    model(images()).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert float(parameter.grad.abs().sum()) > 0, name


def test_dropout_mask_is_held_over_a_solve_and_redrawn_per_batch() -> None:
    model = small(dropout=0.5).train()
    dropout = model.implicit.transform.dropout
    with torch.no_grad():
        z_star, s = model.solve(images())
        first_mask = dropout.mask.clone()
        first, second = model.implicit(z_star, s), model.implicit(z_star, s)
        model.solve(images())
    assert torch.equal(first, second)
    assert not torch.equal(dropout.mask, first_mask)


def test_defaults_are_the_papers_solver_and_gradient() -> None:
    model = NERD()
    assert model.deq.solver.__name__ == "broyden"
    assert model.deq.solver_options == {"max_iter": 17, "tol": 1e-3}
    assert (model.deq.backward_mode.T, model.deq.backward_mode.lam) == (8, 0.8)
    assert (model.config.features, model.config.heads, model.config.groups, model.config.window) == (128, 4, 4, 65)


@pytest.mark.parametrize(
    "overrides",
    [
        {"equilibrium": "image"},
        {"post_norm": False},
        {"blocks": "nl"},
        {"blocks": "trans"},
        {"heads": 1},
        {"backward": "jfb"},
        {"backward": "unroll", "max_iter": 3},
        {"solver": "anderson"},
    ],
)
def test_ablations_build_run_and_train(overrides: dict) -> None:
    model = small(**overrides).train()
    x = model(images())
    assert x.shape == (2, 1, 16, 16) and bool(torch.isfinite(x).all())
    x.mean().backward()


def test_ablation_blocks_change_the_layer() -> None:
    def block_names(blocks: str) -> set[str]:
        return {name.split(".")[2] for name, _ in small(blocks=blocks).implicit.named_parameters(prefix="deq.f")}

    assert block_names("both") == {"nonlocal_block", "transform"}
    assert block_names("nl") == {"nonlocal_block", "output_norm"}
    assert block_names("trans") == {"transform"}


def test_inference_overrides_change_window_and_iteration_budget() -> None:
    model = small()
    y = images()
    with torch.no_grad():
        reference = model(y)
        model.set_inference(window=3)
        assert model.implicit.window == 3 and model.receptive_radius == 1 + 5
        assert not torch.allclose(model(y), reference, atol=1e-4)
        model.set_inference(window=5, max_iter=1)
        model(y)
    assert model.deq.last_info.iterations.tolist() == [1, 1]
    with torch.no_grad():
        model.set_inference(max_iter=7, tol=0.0)
        model(y)
    assert model.deq.last_info.iterations.tolist() == [7, 7]
    assert model.config.max_iter == 40
    with pytest.raises(ConfigError):
        model.set_inference(window=4)
    with pytest.raises(ConfigError, match="no non-local block"):
        small(blocks="trans").set_inference(window=3)


def test_receptive_radius_is_the_attention_radius_plus_the_convolutions() -> None:
    assert small().receptive_radius == 5 // 2 + 5
    assert NERD().receptive_radius == 65 // 2 + 5
    assert small(blocks="trans").receptive_radius == 5


def test_restore_clamps_and_reports_iterations() -> None:
    model = small()
    y = images() * 3 - 1
    x, info = model.restore(y)
    assert isinstance(info, RestoreInfo) and not x.requires_grad
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(info.iterations) == 2 and all(1 < count <= 40 for count in info.iterations)
    assert len(info.residuals) == max(info.iterations)
    assert info.residuals[-1] <= TOL and info.converged == [True, True]
    with torch.no_grad():
        assert torch.allclose(x, model(y).clamp(0, 1), atol=1e-6)


def test_weights_round_trip_through_the_zoo(tmp_path) -> None:
    model = small()
    path = save_weights(model, {"task": "denoise"}, tmp_path / "nerd.safetensors")
    loaded = load_weights(path)
    assert isinstance(loaded, NERD) and loaded.config == model.config
    y = images()
    with torch.no_grad():
        assert torch.equal(loaded(y), model(y))


def test_registry_builds_nerd_and_rejects_unknown_keys() -> None:
    model = build_model("nerd", {"features": 8, "heads": 2, "groups": 2, "window": 3})
    assert isinstance(model, NERD) and model_name(model) == "nerd"
    with pytest.raises(ConfigError, match="featurs"):
        build_model("nerd", {"featurs": 8})


@pytest.mark.parametrize(
    "bad",
    [
        {"channels": 2},
        {"features": 0},
        {"equilibrium": "clean"},
        {"blocks": "all"},
        {"blocks": "nl", "post_norm": False},
        {"backward": "exact"},
    ],
)
def test_invalid_configs_raise(bad: dict) -> None:
    with pytest.raises(ConfigError):
        NERDConfig(**bad)


@pytest.mark.parametrize("bad", [{"solver": "newton"}, {"max_iter": 0}, {"phantom_lam": 1.5}, {"heads": 3}])
def test_invalid_model_options_raise(bad: dict) -> None:
    with pytest.raises(ConfigError):
        small(**bad)


def test_the_default_initial_gain_lets_broyden_converge_and_gain_one_does_not() -> None:
    y = images(batch=4, size=24)
    iterations = {}
    for gain in (0.4, 1.0):
        torch.manual_seed(0)
        model = NERD(NERDConfig(features=16, heads=2, groups=4, window=7, max_iter=30, tol=TOL, init_gain=gain))
        with torch.no_grad():
            model.train()(y)
        iterations[gain] = model.deq.last_info
    assert NERDConfig().init_gain == 0.4
    assert iterations[0.4].all_converged
    assert not bool(iterations[1.0].converged.any())
    with pytest.raises(ConfigError, match="init_gain"):
        NERDConfig(init_gain=0.0)


def test_tiled_denoising_matches_the_whole_image_up_to_groupnorm_statistics() -> None:
    from converge.tiling import tiled_apply

    model = small(tol=1e-5)
    generator = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.interpolate(torch.rand(1, 1, 8, 8, generator=generator), size=(64, 64), mode="bilinear")
    noisy = clean + 0.1 * torch.randn(1, 1, 64, 64, generator=generator)
    with torch.no_grad():
        whole = model(noisy)
        tiled = tiled_apply(model, noisy, tile=32, halo=model.receptive_radius)
        cut = tiled_apply(model, noisy, tile=16, halo=0, overlap=0)
    correction = float((whole - noisy).abs().mean())
    # GroupNorm pools over each tile instead of the image, so tiles differ by a few per cent of the
    # correction; cutting without halo or blending moves the result several times further.
    assert float((tiled - whole).abs().mean()) < 0.05 * correction
    assert float((tiled - whole).abs().max()) < 0.02
    assert float((cut - whole).abs().mean()) > 2 * float((tiled - whole).abs().mean())
