"""DURR's stage-2 trainer: deep Q-learning of the policy unit with the restoration unit frozen."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from converge.data.registry import load_images
from converge.errors import ConfigError
from converge.models.durr import CONTINUE, STOP, DURR
from converge.train.config import config_from_dict
from converge.train.policy import PolicyTrainer
from converge.train.trainer import CHECKPOINT, LOG, Trainer, train
from converge.zoo import load_weights

MAX_LOOPS = 4
MODEL = {
    "name": "durr",
    "params": {"features": 4, "bottom_convs": 1, "policy_features": 4, "policy_hidden": 6,
               "max_loops": MAX_LOOPS, "loop_schedule": [[25, 1], [55, 3]]},
}
DATA = {"train_set": "train400", "patch_size": 16, "patches_per_image": 2, "batch_size": 4, "sigma_range": [25, 55]}


@pytest.fixture(scope="module")
def crops() -> list[torch.Tensor]:
    """Four 32x32 crops of a real image, as (C, H, W) tensors in [0, 1]."""
    _, image = next(iter(load_images("set12")))
    return [image[0, :, top : top + 32, left : left + 32] for top in (40, 120) for left in (60, 150)]


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory: pytest.TempPathFactory, crops) -> Path:
    """Weights of a restoration unit trained for a few steps with the refined policy."""
    config = config_from_dict({"seed": 1, "steps": 3, "model": MODEL, "data": DATA})
    return Trainer(config, tmp_path_factory.mktemp("stage1"), progress=False, train_images=crops).run()


def policy_config(weights: Path, **overrides) -> object:
    dqn = {"replay_capacity": 40, "batch_size": 8, "updates_per_step": 2, "gamma": 0.9, "epsilon_start": 1.0,
           "epsilon_end": 0.1, "epsilon_steps": 4, "target_every": 3, "lam": 100.0}
    raw = {"seed": 2, "steps": 5, "log_every": 1, "checkpoint_every": 2, "trainer": "dqn", "init_weights": str(weights),
           "model": MODEL, "data": DATA, "optim": {"name": "rmsprop", "lr": 1e-3}, "schedule": {"name": "constant"},
           "dqn": {**dqn, **overrides.pop("dqn", {})}, **overrides}
    return config_from_dict(raw)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def test_only_the_policy_learns_and_the_export_is_the_whole_durr(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    start = load_weights(stage_one)
    assert all(torch.equal(trainer.model.state_dict()[name], value) for name, value in start.state_dict().items())
    exported = load_weights(trainer.run())
    assert isinstance(exported, DURR)
    for name, value in start.unit.state_dict().items():
        assert torch.equal(exported.unit.state_dict()[name], value), name
    changed = [name for name, value in start.policy.state_dict().items()
               if not torch.equal(exported.policy.state_dict()[name], value)]
    assert changed
    logged = [record for record in records(tmp_path) if "loss" in record]
    assert [record["step"] for record in logged] == [1, 2, 3, 4, 5]
    assert logged[0]["epsilon"] == 1.0 and logged[-1]["epsilon"] == pytest.approx(0.1)
    assert all(0 <= record["episode_loops"] <= MAX_LOOPS for record in logged)
    assert trainer.updates == 10 and len(trainer.replay) > 0
    _, info = exported.restore(torch.rand(3, 1, 16, 16))
    assert all(1 <= loops <= MAX_LOOPS for loops in info.iterations)


class Interrupted(Exception):
    pass


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path, crops, stage_one: Path, monkeypatch) -> None:
    config = policy_config(stage_one)
    PolicyTrainer(config, tmp_path / "straight", progress=False, train_images=crops).run()
    original_save = PolicyTrainer.save_checkpoint

    def save_then_crash(self):
        path = original_save(self)
        if self.step == 2:
            raise Interrupted
        return path

    monkeypatch.setattr(PolicyTrainer, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        PolicyTrainer(config, tmp_path / "resumed", progress=False, train_images=crops).run()
    monkeypatch.setattr(PolicyTrainer, "save_checkpoint", original_save)
    resumed = PolicyTrainer(config, tmp_path / "resumed", resume=True, progress=False, train_images=crops)
    assert resumed.step == 2 and resumed.updates == 4
    resumed.run()

    without_time = [{k: v for k, v in r.items() if k != "seconds"} for r in records(tmp_path / "straight")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in records(tmp_path / "resumed")] == without_time
    straight = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    again = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    for part in ("model", "target"):
        for name, tensor in straight[part].items():
            assert torch.equal(tensor, again[part][name]), (part, name)
    for name, tensor in straight["replay"]["storage"].items():
        assert torch.equal(tensor, again["replay"]["storage"][name]), name
    assert torch.equal(straight["exploration"], again["exploration"])


def test_with_gamma_zero_the_regression_target_is_the_reward(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.0}), tmp_path, progress=False,
                            train_images=crops)
    y, x, _ = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=4)))
    trainer.play_episodes(y, x, epsilon=0.5)
    batch = trainer.replay.sample(16)
    assert torch.equal(trainer.td_targets(batch), batch.reward)
    policy = trainer.model.policy
    q, _ = policy.step(policy.features(batch.state), tuple(batch.hidden.unbind(1)))
    expected = F.smooth_l1_loss(q.gather(1, batch.action[:, None]).squeeze(1), batch.reward)
    assert torch.allclose(trainer.td_loss(batch), expected)


def test_targets_bootstrap_from_the_target_network(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.5}), tmp_path, progress=False,
                            train_images=crops)
    y, x, _ = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=4)))
    trainer.play_episodes(y, x, epsilon=1.0)
    batch = trainer.replay.ordered()
    with torch.no_grad():
        trainer.target.head.weight.zero_()
        trainer.target.head.bias.copy_(torch.tensor([1.0, 3.0]))
    expected = batch.reward + 0.5 * 3.0 * (1 - batch.done)
    assert torch.allclose(trainer.td_targets(batch), expected)


def force(trainer: PolicyTrainer, action: int) -> None:
    with torch.no_grad():
        trainer.model.policy.head.weight.zero_()
        trainer.model.policy.head.bias.zero_()
        trainer.model.policy.head.bias[action] = 1.0


def test_greedy_episodes_follow_the_policy_within_the_cap(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    y, x, _ = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=4)))
    force(trainer, CONTINUE)
    loops, returns = trainer.play_episodes(y, x, epsilon=0.0)
    assert loops.tolist() == [MAX_LOOPS] * 4
    played = trainer.replay.ordered()
    assert len(played.action) == 4 * MAX_LOOPS and bool((played.action == CONTINUE).all())
    assert played.done.tolist() == [0.0] * 4 * (MAX_LOOPS - 1) + [1.0] * 4
    with torch.no_grad():
        estimate, expected_return = y, torch.zeros(4)
        for n in range(MAX_LOOPS):
            following = trainer.model.unit_step(estimate)
            gain = (estimate - x).square().flatten(1).mean(1) - (following - x).square().flatten(1).mean(1)
            assert torch.allclose(played.reward[4 * n : 4 * n + 4], 100.0 * gain, atol=1e-5)
            assert torch.allclose(played.next_state[4 * n : 4 * n + 4], following, atol=1e-6)
            estimate, expected_return = following, expected_return + 100.0 * gain
    assert torch.allclose(returns, expected_return, atol=1e-5)

    force(trainer, STOP)
    loops, returns = trainer.play_episodes(y, x, epsilon=0.0)
    assert loops.tolist() == [1] * 4
    stopped = trainer.replay.ordered()
    assert stopped.action[-4:].tolist() == [STOP] * 4 and stopped.done[-4:].tolist() == [1.0] * 4
    assert stopped.reward[-4:].tolist() == [0.0] * 4


def test_dqn_needs_a_durr_and_its_own_trainer(tmp_path: Path, crops, stage_one: Path) -> None:
    dncnn = {"name": "dncnn", "params": {"depth": 2, "features": 2}}
    with pytest.raises(ConfigError, match="DURR"):
        PolicyTrainer(policy_config(stage_one, model=dncnn, init_weights=None), tmp_path / "a", progress=False,
                      train_images=crops)
    supervised = config_from_dict({"steps": 1, "model": MODEL, "data": DATA})
    with pytest.raises(ConfigError, match="trainer 'supervised'"):
        PolicyTrainer(supervised, tmp_path / "b", progress=False, train_images=crops)


def test_converge_train_runs_stage_one_then_stage_two_from_its_weights(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    data = {**DATA, "patches_per_image": 1, "batch_size": 8}
    (configs / "stage1.yaml").write_text(yaml.safe_dump({"steps": 1, "model": MODEL, "data": data}))
    (configs / "stage2.yaml").write_text(
        yaml.safe_dump({"steps": 1, "trainer": "dqn", "init_weights": "../runs/stage1/model.safetensors",
                        "model": MODEL, "data": data, "optim": {"name": "rmsprop", "lr": 1e-4},
                        "dqn": {"replay_capacity": 64, "batch_size": 8}})
    )
    first = train(configs / "stage1.yaml", tmp_path / "runs" / "stage1", threads=torch.get_num_threads())
    second = train(configs / "stage2.yaml", tmp_path / "runs" / "stage2", threads=torch.get_num_threads())
    unit_before, after = load_weights(first).unit.state_dict(), load_weights(second)
    assert isinstance(after, DURR)
    assert all(torch.equal(after.unit.state_dict()[name], value) for name, value in unit_before.items())
    assert "episode_loops" in records(tmp_path / "runs" / "stage2")[-1]
