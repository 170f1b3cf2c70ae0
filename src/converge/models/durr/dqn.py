"""Deep Q-learning pieces for a stop / continue policy (DURR's policy unit; Mnih et al., Nature 2015).

DURR's decision problem is optimal stopping on a trajectory ``X_0 = y, X_1, X_2, ...`` that the
frozen restoration unit produces whatever the policy does: STOP earns 0 and ends the episode,
CONTINUE earns ``r_n = lam (L(X_n) - L(X_{n+1}))`` and moves to ``X_{n+1}``. So a played episode is
stored as the trajectory prefix it revealed, :class:`Episode`: what the policy reads of ``X_0 ... X_C``
(its pooled features, or the estimates themselves when its encoder learns too) and the ``C`` CONTINUE
rewards between them. Every stored state carries two exact
regression targets, whichever action the agent happened to take there:

    Q(X_n, STOP)     -> 0                                              (n = 0 ... C)
    Q(X_n, CONTINUE) -> r_n + gamma * max_a Q_target(X_{n+1}, a)       (n = 0 ... C - 1)

with ``Q_target`` a lagged copy of the online network (:func:`update_target`). CONTINUE is never
terminal: the loop cap truncates an episode, it does not end the decision problem, so the state
reached at the cap is bootstrapped like any other. A recurrent Q-network is unrolled over the whole
stored prefix from its zero state at every update (:func:`sequence_q_targets`), so no stale hidden
state is ever replayed.

Example::

    >>> import torch
    >>> rewards = torch.tensor([[1.0, 1.0]])
    >>> next_q = torch.tensor([[[0.0, 2.0], [5.0, 3.0]]])
    >>> q_targets(rewards, next_q, gamma=0.5)
    tensor([[2.0000, 3.5000]])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.durr.model import CONTINUE, STOP
from converge.train.config import REWARDS

__all__ = [
    "CONTINUE",
    "STOP",
    "Episode",
    "ReplayBuffer",
    "continue_rewards",
    "exploration_stops",
    "q_targets",
    "sequence_q_targets",
    "state_masks",
    "update_target",
]


class Episode(NamedTuple):
    """A batch of stored trajectory prefixes; every field has the batch as its first dimension.

    ``observations``: what the policy reads of ``X_0 ... X_{S-1}``: ``(B, S, D)`` float, its pooled
    features (a frozen encoder), or ``(B, S, C, p, p)`` float, the estimates (an encoder that learns:
    their features change with its weights); rows past an episode's ``transitions`` are padding.
    ``rewards``: ``(B, S - 1)`` float, ``rewards[:, n]`` the CONTINUE reward from ``X_n`` to ``X_{n+1}``
    (zero padding past ``transitions``); ``transitions``: ``(B,)`` long, the number ``C`` of CONTINUE
    steps the episode revealed, so its states are ``X_0 ... X_C``.
    """

    observations: Tensor
    rewards: Tensor
    transitions: Tensor


_DTYPES = {"rewards": torch.float32, "transitions": torch.long}
"""Storage types; observations keep the floating type they are pushed in (half precision saves
memory where they are estimates)."""


class ReplayBuffer:
    """Fixed-capacity ring buffer of :class:`Episode` rows with seeded uniform sampling (with replacement).

    Storage is allocated on the first :meth:`push` from the shapes it sees; later pushes must match.
    Once full, each new episode overwrites the oldest one.
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

    def push(self, batch: Episode) -> None:
        """Append every episode of ``batch`` (leading dimension ``B``), overwriting the oldest when full."""
        if not batch.observations.is_floating_point():
            raise ConfigError("episode observations must be floating point")
        fields = {
            name: value.detach().to("cpu", _DTYPES.get(name, value.dtype)) for name, value in batch._asdict().items()
        }
        count = fields["transitions"].shape[0]
        if any(value.shape[0] != count for value in fields.values()):
            raise ConfigError("every field of a pushed episode batch must have the same batch size")
        if fields["rewards"].shape[1:] != (fields["observations"].shape[1] - 1,):
            raise ConfigError("an episode needs one reward fewer than it has states")
        if self._storage is None:
            self._storage = {
                name: torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                for name, value in fields.items()
            }
        for name, value in fields.items():
            if value.shape[1:] != self._storage[name].shape[1:]:
                raise ConfigError(
                    f"episode field {name!r} has shape {tuple(value.shape[1:])}, "
                    f"the buffer holds {tuple(self._storage[name].shape[1:])}"
                )
        slots = (self._next + torch.arange(count)) % self.capacity
        # With more episodes than slots only the newest ``capacity`` survive, as in sequential pushes.
        keep = slice(max(0, count - self.capacity), count)
        for name, value in fields.items():
            self._storage[name][slots[keep]] = value[keep]
        self._next = (self._next + count) % self.capacity
        self._size = min(self.capacity, self._size + count)

    def ordered(self) -> Episode:
        """Every stored episode, oldest first."""
        storage = self._require_storage()
        start = (self._next - self._size) % self.capacity
        order = (start + torch.arange(self._size)) % self.capacity
        return Episode(**{name: value[order] for name, value in storage.items()})

    def sample(self, batch_size: int) -> Episode:
        """``batch_size`` episodes drawn uniformly with replacement from the buffer's own seeded generator."""
        storage = self._require_storage()
        if batch_size < 1:
            raise ConfigError(f"sample batch_size must be a positive integer, got {batch_size}")
        indices = torch.randint(self._size, (batch_size,), generator=self._generator)
        return Episode(**{name: value[indices] for name, value in storage.items()})

    def state_dict(self) -> dict[str, object]:
        """Everything a resumed run needs to continue identically: the stored episodes, the write
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
        if storage and set(storage) != set(Episode._fields):
            raise ConfigError(
                f"the saved replay buffer holds {sorted(storage)}, not episodes {sorted(Episode._fields)}: "
                "start a new run directory"
            )
        self._storage = dict(storage) if storage else None
        self._next = int(state["next"])
        self._size = int(state["size"])
        self._generator.set_state(state["generator"])

    def _require_storage(self) -> dict[str, Tensor]:
        if self._storage is None:
            raise ConfigError("the replay buffer is empty: push episodes before reading it")
        return self._storage


def continue_rewards(losses_prev: Tensor, losses_next: Tensor, lam: float, reward: str = "mse") -> Tensor:
    """CONTINUE rewards ``(B,)`` (STOP earns 0) from the per-sample losses ``(B,)`` before and after
    one more unit step, so that continuing is rewarded exactly when it lowers the loss.

    ``reward``: ``mse``, DURR's Eq. 4, ``lam (L(x_{n-1}) - L(x_n))``; ``psnr``, the decibels the step
    gains, ``lam 10 log10(L(x_{n-1}) / L(x_n))``, the same at every noise level for the same relative
    improvement (the MSE reward shrinks with the loss: near its best stop a sigma-25 patch earns
    about a tenth of what a sigma-75 patch earns there, and a thousandth of a sigma-75 first loop).
    """
    if reward == "mse":
        return lam * (losses_prev - losses_next)
    if reward == "psnr":
        return lam * 10.0 * torch.log10(losses_prev.clamp_min(1e-12) / losses_next.clamp_min(1e-12))
    raise ConfigError(f"unknown reward {reward!r}; choose one of: {', '.join(REWARDS)}")


def q_targets(rewards: Tensor, next_q_target: Tensor, gamma: float, next_q_online: Tensor | None = None) -> Tensor:
    """CONTINUE targets ``r + gamma max_a Q_target(s', a)``, the shape of ``rewards``.

    ``rewards``: ``(...)``; ``next_q_target``: ``(..., A)`` target-network Q-values of the next
    states; ``gamma`` in [0, 1]. There is no terminal flag: only STOP ends an episode, and its
    target is 0 whatever follows. With ``next_q_online`` ``(..., A)``, the online network's
    Q-values of the same states, the target is Double DQN's (van Hasselt et al., AAAI 2016):
    ``r + gamma Q_target(s', argmax_a Q_online(s', a))``. The plain maximum over noisy estimates is
    biased upwards, which here means continuing past the best stop.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"discount gamma must lie in [0, 1], got {gamma}")
    if next_q_online is None:
        return rewards + gamma * next_q_target.max(dim=-1).values
    chosen = next_q_online.argmax(dim=-1, keepdim=True)
    return rewards + gamma * next_q_target.gather(-1, chosen).squeeze(-1)


