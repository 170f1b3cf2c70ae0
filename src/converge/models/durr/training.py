"""Stage 2 of DURR: the policy unit learnt by deep Q-learning, the restoration unit frozen.

A config with ``trainer: dqn`` and a ``dqn`` section (:class:`~converge.train.config.DQNSection`)
runs here; it takes the restoration unit of the stage-1 weights named by ``init_weights``
(:func:`load_restoration_unit`; the policy unit starts from the run's seeded initialisation, which
is stage 1's own when the seed and the policy's parameters are the same). The decision problem is
optimal stopping on the trajectory ``X_0 = y, X_{n+1} = X_n + dt f(X_n)`` of the frozen unit:
CONTINUE at ``X_n`` earns the paper's reward

    r_n = lam (L(X_n) - L(X_{n+1})),    L(X) = mean((X - x)^2)  (per patch, [0, 1] scale),

or, with ``dqn.reward: psnr``, ``lam 10 log10(L(X_n) / L(X_{n+1}))``, the decibels the loop gains;
STOP earns 0 and ends the episode, and the model's ``max_loops`` truncates it (the first
``min_loops`` actions are CONTINUE, as at inference). Each training step plays one episode per
patch of a batch of degraded patches (the data section's task and level range), then makes
``updates_per_step`` RMSprop (or the configured optimiser) updates on batches of replayed episodes.
Choices the paper leaves open, and why (each one fixes a way the single-transition version failed
to learn to stop):

- Replay holds episodes, not transitions (:class:`~converge.models.durr.dqn.Episode`): what the
  policy reads of ``X_0 ... X_C`` and the rewards between them. Every update unrolls the LSTM over the
  whole stored prefix from its zero state, online and target network alike, so Q-values are
  always those of the current weights with the hidden state they would have at inference.
  Replaying single transitions with the hidden state stored at play time trains a recurrent
  network on inputs its current weights would never produce, and never teaches the LSTM to carry
  anything (a loop count, the input's noise level) across loops.
- Both actions are fitted at every stored state (:func:`~converge.models.durr.dqn.sequence_q_targets`):
  ``Q(X_n, STOP) -> 0`` (its value is known exactly), ``Q(X_n, CONTINUE) -> r_n + gamma max_a
  Q_target(X_{n+1}, a)``, or with ``dqn.double`` Double DQN's ``r_n + gamma Q_target(X_{n+1},
  argmax_a Q(X_{n+1}, a))``: the maximum of noisy estimates overrates CONTINUE past the best stop.
  An episode that stops at ``X_K`` also runs one more frozen unit step (not part of its return) so
  that the CONTINUE value of the very state where it stopped is learnt: the decision boundary is
  where the targets are needed most.
- CONTINUE is never terminal: an episode cut at ``max_loops`` bootstraps from the state it
  reached, since the cap is a safety limit and not part of the restoration problem.
- ``dqn.train_encoder``: the whole policy network learns by deep Q-learning, as in the paper: the
  replay stores the estimates ``X_0 ... X_C`` (half precision, 2 bytes a pixel) and every update
  runs the encoder over each replayed episode's states (the online encoder with its gradient, the
  target network's copy without), under the run's ``precision`` (bf16 autocast took an update of 16
  episodes from 2.6 to 0.6 s on one thread here; the features return to float32 before the LSTM).
  Without it the convolutional encoder keeps its initial weights (random features) and only the LSTM
  cell and head learn, so stored features never go stale and an update costs an LSTM unroll, not a
  convolution over every replayed estimate. Either way, before training the encoder's pooled statistics are
  standardised (:meth:`~converge.models.durr.PolicyUnit.calibrate`) on the states of
  :data:`CALIBRATION_PATCHES` patches of the first epoch (spread over the images) unfolded to
  ``max_loops``; unstandardised, they vary by a few hundredths around offsets of a tenth and
  RMSprop moves the decision threshold around instead of learning it.
- A training patch must be one policy tile (``data.patch_size`` up to
  :data:`~converge.models.durr.POLICY_TILE` = 40 pixels): at inference the policy reads an image
  tile by tile and averages the tiles' Q-values, which is what a policy learnt on tiles can read.
- Exploration is per episode (:func:`~converge.models.durr.dqn.exploration_stops`): with probability
  epsilon (linear from ``epsilon_start`` to ``epsilon_end`` over ``epsilon_steps`` steps) an
  episode stops at a loop count drawn uniformly from ``[min_loops, max_loops]``, otherwise it is
  greedy. Uniformly random actions at every loop would end exploratory episodes after two loops on
  average, far before the 5 to 25 loops where the decisions lie.
- The discount ``gamma`` does not move the optimal stop when the loss falls and then rises along
  the trajectory, as it does with DURR's unit: for every gamma the best stop is the first state
  whose CONTINUE reward is negative. Gamma below 1 shortens the horizon the bootstrap carries. The
  loss is the Huber loss over all fitted entries; ``Q_target`` is a copy of the policy refreshed
  every ``target_every`` updates.

Checkpoints add the target network, the replay buffer, the exploration generator and the update
count to the :class:`~converge.train.trainer.Trainer` checkpoint, so a resumed run is bit-identical
to an uninterrupted one; ``model.safetensors`` is the whole DURR (unit, policy and its feature
statistics). Log records add the means of ``epsilon``, ``episode_loops`` (unit steps the policy
let run, per episode) and ``episode_return`` (the rewards of those steps).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.data.seeding import stable_seed
from converge.errors import ConfigError, WeightsError
from converge.models.durr.dqn import (
    Episode,
    ReplayBuffer,
    continue_rewards,
    exploration_stops,
    sequence_q_targets,
    state_masks,
    update_target,
)
from converge.models.durr.model import CONTINUE, DURR, POLICY_TILE, STOP, DURRConfig, PolicyUnit
from converge.physics.batch import OperatorBatch
from converge.train.registry import register_trainer
from converge.train.trainer import Trainer
from converge.zoo import read_safetensors

UNIT_PARAMS = ("channels", "features", "bottom_convs", "dt")
"""DURR parameters that define the restoration unit and its trajectory, shared by both stages."""
CALIBRATION_PATCHES = 64
"""Patches whose trajectories set the policy's feature standardisation at the start of a run."""


