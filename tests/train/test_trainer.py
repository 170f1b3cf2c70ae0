import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from converge.data.patches import collate_patches
from converge.data.registry import load_images
from converge.errors import ConfigError, TrainingError
from converge.models.backbones import DnCNN
from converge.physics.jpeg import JPEGCompression
from converge.train import trainer as trainer_module
from converge.train.config import config_from_dict, load_config
from converge.train.trainer import CHECKPOINT, LOG, Trainer, _lr_factor, read_checkpoint, train
from converge.models import build_model
from converge.physics import Identity, OperatorBatch
from converge.zoo import load_weights, save_weights


@pytest.fixture(scope="module")
def crops() -> list[torch.Tensor]:
    """Four 32x32 crops of a real image, as (C, H, W) tensors in [0, 1]."""
    _, image = next(iter(load_images("set12")))
    return [image[0, :, top : top + 32, left : left + 32] for top in (40, 120) for left in (60, 150)]


def tiny_config(**overrides) -> object:
    raw = {
        "seed": 3,
        "steps": 4,
        "log_every": 1,
        "checkpoint_every": 2,
        "loss": "noise_mse",
        "model": {"name": "dncnn", "params": {"depth": 3, "features": 4}},
        "data": {"train_set": "train400", "patch_size": 16, "patches_per_image": 2, "batch_size": 4,
                 "task": "denoise", "task_params": {"sigma": 25}},
        "eval": {"bench": "set12", "task": "denoise", "task_params": {"sigma": 25}, "every": 2, "max_images": 1},
        **overrides,
    }
    return config_from_dict(raw)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run_dir) if "loss" in r]


def test_three_steps_write_log_checkpoint_and_model(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=3)
    weights = Trainer(config, tmp_path, progress=False, train_images=crops).run()
    assert [step for step, _ in train_losses(tmp_path)] == [1, 2, 3]
    assert all(math.isfinite(loss) for _, loss in train_losses(tmp_path))
    evaluations = [r for r in records(tmp_path) if "eval_psnr" in r]
    assert [r["step"] for r in evaluations] == [2, 3] and all(r["eval_psnr"] > 10 for r in evaluations)
    state = read_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] == 3 and {"model", "optimizer", "scheduler", "rng"} <= set(state)
    assert weights == tmp_path / "model.safetensors"
    assert yaml.safe_load((tmp_path / "model.yaml").read_text())["trained_steps"] == 3
    model = load_weights(weights)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


class Interrupted(Exception):
    pass


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path, crops, monkeypatch) -> None:
    config = tiny_config(steps=5)
    Trainer(config, tmp_path / "straight", progress=False, train_images=crops).run()

    original_save = Trainer.save_checkpoint

    def save_then_crash(self):
        path = original_save(self)
        if self.step == 2:
            raise Interrupted
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        Trainer(config, tmp_path / "resumed", progress=False, train_images=crops).run()
    monkeypatch.setattr(Trainer, "save_checkpoint", original_save)
    resumed = Trainer(config, tmp_path / "resumed", resume=True, progress=False, train_images=crops)
    assert resumed.step == 2
    resumed.run()

    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "straight")
    straight_state = read_checkpoint(tmp_path / "straight" / CHECKPOINT)
    resumed_state = read_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert resumed_state["step"] == 5
    for name, tensor in straight_state["model"].items():
        assert torch.equal(tensor, resumed_state["model"][name]), name


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=2)
    Trainer(config, tmp_path, progress=False, train_images=crops).run()
    with (tmp_path / LOG).open("a") as stream:
        stream.write(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    Trainer(config, tmp_path, resume=True, progress=False, train_images=crops)
    assert max(r["step"] for r in records(tmp_path)) == 2


def test_checkpoint_write_is_atomic(tmp_path: Path, crops, monkeypatch) -> None:
    trainer = Trainer(tiny_config(steps=2), tmp_path, progress=False, train_images=crops)
    trainer.run()
    before = (tmp_path / CHECKPOINT).read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, stream):
        real_save(obj, stream)
        stream.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(trainer_module.torch, "save", save_half_then_fail)
    trainer.step = 7
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_used_run_dir_needs_resume_and_the_same_config(tmp_path: Path, crops) -> None:
    Trainer(tiny_config(steps=1), tmp_path, progress=False, train_images=crops).run()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config(steps=1), tmp_path, progress=False, train_images=crops)
    with pytest.raises(ConfigError, match="differs"):
        Trainer(tiny_config(steps=9), tmp_path, resume=True, progress=False, train_images=crops)