def state_masks(transitions: Tensor, states: int) -> tuple[Tensor, Tensor]:
    """Which stored states carry a STOP target ``(B, S)`` and which a CONTINUE target ``(B, S - 1)``.

    An episode with ``C = transitions[i]`` revealed ``X_0 ... X_C``: STOP is known at all ``C + 1``
    of them, CONTINUE at the ``C`` states that have a successor.
    """
    positions = torch.arange(states, device=transitions.device)
    has_state = positions[None, :] <= transitions[:, None]
    return has_state, has_state[:, 1:]


def sequence_q_targets(
    episodes: Episode, next_q_target: Tensor, gamma: float, next_q_online: Tensor | None = None
) -> Tensor:
    """Regression targets ``(B, S, 2)`` for every stored state of ``episodes``.

    ``next_q_target``: ``(B, S, A)`` target-network Q-values of the episodes' states, unrolled from
    their start. Column ``STOP`` is 0; column ``CONTINUE`` at state ``n < S - 1`` is
    ``r_n + gamma max_a Q_target(X_{n+1}, a)`` and 0 at the last row (where :func:`state_masks`
    says there is no target). With ``next_q_online`` ``(B, S, A)``, the online network's Q-values of
    the same states, the bootstrap is Double DQN's (:func:`q_targets`).
    """
    states = episodes.observations.shape[1]
    targets = torch.zeros(*episodes.rewards.shape[:-1], states, 2, device=next_q_target.device)
    online = None if next_q_online is None else next_q_online[:, 1:]
    targets[:, :-1, CONTINUE] = q_targets(episodes.rewards, next_q_target[:, 1:], gamma, online)
    return targets


def exploration_stops(
    batch: int, epsilon: float, min_loops: int, max_loops: int, generator: torch.Generator | None = None
) -> Tensor:
    """Per-episode exploration ``(B,)`` long: with probability ``epsilon`` a loop count drawn uniformly
    from ``[min_loops, max_loops]`` at which the episode stops, otherwise -1 (the episode follows the
    greedy policy).

    A stopping problem explored one action at a time (epsilon-greedy with uniform random actions)
    ends most exploratory episodes within two loops; drawing the stopping time itself covers every
    loop count equally.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"exploration epsilon must lie in [0, 1], got {epsilon}")
    if not 0 <= min_loops <= max_loops:
        raise ConfigError(f"exploration needs 0 <= min_loops <= max_loops, got {min_loops} and {max_loops}")
    explore = torch.rand(batch, generator=generator) < epsilon
    stops = torch.randint(min_loops, max_loops + 1, (batch,), generator=generator)
    return torch.where(explore, stops, torch.full_like(stops, -1))


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
