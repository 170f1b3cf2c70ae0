import pytest
import torch
from torch import nn

from converge.errors import ConfigError
from converge.train.dqn import (
    CONTINUE,
    STOP,
    ReplayBuffer,
    Transition,
    epsilon_greedy,
    q_targets,
    step_rewards,
    update_target,
)


def transitions(first: int, count: int) -> Transition:
    """``count`` transitions tagged by their reward ``first, first + 1, ...``."""
    tags = torch.arange(first, first + count, dtype=torch.float32)
    return Transition(
        state=tags[:, None].expand(count, 3),
        hidden=tags[:, None, None].expand(count, 2, 4),
        action=torch.arange(count) % 2,
        reward=tags,
        next_state=tags[:, None].expand(count, 3) + 0.5,
        next_hidden=tags[:, None, None].expand(count, 2, 4) + 0.5,
        done=(torch.arange(count) % 3 == 0).float(),
    )


def test_buffer_keeps_fields_together() -> None:
    buffer = ReplayBuffer(capacity=10)
    buffer.push(transitions(0, 4))
    stored = buffer.ordered()
    assert len(buffer) == 4
    assert torch.equal(stored.reward, torch.arange(4.0))
    assert torch.equal(stored.state[:, 0], stored.reward)
    assert torch.equal(stored.next_hidden[:, 1, 3], stored.reward + 0.5)
    assert stored.action.dtype == torch.long and stored.hidden.shape == (4, 2, 4)


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1], [2, 3], [5]])
def test_buffer_overwrites_the_oldest_first(chunks: list[int]) -> None:
    buffer = ReplayBuffer(capacity=3)
    first = 0
    for size in chunks:
        buffer.push(transitions(first, size))
        first += size
    assert len(buffer) == 3
    assert torch.equal(buffer.ordered().reward, torch.tensor([2.0, 3.0, 4.0]))


def test_seeded_sampling_is_deterministic_and_covers_the_buffer() -> None:
    buffers = [ReplayBuffer(capacity=8, seed=7) for _ in range(2)]
    for buffer in buffers:
        buffer.push(transitions(0, 8))
    first, second = (buffer.sample(200) for buffer in buffers)
    assert torch.equal(first.reward, second.reward)
    assert set(first.reward.tolist()) == set(range(8))
    assert torch.equal(first.state[:, 0], first.reward)
    other = ReplayBuffer(capacity=8, seed=8)
    other.push(transitions(0, 8))
    assert not torch.equal(other.sample(200).reward, first.reward)


def test_buffer_errors() -> None:
    with pytest.raises(ConfigError):
        ReplayBuffer(capacity=0)
    buffer = ReplayBuffer(capacity=4)
    with pytest.raises(ConfigError):
        buffer.sample(1)
    buffer.push(transitions(0, 2))
    bad = transitions(0, 2)._replace(state=torch.zeros(2, 5))
    with pytest.raises(ConfigError):
        buffer.push(bad)


def test_q_targets_match_a_hand_computation() -> None:
    rewards = torch.tensor([0.5, -1.0, 0.0, 2.0])
    next_q = torch.tensor([[1.0, 3.0], [4.0, -2.0], [0.5, 0.25], [7.0, 9.0]])
    done = torch.tensor([0.0, 0.0, 1.0, True])
    gamma = 0.9
    expected = torch.tensor([0.5 + 0.9 * 3.0, -1.0 + 0.9 * 4.0, 0.0, 2.0])
    assert torch.allclose(q_targets(rewards, next_q, done, gamma), expected)
    assert torch.allclose(q_targets(rewards, next_q, done.bool(), gamma), expected)
    with pytest.raises(ConfigError):
        q_targets(rewards, next_q, done, 1.5)


def test_epsilon_zero_is_greedy_and_one_is_uniform() -> None:
    q = torch.tensor([[0.0, 1.0], [2.0, -1.0]]).repeat(2000, 1)
    greedy = q.argmax(dim=1)
    assert torch.equal(epsilon_greedy(q, 0.0, torch.Generator().manual_seed(0)), greedy)
    explored = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0))
    assert 0.45 < (explored == greedy).float().mean() < 0.55
    repeat = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(explored, repeat)
    with pytest.raises(ConfigError):
        epsilon_greedy(q, -0.1)


def test_rewards_favour_continuing_exactly_when_the_loss_drops() -> None:
    before = torch.tensor([1.0, 1.0, 0.5])
    after = torch.tensor([0.5, 1.5, 0.5])
    rewards = step_rewards(before, after, lam=2.0)
    assert torch.equal(rewards[:, STOP], torch.zeros(3))
    assert torch.allclose(rewards[:, CONTINUE], torch.tensor([1.0, -1.0, 0.0]))


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


def test_buffer_state_round_trip_continues_identically() -> None:
    original = ReplayBuffer(capacity=5, seed=3)
    original.push(transitions(0, 7))
    original.sample(4)
    restored = ReplayBuffer(capacity=5, seed=99)
    restored.load_state_dict(original.state_dict())
    assert len(restored) == 5 and torch.equal(restored.ordered().reward, original.ordered().reward)
    assert torch.equal(restored.sample(20).reward, original.sample(20).reward)
    restored.push(transitions(10, 2))
    original.push(transitions(10, 2))
    assert torch.equal(restored.ordered().reward, original.ordered().reward)
    empty = ReplayBuffer(capacity=5)
    empty.load_state_dict(ReplayBuffer(capacity=5).state_dict())
    assert len(empty) == 0
    with pytest.raises(ConfigError, match="replay capacity"):
        ReplayBuffer(capacity=6).load_state_dict(original.state_dict())