def test_a_resume_may_change_how_steps_run_and_the_log_says_so(tmp_path: Path, crops, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    Trainer(tiny_config(steps=4, precision="bf16"), tmp_path, progress=False, train_images=crops, until=2).run()
    resumed = Trainer(tiny_config(steps=4, channels_last=True), tmp_path, resume=True, progress=False, train_images=crops)
    resumed.run()
    changed = [record for record in records(tmp_path) if "execution_changed" in record]
    assert changed == [{"step": 2, "execution_changed": {"precision": "fp32", "channels_last": True}}]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["precision"] == "fp32"


def test_bf16_on_a_cpu_without_native_bf16_is_refused(tmp_path: Path, crops, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="precision=fp32"):
        Trainer(tiny_config(steps=1, precision="bf16"), tmp_path, progress=False, train_images=crops)


def test_export_best_writes_the_best_evaluated_weights(tmp_path: Path, crops) -> None:
    Trainer(tiny_config(steps=4, export="best"), tmp_path, progress=False, train_images=crops).run()
    best_step = max((r for r in records(tmp_path) if "eval_psnr" in r), key=lambda r: r["eval_psnr"])["step"]
    assert yaml.safe_load((tmp_path / "model.yaml").read_text())["trained_steps"] == best_step


def test_blind_noise_range_and_oversized_batch(tmp_path: Path, crops) -> None:
    blind = tiny_config(steps=1, eval=None, data={"train_set": "train400", "patch_size": 16, "patches_per_image": 2,
                                                   "batch_size": 4, "sigma_range": [0, 50]})
    Trainer(blind, tmp_path / "blind", progress=False, train_images=crops).run()
    assert train_losses(tmp_path / "blind")[0][0] == 1
    oversized = tiny_config(data={"train_set": "train400", "patch_size": 16, "patches_per_image": 1, "batch_size": 64,
                                           "task": "denoise", "task_params": {"sigma": 25}})
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer(oversized, tmp_path / "big", progress=False, train_images=crops)


def test_schedules() -> None:
    cosine = _lr_factor(tiny_config(schedule={"name": "cosine", "warmup_steps": 2, "min_lr": 1e-5}), 10)
    assert cosine(0) == pytest.approx(0.5) and cosine(2) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1e-2) and cosine(6) == pytest.approx(0.5 * (1 + 1e-2))
    step = _lr_factor(tiny_config(schedule={"name": "step", "milestones": [3, 6], "gamma": 0.5}), 10)
    assert [step(s) for s in (0, 3, 6, 9)] == [1.0, 0.5, 0.25, 0.25]
    assert _lr_factor(tiny_config(schedule={"name": "constant"}), 10)(7) == 1.0


def test_train_entry_point_reads_yaml_and_uses_the_registry_set(tmp_path: Path) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {"steps": 2, "log_every": 1, "model": {"name": "dncnn", "params": {"depth": 2, "features": 2}},
             "data": {"train_set": "train400", "patch_size": 8, "patches_per_image": 1, "batch_size": 8,
                      "task": "denoise", "task_params": {"sigma": 15}}}
        )
    )
    weights = train(config_path, tmp_path / "run", threads=torch.get_num_threads())
    assert weights.exists() and len(train_losses(tmp_path / "run")) == 2
    with pytest.raises(ConfigError, match="threads"):
        train(config_path, tmp_path / "other", threads=0)


def record_levels(trainer: Trainer) -> list[list[float]]:
    """Make ``trainer``'s model record the levels its ``training_forward`` receives."""
    seen = []
    original = trainer.model.training_forward

    def recording(y: torch.Tensor, operator: OperatorBatch, level: torch.Tensor) -> torch.Tensor:
        assert level.shape == (y.shape[0],) and level.dtype == torch.float32
        assert isinstance(operator, OperatorBatch) and len(operator) == y.shape[0]
        seen.append(level.tolist())
        return original(y, operator, level)

    trainer.model.training_forward = recording
    return seen


def data_section(**fields) -> dict:
    return {"train_set": "train400", "patch_size": 16, "patches_per_image": 2, "batch_size": 4, **fields}


