import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from converge.data.registry import load_images
from converge.errors import ConfigError
from converge.train import trainer as trainer_module
from converge.train.config import config_from_dict
from converge.train.trainer import CHECKPOINT, LOG, Trainer, _lr_factor, train
from converge.zoo import load_weights


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
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
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
    straight_state = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    resumed_state = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
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
