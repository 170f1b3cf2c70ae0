"""DURR's stage-2 trainer: deep Q-learning of the policy unit with the restoration unit frozen."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from converge.data.patches import collate_patches
from converge.data.registry import load_images
from converge.data.seeding import seed_everything
from converge.errors import ConfigError
from converge.models import build_model
from converge.models.durr import CONTINUE, DURR, POLICY_TILE, STOP, PolicyUnit
from converge.models.durr.dqn import Episode, exploration_stops, update_target
from converge.models.durr.training import PolicyTrainer, read_observations, td_loss
from converge.train.config import config_from_dict
from converge.train.registry import register_trainer, trainer_class, trainer_kinds
from converge.train.trainer import CHECKPOINT, LOG, Trainer, read_checkpoint, train
from converge.zoo import load_weights, save_weights

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


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def test_the_policy_trainer_refuses_to_run_under_torchrun(tmp_path: Path, crops, stage_one: Path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="without torchrun"):
        PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)


def test_the_policy_trainer_registers_as_dqn_beside_the_supervised_trainer() -> None:
    assert trainer_class("dqn") is PolicyTrainer and PolicyTrainer.kind == "dqn"
    assert trainer_class("supervised") is Trainer and Trainer.kind == "supervised"
    assert {"supervised", "dqn"} <= set(trainer_kinds())
    with pytest.raises(ConfigError, match="unknown trainer 'reinforce': choose one of .*dqn.*supervised"):
        trainer_class("reinforce")


def test_a_kind_taken_by_another_class_is_refused() -> None:
    class Impostor(Trainer):
        pass

    with pytest.raises(ConfigError, match="'dqn' is already registered"):
        register_trainer("dqn")(Impostor)
    assert trainer_class("dqn") is PolicyTrainer


def test_a_fresh_process_finds_the_dqn_trainer_in_the_durr_package() -> None:
    """Nothing imports converge.models.durr.training before the first lookup of ``dqn``."""
    code = (
        "import sys\n"
        "from converge.train import trainer_class\n"
        "assert 'converge.models.durr.training' not in sys.modules\n"
        "print(trainer_class('dqn').__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "converge.models.durr.training"


def seeded_durr(seed: int, **params) -> DURR:
    """The DURR a run with ``seed`` builds before it loads anything."""
    seed_everything(seed)
    return build_model("durr", {**MODEL["params"], **params})


def test_only_the_lstm_and_head_learn_and_the_export_is_the_whole_durr(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    start = {**seeded_durr(2).state_dict(), **{f"unit.{name}": value for name, value in
                                                load_weights(stage_one).unit.state_dict().items()}}
    learnt = ("policy.lstm.", "policy.head.")
    exported = load_weights(trainer.run())
    assert isinstance(exported, DURR)
    for name, value in start.items():
        if not name.startswith((*learnt, "policy.feature_")):
            assert torch.equal(exported.state_dict()[name], value), name
    assert all(not torch.equal(exported.state_dict()[name], start[name]) for name in start if name.startswith(learnt))
    assert torch.equal(exported.policy.feature_std, trainer.model.policy.feature_std)
    assert not torch.equal(exported.policy.feature_std, torch.ones(8))
    logged = [record for record in records(tmp_path) if "loss" in record]
    assert [record["step"] for record in logged] == [1, 2, 3, 4, 5]
    assert logged[0]["epsilon"] == 1.0 and logged[-1]["epsilon"] == pytest.approx(0.1)
    assert all(0 <= record["episode_loops"] <= MAX_LOOPS for record in logged)
    assert trainer.updates == 10 and len(trainer.replay) == 20
    _, info = exported.restore(torch.rand(3, 1, 16, 16))
    assert all(1 <= loops <= MAX_LOOPS for loops in info.iterations)


def test_features_are_standardised_over_the_calibration_trajectories(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    durr = trainer.model
    indices = torch.linspace(0, len(trainer.dataset) - 1, len(trainer.dataset)).long()
    estimate = torch.stack([trainer.dataset[int(index)][0] for index in indices])
    features = []
    with torch.no_grad():
        for _ in range(MAX_LOOPS + 1):
            features.append(durr.policy.features(estimate)[:, 0])
            estimate = durr.unit_step(estimate)
    features = torch.cat(features)
    live = durr.policy.feature_std > 1e-3
    assert bool(live.any())
    assert torch.allclose(features.mean(dim=0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(features.std(dim=0, unbiased=False)[live], torch.ones(int(live.sum())), atol=1e-4)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("train_encoder", [False, True])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, crops, stage_one, monkeypatch, train_encoder):
    config = policy_config(stage_one, dqn={"train_encoder": train_encoder})
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

    def of_the_run(record: dict) -> dict:  # without what the process measured of itself: time and memory
        return {key: value for key, value in record.items() if key not in ("seconds", "peak_memory_mib")}

    straight_records = [of_the_run(record) for record in records(tmp_path / "straight")]
    assert [of_the_run(record) for record in records(tmp_path / "resumed")] == straight_records
    straight = read_checkpoint(tmp_path / "straight" / CHECKPOINT)
    again = read_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    for part in ("model", "target"):
        for name, tensor in straight[part].items():
            assert torch.equal(tensor, again[part][name]), (part, name)
    for name, tensor in straight["replay"]["storage"].items():
        assert torch.equal(tensor, again["replay"]["storage"][name]), name
    assert torch.equal(straight["exploration"], again["exploration"])


def batch_of(trainer: PolicyTrainer) -> tuple[torch.Tensor, torch.Tensor]:
    y, x, _, _ = collate_patches([trainer.dataset[index] for index in range(4)])
    return y, x


def test_with_gamma_zero_continue_is_fitted_to_the_reward_and_stop_to_zero(tmp_path: Path, crops, stage_one) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.0}), tmp_path, progress=False,
                            train_images=crops)
    trainer.play_episodes(*batch_of(trainer), epsilon=0.5)
    batch = trainer.replay.ordered()
    policy = trainer.model.policy
    q = policy.q_sequence(batch.observations)
    predicted, wanted = [], []
    for episode in range(len(batch.transitions)):
        known = int(batch.transitions[episode])
        predicted += [q[episode, : known + 1, STOP], q[episode, :known, CONTINUE]]
        wanted += [torch.zeros(known + 1), batch.rewards[episode, :known]]
    expected = F.smooth_l1_loss(torch.cat(predicted), torch.cat(wanted))
    assert torch.allclose(trainer.td_loss(batch), expected)


def test_targets_bootstrap_from_the_target_network_through_the_cap(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.5}), tmp_path, progress=False,
                            train_images=crops)
    force(trainer, CONTINUE)
    trainer.play_episodes(*batch_of(trainer), epsilon=0.0)
    batch = trainer.replay.ordered()
    assert batch.transitions.tolist() == [MAX_LOOPS] * 4
    with torch.no_grad():
        trainer.target.head.weight.zero_()
        trainer.target.head.bias.copy_(torch.tensor([1.0, 3.0]))
        trainer.model.policy.head.weight.zero_()
        trainer.model.policy.head.bias.zero_()
    # Every CONTINUE target, the one into the cap included, is r + 0.5 * 3; every STOP target is 0.
    wanted = torch.cat([torch.zeros(4 * (MAX_LOOPS + 1)), batch.rewards.flatten() + 1.5])
    assert torch.allclose(trainer.td_loss(batch), F.smooth_l1_loss(torch.zeros_like(wanted), wanted))


def test_double_dqn_values_the_online_choice_with_the_target_network(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.5, "double": True}), tmp_path, progress=False,
                            train_images=crops)
    force(trainer, CONTINUE)
    trainer.play_episodes(*batch_of(trainer), epsilon=0.0)
    batch = trainer.replay.ordered()
    with torch.no_grad():
        trainer.target.head.weight.zero_()
        trainer.target.head.bias.copy_(torch.tensor([1.0, 3.0]))
        trainer.model.policy.head.weight.zero_()
        trainer.model.policy.head.bias.copy_(torch.tensor([0.5, 0.0]))
    # The online network prefers STOP everywhere, so every CONTINUE target is r + 0.5 * Q_target(STOP) = r + 0.5.
    predicted = torch.cat([torch.full((4 * (MAX_LOOPS + 1),), 0.5), torch.zeros(4 * MAX_LOOPS)])
    wanted = torch.cat([torch.zeros(4 * (MAX_LOOPS + 1)), batch.rewards.flatten() + 0.5])
    assert torch.allclose(trainer.td_loss(batch), F.smooth_l1_loss(predicted, wanted))


def test_with_a_learning_encoder_the_replay_keeps_the_estimates_and_reads_them_anew(tmp_path, crops, stage_one) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"train_encoder": True}), tmp_path, progress=False,
                            train_images=crops)
    y, x = batch_of(trainer)
    force(trainer, CONTINUE)
    trainer.play_episodes(y, x, epsilon=0.0)
    batch = trainer.replay.ordered()
    assert batch.observations.shape == (4, MAX_LOOPS + 1, *y.shape[1:]) and batch.observations.dtype == torch.float16
    trajectory = [y]
    with torch.no_grad():
        for _ in range(MAX_LOOPS):
            trajectory.append(trainer.model.unit_step(trajectory[-1]))
    assert torch.allclose(batch.observations.float(), torch.stack(trajectory, dim=1), atol=1e-3)
    policy = trainer.model.policy
    with torch.no_grad():
        policy.encoder[0][0].weight.mul_(2.0)  # as if the encoder had learnt since the episodes were played
        read = read_observations(policy, batch)
        for n in range(MAX_LOOPS + 1):
            assert torch.allclose(read[:, n], policy.features(batch.observations[:, n].float())[:, 0], atol=1e-5)


@pytest.mark.parametrize("train_encoder", [False, True])
def test_updates_move_the_encoder_only_when_it_learns(tmp_path, crops, stage_one, train_encoder: bool) -> None:
    config = policy_config(stage_one, dqn={"train_encoder": train_encoder, "batch_size": 4})
    trainer = PolicyTrainer(config, tmp_path, progress=False, train_images=crops)
    trainer.play_episodes(*batch_of(trainer), epsilon=1.0)
    policy = trainer.model.policy
    encoder, lstm = copy.deepcopy(policy.encoder.state_dict()), copy.deepcopy(policy.lstm.state_dict())
    trainer._update()
    assert not all(torch.equal(value, policy.lstm.state_dict()[name]) for name, value in lstm.items())
    moved = not all(torch.equal(value, policy.encoder.state_dict()[name]) for name, value in encoder.items())
    assert moved == train_encoder


def test_replay_reads_the_current_weights_not_the_hidden_state_of_play(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one, dqn={"gamma": 0.0}), tmp_path, progress=False,
                            train_images=crops)
    trainer.play_episodes(*batch_of(trainer), epsilon=1.0)
    batch = trainer.replay.ordered()
    policy = trainer.model.policy
    with torch.no_grad():
        policy.lstm.weight_hh.mul_(3.0)  # as if the policy had learnt since the episode was played
    first = int(batch.transitions[0])
    estimate, hidden = batch_of(trainer)[0][:1], None
    with torch.no_grad():
        for n in range(first + 1):
            q, hidden = policy(estimate, hidden)
            assert torch.allclose(batch.observations[0, n], policy.features(estimate)[0, 0], atol=1e-5)
            assert torch.allclose(policy.q_sequence(batch.observations[:1, : n + 1])[0, n], q[0], atol=1e-5)
            estimate = trainer.model.unit_step(estimate)


def force(trainer: PolicyTrainer, action: int) -> None:
    with torch.no_grad():
        trainer.model.policy.head.weight.zero_()
        trainer.model.policy.head.bias.zero_()
        trainer.model.policy.head.bias[action] = 1.0


def test_greedy_episodes_follow_the_policy_and_look_one_step_past_a_stop(tmp_path: Path, crops, stage_one) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    y, x = batch_of(trainer)
    trajectory, gains = [y], []
    with torch.no_grad():
        for _ in range(MAX_LOOPS):
            trajectory.append(trainer.model.unit_step(trajectory[-1]))
            before, after = ((state - x).square().flatten(1).mean(1) for state in trajectory[-2:])
            gains.append(100.0 * (before - after))
        features = torch.stack([trainer.model.policy.features(state)[:, 0] for state in trajectory], dim=1)

    force(trainer, CONTINUE)
    loops, returns = trainer.play_episodes(y, x, epsilon=0.0)
    played = trainer.replay.ordered()
    assert loops.tolist() == [MAX_LOOPS] * 4 and played.transitions.tolist() == [MAX_LOOPS] * 4
    assert torch.allclose(played.observations, features, atol=1e-5)
    assert torch.allclose(played.rewards, torch.stack(gains, dim=1), atol=1e-4)
    assert torch.allclose(returns, sum(gains), atol=1e-4)

    force(trainer, STOP)
    loops, returns = trainer.play_episodes(y, x, epsilon=0.0)
    stopped = trainer.replay.ordered()
    assert loops.tolist() == [1] * 4 and stopped.transitions[-4:].tolist() == [2] * 4
    assert torch.allclose(stopped.observations[-4:, :3], features[:, :3], atol=1e-5)
    assert torch.allclose(stopped.rewards[-4:, :2], torch.stack(gains[:2], dim=1), atol=1e-4)
    assert torch.allclose(returns, gains[0], atol=1e-4)


def test_exploratory_episodes_stop_at_their_drawn_loop_count(tmp_path: Path, crops, stage_one: Path) -> None:
    trainer = PolicyTrainer(policy_config(stage_one), tmp_path, progress=False, train_images=crops)
    force(trainer, CONTINUE)
    drawn = exploration_stops(4, 1.0, 1, MAX_LOOPS, torch.Generator().set_state(trainer.exploration.get_state()))
    loops, _ = trainer.play_episodes(*batch_of(trainer), epsilon=1.0)
    assert torch.equal(loops, drawn)
    assert trainer.replay.ordered().transitions.tolist() == [min(n + 1, MAX_LOOPS) for n in drawn.tolist()]


@pytest.mark.parametrize("double", [False, True])
def test_updates_learn_a_stopping_time_that_needs_the_lstm_memory(double: bool) -> None:
    # Features show the level at every loop but never the loop count: stopping right needs the LSTM to count.
    torch.manual_seed(0)
    cap, best = 8, torch.tensor([2, 5])
    policy = PolicyUnit(1, features=1, hidden=8)
    target = copy.deepcopy(policy).requires_grad_(False)
    level = torch.arange(32) % 2
    features = torch.zeros(32, cap + 1, 2)
    features[..., 0] = 2.0 * level[:, None] - 1.0
    rewards = torch.where(torch.arange(cap)[None, :] < best[level][:, None], 1.0, -1.0)
    episodes = Episode(features, rewards, torch.full((32,), cap))
    optimizer = torch.optim.RMSprop([*policy.lstm.parameters(), *policy.head.parameters()], lr=1e-2)
    for update in range(300):
        loss = td_loss(policy, target, episodes, gamma=0.5, double=double)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update % 25 == 24:
            update_target(target, policy)
    with torch.no_grad():
        q = policy.q_sequence(features[:2])
    wants_stop = q[..., STOP] > q[..., CONTINUE]
    wants_stop[:, 0] = False
    assert wants_stop.float().argmax(dim=1).tolist() == best.tolist()


def test_stage_two_takes_the_unit_from_stage_one_and_the_policy_from_its_seed(tmp_path: Path, crops, stage_one) -> None:
    first = load_weights(stage_one)
    same_seed = PolicyTrainer(policy_config(stage_one, seed=1), tmp_path / "a", progress=False, train_images=crops)
    for name, value in first.state_dict().items():
        if not name.startswith("policy.feature_"):
            assert torch.equal(same_seed.model.state_dict()[name], value), name
    model = {**MODEL, "params": {**MODEL["params"], "policy_block_statistics": True}}
    blocks = PolicyTrainer(policy_config(stage_one, model=model), tmp_path / "b", progress=False, train_images=crops)
    assert blocks.model.policy.lstm.input_size == 2 * 4 + 4
    unit = blocks.model.unit.state_dict()
    assert all(torch.equal(unit[name], value) for name, value in first.unit.state_dict().items())
    assert torch.equal(blocks.model.policy.encoder[0][0].weight, seeded_durr(2).policy.encoder[0][0].weight)


@pytest.mark.parametrize(("params", "message"), [({"features": 5}, "features 4 there, 5 here"),
                                                  ({"dt": 0.5}, "dt 0.25 there, 0.5 here")])
def test_stage_two_refuses_another_restoration_unit(tmp_path: Path, crops, stage_one, params, message) -> None:
    model = {**MODEL, "params": {**MODEL["params"], **params}}
    with pytest.raises(ConfigError, match=message):
        PolicyTrainer(policy_config(stage_one, model=model), tmp_path, progress=False, train_images=crops)


def test_stage_two_refuses_missing_or_foreign_weights(tmp_path: Path, crops) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        PolicyTrainer(policy_config(tmp_path / "none.safetensors"), tmp_path / "a", progress=False, train_images=crops)
    dncnn = save_weights(build_model("dncnn", {"depth": 2, "features": 2}), {}, tmp_path / "dncnn.safetensors")
    with pytest.raises(ConfigError, match="holds a dncnn model, not a DURR"):
        PolicyTrainer(policy_config(dncnn), tmp_path / "b", progress=False, train_images=crops)
    from safetensors.torch import save_file

    broken = tmp_path / "broken.safetensors"
    save_file({"unit.x": torch.zeros(1)}, str(broken), metadata={"model": "durr", "params": "{not json"})
    with pytest.raises(ConfigError, match="unreadable parameter header"):
        PolicyTrainer(policy_config(broken), tmp_path / "c", progress=False, train_images=crops)
    header = {"model": "durr", "params": json.dumps(MODEL["params"])}
    save_file({"unit.x": torch.zeros(1)}, str(broken), metadata=header)
    with pytest.raises(ConfigError, match="does not hold a whole restoration unit"):
        PolicyTrainer(policy_config(broken), tmp_path / "d", progress=False, train_images=crops)


def test_training_patches_must_fit_in_one_policy_tile(tmp_path: Path, crops, stage_one: Path) -> None:
    config = policy_config(stage_one, data={**DATA, "patch_size": POLICY_TILE + 1})
    with pytest.raises(ConfigError, match="one 40-pixel policy tile"):
        PolicyTrainer(config, tmp_path, progress=False, train_images=[torch.rand(1, 64, 64)] * 4)


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
