import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from converge import zoo
from converge.errors import ConfigError, WeightsError
from converge.models.backbones import DnCNN, DnCNNConfig


def trained_like_model() -> DnCNN:
    """A small DnCNN whose BatchNorm statistics are not the defaults, so buffers are checked too."""
    torch.manual_seed(0)
    model = DnCNN(DnCNNConfig(depth=4, features=6))
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 16, 16))
    return model.eval()


def saved(tmp_path: Path) -> tuple[DnCNN, Path]:
    model = trained_like_model()
    path = zoo.save_weights(model, {"task": "denoise", "task_params": {"sigma": 25}}, tmp_path / "tiny.safetensors")
    return model, path


def test_save_then_load_gives_identical_outputs(tmp_path: Path) -> None:
    model, path = saved(tmp_path)
    loaded = zoo.load_weights(path)
    assert not loaded.training
    y = torch.rand(2, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(model(y), loaded(y))
    spec = yaml.safe_load(path.with_suffix(".yaml").read_text())
    assert spec["model"] == "dncnn" and spec["params"]["depth"] == 4 and spec["task_params"] == {"sigma": 25}


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = saved(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("weights loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    zoo.load_weights(path)


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors", "tiny.yaml"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_safetensors_raises_weights_error(tmp_path: Path, damage: str) -> None:
    _, path = saved(tmp_path)
    data = path.read_bytes()
    damaged = {"garbage": b"not a safetensors file" * 10, "truncated": data[: len(data) // 2], "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(WeightsError):
        zoo.load_weights(path)


def test_missing_files_raise_weights_error(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    with pytest.raises(WeightsError, match="missing"):
        zoo.load_weights(path, tmp_path / "absent.yaml")
    path.unlink()
    with pytest.raises(WeightsError, match="missing"):
        zoo.load_weights(path)


def test_config_that_does_not_match_the_weights_raises(tmp_path: Path) -> None:
    _, path = saved(tmp_path)
    config = path.with_suffix(".yaml")
    spec = yaml.safe_load(config.read_text())
    spec["params"]["features"] = 7
    config.write_text(yaml.safe_dump(spec))
    with pytest.raises(WeightsError, match="pair"):
        zoo.load_weights(path)
    spec["params"] = {"no_such_option": 1}
    config.write_text(yaml.safe_dump(spec))
    with pytest.raises(WeightsError, match="buildable"):
        zoo.load_weights(path)


def test_a_header_without_a_newer_parameter_reads_as_its_default(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model, path = saved(tmp_path)
    params = yaml.safe_load(path.with_suffix(".yaml").read_text())["params"]
    older = {name: value for name, value in params.items() if name != "batchnorm"}
    save_file(model.state_dict(), str(path), metadata={"model": "dncnn", "params": json.dumps(older)})
    image = torch.rand(1, 1, 16, 16)
    assert torch.equal(zoo.load_weights(path)(image), model(image))
    older["features"] = 7
    save_file(model.state_dict(), str(path), metadata={"model": "dncnn", "params": json.dumps(older)})
    with pytest.raises(WeightsError, match="was saved for"):
        zoo.load_weights(path)


def test_tensors_that_do_not_fit_raise_even_with_matching_header(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    _, path = saved(tmp_path)
    params = yaml.safe_load(path.with_suffix(".yaml").read_text())["params"]
    header = {"model": "dncnn", "params": json.dumps(params, sort_keys=True)}
    save_file({"body.0.weight": torch.zeros(1)}, str(path), metadata=header)
    with pytest.raises(WeightsError, match="does not fit"):
        zoo.load_weights(path)


def test_save_rejects_other_suffixes_and_reserved_keys(tmp_path: Path) -> None:
    model = trained_like_model()
    with pytest.raises(ConfigError):
        zoo.save_weights(model, None, tmp_path / "model.pt")
    with pytest.raises(ConfigError):
        zoo.save_weights(model, {"params": {}}, tmp_path / "model.safetensors")


def test_registry_lists_the_default_model() -> None:
    names = [entry.name for entry in zoo.list_models()]
    assert zoo.DEFAULT_MODEL in names
    assert zoo.ZOO[zoo.DEFAULT_MODEL].model_class is DnCNN
    with pytest.raises(ConfigError, match="unknown zoo model"):
        zoo.load_model("no-such-model")


def test_every_shipped_entry_loads_with_the_channels_it_declares() -> None:
    for entry in zoo.list_models():
        assert zoo.load_model(entry.name).config.channels == entry.channels


def test_an_entry_whose_channels_disagree_with_its_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    wrong = replace(zoo.ZOO[zoo.DEFAULT_MODEL], channels=3)
    monkeypatch.setitem(zoo.ZOO, zoo.DEFAULT_MODEL, wrong)
    with pytest.raises(WeightsError, match="1-channel model but zoo entry"):
        zoo.load_model(zoo.DEFAULT_MODEL)


@pytest.mark.skipif(not zoo.weights_path(zoo.DEFAULT_MODEL).exists(), reason="default weights not trained yet")
def test_shipped_default_model_denoises_a_real_crop() -> None:
    from converge.data.registry import load_images
    from converge.eval.metrics import psnr

    entry = zoo.ZOO[zoo.DEFAULT_MODEL]
    model = zoo.load_model()
    _, clean = next(iter(load_images("set12")))
    clean = clean[..., 64:192, 64:192]
    generator = torch.Generator().manual_seed(0)
    noisy = clean + entry.sigma / 255 * torch.randn(clean.shape, generator=generator)
    restored, info = model.restore(noisy)
    gain = float(psnr(restored, clean)[0] - psnr(noisy.clamp(0, 1), clean)[0])
    assert gain > 6.0
    assert info.iterations == 1


def test_shipped_durr_models_restore_blind_and_loop_longer_for_heavier_noise() -> None:
    from converge.data.registry import load_images
    from converge.eval.metrics import psnr
    from converge.physics.tasks import make_task

    _, clean = next(iter(load_images("set12")))
    clean = clean[..., 64:144, 64:144]
    denoiser = zoo.load_model(zoo.resolve_entry("durr", "denoise").name)
    loops = {}
    for sigma in (25, 55):
        noisy, _ = make_task("denoise", sigma=sigma).degrade(clean, torch.Generator().manual_seed(0))
        restored, info = denoiser.restore(noisy)
        assert float(psnr(restored, clean)[0] - psnr(noisy.clamp(0, 1), clean)[0]) > 6.0
        assert info.extra["policy"] == "learned" and 1 <= info.iterations[0] <= denoiser.config.max_loops
        loops[sigma] = info.iterations[0]
    assert loops[55] > loops[25]
    deblocker = zoo.load_model(zoo.resolve_entry("durr", "deblock", quality=20).name)
    compressed, _ = make_task("deblock", quality=20).degrade(clean, torch.Generator().manual_seed(0))
    restored, info = deblocker.restore(compressed)
    assert float(psnr(restored, clean)[0] - psnr(compressed, clean)[0]) > 0.5
    assert 1 <= info.iterations[0] <= deblocker.config.max_loops


# About 1 dB under what the shipped gray denoisers gain on this crop (NERD 6.7, 7.8 and 8.7 dB;
# GroupSC 6.6, 7.5 and 8.5 dB).
GAIN_DB = {15: 5.5, 25: 6.5, 50: 7.5}


def denoise_crop(
    family: str, sigma: int, bench: str = "set12", *, blind: bool = False
) -> tuple[object, torch.Tensor, object, float]:
    """The shipped model of ``family`` for ``sigma`` and the images of ``bench``, a noisy 64x64 crop of
    its first image, the RestoreInfo of restoring it and the PSNR gain (dB); ``blind``: the family's
    blind entry, which estimates the level."""
    from converge.data.registry import load_images
    from converge.eval.metrics import psnr
    from converge.physics.tasks import make_task

    _, clean = next(iter(load_images(bench)))
    clean = clean[..., 64:128, 64:128]
    entry = zoo.resolve_entry(family, "denoise", sigma=None if blind else sigma, channels=clean.shape[1])
    assert entry.sigma == (None if blind else sigma) and entry.channels == clean.shape[1]
    model = zoo.load_model(entry.name)
    noisy, _ = make_task("denoise", sigma=sigma).degrade(clean, torch.Generator().manual_seed(0))
    restored, info = model.restore(noisy)
    return model, noisy, info, float(psnr(restored, clean)[0] - psnr(noisy.clamp(0, 1), clean)[0])


@pytest.mark.parametrize("sigma", sorted(GAIN_DB))
def test_shipped_nerd_models_denoise_at_an_equilibrium_of_their_layer(sigma: int) -> None:
    from converge.deq import relative_residual

    model, noisy, _, gain = denoise_crop("nerd", sigma)
    assert gain > GAIN_DB[sigma]
    with torch.no_grad():
        z_star, s = model.solve(noisy)
        assert float(relative_residual(z_star, model.implicit(z_star, s)).max()) < 2 * model.config.tol


@pytest.mark.parametrize("sigma", sorted(GAIN_DB))
def test_shipped_groupsc_gray_models_denoise_their_level(sigma: int) -> None:
    model, _, info, gain = denoise_crop("groupsc", sigma)
    assert gain > GAIN_DB[sigma]
    assert info.extra["sigma_used"] == [sigma] and info.iterations == [model.config.steps]


def test_shipped_groupsc_colour_model_denoises_a_colour_crop() -> None:
    model, _, info, gain = denoise_crop("groupsc", 25, "cbsd68")
    # The shipped weights gain 8.23 dB on this crop (colour BM3D told sigma: 7.65).
    assert gain > 7.2
    assert info.extra["sigma_used"] == [25.0] and model.config.channels == 3


@pytest.mark.parametrize(("sigma", "least_gain"), [(5, 3.8), (15, 6.0), (25, 7.6)])
def test_shipped_blind_groupsc_colour_model_estimates_the_level_and_denoises(sigma: int, least_gain: float) -> None:
    # The shipped weights gain 4.34, 6.58 and 8.23 dB on this crop.
    _, _, info, gain = denoise_crop("groupsc", sigma, "cbsd68", blind=True)
    assert gain > least_gain
    assert abs(info.noise_level[0] - sigma) < 0.1 * sigma and info.extra["sigma_used"] == [sigma]
    assert zoo.resolve_entry("groupsc", "denoise", 15.0, channels=3).name == "groupsc-color-blind"
    assert zoo.resolve_entry("groupsc", "denoise", 25.0, channels=3).name == "groupsc-color-s25"


def test_shipped_groupsc_deblocker_removes_jpeg_artefacts() -> None:
    from converge.data.registry import load_images
    from converge.eval.metrics import psnr
    from converge.physics.tasks import make_task

    _, clean = next(iter(load_images("set12")))
    clean = clean[..., 64:160, 64:160]
    entry = zoo.resolve_entry("groupsc", "deblock", quality=10)
    assert entry.quality == 10 and zoo.resolve_entry("groupsc", "deblock", quality=15) == entry
    assert [zoo.resolve_entry("groupsc", "deblock", quality=q).quality for q in (16, 25, 26, 36, 90)] == [20, 20, 30, 40, 40]
    model = zoo.load_model(entry.name)
    compressed, _ = make_task("deblock", quality=10).degrade(clean, torch.Generator().manual_seed(0))
    restored, _ = model.restore(compressed)
    # The shipped weights gain 1.56 dB on this crop.
    assert float(psnr(restored, clean)[0] - psnr(compressed, clean)[0]) > 1.0


def test_shipped_groupsc_demosaicker_fills_in_a_bayer_mosaic() -> None:
    from converge.data.registry import load_images
    from converge.eval.metrics import psnr
    from converge.physics.tasks import make_task

    _, clean = next(iter(load_images("kodak24")))
    clean = clean[..., 64:160, 64:160]
    entry = zoo.resolve_entry("groupsc", "demosaic", channels=3)
    model = zoo.load_model(entry.name)
    mosaic, operator = make_task("demosaic").degrade(clean, torch.Generator().manual_seed(0))
    restored, _ = model.restore(mosaic, operator)
    # The shipped weights reach 41.1 dB on this crop.
    assert float(psnr(restored, clean)[0]) > 39.0


@pytest.fixture
def family_zoo(monkeypatch: pytest.MonkeyPatch) -> dict[str, zoo.ZooEntry]:
    def entry(name: str, task: str, sigma: float | None, quality: int | None = None) -> zoo.ZooEntry:
        return zoo.ZooEntry(name, "nerd", f"{name}.yaml", f"{name}.safetensors", task, sigma, name, quality)

    table = {
        e.name: e
        for e in (
            entry("nerd-s15", "denoise", 15.0),
            entry("nerd-s25", "denoise", 25.0),
            entry("nerd-s50", "denoise", 50.0),
            entry("nerd-q20", "deblock", None),
        )
    }
    monkeypatch.setattr(zoo, "ZOO", table)
    return table


@pytest.mark.parametrize(("sigma", "expected"), [(25.0, "nerd-s25"), (14.0, "nerd-s15"), (20.0, "nerd-s15"),
                                                 (38.0, "nerd-s50"), (90.0, "nerd-s50")])
def test_a_family_name_picks_the_entry_trained_nearest_the_noise_level(family_zoo, sigma, expected) -> None:
    assert zoo.resolve_entry("nerd", "denoise", sigma).name == expected
    assert zoo.resolve_entry("nerd-s50", "denoise", sigma).name == "nerd-s50"


def test_a_family_prefers_blind_weights_without_a_level_and_needs_one_otherwise(family_zoo) -> None:
    assert zoo.resolve_entry("nerd", "deblock", None).name == "nerd-q20"
    with pytest.raises(ConfigError, match="give --sigma"):
        zoo.resolve_entry("nerd", "denoise", None)
    with pytest.raises(ConfigError, match="not 'sr'"):
        zoo.resolve_entry("nerd", "sr", None)
    with pytest.raises(ConfigError, match="unknown zoo model"):
        zoo.resolve_entry("groupsc", "denoise", 25.0)
    assert zoo.resolve_entry("nerd", "deblock", None, quality=40).name == "nerd-q20"
    assert "nerd" in zoo.zoo_names() and "nerd-s15" in zoo.zoo_names()


def test_a_family_picks_deblocking_weights_by_the_nearest_quality(family_zoo, monkeypatch) -> None:
    table = {
        name: zoo.ZooEntry(name, "groupsc", f"{name}.yaml", f"{name}.safetensors", "deblock", None, name, quality)
        for name, quality in (("groupsc-q10", 10), ("groupsc-q20", 20), ("groupsc-q40", 40))
    }
    monkeypatch.setattr(zoo, "ZOO", table)
    assert [zoo.resolve_entry("groupsc", "deblock", 25.0, q).name for q in (5, 14, 16, 30, 31, 90)] == [
        "groupsc-q10", "groupsc-q10", "groupsc-q20", "groupsc-q20", "groupsc-q40", "groupsc-q40"
    ]
    with pytest.raises(ConfigError, match="one model per level \\(10, 20, 40\\): give --quality"):
        zoo.resolve_entry("groupsc", "deblock", 25.0, None)


def test_a_family_prefers_entries_for_the_image_channels_and_blind_ones_when_blind(family_zoo, monkeypatch) -> None:
    colour = zoo.ZooEntry("nerd-rgb-s25", "nerd", "c.yaml", "c.safetensors", "denoise", 25.0, "c", channels=3)
    monkeypatch.setitem(zoo.ZOO, colour.name, colour)
    assert zoo.resolve_entry("nerd", "denoise", 50.0, channels=3).name == "nerd-rgb-s25"
    assert zoo.resolve_entry("nerd", "denoise", 50.0, channels=1).name == "nerd-s50"
    assert zoo.resolve_entry("nerd", "deblock", None, channels=3).name == "nerd-q20"
    assert zoo.needs_level("nerd", "denoise") and not zoo.needs_level("nerd", "deblock")
    assert not zoo.needs_level("nerd-s25", "denoise")
    blind = zoo.ZooEntry("nerd-blind", "nerd", "b.yaml", "b.safetensors", "denoise", None, "b")
    monkeypatch.setitem(zoo.ZOO, blind.name, blind)
    assert zoo.resolve_entry("nerd", "denoise", 50.0, channels=1).name == "nerd-s50"
    assert zoo.resolve_entry("nerd", "denoise", 50.0, channels=1, blind=True).name == "nerd-blind"
    assert not zoo.needs_level("nerd", "denoise", channels=1) and zoo.needs_level("nerd", "denoise", channels=3)


def test_a_blind_entry_with_a_trained_range_is_picked_for_levels_inside_it(family_zoo, monkeypatch) -> None:
    blind = zoo.ZooEntry("nerd-blind", "nerd", "b.yaml", "b.safetensors", "denoise", None, "b", trained_range=(5.0, 20.0))
    monkeypatch.setitem(zoo.ZOO, blind.name, blind)
    picked = [zoo.resolve_entry("nerd", "denoise", sigma).name for sigma in (3.0, 5.0, 10.0, 15.0, 20.0, 21.0, 24.0)]
    assert picked == ["nerd-blind", "nerd-blind", "nerd-blind", "nerd-s15", "nerd-blind", "nerd-blind", "nerd-s25"]
    assert zoo.resolve_entry("nerd", "denoise", None).name == "nerd-blind"
    assert blind.distance(2.0) == 3.0 and blind.distance(12.0) == 0.0 and blind.distance(26.0) == 6.0


@pytest.mark.parametrize("entry", zoo.list_models(), ids=lambda entry: entry.name)
def test_each_score_in_a_manifest_is_the_one_its_report_measured(entry) -> None:
    report_path = Path(__file__).resolve().parents[1] / entry.score.report
    report = json.loads(report_path.read_text())
    assert report["summary"]["psnr"] == pytest.approx(entry.score.psnr, abs=0.005)
    assert report["bench"] == entry.score.bench and report["protocol"]["command"] == entry.score.command
    if entry.algorithm is None:
        assert report["model"] in (entry.name, entry.model) and report["task"] == entry.task
    else:  # a prior for many tasks, scored inside the algorithm it restores through
        assert report["model"] == entry.algorithm and f"--prior {entry.name}" in entry.score.command


def test_a_manifest_without_its_zoo_fields_is_refused() -> None:
    spec = {"model": "dncnn", "params": {}, "task": "denoise", "zoo": {"name": "x"}}
    with pytest.raises(WeightsError, match="zoo section of x.yaml is incomplete"):
        zoo.entry_from_manifest("x.yaml", spec)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dncnn-s25", ("denoise", {"sigma": 25})),
        ("durr-denoise-blind", ("denoise", {"sigma": 40.0})),
        ("durr-deblock-blind", ("deblock", {"quality": 20})),
        ("groupsc-deblock-q30", ("deblock", {"quality": 30})),
        ("degrad-deblur", ("deblur", {"blur_sigma": 5.0, "size": 5, "boundary": "zeros", "sigma": 1.275})),
        ("mtdeq", ("deblur", {})),
    ],
)
def test_the_trained_degradation_is_the_manifests_with_a_level_for_blind_entries(name, expected) -> None:
    from converge.physics.tasks import make_task

    assert zoo.trained_degradation(name, blind_sigma=40.0) == expected
    task, params = expected
    make_task(task, **params)


def test_a_shipped_file_that_differs_from_its_digest_is_refused(tmp_path, monkeypatch) -> None:
    entry = zoo.ZOO["dncnn-s25"]
    altered = tmp_path / entry.weights_file
    data = bytearray(zoo.weights_path("dncnn-s25").read_bytes())
    data[-5] ^= 0x01  # one flipped bit in a tensor
    altered.write_bytes(bytes(data))
    (tmp_path / entry.config_file).write_text(zoo._package_file(entry.config_file).read_text())
    monkeypatch.setattr(zoo, "_package_file", lambda name: tmp_path / name)
    with pytest.raises(WeightsError, match="does not match the SHA-256 in dncnn-gray-s25.yaml"):
        zoo.load_model("dncnn-s25")


def test_weights_holding_non_finite_values_are_refused(tmp_path) -> None:
    model = DnCNN(DnCNNConfig(depth=3, features=4))
    with torch.no_grad():
        model.body[0].weight[0, 0, 0, 0] = float("inf")
    path = zoo.save_weights(model, {"task": "denoise"}, tmp_path / "broken.safetensors")
    with pytest.raises(WeightsError, match="NaN or infinite values \\(in body.0.weight\\)"):
        zoo.load_weights(path)


@pytest.mark.parametrize("entry", zoo.list_models(), ids=lambda entry: entry.name)
def test_each_memory_figure_in_a_manifest_is_the_measured_one(entry) -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "memory_per_pixel.json"
    measured = json.loads(results.read_text())
    figures = {result["name"]: result["bytes_per_pixel"] for result in measured["results"]}
    # GroupSC works block by block and a prior restored through an algorithm is never tiled: neither
    # has a per-pixel figure (benchmarks/memory_per_pixel.py).
    assert entry.memory_per_pixel == figures.get(entry.name)
    assert (entry.name in figures) != (entry.model == "groupsc" or entry.algorithm is not None)


@pytest.mark.parametrize("entry", [entry for entry in zoo.list_models() if entry.validation], ids=lambda e: e.name)
def test_each_validation_score_in_a_manifest_is_the_one_its_report_measured(entry) -> None:
    root = Path(__file__).resolve().parents[1]
    for record in entry.validation:
        report = json.loads((root / record.report).read_text())
        assert report["bench"] == "bsds-val32" and report["task"] == record.task
        assert report["protocol"]["command"] == record.command
        assert round(report["summary"]["psnr"], 3) == record.psnr and report["summary"]["images"] == record.images
        assert {row["model"] for row in report["images"]} == {entry.name}


@pytest.mark.parametrize(
    "entry", [entry for entry in zoo.list_models() if entry.seconds_per_megapixel], ids=lambda e: e.name
)
def test_each_speed_in_a_manifest_is_the_measured_one(entry) -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "inference_speed.json"
    rows = {row["name"]: row for row in json.loads(results.read_text())["rows"]}
    assert round(rows[entry.name]["cases"]["fp32 1t"]["seconds_per_mp"], 2) == entry.seconds_per_megapixel
    cases = rows[entry.name]["cases"]
    change = cases["bf16 1t"]["psnr"] - cases["fp32 1t"]["psnr"]
    assert entry.bf16_inference == (abs(change) <= 0.02)


def test_the_readme_table_of_models_is_the_one_the_manifests_make() -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_models", root / "benchmarks" / "readme_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (root / "README.md").read_text()
    block = readme[readme.index(module.START) + len(module.START) : readme.index(module.END)]
    assert block == "\n" + module.table()


def test_a_card_adds_what_the_choice_compares_once_measured(monkeypatch) -> None:
    from dataclasses import replace

    unmeasured = replace(zoo.ZOO["dncnn-s25"], validation=(), seconds_per_megapixel=None)
    monkeypatch.setitem(zoo.ZOO, "dncnn-s25", unmeasured)
    assert "chooses" not in zoo.card("dncnn-s25")
    record = zoo.Validation("denoise", 1, 25.0, 29.5, 8, "converge eval --model dncnn ...", "r.json")
    measured = replace(zoo.ZOO["dncnn-s25"], validation=(record,), seconds_per_megapixel=1.25)
    monkeypatch.setattr(zoo, "ZOO", {**zoo.ZOO, "dncnn-s25": measured})
    text = zoo.card("dncnn-s25")
    assert "1.25 s per megapixel" in text and "denoise at sigma 25, grey: 29.50 dB on 8 validation images" in text


def test_recorded_choice_facts_end_the_manifest_and_read_back(tmp_path, monkeypatch) -> None:
    entry = zoo.ZOO["dncnn-s25"]
    original = zoo._package_file(entry.config_file).read_text()
    (tmp_path / entry.config_file).write_text(original)
    monkeypatch.setattr(zoo, "_package_file", lambda name: tmp_path / name)
    record = {"task": "denoise", "channels": 1, "level": 25.0, "psnr": 29.5, "images": 8, "command": "c", "report": "r"}

    def read_back() -> zoo.ZooEntry:
        text = (tmp_path / entry.config_file).read_text()
        return zoo.entry_from_manifest(entry.config_file, yaml.safe_load(text))

    zoo.record_measurements("dncnn-s25", validation=[record])
    zoo.record_measurements("dncnn-s25", seconds_per_megapixel=1.234)
    written = read_back()
    assert written.seconds_per_megapixel == 1.23 and written.validation == (zoo.Validation(**record),)
    zoo.record_measurements("dncnn-s25", seconds_per_megapixel=2.0)
    assert read_back().validation == written.validation and read_back().seconds_per_megapixel == 2.0
    zoo.record_measurements("dncnn-s25", validation=[])
    assert read_back().validation == () and read_back().seconds_per_megapixel == 2.0
    text = (tmp_path / entry.config_file).read_text()
    assert text.startswith(original.split("  seconds_per_megapixel:")[0].rstrip("\n"))
