import math

import pytest
import torch
import torch.nn.functional as F

from converge.errors import ConfigError
from converge.models import RestoreInfo, build_model, model_name
from converge.models import groupsc
from converge.models.groupsc import GroupSC, GroupSCConfig, lista_step
from converge.models.sparse_prox import soft_threshold
from converge.physics.base import Identity
from converge.physics.batch import OperatorBatch
from converge.physics.blur import GaussianBlur
from converge.physics.mask import PixelMask
from converge.physics.mosaic import BayerMosaic
from converge.zoo import load_weights, save_weights

TINY = {"patch_size": 5, "atoms": 16, "steps": 6, "window": 16, "similarity_every": 2, "stride": 6}


def tiny(**overrides) -> GroupSC:
    torch.manual_seed(0)
    return GroupSC(GroupSCConfig(**{**TINY, **overrides})).eval()


def noisy_image(channels: int = 1, batch: int = 1, height: int = 23, width: int = 27, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, width).expand(batch, channels, height, width)
    return ramp + 0.1 * torch.randn(batch, channels, height, width, generator=generator)


def piecewise_constant_images(count: int, size: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        image = torch.full((1, 1, size, size), float(torch.rand((), generator=generator)))
        for _ in range(10):
            top, left = torch.randint(size - 4, (2,), generator=generator).tolist()
            height, width = torch.randint(4, size // 2, (2,), generator=generator).tolist()
            image[..., top : top + height, left : left + width] = float(torch.rand((), generator=generator))
        images.append(image)
    return images


def copy_of(model: GroupSC, **overrides) -> GroupSC:
    """A model with another config and the same values for the parameters both have (same name and shape)."""
    other = GroupSC(GroupSCConfig(**{**model.config.__dict__, **overrides})).eval()
    own = other.state_dict()
    shared = {name: value for name, value in model.state_dict().items() if own.get(name, value).shape == value.shape}
    other.load_state_dict(shared, strict=False)
    return other


@pytest.mark.parametrize("penalty", ["sc", "csr", "group"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_has_the_input_shape_and_dtype(penalty: str, channels: int, dtype: torch.dtype) -> None:
    model = tiny(penalty=penalty, channels=channels, patch_size=3)
    y = noisy_image(channels, batch=2).to(dtype)
    with torch.no_grad():
        x = model(y)
    assert x.shape == y.shape and x.dtype == dtype
    assert torch.isfinite(x).all()


def test_default_config_is_the_papers_and_resolves_channel_defaults() -> None:
    gray, colour = GroupSCConfig(), GroupSCConfig(channels=3)
    assert (gray.patch_size, gray.atoms, gray.steps, gray.similarity_every) == (9, 256, 24, 6)
    assert (gray.window, gray.block, gray.stride) == (56, 56, 12)
    assert (colour.patch_size, colour.stride) == (7, 10)
    assert gray.penalty == "group" and gray.sigmas == (25.0,)
    model = GroupSC(gray)
    assert model.dictionary.shape == (81, 256) and model.thresholds.shape == (1, 24, 256)
    assert torch.equal(model.encoder, model.dictionary) and torch.equal(model.decoder, model.dictionary)
    assert math.isclose(float(torch.linalg.matrix_norm(model.dictionary.detach(), ord=2)), 1.0, rel_tol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"penalty": "lasso"}, "penalty"),
        ({"channels": 2}, "channels"),
        ({"steps": 0}, "steps"),
        ({"window": 4}, "window"),
        ({"block": 3}, "block"),
        ({"block": 12, "stride": 9}, "stride"),
        ({"sigmas": ()}, "sigmas"),
        ({"sigmas": (25, 25)}, "distinct"),
        ({"sigmas": 25}, "sigmas"),
        ({"sigmas": "25"}, "sigmas"),
        ({"sigmas": (0,)}, "positive"),
        ({"train_padding": "no"}, "train_padding"),
    ],
)
def test_bad_config_raises(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GroupSCConfig(**options)


def test_identity_coding_reproduces_the_image_through_patches_blocks_and_borders() -> None:
    # atoms = C k^2, C = D = W = I, thresholds 0: one step codes each centred patch exactly, so the
    # output is the average of exact patches over overlapping blocks and the reflected border.
    model = tiny(channels=3, patch_size=3, atoms=27, steps=1, window=9, stride=4)
    model.set_dictionary(torch.eye(27))
    with torch.no_grad():
        model.thresholds.zero_()
    y = noisy_image(3, batch=2, height=17, width=22)
    x, info = model.restore(y)
    assert info.extra["blocks"] > 4
    assert torch.allclose(model(y), y, atol=1e-6)


def test_unpadded_training_weights_each_pixel_by_its_patch_count() -> None:
    model = tiny(train_padding=False)
    assert tiny().training_loss_weights(torch.zeros(1, 1, 16, 16)) is None
    weights = model.training_loss_weights(torch.zeros(2, 1, 16, 16))
    counts = torch.minimum(torch.arange(16) + 1, torch.tensor(5)).minimum(torch.arange(16).flip(0) + 1)
    expected = counts[:, None] * counts[None, :]
    assert weights.shape == (1, 1, 16, 16)
    assert torch.allclose(weights, expected / expected.float().mean())


def test_unpadded_training_keeps_inner_pixels_and_inference_still_pads() -> None:
    # sc codes patches independently: a pixel at least k - 1 from the border lies only in patches inside
    # the crop, so padding does not change it; border pixels come from fewer patches without padding.
    padded, unpadded = tiny(penalty="sc"), tiny(penalty="sc", train_padding=False)
    y = noisy_image(1, batch=2, height=16, width=16)
    padded.train()
    unpadded.train()
    with torch.no_grad():
        with_padding, without = padded(y), unpadded(y)
    assert torch.allclose(without[..., 4:-4, 4:-4], with_padding[..., 4:-4, 4:-4], atol=1e-6)
    assert not torch.allclose(without[..., 0, 0], with_padding[..., 0, 0], atol=1e-4)
    unpadded.eval()
    assert torch.equal(unpadded.restore(y)[0], padded.eval().restore(y)[0])


def test_sc_codes_every_patch_of_the_padded_image_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(penalty="sc", channels=3, patch_size=3)
    y = noisy_image(3, batch=2, height=17, width=22)
    border = 2
    padded = F.pad(y, (border,) * 4, mode="reflect")
    patches = F.unfold(padded, 3).transpose(1, 2)
    means = patches.mean(dim=-1, keepdim=True)
    with torch.no_grad():
        codes = torch.zeros(*patches.shape[:2], model.config.atoms)
        for step in range(model.config.steps):
            gradient_step = lista_step(codes, patches - means, model.encoder, model.dictionary)
            codes = soft_threshold(gradient_step, model.thresholds[0, step].abs())
        summed = F.fold((codes @ model.decoder.T + means).transpose(1, 2), padded.shape[-2:], 3)
        counts = F.fold(torch.ones(1, 9, patches.shape[1]), padded.shape[-2:], 3)
        expected = (summed / counts)[..., border:-border, border:-border]
        assert model.restore(y)[1].extra["blocks"] == 1
        assert torch.allclose(model(y), expected, atol=1e-6)
        # One patch row per strip.
        monkeypatch.setattr(groupsc, "_CPU_CHUNK_ELEMENTS", 1)
        assert torch.allclose(model(y), expected, atol=1e-6)


def test_blocks_with_a_one_patch_window_equal_sc_on_the_whole_image() -> None:
    # A window of one patch position makes Sigma = I, and the group prox soft-thresholding (up to its
    # 1e-12 under the square root): what remains is the block machinery's overlaps and borders.
    sc = tiny(penalty="sc")
    blocked = copy_of(sc, penalty="group", window=5, block=12, stride=5)
    y = noisy_image(batch=2, height=30, width=35)
    with torch.no_grad():
        assert blocked.restore(y)[1].extra["blocks"] > 9
        assert torch.allclose(blocked(y), sc(y), atol=1e-5)


@pytest.mark.parametrize("penalty", ["csr", "group"])
def test_chunks_of_several_blocks_equal_one_block_at_a_time(penalty: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(penalty=penalty, block=12, stride=5)
    y = noisy_image(batch=2, height=30, width=35)
    with torch.no_grad():
        monkeypatch.setattr(groupsc, "_CPU_CHUNK_ELEMENTS", 1)
        one_at_a_time = model(y)
        monkeypatch.setattr(groupsc, "_CPU_CHUNK_ELEMENTS", 1 << 30)
        assert torch.allclose(model(y), one_at_a_time, atol=1e-6)


def test_group_on_blocks_stays_close_to_whole_image_processing() -> None:
    # Not equal: a block truncates the search windows of its border patches, and the intermediate
    # estimates it refreshes similarities from average only its own patches. Both effects stay near
    # block borders and are averaged over overlapping blocks, so the change is a small fraction of
    # the non-local prior's own effect (group vs sc): measured 11% (mean) and 14% (max) here.
    image = piecewise_constant_images(1, 40, seed=3)[0][..., :30, :35]
    y = image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    whole = tiny(penalty="group", atoms=32, window=16, block=64)
    blocked, sparse_only = copy_of(whole, block=16, stride=4), copy_of(whole, penalty="sc")
    with torch.no_grad():
        reference = whole(y)
        block_effect = (blocked(y) - reference).abs()
        prior_effect = (sparse_only(y) - reference).abs()
    assert float(block_effect.mean()) < 0.2 * float(prior_effect.mean())
    assert float(block_effect.max()) < 0.25 * float(prior_effect.max())
    assert float(block_effect.max()) > 0


@pytest.mark.parametrize("penalty", ["sc", "csr", "group"])
def test_unmeasured_entries_do_not_influence_the_estimate(penalty: str) -> None:
    model = tiny(penalty=penalty, channels=3, patch_size=3)
    mosaic = BayerMosaic("RGGB")
    clean = noisy_image(3, height=16, width=18).clamp(0, 1)
    y = mosaic(clean)
    perturbed = y + (1 - mosaic(torch.ones_like(y))) * torch.rand(y.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(y, physics=mosaic), model(perturbed, physics=mosaic))
    y = y.clone().requires_grad_(True)
    model(y, physics=mosaic).square().sum().backward()
    unmeasured = mosaic(torch.ones_like(y)) == 0
    assert bool((y.grad[unmeasured] == 0).all()) and bool((y.grad[~unmeasured] != 0).any())


def test_masked_lista_step_is_a_gradient_step_on_the_measured_entries_only() -> None:
    generator = torch.Generator().manual_seed(0)
    dictionary = torch.randn(12, 20, generator=generator, dtype=torch.float64) / 5
    codes = torch.randn(2, 7, 20, generator=generator, dtype=torch.float64).requires_grad_(True)
    centred = torch.randn(2, 7, 12, generator=generator, dtype=torch.float64)
    masks = (torch.rand(2, 7, 12, generator=generator) < 0.4).to(torch.float64)
    data_term = 0.5 * (masks * (centred - codes @ dictionary.T)).square().sum()
    (gradient,) = torch.autograd.grad(data_term, codes)
    step = lista_step(codes, centred, dictionary, dictionary, masks)
    assert torch.allclose(step, codes - gradient)
    unmasked = codes + (centred - codes @ dictionary.T) @ dictionary
    assert torch.allclose(lista_step(codes, centred, dictionary, dictionary), unmasked)


def test_a_full_mask_is_plain_denoising_and_a_mask_changes_the_result() -> None:
    model = tiny(penalty="group", channels=3, patch_size=3)
    y = noisy_image(3, height=16, width=18)
    with torch.no_grad():
        plain = model(y)
        assert torch.allclose(model(y, physics=PixelMask(torch.ones(1, 1, 16, 18))), plain, atol=1e-6)
        assert torch.equal(model(y, physics=Identity()), plain)
        assert not torch.allclose(model(y, physics=BayerMosaic()), plain, atol=1e-3)


def test_physics_it_cannot_handle_raises() -> None:
    with pytest.raises(ConfigError, match="cannot invert GaussianBlur"):
        tiny()(noisy_image(), physics=GaussianBlur(1.0))
    with pytest.raises(ConfigError, match="at least 5x5"):
        tiny()(torch.rand(1, 1, 4, 20))


def test_blind_model_picks_the_thresholds_of_the_nearest_level() -> None:
    blind = tiny(penalty="sc", sigmas=(5, 25, 50))
    with torch.no_grad():
        for level in range(3):
            blind.thresholds[level] = 0.01 * (level + 1)
    clean = torch.linspace(0.2, 0.8, 48).expand(2, 1, 48, 48)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    y = clean + torch.tensor([25.0, 50.0]).reshape(2, 1, 1, 1) / 255 * noise
    x, info = blind.restore(y)
    assert info.extra["sigma_used"] == [25.0, 50.0]
    estimated = info.noise_level
    assert abs(estimated[0] - 25) < 3 and abs(estimated[1] - 50) < 5
    with torch.no_grad():
        assert torch.allclose(x, blind(y, sigma=torch.tensor([25.0, 50.0]) / 255).clamp(0, 1))
        single = copy_of(blind, sigmas=(25,))
        single.thresholds.copy_(blind.thresholds[1:2])
        assert torch.allclose(x[:1], single(y[:1]).clamp(0, 1))
        assert not torch.allclose(x[:1], blind(y[:1], sigma=5 / 255).clamp(0, 1), atol=1e-3)
        trained_levels = blind.training_forward(y, Identity(), torch.tensor([5.0, 26.0]))
        assert torch.allclose(trained_levels, blind(y, sigma=torch.tensor([5.0, 25.0]) / 255))
        assert torch.allclose(blind.training_forward(y, Identity(), torch.full((2,), float("nan"))).clamp(0, 1), x)
    _, known = blind.restore(y, sigma=12 / 255)
    assert known.extra["sigma_used"] == [5.0, 5.0] and known.noise_level is None
    with pytest.raises(ConfigError, match="masked"):
        tiny(channels=3, sigmas=(5, 25))(noisy_image(3), physics=BayerMosaic())


def test_penalties_differ_and_reduce_to_sc_in_their_limits() -> None:
    sc = tiny(penalty="sc")
    csr, group = copy_of(sc, penalty="csr"), copy_of(sc, penalty="group")
    y = noisy_image(height=20, width=20)
    with torch.no_grad():
        outputs = {name: model(y) for name, model in (("sc", sc), ("csr", csr), ("group", group))}
        assert not torch.allclose(outputs["sc"], outputs["csr"], atol=1e-4)
        assert not torch.allclose(outputs["sc"], outputs["group"], atol=1e-4)
        assert not torch.allclose(outputs["csr"], outputs["group"], atol=1e-4)
        csr.centre_weight.zero_()
        assert torch.allclose(csr(y), outputs["sc"], atol=1e-6)
        # A huge distance scale leaves each patch similar only to itself: Sigma = I.
        group.similarity_scale.fill_(1e4)
        assert torch.allclose(group(y), outputs["sc"], atol=1e-5)
        # So does a search window holding one patch position (radius (w - k + 1) // 2 = 0).
        assert torch.allclose(copy_of(sc, penalty="group", window=5, block=64)(y), outputs["sc"], atol=1e-5)
        assert not torch.allclose(copy_of(sc, penalty="group", window=7, block=64)(y), outputs["sc"], atol=1e-4)


def test_csr_centres_on_the_previous_codes() -> None:
    # The first step starts from zero codes, so its centres beta are 0 and the CSR prox merges into
    # one soft-threshold at lam * (1 + gamma).
    csr = tiny(penalty="csr", steps=1)
    with torch.no_grad():
        csr.centre_weight.fill_(0.5)
        merged = copy_of(csr, penalty="sc")
        merged.thresholds.mul_(1.5)
        y = noisy_image(height=20, width=20)
        assert torch.allclose(csr(y), merged(y), atol=1e-6)


@pytest.mark.parametrize("penalty", ["csr", "group"])
def test_gradients_reach_every_parameter(penalty: str) -> None:
    model = tiny(penalty=penalty).train()
    clean = noisy_image(batch=2, height=12, width=14, seed=2)
    loss = (model(clean + 0.1 * torch.randn_like(clean)) - clean).square().mean()
    loss.backward()
    names = {"encoder", "dictionary", "decoder", "thresholds", "similarity_scale", "similarity_blend"}
    if penalty == "csr":
        names.add("centre_weight")
    grads = {name: parameter.grad for name, parameter in model.named_parameters()}
    assert set(grads) == names
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0, name


def test_dictionary_initialisation_denoises_better_than_a_random_dictionary() -> None:
    images = piecewise_constant_images(8, 40, seed=0)
    random_start = tiny(penalty="sc", patch_size=5, atoms=32, steps=10, block=64)
    learned = copy_of(random_start)
    learned.initialise_from_data(images[:6], torch.Generator().manual_seed(0))
    assert torch.equal(learned.encoder, learned.dictionary) and torch.equal(learned.decoder, learned.dictionary)
    assert math.isclose(float(torch.linalg.matrix_norm(learned.dictionary.detach(), ord=2)), 1.0, rel_tol=1e-4)
    expected_threshold = 1.75 * 25 / 255 * float(learned.dictionary.detach().norm(dim=0).mean())
    assert torch.allclose(learned.thresholds, torch.full_like(learned.thresholds, expected_threshold))
    clean = torch.cat(images[6:])
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))

    def error(model: GroupSC) -> float:
        return float((model.restore(noisy)[0] - clean).square().mean())

    assert error(learned) < 0.8 * error(random_start)
    with pytest.raises(ConfigError, match="1-channel"):
        learned.initialise_from_data([torch.rand(1, 3, 20, 20)], torch.Generator())


def test_gray_model_restores_each_colour_channel_on_its_own() -> None:
    model = tiny(penalty="group")
    rgb = noisy_image(3, height=14, width=14)
    with torch.no_grad():
        per_channel = torch.cat([model(rgb[:, c : c + 1]) for c in range(3)], dim=1)
        assert torch.allclose(model(rgb), per_channel, atol=1e-6)


def test_restore_reports_the_unrolled_steps() -> None:
    model = tiny(steps=5)
    x, info = model.restore(noisy_image(batch=3) * 2)
    assert isinstance(info, RestoreInfo) and info.iterations == [5, 5, 5]
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert info.extra["penalty"] == "group" and info.extra["sigma_used"] == [25.0] * 3


@pytest.mark.parametrize("penalty", ["csr", "group"])
def test_weights_round_trip_through_the_zoo_format(penalty: str, tmp_path) -> None:
    model = build_model("groupsc", {**TINY, "penalty": penalty, "sigmas": [15, 25]})
    assert model_name(model) == "groupsc" and model.config.sigmas == (15.0, 25.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = save_weights(model, {"task": "denoise"}, tmp_path / "groupsc.safetensors")
    loaded = load_weights(path)
    assert loaded.config == model.config
    y = noisy_image()
    with torch.no_grad():
        assert torch.equal(loaded(y, sigma=15 / 255), model.eval()(y, sigma=15 / 255))


def test_adopted_weights_scale_the_nearest_levels_thresholds_and_copy_the_rest() -> None:
    source = tiny(sigmas=(10, 40))
    with torch.no_grad():
        source.thresholds[0] = 0.02
        source.thresholds[1] = 0.08
        source.dictionary.add_(0.01)
    target = tiny(sigmas=(5, 20, 50))
    target.adopt_weights(source.state_dict(), {**TINY, "sigmas": [10, 40]}, "groupsc")
    for name, tensor in source.state_dict().items():
        if name != "thresholds":
            assert torch.equal(target.state_dict()[name], tensor), name
    expected = torch.tensor([0.02 * 5 / 10, 0.02 * 20 / 10, 0.08 * 50 / 40])
    assert torch.allclose(target.thresholds[:, 0, 0], expected)
    assert torch.allclose(target.thresholds, expected[:, None, None].expand_as(target.thresholds))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**TINY, "atoms": 8}, "other atoms"),
        ({**TINY, "penalty": "sc", "patch_size": 3}, "other penalty, patch_size"),
        ({**TINY, "penalty": "magic"}, "cannot build"),
    ],
)
def test_adopting_weights_of_another_model_raises(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny().adopt_weights(tiny().state_dict(), params, "groupsc")


def test_weights_adopted_across_block_geometries_restore_alike_at_the_same_geometry() -> None:
    source = tiny(sigmas=(25,))
    with torch.no_grad():
        source.dictionary.add_(0.01)
    wider = tiny(sigmas=(25,), window=20, block=20, stride=8)
    wider.adopt_weights(source.state_dict(), {**TINY, "sigmas": [25]}, "groupsc")
    for name, tensor in source.state_dict().items():
        assert torch.equal(wider.state_dict()[name], tensor), name
    back = tiny(sigmas=(25,))
    back.adopt_weights(wider.state_dict(), {**TINY, "window": 20, "block": 20, "stride": 8, "sigmas": [25]}, "groupsc")
    y = noisy_image()
    with torch.no_grad():
        assert torch.equal(back.eval()(y, sigma=25 / 255), source.eval()(y, sigma=25 / 255))


def test_adopting_weights_saved_for_another_model_raises() -> None:
    with pytest.raises(ConfigError, match="saved for a unet model, not a GroupSC"):
        tiny().adopt_weights(tiny().state_dict(), TINY, "unet")


def test_adopting_weights_whose_tensors_do_not_fit_their_parameters_raises() -> None:
    tensors = tiny(sigmas=(15, 25)).state_dict()
    with pytest.raises(ConfigError, match="thresholds do not fit"):
        tiny().adopt_weights(tensors, {**TINY, "sigmas": [15]}, "groupsc")
    tensors = {**tiny().state_dict(), "extra": torch.zeros(1)}
    with pytest.raises(ConfigError, match="tensors do not fit"):
        tiny().adopt_weights(tensors, TINY, "groupsc")


def test_training_masks_each_sample_with_its_own_operator_from_the_batch() -> None:
    model = tiny(penalty="group", channels=3, patch_size=3)
    mosaics = OperatorBatch([BayerMosaic("GRBG"), BayerMosaic("RGGB")])
    y = mosaics(noisy_image(3, batch=2, height=16, width=18).clamp(0, 1))
    with torch.no_grad():
        expected = torch.cat([model(y[:1], physics=BayerMosaic("GRBG")), model(y[1:], physics=BayerMosaic("RGGB"))])
        trained = model.training_forward(y, mosaics, torch.full((2,), float("nan")))
        torch.testing.assert_close(trained, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(model(y), expected, atol=1e-3)


def test_weights_saved_with_the_retired_mosaic_parameter_still_load(tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    from converge.zoo import load_weights, save_weights, weights_header

    model = tiny(penalty="group", channels=3, patch_size=3)
    path = save_weights(model, {"task": "demosaic"}, tmp_path / "old.safetensors")
    header = {"model": "groupsc", "params": json.dumps({**json.loads(weights_header(model)["params"]), "mosaic": "RGGB"})}
    save_file(dict(model.state_dict()), str(path), metadata=header)
    config = path.with_suffix(".yaml")
    config.write_text(config.read_text().replace("params:\n", "params:\n  mosaic: null\n", 1))
    assert torch.equal(load_weights(path).dictionary, model.dictionary)


def test_a_model_with_one_threshold_set_does_not_read_the_training_level() -> None:
    # Deblocking: the trainer's level is a JPEG quality, which must not select or scale anything.
    model = tiny(penalty="sc", sigmas=(10,))
    y = noisy_image(batch=2)
    with torch.no_grad():
        plain = model(y)
        for level in ([10.0, 40.0], [float("nan")] * 2):
            assert torch.equal(model.training_forward(y, Identity(), torch.tensor(level)), plain)


@pytest.mark.parametrize("penalty", ["csr", "group"])
def test_restore_stride_equals_a_model_built_with_that_stride(penalty: str) -> None:
    model = tiny(penalty=penalty, block=12, stride=8)
    rebuilt = copy_of(model, stride=3)
    y = noisy_image(height=30, width=35)
    restored, info = model.restore(y, stride=3)
    expected, expected_info = rebuilt.restore(y)
    assert torch.equal(restored, expected) and info.extra["blocks"] == expected_info.extra["blocks"]
    assert info.extra["blocks"] > model.restore(y)[1].extra["blocks"]
    for bad in (0, 9, 2.5, True):
        with pytest.raises(ConfigError, match="stride must be an integer from 1 to block - patch_size"):
            model.restore(y, stride=bad)


def test_restore_stride_is_refused_by_sc_which_has_no_blocks() -> None:
    with pytest.raises(ConfigError, match="no block stride"):
        tiny(penalty="sc").restore(noisy_image(), stride=4)