@pytest.mark.parametrize(
    ("data", "check"),
    [
        ({"task": "denoise", "task_params": {"sigma": 25}}, lambda levels: set(levels) == {25.0}),
        ({"sigma_range": [10, 40]}, lambda levels: len(set(levels)) == 8 and all(10 <= v <= 40 for v in levels)),
        ({"task": "deblock", "quality_range": [20, 30]},
         lambda levels: len(set(levels)) > 1 and all(v in range(20, 31) for v in levels)),
        ({"task": "deblock", "task_params": {"quality": 15}}, lambda levels: set(levels) == {15.0}),
        ({"task": "deblur"}, lambda levels: all(math.isnan(v) for v in levels)),
    ],
)
def test_the_patch_level_reaches_training_forward(tmp_path: Path, crops, data: dict, check) -> None:
    trainer = Trainer(tiny_config(steps=2, eval=None, data=data_section(**data)), tmp_path, progress=False,
                      train_images=crops)
    seen = record_levels(trainer)
    trainer.run()
    levels = [value for batch in seen for value in batch]
    assert len(levels) == 8 and check(levels)


def test_blind_degradations_draw_the_level_they_report() -> None:
    x = torch.full((1, 1, 64, 64), 0.5)
    blind_noise = trainer_module._training_degradation(tiny_config(data=data_section(sigma_range=[10, 50])))
    for seed in range(4):
        y, operator, level = blind_noise(x, torch.Generator().manual_seed(seed))
        assert isinstance(operator, Identity) and 10 <= level <= 50 and abs(float((y - x).std()) * 255 - level) < 0.1 * level
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    blind_jpeg = trainer_module._training_degradation(
        tiny_config(data=data_section(task="deblock", quality_range=[5, 60]))
    )
    qualities = set()
    for seed in range(6):
        y, operator, level = blind_jpeg(x, torch.Generator().manual_seed(seed))
        assert level == int(level) and torch.equal(y, JPEGCompression(int(level))(x))
        assert isinstance(operator, JPEGCompression) and operator.quality == level
        qualities.add(level)
    assert len(qualities) > 1


def test_log_uniform_noise_levels_split_evenly_at_the_geometric_mean() -> None:
    x = torch.full((1, 1, 8, 8), 0.5)
    levels = {}
    for sampling in ("uniform", "log_uniform"):
        degrade = trainer_module._training_degradation(
            tiny_config(data=data_section(sigma_range=[20, 80], sigma_sampling=sampling))
        )
        levels[sampling] = torch.tensor([degrade(x, torch.Generator().manual_seed(seed))[2] for seed in range(2000)])
    assert all(float(values.min()) >= 20 and float(values.max()) <= 80 for values in levels.values())
    # Below 40, the geometric mean of the range: half the patches when log-uniform, a third when uniform.
    assert abs(float((levels["log_uniform"] < 40).float().mean()) - 0.5) < 0.04
    assert abs(float((levels["uniform"] < 40).float().mean()) - 1 / 3) < 0.04


def test_init_weights_start_a_fresh_run_and_a_resume_ignores_them(tmp_path: Path, crops) -> None:
    source = Trainer(tiny_config(steps=2, eval=None), tmp_path / "source", progress=False, train_images=crops).run()
    config = tiny_config(steps=2, eval=None, checkpoint_every=1, init_weights=str(source))
    started = Trainer(config, tmp_path / "started", progress=False, train_images=crops)
    for name, tensor in load_weights(source).state_dict().items():
        assert torch.equal(started.model.state_dict()[name], tensor), name
    started.run()
    trained = {name: tensor.clone() for name, tensor in started.model.state_dict().items()}
    source.unlink()
    resumed = Trainer(config, tmp_path / "started", resume=True, progress=False, train_images=crops)
    assert resumed.step == 2
    for name, tensor in trained.items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_init_weights_of_a_groupsc_for_another_level_are_adopted(tmp_path: Path, crops) -> None:
    params = {"patch_size": 5, "atoms": 16, "steps": 4, "window": 16, "similarity_every": 2, "stride": 6}
    source = build_model("groupsc", {**params, "sigmas": [25]})
    path = save_weights(source, {"task": "denoise"}, tmp_path / "s25.safetensors")
    model = {"name": "groupsc", "params": {**params, "sigmas": [15]}}
    started = Trainer(tiny_config(model=model, loss="mse", eval=None, init_weights=str(path)), tmp_path / "run",
                      progress=False, train_images=crops)
    assert torch.equal(started.model.dictionary, source.dictionary)
    assert torch.allclose(started.model.thresholds, source.thresholds * 15 / 25)
    other = {"name": "groupsc", "params": {**params, "atoms": 8, "sigmas": [15]}}
    with pytest.raises(ConfigError, match="other atoms: only sigmas, window, block, stride and train_padding may differ"):
        Trainer(tiny_config(model=other, loss="mse", eval=None, init_weights=str(path)), tmp_path / "other",
                progress=False, train_images=crops)


