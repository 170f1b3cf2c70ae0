"""Stage 2 of DURR: the policy unit learnt by deep Q-learning, the restoration unit frozen.

A config with ``trainer: dqn`` and a ``dqn`` section (:class:`~converge.train.config.DQNSection`)
runs here; it starts from the stage-1 weights through ``init_weights``. Each training step takes a
batch of degraded patches (the data section's task and level range, as in stage 1) and plays one
episode per patch: from ``X_0 = y`` the policy reads the estimate ``X_n`` (its LSTM state carried
along) and picks an action epsilon-greedily; CONTINUE makes one frozen unit step and earns

    r_n = lam (L(X_n) - L(X_{n+1})),    L(X) = mean((X - x)^2)  (per patch, [0, 1] scale),

STOP earns 0 and ends the episode, and the model's ``max_loops`` ends it too (the first
``min_loops`` actions are CONTINUE, as at inference). Every transition goes into a replay buffer;
then ``updates_per_step`` RMSprop (or the configured optimiser) updates fit

    Q(s, a) -> r + gamma (1 - done) max_a' Q_target(s', a')

with a Huber loss on replay batches sampled with replacement, ``Q_target`` being a copy of the
policy refreshed every ``target_every`` updates. States are the estimates themselves (not pooled
features), so the policy's convolutional encoder learns too; hidden states are stored with them.

Checkpoints add the target network, the replay buffer, the exploration generator and the update
count to the :class:`~converge.train.trainer.Trainer` checkpoint, so a resumed run is bit-identical
to an uninterrupted one; ``model.safetensors`` is the whole DURR (unit and policy). Log records add
the means of ``epsilon``, ``episode_loops`` (unit steps per episode) and ``episode_return``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.data.seeding import stable_seed
from converge.errors import ConfigError
from converge.models.durr import CONTINUE, DURR, PolicyUnit
from converge.train.dqn import ReplayBuffer, Transition, epsilon_greedy, q_targets, step_rewards, update_target
from converge.train.trainer import Trainer


class PolicyTrainer(Trainer):
    """Trains a :class:`~converge.models.durr.DURR`'s policy unit by deep Q-learning (``trainer: dqn``).

    Same constructor, run folder, logging, evaluation and resume as :class:`Trainer`; only the policy's
    parameters are optimised.
    """

    kind = "dqn"

    def _trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self._durr().policy.parameters()

    def _prepare_training(self) -> None:
        durr = self._durr()
        durr.unit.requires_grad_(False)
        self.target: PolicyUnit = copy.deepcopy(durr.policy).requires_grad_(False)
        self.replay = ReplayBuffer(self.config.dqn.replay_capacity, seed=stable_seed("replay", self.config.seed))
        self.exploration = torch.Generator().manual_seed(stable_seed("exploration", self.config.seed))
        self.updates = 0

    def _durr(self) -> DURR:
        if not isinstance(self.model, DURR):
            raise ConfigError(
                f"trainer: dqn trains DURR's policy unit, but the config builds {self.config.model.name!r}"
            )
        return self.model

    def epsilon(self, step: int) -> float:
        """Exploration rate at training ``step``: linear from ``epsilon_start`` to ``epsilon_end`` over
        ``epsilon_steps`` steps, then constant."""
        dqn = self.config.dqn
        progress = min(1.0, step / dqn.epsilon_steps)
        return dqn.epsilon_start + progress * (dqn.epsilon_end - dqn.epsilon_start)

    def _train_step(self, y: Tensor, x: Tensor, level: Tensor) -> dict[str, float]:
        self.model.train()
        epsilon = self.epsilon(self.step)
        loops, returns = self.play_episodes(y, x, epsilon)
        losses = [self._update() for _ in range(self.config.dqn.updates_per_step)]
        self.scheduler.step()
        return {
            "loss": sum(losses) / len(losses),
            "epsilon": epsilon,
            "episode_loops": float(loops.float().mean()),
            "episode_return": float(returns.mean()),
        }

    @torch.no_grad()
    def play_episodes(self, y: Tensor, x: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
        """Play one episode per patch of ``y`` (clean ``x``), both ``(B, C, p, p)``, pushing every
        transition into the replay buffer; return the unit steps ``(B,)`` and returns ``(B,)`` per episode."""
        durr = self._durr()
        policy, cap, min_loops = durr.policy, durr.config.max_loops, durr.config.min_loops
        batch = y.shape[0]
        estimate = y.clone()
        hidden, cell = policy.initial_hidden(batch, y.device)
        losses = _patch_mse(estimate, x)
        loops = torch.zeros(batch, dtype=torch.long)
        returns = torch.zeros(batch)
        running = torch.arange(batch)
        for n in range(cap):
            if running.numel() == 0:
                break
            state, clean = estimate[running], x[running]
            q, (next_hidden, next_cell) = policy(state, (hidden[running], cell[running]))
            actions = epsilon_greedy(q, epsilon, self.exploration)
            if n < min_loops:
                actions = torch.full_like(actions, CONTINUE)
            continues = actions == CONTINUE
            next_state = state.clone()
            next_losses = losses[running].clone()
            if bool(continues.any()):
                next_state[continues] = durr.unit_step(state[continues])
                next_losses[continues] = _patch_mse(next_state[continues], clean[continues])
            rewards = step_rewards(losses[running], next_losses, self.config.dqn.lam)
            rewards = rewards.gather(1, actions[:, None]).squeeze(1)
            done = ~continues | (n + 1 == cap)
            self.replay.push(
                Transition(
                    state=state,
                    hidden=torch.stack([hidden[running], cell[running]], dim=1),
                    action=actions,
                    reward=rewards,
                    next_state=next_state,
                    next_hidden=torch.stack([next_hidden, next_cell], dim=1),
                    done=done.float(),
                )
            )
            estimate[running], losses[running] = next_state, next_losses
            hidden[running], cell[running] = next_hidden, next_cell
            loops[running] += continues.long()
            returns[running] += rewards
            running = running[~done]
        return loops, returns

    def td_targets(self, batch: Transition) -> Tensor:
        """Regression targets ``r + gamma (1 - done) max_a Q_target(s', a)`` ``(B,)`` of a replay batch."""
        with torch.no_grad():
            next_hidden, next_cell = batch.next_hidden.unbind(1)
            next_q, _ = self.target.step(self.target.features(batch.next_state), (next_hidden, next_cell))
        return q_targets(batch.reward, next_q, batch.done, self.config.dqn.gamma)

    def td_loss(self, batch: Transition) -> Tensor:
        """Huber loss between the policy's ``Q(s, a)`` of the batch's actions and :meth:`td_targets`."""
        policy = self._durr().policy
        hidden, cell = batch.hidden.unbind(1)
        q, _ = policy.step(policy.features(batch.state), (hidden, cell))
        chosen = q.gather(1, batch.action[:, None]).squeeze(1)
        return F.smooth_l1_loss(chosen, self.td_targets(batch))

    def _update(self) -> float:
        loss = self.td_loss(self.replay.sample(self.config.dqn.batch_size))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._durr().policy.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.config.dqn.target_every == 0:
            update_target(self.target, self._durr().policy)
        return float(loss.detach())

    def _extra_state(self) -> dict[str, Any]:
        return {
            "target": self.target.state_dict(),
            "replay": self.replay.state_dict(),
            "exploration": self.exploration.get_state(),
            "updates": self.updates,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.replay.load_state_dict(state["replay"])
        self.exploration.set_state(state["exploration"])
        self.updates = int(state["updates"])


def _patch_mse(estimate: Tensor, clean: Tensor) -> Tensor:
    """Per-patch mean squared error ``(B,)`` of ``(B, C, H, W)`` images."""
    return (estimate - clean).square().flatten(1).mean(dim=1)
