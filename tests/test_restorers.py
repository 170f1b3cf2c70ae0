import hashlib
from pathlib import Path

import pytest
import torch

from converge import baselines
from converge.color import rgb_to_ycbcr, ycbcr_to_rgb
from converge.errors import ConfigError
from converge.models.durr import DURR, DURRConfig
from converge.models.groupsc import GroupSC, GroupSCConfig
from converge.physics.jpeg import JPEGCompression
from converge.physics.mosaic import BayerMosaic
from converge.physics.tasks import make_task, task_names
from converge.restorers import make_restorer, restorer_names
from converge.zoo import save_weights

TINY_GROUPSC = {"patch_size": 5, "atoms": 16, "steps": 3, "window": 12, "similarity_every": 2, "stride": 8}


def saved_groupsc(tmp_path: Path, task: str, **overrides) -> tuple[GroupSC, str]:
    torch.manual_seed(0)
    model = GroupSC(GroupSCConfig(**{**TINY_GROUPSC, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = save_weights(model, {"task": task}, tmp_path / f"groupsc-{task}.safetensors")
    return model, str(path)


def smooth_image(channels: int, seed: int = 0, size: int = 24) -> torch.Tensor:
    """Ramps in a different direction per channel, with a little texture."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, size)
    directions = (ramp.expand(size, size), ramp[:, None].expand(size, size), ramp.flip(0).expand(size, size))
    image = torch.stack(directions[:channels])[None]
    return (image + 0.05 * torch.rand(image.shape, generator=generator)).clamp(0, 1)


def test_grey_model_deblocks_a_colour_jpeg_plane_by_plane_in_ycbcr(tmp_path: Path) -> None:
    model, path = saved_groupsc(tmp_path, "deblock")
    task = make_task("deblock", quality=10)
    observed, operator = task.degrade(smooth_image(3))
    restored = make_restorer(path, task)(observed, operator)
    ycbcr = rgb_to_ycbcr(observed)
    planes = [model.restore(ycbcr[:, plane : plane + 1], physics=operator)[0] for plane in range(3)]
    expected = ycbcr_to_rgb(torch.cat(planes, dim=1)).clamp(0, 1)
    assert torch.allclose(restored.image, expected, atol=1e-6)
    # The chroma is restored too, not kept as decoded.
    kept = ycbcr_to_rgb(torch.cat([planes[0], ycbcr[:, 1:]], dim=1)).clamp(0, 1)
    assert not torch.allclose(restored.image, kept, atol=1e-3)
    # Not the channel-by-channel restoration a grey model gives a colour image elsewhere.
    assert not torch.allclose(restored.image, model.restore(observed, physics=operator)[0], atol=1e-3)
    assert restored.iterations == model.config.steps


def test_grey_jpeg_is_restored_directly(tmp_path: Path) -> None:
    model, path = saved_groupsc(tmp_path, "deblock")
    task = make_task("deblock", quality=20)
    observed, operator = task.degrade(smooth_image(1))
    restored = make_restorer(path, task)(observed, operator)
    assert isinstance(operator, JPEGCompression)
    assert torch.equal(restored.image, model.restore(observed, physics=operator)[0])


def test_demosaicking_passes_the_bayer_operator_and_accepts_a_raw_image(tmp_path: Path) -> None:
    model, path = saved_groupsc(tmp_path, "demosaic", channels=3, similarity_every=3)
    task = make_task("demosaic")
    observed, operator = task.degrade(smooth_image(3))
    assert isinstance(operator, BayerMosaic)
    restorer = make_restorer(path, task)
    expected, _ = model.restore(observed, physics=operator)
    assert torch.equal(restorer(observed, operator).image, expected)
    assert not torch.allclose(expected, model.restore(observed)[0], atol=1e-3)
    assert torch.equal(restorer(operator.to_raw(observed), operator).image, expected)


def test_blind_restoration_lets_the_model_estimate_the_noise_level(tmp_path: Path) -> None:
    model, path = saved_groupsc(tmp_path, "denoise", sigmas=(5, 50))
    task = make_task("denoise", sigma=5)
    # Noise at sigma 50, told 5: only the blind restorer picks the sigma-50 thresholds.
    noise = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    observed = smooth_image(1, size=40) + 50 / 255 * noise
    blind = make_restorer(path, task, blind=True)(observed, task.operator)
    told = make_restorer(path, task)(observed, task.operator)
    estimated, info = model.restore(observed)
    assert info.extra["sigma_used"] == [50.0]
    assert blind.noise_level == pytest.approx(info.noise_level[0])
    assert told.noise_level is None
    assert torch.equal(blind.image, estimated)
    assert torch.equal(told.image, model.restore(observed, sigma=5 / 255)[0])
    assert not torch.allclose(blind.image, told.image, atol=1e-3)


def test_blind_baseline_gets_the_estimated_noise_level(monkeypatch: pytest.MonkeyPatch) -> None:
    given = []

    def recording_denoiser(y: torch.Tensor, sigma: float) -> torch.Tensor:
        given.append(sigma)
        return y

    monkeypatch.setattr(baselines, "get_baseline", lambda name: recording_denoiser)
    task = make_task("denoise", sigma=5)
    noisy = 0.5 + 30 / 255 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    assert make_restorer("tv", task)(noisy, task.operator).noise_level is None
    blind = make_restorer("tv", task, blind=True)(noisy, task.operator)
    assert given[0] == pytest.approx(5 / 255)
    assert abs(given[1] * 255 - 30) < 3
    assert blind.noise_level == pytest.approx(given[1] * 255)


def test_loops_reach_a_model_whose_restore_takes_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DURR(DURRConfig(features=4, bottom_convs=1, policy_features=4, policy_hidden=4)).eval()
    path = str(save_weights(model, {"task": "denoise"}, tmp_path / "durr.safetensors"))
    task = make_task("denoise", sigma=25)
    noisy, _ = task.degrade(smooth_image(1), torch.Generator().manual_seed(0))
    restored = make_restorer(path, task, loops=3)(noisy, task.operator)
    assert restored.iterations == 3
    assert torch.equal(restored.image, model.restore(noisy, loops=3)[0])


def test_a_window_is_set_on_a_model_whose_set_inference_takes_one(tmp_path: Path) -> None:
    from converge.models.nerd import NERD, NERDConfig
    from converge.zoo import load_weights

    torch.manual_seed(0)
    config = NERDConfig(features=8, heads=2, groups=2, window=3, expansion=1, max_iter=4)
    path = str(save_weights(NERD(config).eval(), {"task": "denoise"}, tmp_path / "nerd.safetensors"))
    task = make_task("denoise", sigma=25)
    noisy, _ = task.degrade(smooth_image(1), torch.Generator().manual_seed(0))
    trained = make_restorer(path, task)(noisy, task.operator).image
    wider = make_restorer(path, task, window=7)(noisy, task.operator).image
    reference = load_weights(path)
    reference.set_inference(window=7)
    assert torch.equal(wider, reference.restore(noisy)[0])
    assert not torch.equal(wider, trained)
    with pytest.raises(ConfigError, match="positive odd integer"):
        make_restorer(path, task, window=4)


def test_options_a_restorer_cannot_take_raise(tmp_path: Path) -> None:
    _, path = saved_groupsc(tmp_path, "denoise")
    task = make_task("denoise", sigma=25)
    with pytest.raises(ConfigError, match="no loop count"):
        make_restorer(path, task, loops=3)
    with pytest.raises(ConfigError, match="no attention window"):
        make_restorer(path, task, window=5)
    with pytest.raises(ConfigError, match="no window"):
        make_restorer("bm3d", task, window=5)
    with pytest.raises(ConfigError, match="no loops"):
        make_restorer("tv", task, loops=3)
    with pytest.raises(ConfigError, match="cannot be restored in tiles"):
        make_restorer(path, task, tile=16)


BASELINE_TASKS = [
    (name, task) for name, spec in baselines.BASELINES.items() if name == spec.name for task in spec.tasks
]


@pytest.mark.parametrize(("name", "task_name"), BASELINE_TASKS)
def test_every_baseline_restores_the_tasks_it_declares(name: str, task_name: str) -> None:
    if name == "bm3d":
        pytest.importorskip("bm3d")
    task = make_task(task_name)
    clean = smooth_image(3)
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    restored = make_restorer(name, task)(observed, operator)
    assert restored.image.shape == clean.shape and restored.model == name
    assert 0 <= float(restored.image.min()) and float(restored.image.max()) <= 1


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
def test_a_baseline_refuses_a_task_it_does_not_declare(name: str) -> None:
    spec = baselines.BASELINES[name]
    other = next(task for task in task_names() if task not in spec.tasks)
    with pytest.raises(ConfigError, match=f"baseline '{name}' restores task\\(s\\) {', '.join(spec.tasks)}, not '{other}'"):
        make_restorer(name, make_task(other))


def test_restorer_names_list_each_baseline_once_with_its_description() -> None:
    names = restorer_names()
    for name, spec in baselines.BASELINES.items():
        assert (names.get(name) == spec.description) == (name == spec.name)
    assert "identity" not in names and names["input"] == baselines.BASELINES["identity"].description


def test_weights_digest_follows_the_weights_content(tmp_path):
    import hashlib

    from converge.models.backbones import DnCNN, DnCNNConfig
    from converge.restorers import weights_digest
    from converge.zoo import DEFAULT_MODEL, save_weights, weights_path

    assert weights_digest("bm3d") is None
    assert weights_digest(str(tmp_path / "absent.safetensors")) is None
    shipped = hashlib.sha256(weights_path(DEFAULT_MODEL).read_bytes()).hexdigest()
    assert weights_digest(DEFAULT_MODEL) == shipped
    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_weights(DnCNN(DnCNNConfig(depth=3, features=4)), None, path)
    first = weights_digest(str(path))
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    save_weights(DnCNN(DnCNNConfig(depth=3, features=4)), None, path)
    assert weights_digest(str(path)) != first


def test_weights_digest_of_a_family_covers_only_the_task_entries():
    import hashlib

    from converge import zoo
    from converge.restorers import weights_digest

    entries = [entry for entry in zoo.ZOO.values() if entry.model == "durr"]
    assert {entry.task for entry in entries} == {"denoise", "deblock"}
    for task in ("denoise", "deblock"):
        digest = hashlib.sha256()
        for path in sorted(zoo.weights_path(entry.name) for entry in entries if entry.task == task):
            digest.update(path.read_bytes())
        assert weights_digest("durr", task) == digest.hexdigest()
    assert weights_digest("durr", "denoise") != weights_digest("durr")
    assert weights_digest("durr", "demosaic") is None


@pytest.fixture
def toy_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A zoo family 'dncnn' of tiny DnCNNs: grey at sigma 10 and 40, colour at sigma 10."""
    from converge import zoo
    from converge.models.backbones import DnCNN, DnCNNConfig

    def entry(name: str, sigma: float | None, channels: int = 1) -> zoo.ZooEntry:
        torch.manual_seed(len(name))
        path = save_weights(DnCNN(DnCNNConfig(channels=channels, depth=3, features=4)), None,
                            tmp_path / f"{name}.safetensors")
        return zoo.ZooEntry(name, "dncnn", f"{name}.yaml", f"{name}.safetensors", "denoise", sigma, name,
                            channels=channels, sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    table = {e.name: e for e in (entry("toy-s10", 10.0), entry("toy-s40", 40.0), entry("toy-rgb-s10", 10.0, 3))}
    monkeypatch.setattr(zoo, "ZOO", table)
    monkeypatch.setattr(zoo, "_package_file", lambda name: tmp_path / name)
    return table


def noisy_image(channels: int, sigma: float) -> torch.Tensor:
    noise = torch.randn(1, channels, 64, 64, generator=torch.Generator().manual_seed(3))
    return smooth_image(channels, size=64) + sigma / 255 * noise


def test_a_family_picks_its_entry_per_image_by_channels_and_level(toy_family) -> None:
    told = make_restorer("dncnn", make_task("denoise", sigma=40))
    operator = make_task("denoise", sigma=40).operator
    assert told(noisy_image(1, 10), operator).model == "toy-s40"
    assert told(noisy_image(3, 40), operator).model == "toy-rgb-s10"
    assert told(noisy_image(1, 10), operator).noise_level is None
    blind = make_restorer("dncnn", make_task("denoise", sigma=40), blind=True)
    low, high = blind(noisy_image(1, 10), operator), blind(noisy_image(1, 40), operator)
    assert (low.model, high.model) == ("toy-s10", "toy-s40")
    assert abs(low.noise_level - 10) < 3 and abs(high.noise_level - 40) < 4


def test_a_blind_family_entry_is_used_without_estimating(toy_family, tmp_path, monkeypatch) -> None:
    from converge import zoo
    from converge.models.backbones import DnCNN, DnCNNConfig
    from converge.physics import noise

    path = save_weights(DnCNN(DnCNNConfig(depth=3, features=4)), None, tmp_path / "toy-blind.safetensors")
    blind_entry = zoo.ZooEntry("toy-blind", "dncnn", "toy-blind.yaml", "toy-blind.safetensors", "denoise", None, "b",
                               sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(zoo.ZOO, "toy-blind", blind_entry)

    def refuse(y: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the noise level was estimated")

    monkeypatch.setattr(noise, "estimate_noise_sigma", refuse)
    task = make_task("denoise", sigma=25)
    restorer = make_restorer("dncnn", task, blind=True)
    assert restorer(noisy_image(1, 40), task.operator).model == "toy-blind"
    assert make_restorer("dncnn", make_task("denoise", sigma=35))(noisy_image(1, 40), task.operator).model == "toy-s40"
    with pytest.raises(AssertionError, match="estimated"):
        restorer(noisy_image(3, 40), task.operator)


def test_the_device_is_checked_before_anything_loads() -> None:
    task = make_task("denoise", sigma=25)
    with pytest.raises(ConfigError, match="unknown device"):
        make_restorer("dncnn-s25", task, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            make_restorer("dncnn-s25", task, device="cuda")
    noisy = smooth_image(1) + 0.1
    on_cpu = make_restorer("dncnn-s25", task, device="cpu")(noisy, task.operator)
    assert torch.equal(on_cpu.image, make_restorer("dncnn-s25", task)(noisy, task.operator).image)


def test_weights_digest_of_a_family_covers_the_entries_for_the_image_channels():
    import hashlib

    from converge import zoo
    from converge.eval.runner import restored_channels
    from converge.restorers import weights_digest

    def digest_of(channels: int) -> str:
        names = [entry.name for entry in zoo.ZOO.values()
                 if entry.model == "groupsc" and entry.task == "denoise" and entry.channels == channels]
        assert names
        digest = hashlib.sha256()
        for path in sorted(zoo.weights_path(name) for name in names):
            digest.update(path.read_bytes())
        return digest.hexdigest()

    assert weights_digest("groupsc", "denoise", 1) == digest_of(1)
    assert weights_digest("groupsc", "denoise", 3) == digest_of(3) != digest_of(1)
    # No colour deblocker: a colour JPEG is restored plane by plane by the grey ones.
    assert weights_digest("groupsc", "deblock", 3) == weights_digest("groupsc", "deblock", 1)
    assert restored_channels("bsd68", "native") == 1 and restored_channels("cbsd68", "native") == 3
    assert restored_channels("live1", "y") == 1


def test_weights_digest_of_a_family_at_a_given_level_covers_only_the_entry_it_picks():
    import hashlib

    from converge import zoo
    from converge.restorers import weights_digest

    def file_digest(name: str) -> str:
        return hashlib.sha256(zoo.weights_path(name).read_bytes()).hexdigest()

    assert weights_digest("groupsc", "deblock", 1, quality=20) == file_digest("groupsc-deblock-q20")
    assert weights_digest("groupsc", "denoise", 1, sigma=25.0) == file_digest("groupsc-s25")
    assert weights_digest("groupsc", "denoise", 1, sigma=24.0) == file_digest("groupsc-s25")
    # Told sigma 15, a colour image goes to the blind colour model, trained over sigma 5-25.
    assert weights_digest("groupsc", "denoise", 3, sigma=15.0) == file_digest("groupsc-color-blind")
    # Not told the level, the family may pick any of its entries for the channels.
    assert weights_digest("groupsc", "denoise", 1, sigma=25.0, blind=True) == weights_digest("groupsc", "denoise", 1)
    assert weights_digest("groupsc", "deblock", 1) != file_digest("groupsc-deblock-q20")


def _parrots_crop() -> torch.Tensor:
    """A textured 32x32 grey crop of the shipped example image."""
    from importlib.resources import files

    from converge.imageio import read_image

    return read_image(files("converge") / "examples" / "parrots.png")[..., 64:96, 160:192]


def test_admm_with_bm3d_deblurs_as_a_restorer() -> None:
    from converge.eval.metrics import psnr

    clean = _parrots_crop()
    task = make_task("deblur")
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    result = make_restorer("admm", task, prior="bm3d")(observed, operator)
    assert result.model == "admm+bm3d" and result.iterations == 8
    assert float(psnr(result.image, clean)) > float(psnr(observed, clean)) + 2.0


def test_hqs_with_a_trained_denoiser_inpaints_as_a_restorer() -> None:
    from converge.eval.metrics import psnr

    clean = _parrots_crop()
    task = make_task("inpaint", p=0.5)
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    result = make_restorer("hqs", task, prior="dncnn-s25")(observed, operator)
    assert result.model == "hqs+dncnn-s25" and 0.0 <= float(result.image.min()) <= float(result.image.max()) <= 1.0
    assert float(psnr(result.image, clean)) > float(psnr(observed, clean)) + 10.0


def test_a_plug_and_play_algorithm_starts_super_resolution_from_the_bicubic_image() -> None:
    clean = _parrots_crop()
    task = make_task("sr", factor=2)
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    result = make_restorer("admm", task, prior="identity")(observed, operator)
    assert result.image.shape == clean.shape and result.model == "admm+identity"


def test_a_plug_and_play_algorithm_starts_inpainting_from_the_filled_holes() -> None:
    from converge.baselines import fill_missing

    clean = _parrots_crop()
    task = make_task("inpaint", p=0.5)
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    # With the identity as denoiser, ADMM never moves the missing pixels from where it started.
    restored = make_restorer("admm", task, prior="identity")(observed, operator).image
    mask = operator(torch.ones_like(clean))
    holes = mask == 0
    start = fill_missing(observed, mask).clamp(0.0, 1.0)
    assert holes.any() and torch.allclose(restored[holes], start[holes], atol=1e-6)


def test_a_plug_and_play_algorithm_refuses_deblocking_in_one_line() -> None:
    with pytest.raises(ConfigError, match="linear operator") as error:
        make_restorer("admm", make_task("deblock"))
    assert "\n" not in str(error.value) and "deblur" in str(error.value)


def test_a_prior_trained_for_many_tasks_restores_through_its_algorithm() -> None:
    from converge.restorers import restorers_for_task, weights_digest

    clean = smooth_image(3, size=32)
    task = make_task("deblur")
    observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
    through = make_restorer("mtdeq", task)(observed, operator)
    direct = make_restorer("admm", task, prior="mtdeq")(observed, operator)
    assert through.model == "admm+mtdeq" and torch.equal(through.image, direct.image)
    assert weights_digest("mtdeq", "deblur", 3) == weights_digest("admm", "deblur", 3, prior="mtdeq")
    assert "mtdeq" in restorers_for_task("sr") and "mtdeq" not in restorers_for_task("deblock")
    with pytest.raises(ConfigError, match="itself the prior of admm: drop --prior"):
        make_restorer("mtdeq", task, prior="bm3d")
    with pytest.raises(ConfigError, match="restores through admm .* not 'deblock': for deblock use durr"):
        make_restorer("mtdeq", make_task("deblock"))


def test_prior_applies_only_to_the_plug_and_play_algorithms() -> None:
    with pytest.raises(ConfigError, match="--prior applies to the plug-and-play algorithms: admm"):
        make_restorer("bm3d", make_task("denoise"), prior="dncnn-s25")
    with pytest.raises(ConfigError, match="Unknown denoiser"):
        make_restorer("hqs", make_task("denoise"), prior="no-such-denoiser")
    assert "plug-and-play ADMM" in restorer_names()["admm"]


def test_a_shipped_model_over_the_memory_budget_is_restored_in_tiles_exactly(monkeypatch):
    from converge import zoo
    from converge.tiling import PROCESS_ALLOWANCE

    entry = zoo.ZOO["dncnn-s25"]
    assert entry.memory_per_pixel is not None
    task = make_task("denoise", sigma=25)
    noisy = torch.rand(1, 1, 160, 200, generator=torch.Generator().manual_seed(0))
    whole = make_restorer("dncnn-s25", task)(noisy, task.operator)
    budget = PROCESS_ALLOWANCE + 4 * 3 * 160 * 200 + entry.memory_per_pixel * 110**2
    tiled = make_restorer("dncnn-s25", task, max_memory=budget)(noisy, task.operator)
    assert whole.tiles is None and tiled.tiles is not None and tiled.tiles > 1
    assert torch.allclose(tiled.image, whole.image, atol=1e-5)


def test_a_model_that_cannot_be_tiled_is_refused_over_the_memory_budget_before_it_runs():
    from converge.tiling import PROCESS_ALLOWANCE

    task = make_task("denoise", sigma=25)
    restorer = make_restorer("durr-denoise-blind", task, max_memory=PROCESS_ALLOWANCE + 10**6)
    with pytest.raises(ConfigError, match="cannot be restored in tiles.*memory budget"):
        restorer(torch.rand(1, 1, 300, 300), task.operator)


def test_a_restorer_that_cannot_do_the_task_names_those_that_can() -> None:
    for name in ("dncnn-s25", "nerd", "bm3d"):
        with pytest.raises(ConfigError, match="for deblock use durr, groupsc, .*input") as raised:
            make_restorer(name, make_task("deblock"))
        assert "durr-deblock-blind" in str(raised.value)
    with pytest.raises(ConfigError, match="for sr use mtdeq, bicubic, admm"):
        make_restorer("nerd", make_task("sr"))


def clean_crop_and_noisy(sigma: float = 25) -> tuple[torch.Tensor, torch.Tensor]:
    from converge.data.registry import load_images

    clean = next(iter(load_images("set12")))[1][..., 64:160, 64:160]
    return clean, (clean + sigma / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)))


def test_bf16_restores_a_shipped_model_in_float32_within_a_hundredth_of_a_db_of_fp32() -> None:
    from converge.eval.metrics import psnr

    clean, noisy = clean_crop_and_noisy()
    task = make_task("denoise", sigma=25)
    results = {
        precision: make_restorer("dncnn-s25", task, precision=precision)(noisy, task.operator)
        for precision in ("fp32", "bf16")
    }
    assert (results["fp32"].precision, results["bf16"].precision) == ("fp32", "bf16")
    assert results["bf16"].image.dtype == torch.float32
    assert not torch.equal(results["bf16"].image, results["fp32"].image)
    gap = psnr(results["bf16"].image, clean) - psnr(results["fp32"].image, clean)
    assert abs(float(gap)) < 0.01
    tiled = make_restorer("dncnn-s25", task, tile=48, precision="bf16")(noisy, task.operator)
    assert tiled.image.dtype == torch.float32
    assert abs(float(psnr(tiled.image, clean) - psnr(results["bf16"].image, clean))) < 0.01


@pytest.mark.parametrize(
    ("flag", "native", "expected"), [(True, True, "bf16"), (True, False, "fp32"), (False, True, "fp32")]
)
def test_auto_precision_is_bf16_only_for_an_entry_measured_safe_on_a_bf16_cpu(monkeypatch, flag, native, expected):
    from dataclasses import replace

    from converge import devices, zoo

    monkeypatch.setitem(zoo.ZOO, "dncnn-s25", replace(zoo.ZOO["dncnn-s25"], bf16_inference=flag))
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    task = make_task("denoise", sigma=25)
    restored = make_restorer("dncnn-s25", task, precision="auto")(clean_crop_and_noisy()[1], task.operator)
    assert restored.precision == expected


def test_precision_is_checked_and_bf16_is_for_learned_models_only() -> None:
    task = make_task("denoise", sigma=25)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, auto, got 'half'"):
        make_restorer("dncnn-s25", task, precision="half")
    for name in ("bm3d", "admm"):
        with pytest.raises(ConfigError, match=f"'{name}' computes in fp32"):
            make_restorer(name, task, precision="bf16")
    assert make_restorer("bm3d", task, precision="auto")(torch.rand(1, 1, 16, 16), task.operator).precision == "fp32"