def test_the_loss_weighs_each_pixel_as_the_model_asks(tmp_path: Path, crops) -> None:
    params = {"patch_size": 5, "atoms": 16, "steps": 4, "window": 16, "similarity_every": 2, "stride": 6,
              "train_padding": False}
    config = tiny_config(model={"name": "groupsc", "params": params}, loss="mse", eval=None, steps=1)
    trainer = Trainer(config, tmp_path, progress=False, train_images=crops)
    given = []
    loss = trainer.loss_fn
    trainer.loss_fn = lambda x_hat, x, y, weights: given.append(weights) or loss(x_hat, x, y, weights)
    trainer.run()
    counts = trainer.model.training_loss_weights(torch.zeros(1, 1, 16, 16))
    assert len(given) == 1 and torch.equal(given[0], counts) and float(counts[..., 0, 0]) < 1 < float(counts.max())


def test_init_weights_must_exist_and_fit_the_model(tmp_path: Path, crops) -> None:
    source = Trainer(tiny_config(steps=1, eval=None), tmp_path / "source", progress=False, train_images=crops).run()
    other_model = {"name": "dncnn", "params": {"depth": 4, "features": 4}}
    with pytest.raises(ConfigError, match="saved for dncnn"):
        Trainer(tiny_config(model=other_model, init_weights=str(source)), tmp_path / "a", progress=False,
                train_images=crops)
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(tiny_config(init_weights=str(tmp_path / "absent.safetensors")), tmp_path / "b", progress=False,
                train_images=crops)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="not a readable"):
        Trainer(tiny_config(init_weights=str(tmp_path / "broken.safetensors")), tmp_path / "c", progress=False,
                train_images=crops)


def test_relative_init_weights_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.yaml").write_text(
        yaml.safe_dump({"steps": 1, "model": {"name": "dncnn"}, "data": {"train_set": "train400"},
                        "init_weights": "../runs/a/model.safetensors"})
    )
    config = load_config(folder / "run.yaml")
    assert config.init_weights == str((tmp_path / "runs" / "a" / "model.safetensors").resolve())
    assert load_config(folder / "run.yaml") == config


def test_initialise_from_data_is_called_once_on_a_fresh_start_only(tmp_path: Path, crops, monkeypatch) -> None:
    calls = []

    def initialise_from_data(self, images: list[torch.Tensor], generator: torch.Generator) -> None:
        calls.append(([image.clone() for image in images], float(torch.rand((), generator=generator))))

    monkeypatch.setattr(DnCNN, "initialise_from_data", initialise_from_data, raising=False)
    config = tiny_config(steps=1, eval=None)
    Trainer(config, tmp_path / "a", progress=False, train_images=crops).run()
    assert len(calls) == 1
    images, first_draw = calls[0]
    assert len(images) == len(crops)
    for image, crop in zip(images, crops):
        assert image.shape == (1, *crop.shape) and image.dtype == torch.float32 and torch.equal(image[0], crop)
    Trainer(config, tmp_path / "a", resume=True, progress=False, train_images=crops)
    assert len(calls) == 1
    Trainer(config, tmp_path / "b", progress=False, train_images=crops)
    assert len(calls) == 2 and calls[1][1] == first_draw
    Trainer(tiny_config(steps=1, eval=None, seed=4), tmp_path / "c", progress=False, train_images=crops)
    assert calls[2][1] != first_draw
    weights = tmp_path / "a" / "model.safetensors"
    Trainer(tiny_config(steps=1, eval=None, init_weights=str(weights)), tmp_path / "d", progress=False,
            train_images=crops)
    assert len(calls) == 3


def test_step_schedule_every_n_steps() -> None:
    step = _lr_factor(tiny_config(schedule={"name": "step", "every": 3, "gamma": 0.35}), 10)
    assert [step(s) for s in (0, 2, 3, 5, 6, 9)] == pytest.approx([1.0, 1.0, 0.35, 0.35, 0.35**2, 0.35**3])
    warm = _lr_factor(tiny_config(schedule={"name": "step", "every": 4, "gamma": 0.5, "warmup_steps": 2}), 10)
    assert [warm(s) for s in (0, 1, 2, 4, 8)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.25])


def test_training_mode_evaluation_uses_training_forward_at_the_eval_level(tmp_path: Path, crops) -> None:
    evaluation = {"bench": "set12", "task": "denoise", "task_params": {"sigma": 40}, "max_images": 1,
                  "mode": "training"}
    trainer = Trainer(tiny_config(steps=1, eval=evaluation), tmp_path, progress=False, train_images=crops)
    seen = record_levels(trainer)
    value = trainer.evaluate()
    assert seen == [[40.0]] and 10 < value < 40


