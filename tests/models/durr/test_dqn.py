
import pytest
import torch
from torch import nn

from converge.errors import ConfigError
from converge.models.durr.dqn import (
    CONTINUE,
    STOP,
    Episode,
    ReplayBuffer,
    continue_rewards,
    exploration_stops,
    q_targets,
    sequence_q_targets,
    state_masks,
    update_target,
)

STATES = 4



def episodes(first: int, count: int) -> Episode:
    """``count`` episodes tagged ``first, first + 1, ...`` in every field."""
    tags = torch.arange(first, first + count, dtype=torch.float32)
    return Episode(
        observations=tags[:, None, None].expand(count, STATES, 3).clone(),
        rewards=tags[:, None].expand(count, STATES - 1) + 0.5,
        transitions=torch.arange(first, first + count) % STATES,
    )


def test_buffer_keeps_fields_together() -> None:
    buffer = ReplayBuffer(capacity=10)
    buffer.push(episodes(0, 4))
    stored = buffer.ordered()
    assert len(buffer) == 4
    assert torch.equal(stored.observations[:, 2, 1], torch.arange(4.0))
    assert torch.equal(stored.rewards[:, 0], torch.arange(4.0) + 0.5)
    assert torch.equal(stored.transitions, torch.arange(4)) and stored.transitions.dtype == torch.long


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3], [5]])
def test_buffer_overwrites_the_oldest_first(chunks: list[int]) -> None:
    buffer = ReplayBuffer(capacity=3)
    first = 0
    for size in chunks:
        buffer.push(episodes(first, size))
        first += size
    assert len(buffer) == 3
    assert torch.equal(buffer.ordered().observations[:, 0, 0], torch.tensor([2.0, 3.0, 4.0]))


def test_seeded_sampling_is_deterministic_and_covers_the_buffer() -> None:
    buffers = [ReplayBuffer(capacity=8, seed=7) for _ in range(2)]
    for buffer in buffers:
        buffer.push(episodes(0, 8))
    first, second = (buffer.sample(200) for buffer in buffers)
    assert torch.equal(first.observations, second.observations)
    assert set(first.observations[:, 0, 0].tolist()) == set(range(8))
    assert torch.equal(first.rewards[:, 1], first.observations[:, 0, 0] + 0.5)
    other = ReplayBuffer(capacity=8, seed=8)
    other.push(episodes(0, 8))
    assert not torch.equal(other.sample(200).observations, first.observations)


def test_buffer_errors() -> None:
    with pytest.raises(ConfigError):
        ReplayBuffer(capacity=0)
    buffer = ReplayBuffer(capacity=4)
    with pytest.raises(ConfigError, match="empty"):
        buffer.sample(1)
    buffer.push(episodes(0, 2))
    with pytest.raises(ConfigError, match="observations"):
        buffer.push(episodes(0, 2)._replace(observations=torch.zeros(2, STATES, 5)))
    with pytest.raises(ConfigError, match="one reward fewer"):
        buffer.push(episodes(0, 2)._replace(rewards=torch.zeros(2, STATES)))
    with pytest.raises(ConfigError, match="same batch size"):
        buffer.push(episodes(0, 2)._replace(transitions=torch.zeros(3, dtype=torch.long)))


def test_buffer_state_round_trip_continues_identically() -> None:
    original = ReplayBuffer(capacity=5, seed=3)
    original.push(episodes(0, 7))
    original.sample(4)
    restored = ReplayBuffer(capacity=5, seed=99)
    restored.load_state_dict(original.state_dict())
    assert len(restored) == 5 and torch.equal(restored.ordered().observations, original.ordered().observations)
    assert torch.equal(restored.sample(20).observations, original.sample(20).observations)
    restored.push(episodes(10, 2))
    original.push(episodes(10, 2))
    assert torch.equal(restored.ordered().observations, original.ordered().observations)
    empty = ReplayBuffer(capacity=5)
    empty.load_state_dict(ReplayBuffer(capacity=5).state_dict())
    assert len(empty) == 0
    with pytest.raises(ConfigError, match="replay capacity"):
        ReplayBuffer(capacity=6).load_state_dict(original.state_dict())
    transition_era = {**original.state_dict(), "storage": {"state": torch.zeros(5, 3), "done": torch.zeros(5)}}
    with pytest.raises(ConfigError, match="not episodes"):
        ReplayBuffer(capacity=5).load_state_dict(transition_era)


def test_q_targets_match_a_hand_computation() -> None:
    rewards = torch.tensor([0.5, -1.0, 0.0, 2.0])
    next_q = torch.tensor([[1.0, 3.0], [4.0, -2.0], [0.5, 0.25], [7.0, 9.0]])
    expected = torch.tensor([0.5 + 0.9 * 3.0, -1.0 + 0.9 * 4.0, 0.9 * 0.5, 2.0 + 0.9 * 9.0])
    assert torch.allclose(q_targets(rewards, next_q, 0.9), expected)
    with pytest.raises(ConfigError):
        q_targets(rewards, next_q, 1.5)


