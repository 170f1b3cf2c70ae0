"""DURR: the dynamically unfolding recurrent restorer (Zhang, Lu, Liu, Dong, ICLR 2019).

A restoration unit ``f(X; w)`` with weights shared across loops is unfolded as the forward Euler
scheme of ``dX/dt = f(X)``:

    X_0 = y,    X_n = X_{n-1} + dt * f(X_{n-1}; w),    n = 1, ..., N,

and a policy unit decides, after reading each estimate ``X_n``, whether to stop (``N = n``) or loop
again. The policy outputs two Q-values per sample, ``Q(stop)`` and ``Q(continue)``, and is trained by
deep Q-learning (:mod:`converge.models.durr.dqn`) with the reward ``lam (L(X_{n-1}) - L(X_n))`` for
continuing and 0 for stopping.

Choices the paper leaves open (no official code is public), made here and fixed by the defaults:

- Restoration unit: a one-level U-Net (two 3x3 convolutions at full resolution, a stride-2
  convolution down, three 3x3 convolutions at half resolution, bilinear upsampling and a 3x3
  convolution back, concatenation with the skip, two 3x3 convolutions and a 3x3 output convolution),
  ReLU throughout, 32 features: 185,313 parameters for gray images (the paper: about 1.8e5).
- ``dt = 0.25``: with the paper's refined policy (4 to 12 loops for sigma 25 to 55) the total time
  ``N dt`` stays of order one; the last convolution starts near zero so an untrained unit is close to
  the identity.
- Policy unit: a stride-2 3x3 stem (halves the cost on large images), two residual units
  (``x + conv(relu(conv(x)))`` then ReLU) at 40 features, the mean and standard deviation of each
  map, standardised by statistics measured on training trajectories (two buffers, set when the
  policy's training starts), an LSTM cell with 64 hidden units whose state carries across loops,
  and a linear head to the two Q-values: 95,666 parameters for gray images (the paper: about
  1.0e5; 96,690 with ``policy_block_statistics``). Weights saved without the statistics (stage 1) load with the identity standardisation.
- ``policy_block_statistics`` (off by default; on for JPEG deblocking) adds four numbers per tile
  that the random encoder's pooled maps do not carry: for horizontal and for vertical neighbours,
  the mean absolute difference across each of the eight phases of the 8x8 JPEG block grid, read as
  ``log(max phase / mean phase)`` (blockiness: how much stronger the jumps are on one phase) and
  ``log(mean phase)`` (gradient energy). The maximum over phases needs no knowledge of where the
  grid lies. On LIVE1 (``benchmarks/durr_policy_inputs.py``) a linear probe of the quality from the
  pooled encoder features does no better than the mean quality (tile R^2 -0.05), while the mean
  blockiness falls from 0.78 (quality 10) and 0.41 (quality 40) as the unit loops and levels off
  near 0.3 about where each image's best stop lies: what a stopping rule needs to see.
- The policy reads an image as :data:`POLICY_TILE` (40) pixel tiles, the training patch size, each
  encoded on its own with its own LSTM state, and averages the tiles' Q-values: with the MSE reward
  an image's return is the mean of its equal tiles' returns. Statistics of a whole large image, or
  of tiles cut from its feature maps (no zero padding at their borders), are not those of a
  training patch, and a policy learnt on patches then stops after one loop or never.
- The policy reads every estimate from ``X_0 = y`` on, so its hidden state has seen the whole
  trajectory; a stop decision is honoured once ``min_loops`` (default 1) unit steps have run, and
  the loop always ends at ``max_loops`` (default 30, above the paper's 12 loops for sigma 55 to
  leave room for unseen, higher noise levels).
- Stage 1 (the restoration unit, :meth:`DURR.training_forward`) unfolds each training sample for the
  loops ``loop_schedule`` assigns to its degradation level (the paper's "refined policy"): the
  paper's pairs are :data:`DENOISE_LOOP_SCHEDULE` (noise sigma) and :data:`DEBLOCK_LOOP_SCHEDULE`
  (JPEG quality); between pairs the loop count is interpolated linearly and rounded half up, outside
  them it is the end pair's count. A single pair is the "naive policy": the same loops for every
  sample, whatever its level (``[[40, 8]]``: 8 loops, the naive policy of the paper's Table 1).

Example::

    >>> import torch
    >>> model = DURR(DURRConfig(features=4, policy_features=4, policy_hidden=4, max_loops=3))
    >>> x, info = model.restore(torch.rand(2, 1, 16, 16))
    >>> x.shape, all(1 <= n <= 3 for n in info.iterations)
    (torch.Size([2, 1, 16, 16]), True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.base import InferenceOption, RestoreInfo, Restorer, Sigma
from converge.models.registry import register_model
from converge.physics.base import Operator

STOP = 0
CONTINUE = 1

Hidden = tuple[Tensor, Tensor]
Loops = int | Sequence[int] | Tensor
LoopSchedule = tuple[tuple[float, int], ...]

POLICY_TILE = 40
"""Side in pixels of the tiles the policy reads an image by: the compact training patch, so that on
an image of any size the policy's encoder sees what it saw in training (its zero padding included)."""
DENOISE_LOOP_SCHEDULE: LoopSchedule = ((25.0, 4), (35.0, 6), (45.0, 9), (55.0, 12))
"""The paper's refined policy for denoising: (noise sigma in 8-bit levels, unit loops) pairs."""
DEBLOCK_LOOP_SCHEDULE: LoopSchedule = ((20.0, 6), (30.0, 4))
"""The paper's refined policy for JPEG deblocking: (quality factor, unit loops) pairs."""
JPEG_BLOCK = 8
"""Side in pixels of the JPEG block grid that :func:`block_grid_statistics` reads."""
LOOPS_BEYOND_TRAINING = 4
"""A forced loop count may be at most this many times the model's ``max_loops`` (120 for the shipped units)."""


