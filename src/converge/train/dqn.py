"""Deep Q-learning pieces for a stop / continue policy (DURR's policy unit; Mnih et al., Nature 2015).

A transition is ``(state, hidden, action, reward, next_state, next_hidden, done)``: ``state`` is what
the Q-network reads (an estimate, or its pooled features), ``hidden`` the recurrent state it read it
with (``h`` and ``c`` stacked, ``(2, H)``), ``action`` 0 = stop or 1 = continue, ``done`` 1.0 when the
episode ended with this transition (a stop, or the loop cap). The one-step target is

    target = r + gamma * (1 - done) * max_a Q_target(s', a),

with ``Q_target`` a lagged copy of the online network (:func:`update_target`).

Example::

    >>> import torch
    >>> q_targets(torch.tensor([1.0, 1.0]), torch.tensor([[0.0, 2.0], [5.0, 3.0]]), torch.tensor([0.0, 1.0]), 0.5)
    tensor([2., 1.])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.durr import CONTINUE, STOP

__all__ = [
    "CONTINUE",
    "STOP",
    "ReplayBuffer",
    "Transition",
    "epsilon_greedy",
    "q_targets",
    "step_rewards",
    "update_target",
]


class Transition(NamedTuple):
    """A batch of transitions; every field has the batch as its first dimension.

    ``state`` / ``next_state``: ``(B, ...)`` float; ``hidden`` / ``next_hidden``: ``(B, 2, H)`` float;
    ``action``: ``(B,)`` long; ``reward``: ``(B,)`` float; ``done``: ``(B,)`` float in {0, 1}.
    """

    state: Tensor
    hidden: Tensor
    action: Tensor
    reward: Tensor
    next_state: Tensor
    next_hidden: Tensor
    done: Tensor


_DTYPES = {"action": torch.long, "reward": torch.float32, "done": torch.float32}


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions with seeded uniform sampling (with replacement).

    Storage is allocated on the first :meth:`push` from the shapes it sees; later pushes must match.
    Once full, each new transition overwrites the oldest one.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"replay buffer capacity must be a positive integer, got {capacity}")
        self.capacity = capacity
        self._storage: dict[str, Tensor] | None = None
        self._next = 0
        self._size = 0
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self._size

    def push(self, batch: Transition) -> None:
        """Append every transition of ``batch`` (leading dimension ``B``), overwriting the oldest when full."""
        fields = {
            name: value.detach().to("cpu", _DTYPES.get(name, torch.float32))
            for name, value in batch._asdict().items()
        }
        count = fields["action"].shape[0]
        if any(value.shape[0] != count for value in fields.values()):
            raise ConfigError("every field of a pushed transition batch must have the same batch size")
        if self._storage is None:
            self._storage = {
                name: torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                for name, value in fields.items()
            }
        for name, value in fields.items():
            if value.shape[1:] != self._storage[name].shape[1:]:
                raise ConfigError(
                    f"transition field {name!r} has shape {tuple(value.shape[1:])}, "
                    f"the buffer holds {tuple(self._storage[name].shape[1:])}"
                )
        slots = (self._next + torch.arange(count)) % self.capacity
        # With more transitions than slots only the newest ``capacity`` survive, as in sequential pushes.
        keep = slice(max(0, count - self.capacity), count)
        for name, value in fields.items():
            self._storage[name][slots[keep]] = value[keep]
        self._next = (self._next + count) % self.capacity
        self._size = min(self.capacity, self._size + count)

    def ordered(self) -> Transition:
        """Every stored transition, oldest first."""
        storage = self._require_storage()
        start = (self._next - self._size) % self.capacity
        order = (start + torch.arange(self._size)) % self.capacity
        return Transition(**{name: value[order] for name, value in storage.items()})

    def sample(self, batch_size: int) -> Transition:
        """``batch_size`` transitions drawn uniformly with replacement from the buffer's own seeded generator."""
        storage = self._require_storage()
        if batch_size < 1:
            raise ConfigError(f"sample batch_size must be a positive integer, got {batch_size}")
        indices = torch.randint(self._size, (batch_size,), generator=self._generator)
        return Transition(**{name: value[indices] for name, value in storage.items()})

    def state_dict(self) -> dict[str, object]:
        """Everything a resumed run needs to continue identically: the stored transitions, the write
        position, the size and the sampling generator's state (tensors and ints only)."""
        return {
            "storage": {} if self._storage is None else dict(self._storage),
            "next": self._next,
            "size": self._size,
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned (the capacity must be the same)."""
        storage = state["storage"]
        saved_capacity = next(iter(storage.values())).shape[0] if storage else self.capacity
        if saved_capacity != self.capacity:
            raise ConfigError(
                f"the saved replay buffer holds {saved_capacity} slots, this one {self.capacity}: "
                "resume with the same replay capacity"
            )
        self._storage = dict(storage) if storage else None
        self._next = int(state["next"])
        self._size = int(state["size"])
        self._generator.set_state(state["generator"])

    def _require_storage(self) -> dict[str, Tensor]:
        if self._storage is None:
            raise ConfigError("the replay buffer is empty: push transitions before reading it")
        return self._storage


def q_targets(rewards: Tensor, next_q_target: Tensor, done: Tensor, gamma: float) -> Tensor:
    """One-step DQN targets ``r + gamma (1 - done) max_a Q_target(s', a)``, ``(B,)``.

    ``rewards``: ``(B,)``; ``next_q_target``: ``(B, A)`` target-network Q-values of the next state;
    ``done``: ``(B,)`` in {0, 1} (bool or float); ``gamma`` in [0, 1].
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"discount gamma must lie in [0, 1], got {gamma}")
    bootstrap = next_q_target.max(dim=1).values
    return rewards + gamma * (1.0 - done.to(rewards.dtype)) * bootstrap


def epsilon_greedy(q: Tensor, epsilon: float, generator: torch.Generator | None = None) -> Tensor:
    """Actions ``(B,)`` long: ``argmax_a q`` with probability ``1 - epsilon``, else uniform over the ``A`` actions.

    ``q``: ``(B, A)``; ``epsilon`` in [0, 1]; ``generator`` (on the CPU) makes the draws reproducible.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"exploration epsilon must lie in [0, 1], got {epsilon}")
    batch, actions = q.shape
    explore = torch.rand(batch, generator=generator) < epsilon
    random_actions = torch.randint(actions, (batch,), generator=generator)
    return torch.where(explore, random_actions, q.argmax(dim=1).cpu()).to(q.device)


def step_rewards(losses_prev: Tensor, losses_next: Tensor, lam: float) -> Tensor:
    """DURR's rewards ``(B, 2)``: column ``STOP`` 0, column ``CONTINUE`` ``lam (L(x_{n-1}) - L(x_n))``.

    ``losses_prev`` / ``losses_next``: ``(B,)`` per-sample losses before and after one more unit step, so
    continuing is rewarded exactly when it lowers the loss. Pick a transition's reward with
    ``rewards.gather(1, action[:, None])``.
    """
    gain = lam * (losses_prev - losses_next)
    return torch.stack([torch.zeros_like(gain), gain], dim=1)


def update_target(target: nn.Module, online: nn.Module, tau: float = 1.0) -> None:
    """Move ``target``'s parameters towards ``online``'s: ``t <- (1 - tau) t + tau o`` (``tau = 1``: copy)."""
    if not 0.0 < tau <= 1.0:
        raise ConfigError(f"target update rate tau must lie in (0, 1], got {tau}")
    with torch.no_grad():
        for target_value, online_value in zip(target.state_dict().values(), online.state_dict().values(), strict=True):
            if target_value.is_floating_point():
                target_value.lerp_(online_value, tau)
            else:
                target_value.copy_(online_value)