def test_a_dqn_config_is_refused_by_the_supervised_trainer(tmp_path: Path, crops) -> None:
    with pytest.raises(ConfigError, match="trainer 'dqn'"):
        Trainer(tiny_config(trainer="dqn", dqn={}, loss="mse"), tmp_path, progress=False, train_images=crops)


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_optim_eps_reaches_the_optimiser_and_defaults_to_pytorchs(tmp_path: Path, crops, name: str) -> None:
    default = Trainer(tiny_config(optim={"name": name}), tmp_path / "default", progress=False, train_images=crops)
    tuned = Trainer(tiny_config(optim={"name": name, "eps": 1e-3}), tmp_path / "tuned", progress=False,
                    train_images=crops)
    assert default.optimizer.param_groups[0]["eps"] == 1e-8
    assert tuned.optimizer.param_groups[0]["eps"] == 1e-3


class ScriptedLoss(Trainer):
    """Each step adds 1 to every weight and reports the next loss of ``LOSSES`` (the optimiser has no gradients)."""

    LOSSES = [1.0, 1.0, 1.0, 0.9, 3.0, 3.0, 0.8, 0.8, math.nan, 1.0]

    def _train_step(
        self, y: torch.Tensor, x: torch.Tensor, operator: OperatorBatch, level: torch.Tensor
    ) -> dict[str, float]:
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.add_(1.0)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": self.LOSSES[self.step]}


def backtracking_config(**overrides) -> object:
    return tiny_config(steps=10, eval=None, optim={"name": "adam", "lr": 1e-3},
                       schedule={"name": "constant"}, backtrack={"every": 2, "factor": 2.0}, **overrides)


def first_weight(trainer: Trainer) -> float:
    return float(next(trainer.model.parameters()).detach().flatten()[0])


def test_backtracking_reloads_the_snapshot_and_lowers_the_learning_rate(tmp_path: Path, crops) -> None:
    trainer = ScriptedLoss(backtracking_config(), tmp_path, progress=False, train_images=crops)
    start = first_weight(trainer)
    trainer.run()
    # Snapshots after steps 2 and 4 (mean losses 1.0 and 0.95); steps 5-6 average 3.0 > 2 x 0.95, so
    # the weights go back to step 4's and the rate falls by 0.8; steps 7-8 (0.8) make a new snapshot
    # (weights at start + 6); steps 9-10 average NaN, so back to it again, the rate now 0.64.
    assert first_weight(trainer) == pytest.approx(start + 6)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.64e-3)
    reloads = [r for r in records(tmp_path) if r.get("backtrack") == "reloaded"]
    assert [(r["step"], r["snapshot_loss"], r["lr_scale"]) for r in reloads] == [
        (6, pytest.approx(0.95), pytest.approx(0.8)), (8 + 2, pytest.approx(0.8), pytest.approx(0.64))]
    assert reloads[0]["window_loss"] == 3.0 and math.isnan(reloads[1]["window_loss"])
    assert trainer._snapshot["loss"] == pytest.approx(0.8)


def test_backtracking_state_survives_a_resume(tmp_path: Path, crops, monkeypatch) -> None:
    config = backtracking_config(checkpoint_every=1)
    straight = ScriptedLoss(config, tmp_path / "straight", progress=False, train_images=crops)
    straight.run()
    original_save = Trainer.save_checkpoint

    def save_then_crash(self):
        path = original_save(self)
        if self.step == 5:
            raise Interrupted
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        ScriptedLoss(config, tmp_path / "resumed", progress=False, train_images=crops).run()
    monkeypatch.setattr(Trainer, "save_checkpoint", original_save)
    resumed = ScriptedLoss(config, tmp_path / "resumed", resume=True, progress=False, train_images=crops)
    assert resumed._window_steps == 1 and resumed._snapshot["loss"] == pytest.approx(0.95)
    resumed.run()
    def without_times(run_dir: Path) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in records(run_dir)]

    assert without_times(tmp_path / "resumed") == without_times(tmp_path / "straight")
    assert first_weight(resumed) == first_weight(straight)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_checkpoints_without_backtracking_hold_no_backtracking_state(tmp_path: Path, crops) -> None:
    Trainer(tiny_config(steps=2, eval=None), tmp_path, progress=False, train_images=crops).run()
    state = read_checkpoint(tmp_path / CHECKPOINT)
    assert set(state) == {"step", "seconds", "best_psnr", "lowest_loss", "model", "optimizer", "scheduler", "rng"}