def td_loss(
    policy: PolicyUnit,
    target: PolicyUnit,
    episodes: Episode,
    gamma: float,
    double: bool = False,
    encoding: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Tensor:
    """Huber loss between ``policy``'s Q-values of every stored state of ``episodes`` and the
    :func:`~converge.models.durr.dqn.sequence_q_targets` that ``target`` gives (``double``: the next
    action chosen by ``policy``, Double DQN); both networks are unrolled from their zero state over
    the stored observations (only as far as the longest episode; :func:`read_observations`, each
    network's encoder run inside ``encoding()`` where they are estimates)."""
    states = int(episodes.transitions.max()) + 1
    episodes = Episode(episodes.observations[:, :states], episodes.rewards[:, : states - 1], episodes.transitions)
    q = policy.q_sequence(read_observations(policy, episodes, encoding))
    with torch.no_grad():
        online = q.detach() if double else None
        next_q = target.q_sequence(read_observations(target, episodes, encoding))
        targets = sequence_q_targets(episodes, next_q, gamma, online)
    stop_known, continue_known = state_masks(episodes.transitions, states)
    predicted = torch.cat([q[..., STOP][stop_known], q[:, :-1, CONTINUE][continue_known]])
    wanted = torch.cat([targets[..., STOP][stop_known], targets[:, :-1, CONTINUE][continue_known]])
    return F.smooth_l1_loss(predicted, wanted)


def read_observations(
    policy: PolicyUnit, episodes: Episode, encoding: Callable[[], AbstractContextManager[Any]] = nullcontext
) -> Tensor:
    """The features ``(B, S, D)`` the LSTM reads at each stored state: the stored ones as they are, or,
    where the episodes hold estimates ``(B, S, C, p, p)``, ``policy``'s features of the revealed states
    (computed inside ``encoding()``, returned in float32; zeros past each episode's ``transitions``)."""
    observations = episodes.observations
    if observations.dim() == 3:
        return observations
    revealed = torch.arange(observations.shape[1], device=observations.device)[None, :] <= episodes.transitions[:, None]
    with encoding():
        features = policy.features(observations[revealed].float())[:, 0]
    read = torch.zeros(*revealed.shape, features.shape[-1], device=features.device)
    return read.index_put((revealed,), features.float())


@register_trainer("dqn")
class PolicyTrainer(Trainer):
    """Trains a :class:`~converge.models.durr.DURR`'s policy unit by deep Q-learning (``trainer: dqn``).

    Same constructor, run folder, logging, evaluation and resume as :class:`Trainer`; the policy's
    LSTM cell and head are optimised, and its encoder with ``dqn.train_encoder``.
    """

    # Episodes, the replay buffer and the target network live in one process.
    data_parallel = False
    # The temporal-difference loss grows with the Q-values it fits: only a non-finite one is a failure.
    exploded_loss_factor = None

    def _trainable_parameters(self) -> Iterable[nn.Parameter]:
        policy = self._durr().policy
        encoder = [*policy.encoder.parameters()] if self.config.dqn.train_encoder else []
        return [*encoder, *policy.lstm.parameters(), *policy.head.parameters()]

    def _initialise_model(self) -> None:
        """Fresh start: the restoration unit from ``init_weights`` (stage 1), the policy unit from the
        run's seeded initialisation, then its feature standardisation."""
        if self.config.init_weights is not None:
            load_restoration_unit(self._durr(), self.config.init_weights)
        self.calibrate_features()

    def _prepare_training(self) -> None:
        durr = self._durr()
        if self.config.data.patch_size > POLICY_TILE:
            raise ConfigError(
                f"policy training patches must fit in one {POLICY_TILE}-pixel policy tile, got "
                f"data.patch_size {self.config.data.patch_size}: set it to at most {POLICY_TILE}"
            )
        durr.unit.requires_grad_(False)
        durr.policy.encoder.requires_grad_(self.config.dqn.train_encoder)
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

    @torch.no_grad()
    def calibrate_features(self) -> None:
        """Standardise the policy's pooled statistics over every state ``X_0 ... X_max_loops`` of
        :data:`CALIBRATION_PATCHES` degraded patches of epoch 0, spread evenly over the training images."""
        durr = self._durr()
        indices = torch.linspace(0, len(self.dataset) - 1, min(CALIBRATION_PATCHES, len(self.dataset))).long()
        estimate = torch.stack([self.dataset[int(index)][0] for index in indices])
        pooled = [durr.policy.pooled(estimate)]
        for _ in range(durr.config.max_loops):
            estimate = durr.unit_step(estimate)
            pooled.append(durr.policy.pooled(estimate))
        durr.policy.calibrate(torch.cat(pooled))

    def epsilon(self, step: int) -> float:
        """Exploration rate at training ``step``: linear from ``epsilon_start`` to ``epsilon_end`` over
        ``epsilon_steps`` steps, then constant."""
        dqn = self.config.dqn
        progress = min(1.0, step / dqn.epsilon_steps)
        return dqn.epsilon_start + progress * (dqn.epsilon_end - dqn.epsilon_start)

    def _train_step(self, y: Tensor, x: Tensor, operator: OperatorBatch, level: Tensor) -> dict[str, float]:
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
        """Play one episode per patch of ``y`` (clean ``x``), both ``(B, C, p, p)``, and push them into
        the replay buffer; return the unit steps the policy let run ``(B,)`` and their returns ``(B,)``.

        All episodes advance together: at loop ``n`` every episode still deciding reads
        ``features(X_n)`` into its LSTM and picks CONTINUE or STOP (greedy, or its exploration
        stop); the ones that continue and the ones that just stopped take a unit step (for the
        latter, the look-ahead step that is stored but not played).
        """
        durr = self._durr()
        policy, cap, min_loops = durr.policy, durr.config.max_loops, durr.config.min_loops
        batch = y.shape[0]
        forced_stops = exploration_stops(batch, epsilon, min_loops, cap, self.exploration).to(y.device)
        features = torch.zeros(batch, cap + 1, policy.lstm.input_size, device=y.device)
        # With a learning encoder the replay keeps the estimates themselves, in half precision.
        estimates = (
            torch.zeros(batch, cap + 1, *y.shape[1:], dtype=torch.float16, device=y.device)
            if self.config.dqn.train_encoder
            else None
        )
        rewards = torch.zeros(batch, cap, device=y.device)
        transitions = torch.zeros(batch, dtype=torch.long, device=y.device)
        loops = torch.full((batch,), cap, dtype=torch.long, device=y.device)
        hidden, cell = policy.initial_hidden(batch, y.device)
        estimate, losses = y.clone(), _patch_mse(y, x)
        deciding = torch.ones(batch, dtype=torch.bool, device=y.device)
        revealing = deciding.clone()
        for n in range(cap + 1):
            shown = revealing.nonzero().squeeze(1)
            if shown.numel() == 0:
                break
            features[shown, n] = policy.features(estimate[shown])[:, 0]
            if estimates is not None:
                estimates[shown, n] = estimate[shown].half()
            if n == cap:
                break
            # An episode that stopped at n - 1 has now stored its look-ahead state: it is complete.
            revealing &= deciding
            chooser = deciding.nonzero().squeeze(1)
            q, (hidden_next, cell_next) = policy.step(features[chooser, n], (hidden[chooser], cell[chooser]))
            hidden[chooser], cell[chooser] = hidden_next, cell_next
            explored = forced_stops[chooser] >= 0
            stops = torch.where(explored, forced_stops[chooser] <= n, q[:, STOP] > q[:, CONTINUE]) & (n >= min_loops)
            loops[chooser[stops]] = n
            deciding[chooser[stops]] = False
            next_estimate = durr.unit_step(estimate[chooser])
            next_losses = _patch_mse(next_estimate, x[chooser])
            rewards[chooser, n] = continue_rewards(
                losses[chooser], next_losses, self.config.dqn.lam, self.config.dqn.reward
            )
            transitions[chooser] = n + 1
            estimate[chooser], losses[chooser] = next_estimate, next_losses
        observations = features if estimates is None else estimates
        self.replay.push(Episode(observations=observations, rewards=rewards, transitions=transitions))
        played = torch.arange(cap, device=y.device)[None, :] < loops[:, None]
        return loops.cpu(), (rewards * played).sum(dim=1).cpu()

    def td_loss(self, episodes: Episode) -> Tensor:
        """:func:`td_loss` of the policy against the target network with the config's ``gamma``."""
        dqn = self.config.dqn
        return td_loss(self._durr().policy, self.target, episodes, dqn.gamma, dqn.double, self.autocast)

    def _update(self) -> float:
        episodes = self.replay.sample(self.config.dqn.batch_size)
        loss = self.td_loss(Episode._make(field.to(self.device) for field in episodes))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._trainable_parameters(), self.config.optim.grad_clip)
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