def test_double_q_targets_value_the_online_choice_with_the_target_network() -> None:
    rewards = torch.tensor([0.5, -1.0, 0.0])
    next_q_target = torch.tensor([[1.0, 3.0], [4.0, -2.0], [0.5, 0.25]])
    next_q_online = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -3.0]])
    expected = torch.tensor([0.5 + 0.9 * 1.0, -1.0 + 0.9 * -2.0, 0.9 * 0.5])
    double = q_targets(rewards, next_q_target, 0.9, next_q_online)
    assert torch.allclose(double, expected)
    assert torch.all(double <= q_targets(rewards, next_q_target, 0.9))
    # When both networks agree, Double DQN's target is the plain one.
    assert torch.allclose(q_targets(rewards, next_q_target, 0.9, next_q_target), q_targets(rewards, next_q_target, 0.9))


def test_sequence_targets_stop_at_zero_and_bootstrap_every_continue_even_at_the_cap() -> None:
    # Two episodes over S = 4 states: one ran to the cap (3 transitions), one revealed 1 transition.
    batch = Episode(
        observations=torch.zeros(2, 4, 3),
        rewards=torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 0.0]]),
        transitions=torch.tensor([3, 1]),
    )
    next_q = torch.tensor([[[0.0, 9.0], [0.1, 4.0], [0.2, -3.0], [0.0, 6.0]],
                           [[0.0, 9.0], [0.3, -0.5], [0.0, 0.0], [0.0, 0.0]]])
    targets = sequence_q_targets(batch, next_q, gamma=0.5)
    assert targets.shape == (2, 4, 2)
    assert torch.equal(targets[..., STOP], torch.zeros(2, 4))
    # The cap truncates: the last transition bootstraps from the state it reached (0.5 * 6).
    assert torch.allclose(targets[0, :3, CONTINUE], torch.tensor([1.0 + 0.5 * 4.0, 2.0 + 0.5 * 0.2, -1.0 + 0.5 * 6.0]))
    assert torch.allclose(targets[1, 0, CONTINUE], torch.tensor(0.5 + 0.5 * 0.3))
    stop_known, continue_known = state_masks(batch.transitions, 4)
    assert stop_known.tolist() == [[True] * 4, [True, True, False, False]]
    assert continue_known.tolist() == [[True] * 3, [True, False, False]]


def test_exploration_draws_the_stopping_time_uniformly() -> None:
    generator = torch.Generator().manual_seed(0)
    assert exploration_stops(100, 0.0, 1, 30, generator).tolist() == [-1] * 100
    stops = exploration_stops(6000, 1.0, 1, 30, torch.Generator().manual_seed(0))
    assert set(stops.tolist()) == set(range(1, 31))
    # Half the exploratory episodes reach the second half of the loops (uniform actions: 2 ** -15).
    assert 0.45 < (stops > 15).float().mean() < 0.55
    assert torch.equal(stops, exploration_stops(6000, 1.0, 1, 30, torch.Generator().manual_seed(0)))
    mixed = exploration_stops(4000, 0.25, 0, 5, torch.Generator().manual_seed(1))
    assert 0.7 < (mixed == -1).float().mean() < 0.8 and int(mixed.max()) <= 5
    with pytest.raises(ConfigError):
        exploration_stops(4, 1.5, 1, 3)
    with pytest.raises(ConfigError):
        exploration_stops(4, 0.5, 4, 3)


def test_rewards_favour_continuing_exactly_when_the_loss_drops() -> None:
    before = torch.tensor([1.0, 1.0, 0.5])
    after = torch.tensor([0.5, 1.5, 0.5])
    assert torch.allclose(continue_rewards(before, after, lam=2.0), torch.tensor([1.0, -1.0, 0.0]))


def test_psnr_rewards_are_the_decibels_gained_at_any_loss_scale() -> None:
    before = torch.tensor([1e-2, 1e-4, 1e-3])
    after = torch.tensor([5e-3, 5e-5, 2e-3])
    rewards = continue_rewards(before, after, lam=2.0, reward="psnr")
    gained = 2.0 * 10.0 * torch.log10(torch.tensor(2.0))
    assert torch.allclose(rewards, torch.stack([gained, gained, -gained]))


def test_an_unknown_reward_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown reward"):
        continue_rewards(torch.ones(1), torch.ones(1), lam=1.0, reward="ssim")


def test_update_target_copies_or_blends() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    start = target.weight.detach().clone()
    update_target(target, online, tau=0.25)
    assert torch.allclose(target.weight, 0.75 * start + 0.25 * online.weight)
    update_target(target, online)
    assert torch.equal(target.weight, online.weight) and torch.equal(target.bias, online.bias)
    with pytest.raises(ConfigError):
        update_target(target, online, tau=0.0)