def test_until_stops_and_exports_and_a_resume_finishes_the_run(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=5, eval=None, checkpoint_every=10)
    weights = Trainer(config, tmp_path, progress=False, train_images=crops, until=3).run()
    spec = yaml.safe_load(weights.with_suffix(".yaml").read_text())
    assert spec["trained_steps"] == 3 and read_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    Trainer(config, tmp_path, resume=True, progress=False, train_images=crops).run()
    assert [step for step, _ in train_losses(tmp_path)] == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="until must be a positive step"):
        Trainer(config, tmp_path / "zero", progress=False, train_images=crops, until=0)


def test_time_limit_stops_after_the_first_step_past_it_and_exports(tmp_path: Path, crops, monkeypatch) -> None:
    clock = iter(range(0, 10_000, 25))
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: float(next(clock)))
    config = tiny_config(steps=50, eval=None, checkpoint_every=100)
    weights = Trainer(config, tmp_path, progress=False, train_images=crops, time_limit=1.0).run()
    # The deadline is 60 s after the start (t = 0); the clock reads 25 s more at every step's check.
    assert [step for step, _ in train_losses(tmp_path)] == [1, 2, 3]
    assert yaml.safe_load(weights.with_suffix(".yaml").read_text())["trained_steps"] == 3
    assert read_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    with pytest.raises(ConfigError, match="time_limit must be a positive number"):
        Trainer(config, tmp_path / "b", progress=False, train_images=crops, time_limit=0)