def load_restoration_unit(durr: DURR, path: str | Path) -> None:
    """Copy into ``durr`` the restoration unit of the DURR weights at ``path`` (a stage-1 run's export).

    The unit's hyper-parameters (:data:`UNIT_PARAMS`) in the file's header (absent ones at their
    defaults) must equal ``durr``'s; the policy's may differ, as stage 1 does not train the policy.
    Raises :class:`ConfigError` for a missing or unreadable file, or one that holds another model or
    another unit.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_weights {path} does not exist: train the restoration unit (stage 1) first")
    try:
        metadata, tensors = read_safetensors(path)
    except WeightsError as error:
        raise ConfigError(f"init_weights: {error}") from None
    if metadata.get("model") != "durr":
        raise ConfigError(f"init_weights {path} holds a {metadata.get('model')} model, not a DURR restoration unit")
    try:
        saved = DURRConfig(**json.loads(metadata.get("params", "{}")))
    except (ValueError, TypeError, ConfigError):
        raise ConfigError(
            f"init_weights {path} has an unreadable parameter header: export it again with converge train"
        ) from None
    differing = [name for name in UNIT_PARAMS if getattr(saved, name) != getattr(durr.config, name)]
    if differing:
        said = ", ".join(
            f"{name} {getattr(saved, name)} there, {getattr(durr.config, name)} here" for name in differing
        )
        raise ConfigError(
            f"init_weights {path} holds another restoration unit ({said}): give the model stage 1's unit parameters"
        )
    unit = {name.removeprefix("unit."): value for name, value in tensors.items() if name.startswith("unit.")}
    try:
        durr.unit.load_state_dict(unit)
    except RuntimeError:
        raise ConfigError(f"init_weights {path} does not hold a whole restoration unit: export it again") from None


def _patch_mse(estimate: Tensor, clean: Tensor) -> Tensor:
    """Per-patch mean squared error ``(B,)`` of ``(B, C, H, W)`` images."""
    return (estimate - clean).square().flatten(1).mean(dim=1)