@dataclass(frozen=True)
class DURRConfig:
    """DURR hyper-parameters.

    ``channels``: image channels (1 gray, 3 colour); ``features``: width of the restoration unit at
    full resolution (doubled at half resolution); ``bottom_convs``: 3x3 convolutions at half
    resolution; ``dt``: Euler step of ``X_n = X_{n-1} + dt f(X_{n-1})``; ``policy_features``: width
    of the policy's residual units; ``policy_hidden``: LSTM hidden size; ``min_loops`` /
    ``max_loops``: fewest and most unit steps the policy may choose; ``loop_schedule``: the
    refined policy of stage-1 training, ``(level, loops)`` pairs with strictly increasing levels
    (see :meth:`DURR.scheduled_loops`; empty: :meth:`DURR.training_forward` is unavailable);
    ``policy_block_statistics``: the policy also reads :func:`block_grid_statistics` of each tile.
    """

    channels: int = 1
    features: int = 32
    bottom_convs: int = 3
    dt: float = 0.25
    policy_features: int = 40
    policy_hidden: int = 64
    min_loops: int = 1
    max_loops: int = 30
    loop_schedule: LoopSchedule = ()
    policy_block_statistics: bool = False

    def __post_init__(self) -> None:
        # YAML gives lists of lists; a frozen dataclass needs its tuples set through object.__setattr__.
        object.__setattr__(self, "loop_schedule", _checked_schedule(self.loop_schedule))
        if self.channels not in (1, 3):
            raise ConfigError(f"DURR channels must be 1 or 3, got {self.channels}")
        for name in ("features", "bottom_convs", "policy_features", "policy_hidden", "max_loops"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DURR {name} must be a positive integer, got {getattr(self, name)}")
        if not self.dt > 0:
            raise ConfigError(f"DURR dt must be positive, got {self.dt}")
        if not 0 <= self.min_loops <= self.max_loops:
            raise ConfigError(
                f"DURR min_loops must lie in [0, max_loops={self.max_loops}], got {self.min_loops}"
            )


def _checked_schedule(raw: object) -> LoopSchedule:
    """``raw`` as ``((level, loops), ...)`` with finite, strictly increasing levels and positive integer loops."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"DURR loop_schedule must be a list of [level, loops] pairs, got {raw!r}")
    pairs = []
    for pair in raw:
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ConfigError(f"DURR loop_schedule entries must be [level, loops] pairs, got {pair!r}")
        level, loops = pair
        if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level):
            raise ConfigError(f"DURR loop_schedule levels must be finite numbers, got {level!r}")
        if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
            raise ConfigError(f"DURR loop_schedule loops must be positive integers, got {loops!r}")
        pairs.append((float(level), loops))
    if any(later[0] <= earlier[0] for earlier, later in zip(pairs, pairs[1:])):
        raise ConfigError(f"DURR loop_schedule levels must increase strictly, got {[level for level, _ in pairs]}")
    return tuple(pairs)


def _conv_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class RestorationUnit(nn.Module):
    """One-level U-Net ``f(X; w)``: ``(B, C, H, W) -> (B, C, H, W)``, any ``H, W >= 1``.

    The output is the time derivative of the dynamics (an update direction), not an image.
    """

    def __init__(self, channels: int, features: int, bottom_convs: int) -> None:
        super().__init__()
        wide = 2 * features
        self.encoder = nn.Sequential(_conv_relu(channels, features), _conv_relu(features, features))
        self.down = _conv_relu(features, wide, stride=2)
        self.bottom = nn.Sequential(*[_conv_relu(wide, wide) for _ in range(bottom_convs)])
        self.up = _conv_relu(wide, features)
        self.decoder = nn.Sequential(_conv_relu(wide, features), _conv_relu(features, features))
        self.output = nn.Conv2d(features, channels, 3, padding=1)
        self._initialise()

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x`` ``(B, C, H, W)``."""
        skip = self.encoder(x)
        coarse = self.bottom(self.down(skip))
        # Interpolating to the skip's size (not a fixed factor 2) keeps odd image sizes exact.
        upsampled = self.up(F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.output(self.decoder(torch.cat([upsampled, skip], dim=1)))

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        # Near-zero updates at the start: an untrained unrolled unit returns roughly its input.
        nn.init.normal_(self.output.weight, std=1e-3)


class ResidualUnit(nn.Module):
    """``relu(x + conv(relu(conv(x))))`` at constant width: ``(B, F, H, W) -> (B, F, H, W)``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x``."""
        return F.relu(x + self.body(x))


def policy_tiles(x: Tensor) -> Tensor:
    """The non-overlapping :data:`POLICY_TILE`-pixel tiles the policy reads of ``x`` ``(B, C, H, W)``:
    ``(B T, C, t, t')``, image by image and row by row (one tile of the whole image along a side
    shorter than a tile; a remainder narrower than a tile is left out)."""
    batch, channels, height, width = x.shape
    tile_height, tile_width = min(POLICY_TILE, height), min(POLICY_TILE, width)
    rows, columns = height // tile_height, width // tile_width
    return (
        x[..., : rows * tile_height, : columns * tile_width]
        .reshape(batch, channels, rows, tile_height, columns, tile_width)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(batch * rows * columns, channels, tile_height, tile_width)
    )


def block_grid_statistics(tiles: Tensor) -> Tensor:
    """JPEG block-grid statistics ``(N, 4)`` of ``tiles`` ``(N, C, h, w)`` in [0, 1].

    For horizontal, then vertical, neighbours: the mean absolute difference ``d_p`` across the pixel
    pairs of each phase ``p`` of the :data:`JPEG_BLOCK` grid (pairs whose first index is ``p`` modulo
    8; all of a row or column's pairs when it is shorter than a block), then ``log(max_p d_p) -
    log(mean_p d_p)`` (blockiness, 0 without a grid) and ``log(mean_p d_p)``; ``1e-4`` is added to
    every ``d_p`` so that flat tiles give finite values.
    """
    statistics = []
    for differences in (tiles.diff(dim=-1), tiles.diff(dim=-2).transpose(-1, -2)):
        pairs = differences.abs().mean(dim=(1, 2))
        if pairs.shape[-1] == 0:  # a one-pixel-wide tile has no neighbours: no jumps
            pairs = pairs.new_zeros(pairs.shape[0], 1)
        period = min(JPEG_BLOCK, pairs.shape[-1])
        usable = pairs.shape[-1] // period * period
        per_phase = pairs[:, :usable].reshape(pairs.shape[0], -1, period).mean(dim=1) + 1e-4
        mean = per_phase.mean(dim=1)
        statistics += [per_phase.amax(dim=1).log() - mean.log(), mean.log()]
    return torch.stack(statistics, dim=1)


class PolicyUnit(nn.Module):
    """Q-network deciding stop / continue from the current estimate and its LSTM memory.

    ``pooled(x)``: ``(B, C, H, W) -> (B, T, S)``, the mean and standard deviation of the
    residual-unit features of each of the image's ``T`` tiles (:func:`policy_tiles`; ``S = 2 *
    policy_features``), followed by its :func:`block_grid_statistics` with ``block_statistics``
    (``S`` four larger); ``features(x)``: the same
    standardised by the buffers ``feature_mean`` / ``feature_std`` (set by :meth:`calibrate` before
    the policy is learnt: raw pooled statistics vary by a few hundredths around offsets of a tenth,
    too little for the LSTM's gates to resolve); ``step(features, hidden)``: one LSTM step of one
    tile, returning Q-values ``(N, 2)`` (column ``STOP`` = 0, ``CONTINUE`` = 1) and the new hidden
    state ``(h, c)``, each ``(N, policy_hidden)``; ``forward(x, hidden)``: the tiles' mean Q-values
    ``(B, 2)``. Splitting features from steps lets a replay buffer store features once and replay
    whole sequences through :meth:`q_sequence`.
    """

    def __init__(self, channels: int, features: int, hidden: int, block_statistics: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.block_statistics = block_statistics
        self.encoder = nn.Sequential(
            _conv_relu(channels, features, stride=2), ResidualUnit(features), ResidualUnit(features)
        )
        size = 2 * features + (4 if block_statistics else 0)
        self.lstm = nn.LSTMCell(size, hidden)
        self.head = nn.Linear(hidden, 2)
        self.register_buffer("feature_mean", torch.zeros(size))
        self.register_buffer("feature_std", torch.ones(size))

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
        # Weights saved before the statistics existed (a stage-1 unit) load with the identity
        # standardisation, which is what an uncalibrated policy uses.
        for name, identity in (("feature_mean", 0.0), ("feature_std", 1.0)):
            state_dict.setdefault(prefix + name, torch.full_like(getattr(self, name), identity))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def initial_hidden(self, batch: int, device: torch.device | None = None) -> Hidden:
        """Zero LSTM state ``(h, c)``, each ``(batch, policy_hidden)``."""
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def pooled(self, x: Tensor) -> Tensor:
        """Raw statistics ``(B, T, S)`` of the estimate ``x`` ``(B, C, H, W)``: the mean and standard
        deviation of each feature map of each of its ``T`` non-overlapping :data:`POLICY_TILE`-pixel
        tiles, every tile encoded on its own (one tile of the whole image when it is smaller; a
        remainder narrower than a tile is left out), then the tile's block-grid statistics when the
        unit reads them."""
        tiles = policy_tiles(x)
        maps = self.encoder(tiles).flatten(2)
        statistics = [maps.mean(dim=2), maps.std(dim=2, unbiased=False)]
        if self.block_statistics:
            statistics.append(block_grid_statistics(tiles))
        return torch.cat(statistics, dim=1).reshape(x.shape[0], tiles.shape[0] // x.shape[0], -1)

    def features(self, x: Tensor) -> Tensor:
        """What the LSTM reads, per tile ``(B, T, S)``: ``(pooled(x) - feature_mean) / feature_std``."""
        return (self.pooled(x) - self.feature_mean) / self.feature_std

    def calibrate(self, pooled: Tensor, floor: float = 1e-3) -> None:
        """Set the standardisation from raw :meth:`pooled` statistics ``(..., S)`` of typical estimates:
        their mean, and their standard deviation raised to ``floor`` (a dead channel stays at 0)."""
        pooled = pooled.reshape(-1, pooled.shape[-1])
        with torch.no_grad():
            self.feature_mean.copy_(pooled.mean(dim=0))
            self.feature_std.copy_(pooled.std(dim=0, unbiased=False).clamp_min(floor))

    def step(self, features: Tensor, hidden: Hidden) -> tuple[Tensor, Hidden]:
        """Q-values ``(B, 2)`` and the next hidden state from pooled ``features`` and ``hidden``."""
        h, c = self.lstm(features, hidden)
        return self.head(h), (h, c)

    def q_sequence(self, features: Tensor) -> Tensor:
        """Q-values ``(B, L, 2)`` along pooled ``features`` ``(B, L, S)`` of ``X_0 ... X_{L-1}``, the
        LSTM unrolled from its zero state (as :meth:`DURR.restore` runs it)."""
        hidden = self.initial_hidden(features.shape[0], features.device)
        q_values = []
        for position in range(features.shape[1]):
            q, hidden = self.step(features[:, position], hidden)
            q_values.append(q)
        return torch.stack(q_values, dim=1)

    def forward(self, x: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        """Q-values ``(B, 2)`` for estimate ``x`` ``(B, C, H, W)``: the mean over its ``T`` tiles of each
        tile's Q-values, every tile with its own LSTM state (``hidden``: ``(B T, policy_hidden)`` each,
        zeros when ``None``). With the MSE reward an image's return is the mean of its equal tiles'
        returns, so a policy learnt on one-tile patches reads an image of any size the same way."""
        features = self.features(x)
        batch, tiles = features.shape[:2]
        if hidden is None:
            hidden = self.initial_hidden(batch * tiles, x.device)
        q, hidden = self.step(features.reshape(batch * tiles, -1), hidden)
        return q.reshape(batch, tiles, -1).mean(dim=1), hidden


@register_model("durr")
class DURR(Restorer):
    """Blind restorer: the restoration unit unfolded for a number of loops the policy unit chooses.

    ``sigma`` and ``physics`` are accepted for the restorer contract and not used: the policy reads the
    degradation level from the estimates. ``loops`` (an int, or one int per sample) overrides the
    policy and is not capped by ``max_loops``.
    """

    config_class = DURRConfig
    tasks = ("denoise", "deblock")
    example_params = {
        "features": 4,
        "bottom_convs": 1,
        "policy_features": 4,
        "policy_hidden": 4,
        "max_loops": 3,
        "loop_schedule": ((25.0, 1), (50.0, 2)),
    }
    inference_options = {
        "loops": InferenceOption("loop count", lambda model, loops: _checked_loops(loops, model.config.max_loops))
    }
    # Supervised training unfolds the restoration unit only; the policy unit learns in a later stage.
    training_skips_parameters = True

    def __init__(self, config: DURRConfig | None = None) -> None:
        super().__init__()
        self.config = config or DURRConfig()
        self.unit = RestorationUnit(self.config.channels, self.config.features, self.config.bottom_convs)
        self.policy = PolicyUnit(
            self.config.channels,
            self.config.policy_features,
            self.config.policy_hidden,
            self.config.policy_block_statistics,
        )

    def unit_step(self, x: Tensor) -> Tensor:
        """One Euler step ``x + dt f(x)``, ``(B, C, H, W) -> (B, C, H, W)``."""
        return x + self.config.dt * self.unit(x)

    def forward(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None, loops: Loops | None = None
    ) -> Tensor:
        """Differentiable unfolding of ``y`` ``(B, C, H, W)``; output not clamped.

        With ``loops`` (an int, or ``(B,)`` ints as a refined policy gives from the noise level) every
        sample takes exactly its number of steps; without, the greedy policy decides (the stopping
        decision itself carries no gradient).
        """
        self._check_channels(y)
        if loops is None:
            return self._unfold_with_policy(y)[0]
        return self._unfold_fixed(y, self._loops_per_sample(loops, y))

    def scheduled_loops(self, level: Tensor) -> Tensor:
        """The refined policy's loops ``(B,)`` long for degradation levels ``level`` ``(B,)``.

        With pairs ``(l_k, n_k)`` of ``loop_schedule`` and ``l_k <= level <= l_{k+1}`` the count is
        ``floor(n_k + t (n_{k+1} - n_k) + 1/2)``, ``t = (level - l_k) / (l_{k+1} - l_k)`` (linear
        interpolation rounded half up); a level below ``l_1`` or above the last level takes the end
        pair's count. A one-pair schedule gives its count to every sample, NaN levels included.
        """
        schedule = self.config.loop_schedule
        if not schedule:
            raise ConfigError("DURR has no loop_schedule: set model params loop_schedule to train its restoration unit")
        level = torch.as_tensor(level, dtype=torch.float64).reshape(-1).cpu()
        levels = torch.tensor([point for point, _ in schedule], dtype=torch.float64)
        counts = torch.tensor([loops for _, loops in schedule], dtype=torch.float64)
        if len(schedule) == 1:
            return torch.full(level.shape, int(counts[0]), dtype=torch.long)
        if bool(torch.isnan(level).any()):
            raise ConfigError(
                "DURR's loop_schedule needs every sample's degradation level, got NaN: "
                "train on a task with a level (denoise, deblock) or use a one-pair schedule"
            )
        clamped = level.clamp(float(levels[0]), float(levels[-1]))
        segment = (torch.searchsorted(levels, clamped, right=True) - 1).clamp(0, len(schedule) - 2)
        start, end = levels[segment], levels[segment + 1]
        fraction = (clamped - start) / (end - start)
        interpolated = counts[segment] + fraction * (counts[segment + 1] - counts[segment])
        return torch.floor(interpolated + 0.5).long()

    def training_forward(self, y: Tensor, operator: Operator, level: Tensor) -> Tensor:
        """Stage-1 training map: each sample of ``y`` ``(B, C, H, W)`` unfolded for exactly
        :meth:`scheduled_loops` of its ``level`` ``(B,)`` (the refined policy); output not clamped."""
        self._check_channels(y)
        return self._unfold_fixed(y, self.scheduled_loops(level).to(y.device))

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None, loops: Loops | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: the unfolded estimate clamped to [0, 1] and the loops taken by each sample.

        A gray model given colour images restores each channel as its own gray image (valid for
        noise independent across channels), with its own loops. ``info.iterations`` lists the unit
        steps per sample (per channel of each sample in that case); ``info.extra["policy"]`` says
        whether the learned policy (``"learned"``) or the ``loops`` override (``"fixed"``) chose them.
        """
        start = time.perf_counter()
        samples = self._channels_as_samples(y)
        with torch.no_grad():
            if loops is None:
                x, taken = self._unfold_with_policy(samples)
                source = "learned"
            else:
                per_image = samples.shape[0] // y.shape[0]
                taken = self._loops_per_sample(loops, y).repeat_interleave(per_image)
                x = self._unfold_fixed(samples, taken)
                source = "fixed"
        info = RestoreInfo(
            iterations=[int(n) for n in taken], seconds=time.perf_counter() - start, extra={"policy": source}
        )
        return x.reshape(y.shape).clamp(0.0, 1.0), info

    def _unfold_fixed(self, y: Tensor, loops: Tensor) -> Tensor:
        """Sample ``i`` takes exactly ``loops[i]`` unit steps; the unit only sees the samples still running."""
        x = y
        for n in range(int(loops.max().item()) if loops.numel() else 0):
            running = (loops > n).nonzero().squeeze(1)
            if running.numel() == x.shape[0]:
                x = self.unit_step(x)
            else:
                x = x.index_copy(0, running, self.unit_step(x[running]))
        return x

    def _unfold_with_policy(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy policy: stop a sample once ``Q(stop) > Q(continue)`` and ``min_loops`` have run."""
        config = self.config
        x = y
        hidden = None
        taken = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        running = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        for n in range(config.max_loops):
            q, hidden = self.policy(x, hidden)
            wants_stop = q[:, STOP] > q[:, CONTINUE]
            if n >= config.min_loops:
                running = running & ~wants_stop
            if not bool(running.any()):
                break
            x = torch.where(running.view(-1, 1, 1, 1), self.unit_step(x), x)
            taken = taken + running.long()
        return x, taken

    def _loops_per_sample(self, loops: Loops, y: Tensor) -> Tensor:
        requested = torch.as_tensor(loops)
        if requested.is_floating_point() or requested.is_complex() or requested.dtype == torch.bool:
            raise ConfigError(f"loops must be integers, got {requested.tolist()}")
        counts = requested.to(device=y.device, dtype=torch.long).reshape(-1)
        if counts.numel() == 1:
            counts = counts.expand(y.shape[0])
        if counts.numel() != y.shape[0]:
            raise ConfigError(f"loops must be one int or one per sample ({y.shape[0]}), got {counts.numel()} values")
        if bool((counts < 0).any()):
            raise ConfigError(f"loops must be non-negative, got {counts.tolist()}")
        _checked_loops(int(counts.max()), self.config.max_loops)
        return counts

    def _check_channels(self, y: Tensor) -> None:
        if y.shape[1] != self.config.channels:
            raise ConfigError(f"this DURR expects {self.config.channels}-channel images, got {y.shape[1]} channels")


def _checked_loops(loops: int, max_loops: int) -> int:
    """A loop count to run instead of the policy's: an integer from 0 to ``LOOPS_BEYOND_TRAINING`` times
    the ``max_loops`` the unit was trained for (further out the unit is untested and the run only long),
    else :class:`ConfigError`."""
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 0:
        raise ConfigError(f"--loops must be a non-negative number of loops, got {loops!r}")
    limit = LOOPS_BEYOND_TRAINING * max_loops
    if loops > limit:
        raise ConfigError(
            f"--loops {loops} is over {limit}, {LOOPS_BEYOND_TRAINING} times the {max_loops} loops this model was "
            "trained to stop by"
        )
    return loops