def test_device_is_checked_and_cpu_trains_as_the_default(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=2, eval=None)
    Trainer(config, tmp_path / "default", progress=False, train_images=crops).run()
    explicit = Trainer(config, tmp_path / "cpu", progress=False, train_images=crops, device="cpu")
    assert explicit.device == torch.device("cpu")
    explicit.run()
    assert train_losses(tmp_path / "cpu") == train_losses(tmp_path / "default")
    with pytest.raises(ConfigError, match="unknown device"):
        Trainer(config, tmp_path / "a", progress=False, train_images=crops, device="gpu0")
    with pytest.raises(ConfigError, match="runs on cpu or cuda"):
        Trainer(config, tmp_path / "b", progress=False, train_images=crops, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Trainer(config, tmp_path / "c", progress=False, train_images=crops, device="cuda")


def test_a_copied_run_resumes_where_init_weights_lie_in_another_folder(tmp_path: Path, crops) -> None:
    source = Trainer(tiny_config(steps=1, eval=None), tmp_path / "source", progress=False, train_images=crops).run()
    moved = tmp_path / "elsewhere" / "model.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(source.read_bytes())
    config = tiny_config(steps=3, eval=None, checkpoint_every=1, init_weights=str(source))
    Trainer(config, tmp_path / "run", progress=False, train_images=crops, until=1).run()
    resumed = Trainer(tiny_config(steps=3, eval=None, checkpoint_every=1, init_weights=str(moved)), tmp_path / "run",
                      resume=True, progress=False, train_images=crops)
    assert resumed.step == 1
    with pytest.raises(ConfigError, match="the config differs"):
        Trainer(tiny_config(steps=4, eval=None, init_weights=str(moved)), tmp_path / "run", resume=True,
                progress=False, train_images=crops)


def torchrun_train(config_path: Path, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    """``converge train`` in two gloo processes under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "converge", "train", str(config_path), "--run-dir", str(run_dir), "--threads", "1", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_two_processes_train_like_one_and_resume(tmp_path: Path) -> None:
    """DistributedDataParallel over two processes, each with half of every batch of 4, follows the
    single-process run (no BatchNorm), through a stop on a time limit (which both processes must
    agree on) and a resume."""
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {"seed": 5, "steps": 4, "log_every": 1, "checkpoint_every": 2, "loss": "noise_mse",
             "model": {"name": "dncnn", "params": {"depth": 3, "features": 4, "batchnorm": False}},
             "data": {"train_set": "train400", "patch_size": 16, "patches_per_image": 1, "batch_size": 4,
                      "task": "denoise", "task_params": {"sigma": 25}},
             "eval": {"bench": "set12", "task": "denoise", "task_params": {"sigma": 25}, "every": 2, "max_images": 1}}
        )
    )
    train(config_path, tmp_path / "one", threads=1)
    first = torchrun_train(config_path, tmp_path / "two", "--time-limit", "0.0001")
    assert first.returncode == 0, first.stderr
    assert read_checkpoint(tmp_path / "two" / CHECKPOINT)["step"] == 1
    second = torchrun_train(config_path, tmp_path / "two", "--resume")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("trained weights: ") == 1

    # The stop at step 1 also evaluated there; the one-process run evaluates at steps 2 and 4 only.
    one = records(tmp_path / "one")
    two = [record for record in records(tmp_path / "two") if not ("eval_psnr" in record and record["step"] == 1)]
    assert [sorted(r) for r in one] == [sorted(r) for r in two]
    for single, parallel in zip(one, two, strict=True):
        for key in ("loss", "eval_psnr"):
            if key in single:
                assert parallel[key] == pytest.approx(single[key], rel=1e-5, abs=1e-4), (single, parallel)
    single_model = load_weights(tmp_path / "one" / "model.safetensors").state_dict()
    parallel_model = load_weights(tmp_path / "two" / "model.safetensors").state_dict()
    for name, tensor in single_model.items():
        assert torch.allclose(parallel_model[name], tensor, atol=1e-6), name
    state = read_checkpoint(tmp_path / "two" / CHECKPOINT)
    assert state["step"] == 4 and len(state["worker_rng"]) == 2


def test_torchrun_needs_a_batch_that_splits_evenly(tmp_path: Path, crops, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="multiple of --nproc-per-node"):
        Trainer(tiny_config(), tmp_path, progress=False, train_images=crops)
    assert not (tmp_path / "config.yaml").exists()


MTDEQ_PRIOR = {"channels": 1, "widths": [4, 8, 8, 8], "blocks": 1}


def multitask_config(**overrides) -> object:
    return tiny_config(
        model={"name": "mtdeq", "params": {**MTDEQ_PRIOR, "max_iter": 4}},
        loss="mse",
        data={"train_set": "train400", "patch_size": 12, "patches_per_image": 10, "batch_size": 10,
              "multitask": {"sr_factors": [1, 2, 3], "blur_sigmas": [0.8], "blur_size": 9,
                            "drop_probabilities": [0.5], "noise_sigmas": [0, 10], "per_crop": 5}},
        eval={"bench": "set12", "task": "deblur", "task_params": {"blur_sigma": 1.6, "size": 9}, "every": 2,
              "max_images": 1},
        **overrides,
    )


def test_multitask_batches_hold_whole_groups_of_one_crop_and_record_noise_levels(tmp_path: Path, crops) -> None:
    trainer = Trainer(multitask_config(), tmp_path, progress=False, train_images=crops)
    assert trainer.steps_per_epoch == 4 and trainer.dataset.per_crop == 5
    for epoch in (0, 1):
        batches = trainer._epoch_batches(epoch, 0, 10)
        assert sorted(index for batch in batches for index in batch) == list(range(40))
        for batch in batches:
            groups = [index // 5 for index in batch]
            assert all(groups.count(group) == 5 for group in groups)
    trainer.dataset.set_epoch(0)
    y, x, operator, level = collate_patches([trainer.dataset[index] for index in batches[0]])
    assert set(level.tolist()) <= {0.0, 10.0}
    for start in (0, 5):
        assert all(torch.equal(x[start], x[start + offset]) for offset in range(5))
    assert len(operator) == 10 and y.shape == x.shape == (10, 1, 12, 12)


def test_a_multitask_mtdeq_run_starts_from_unet_weights_and_trains(tmp_path: Path, crops) -> None:
    torch.manual_seed(5)
    gauss = build_model("unet", MTDEQ_PRIOR)
    path = save_weights(gauss, {"task": "denoise"}, tmp_path / "gauss.safetensors")
    trainer = Trainer(multitask_config(steps=2, init_weights=str(path)), tmp_path / "run", progress=False,
                      train_images=crops)
    for name, tensor in gauss.state_dict().items():
        assert torch.equal(trainer.model.prior.state_dict()[name], tensor), name
    weights = trainer.run()
    assert all(math.isfinite(loss) for _, loss in train_losses(tmp_path / "run"))
    assert [r["step"] for r in records(tmp_path / "run") if "eval_psnr" in r] == [2]
    assert not torch.equal(trainer.model.prior.tail.weight, gauss.tail.weight)
    saved = yaml.safe_load(weights.with_suffix(".yaml").read_text())
    assert saved["task"] is None and saved["multitask"]["sr_factors"] == [1, 2, 3]
    assert load_weights(weights).config == trainer.model.config


def test_a_damaged_checkpoint_is_refused_with_one_line(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=2, eval=None)
    Trainer(config, tmp_path / "run", progress=False, train_images=crops).run()
    checkpoint = tmp_path / "run" / CHECKPOINT
    intact = checkpoint.read_bytes()
    state = read_checkpoint(checkpoint)
    flipped = bytearray(intact)
    flipped[len(flipped) // 2] ^= 0x04
    damaged = {
        "a flipped bit": bytes(flipped),
        "a truncated file": intact[: len(intact) // 2],
        "an empty file": b"",
        "random bytes": bytes(range(256)) * 8,
    }
    for what, data in damaged.items():
        checkpoint.write_bytes(data)
        with pytest.raises(ConfigError, match="cannot resume from") as caught:
            Trainer(config, tmp_path / "run", resume=True, progress=False, train_images=crops)
        assert "\n" not in str(caught.value), what
    for tensor in state["model"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    trainer_module.write_checkpoint(checkpoint, state)
    with pytest.raises(ConfigError, match="NaN or infinite weights"):
        Trainer(config, tmp_path / "run", resume=True, progress=False, train_images=crops)


def test_resume_needs_a_checkpoint_and_cleans_stale_temporaries(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=2, eval=None)
    with pytest.raises(ConfigError, match="has no checkpoint.pt to resume from"):
        Trainer(config, tmp_path / "empty", resume=True, progress=False, train_images=crops)
    Trainer(config, tmp_path / "run", progress=False, train_images=crops).run()
    stale = tmp_path / "run" / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half")
    with (tmp_path / "run" / LOG).open("a") as stream:
        stream.write('{"step": 3, "lo')
    resumed = Trainer(config, tmp_path / "run", resume=True, progress=False, train_images=crops)
    assert resumed.step == 2 and not stale.exists()
    assert all(record["step"] <= 2 for record in records(tmp_path / "run"))


def test_a_diverging_run_stops_without_exporting(tmp_path: Path, crops) -> None:
    config = tiny_config(steps=40, eval=None, max_bad_steps=3, optim={"name": "adam", "lr": 1000.0})
    with pytest.raises(TrainingError, match="training diverged: .* after 3 bad steps"):
        Trainer(config, tmp_path, progress=False, train_images=crops).run()
    assert not (tmp_path / "model.safetensors").exists()
    assert any(record.get("diverged") for record in records(tmp_path))


class NaNOnce(Trainer):
    """Reports one NaN loss among finite ones: one bad step is not a divergence."""

    def _train_step(self, y, x, operator, level) -> dict[str, float]:
        metrics = super()._train_step(y, x, operator, level)
        return {"loss": math.nan} if self.step == 2 else metrics


def test_isolated_bad_steps_do_not_stop_a_run(tmp_path: Path, crops) -> None:
    NaNOnce(tiny_config(steps=5, eval=None, max_bad_steps=2), tmp_path, progress=False, train_images=crops).run()
    assert (tmp_path / "model.safetensors").exists()


def test_channels_last_trains_the_same_model_in_another_memory_order(tmp_path: Path, crops) -> None:
    Trainer(tiny_config(steps=3, eval=None), tmp_path / "plain", progress=False, train_images=crops).run()
    last = Trainer(tiny_config(steps=3, eval=None, channels_last=True), tmp_path / "last", progress=False,
                   train_images=crops)
    weight = last.model.body[2].weight  # a 4-to-4 convolution: the two orders differ
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    last.run()
    losses = {run: [loss for _, loss in train_losses(tmp_path / run)] for run in ("plain", "last")}
    assert losses["last"] == pytest.approx(losses["plain"], rel=1e-4)
    plain_weights, last_weights = (load_weights(tmp_path / run / "model.safetensors") for run in ("plain", "last"))
    for (name, tensor), other in zip(plain_weights.state_dict().items(), last_weights.state_dict().values()):
        assert torch.allclose(tensor, other, atol=1e-5), name
    assert yaml.safe_load((tmp_path / "last" / "model.yaml").read_text())["channels_last"] is True


def test_the_log_holds_peak_memory_and_a_deq_models_forward_iterations(tmp_path: Path, crops) -> None:
    Trainer(tiny_config(steps=2, eval=None), tmp_path / "dncnn", progress=False, train_images=crops).run()
    plain = [r for r in records(tmp_path / "dncnn") if "loss" in r]
    assert all(r["peak_memory_mib"] > 0 and "forward_iterations" not in r for r in plain)
    degrad = {"name": "degrad", "params": {"channels": 1, "features": 4, "depth": 3, "eta_init": 0.1, "max_iter": 4}}
    config = tiny_config(steps=2, eval=None, loss="mse", model=degrad)
    Trainer(config, tmp_path / "degrad", progress=False, train_images=crops).run()
    logged = [r for r in records(tmp_path / "degrad") if "loss" in r]
    assert len(logged) == 2 and all(1 <= r["forward_iterations"] <= 4 for r in logged)
