"""Training configurations: one YAML file -> a tree of frozen dataclasses, strictly checked.

Every section is a dataclass; a key that is not a field raises :class:`ConfigError` naming the key,
where it was found and the valid keys, so a typo never trains the wrong model silently. Example::

    seed: 0
    steps: 2000                      # or epochs: 50 (exactly one of the two)
    model: {name: dncnn, params: {depth: 17, features: 32}}
    data:  {train_set: train400, patch_size: 40, batch_size: 32, task: denoise, task_params: {sigma: 25}}
    optim: {name: adam, lr: 1.0e-3}
    schedule: {name: cosine, min_lr: 1.0e-5}
    eval:  {bench: bsd68, task: denoise, task_params: {sigma: 25}, every: 500, max_images: 8}
    init_weights: ../runs/dncnn-s25/model.safetensors   # optional: start a fresh run from these weights
    backtrack: {every: 1000, factor: 1.05, lr_factor: 0.8}  # optional: reload a snapshot when the loss jumps

Noise levels in ``task_params`` and ``sigma_range`` are 8-bit levels (25 means 25/255), as on the command line.
``trainer: dqn`` with a ``dqn`` section trains DURR's policy unit by deep Q-learning instead
(:mod:`converge.models.durr.training`); the default ``supervised`` trainer fits ``model.training_forward``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from converge.errors import ConfigError
from converge.plain import plain_data
from converge.train.registry import trainer_class

LOSSES = ("mse", "l1", "charbonnier", "noise_mse")
REWARDS = ("mse", "psnr")  # DURR policy rewards: converge.models.durr.dqn.continue_rewards
SIGMA_SAMPLINGS = ("uniform", "log_uniform")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")
EXPORTS = ("final", "best")
EVAL_MODES = ("restore", "training")
PRECISIONS = ("fp32", "bf16")
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
JPEG_QUALITIES = (1, 100)


@dataclass(frozen=True)
class ModelSection:
    """Which model to build: a registered model name (:func:`converge.models.registered_models`) and its hyper-parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


# MTDEQ's training sets (Willingham et al., Sec. III-A): noise sigma 0.005 s on [0, 1], s = 0..49, in
# 8-bit levels; bicubic SR factors (1: no downsampling); Gaussian blur widths; completion drop rates.
PAPER_NOISE_SIGMAS = tuple(round(0.005 * step * 255.0, 6) for step in range(50))
PAPER_SR_FACTORS = (1, 2, 3, 4)
PAPER_BLUR_SIGMAS = (0.4, 0.8, 1.2, 1.6, 2.0, 2.4)
PAPER_DROP_PROBABILITIES = (0.2, 0.4, 0.5, 0.6, 0.8, 0.9)


@dataclass(frozen=True)
class MultiTaskSection:
    """Multi-task degradations (MTDEQ, :class:`converge.data.multitask.MultiTaskDegradation`); the
    defaults are the paper's sets.

    Each patch draws one problem uniformly from all of ``sr_factors`` (bicubic downsampling by that
    factor, circular; factor 1 is no downsampling), ``blur_sigmas`` (Gaussian blur of that width in
    pixels on a ``blur_size`` square support, circular: the test protocol's 25x25) and
    ``drop_probabilities`` (pixel completion, each pixel dropped with that probability, a fresh mask
    per patch), then one noise sigma uniformly from ``noise_sigmas`` (8-bit levels, added to the
    measurement); an empty list leaves that family out. ``per_crop``: consecutive patches that share
    one clean crop, each degraded its own way (the paper degrades every crop 5 ways); batches hold
    whole groups, so ``data.batch_size`` and ``data.patches_per_image`` must be multiples of it.
    """

    sr_factors: tuple[int, ...] = PAPER_SR_FACTORS
    blur_sigmas: tuple[float, ...] = PAPER_BLUR_SIGMAS
    blur_size: int = 25
    drop_probabilities: tuple[float, ...] = PAPER_DROP_PROBABILITIES
    noise_sigmas: tuple[float, ...] = PAPER_NOISE_SIGMAS
    per_crop: int = 5

    def __post_init__(self) -> None:
        for name in ("sr_factors", "blur_sigmas", "drop_probabilities", "noise_sigmas"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if len(set(values)) != len(values):
                raise ConfigError(f"data.multitask.{name} lists a value twice: {list(values)}")
            if not all(math.isfinite(value) for value in values):
                raise ConfigError(f"data.multitask.{name} must hold finite numbers, got {list(values)}")
        if any(factor < 1 for factor in self.sr_factors):
            raise ConfigError(f"data.multitask.sr_factors must be positive integers, got {list(self.sr_factors)}")
        if any(sigma <= 0 for sigma in self.blur_sigmas):
            raise ConfigError(f"data.multitask.blur_sigmas must be positive (pixels), got {list(self.blur_sigmas)}")
        if self.blur_size < 1:
            raise ConfigError(f"data.multitask.blur_size must be a positive integer, got {self.blur_size}")
        if any(not 0 <= p < 1 for p in self.drop_probabilities):
            raise ConfigError(
                f"data.multitask.drop_probabilities must lie in [0, 1), got {list(self.drop_probabilities)}"
            )
        if not (self.sr_factors or self.blur_sigmas or self.drop_probabilities):
            raise ConfigError(
                "data.multitask needs at least one degradation: list sr_factors, blur_sigmas or drop_probabilities"
            )
        if not self.noise_sigmas or any(sigma < 0 for sigma in self.noise_sigmas):
            raise ConfigError(
                "data.multitask.noise_sigmas must list at least one non-negative level (8-bit; [0] for no noise), "
                f"got {list(self.noise_sigmas)}"
            )
        if self.per_crop < 1:
            raise ConfigError(f"data.multitask.per_crop must be a positive integer, got {self.per_crop}")


@dataclass(frozen=True)
class DataSection:
    """Training patches and how they are degraded on the fly.

    ``train_set``: a set of the data registry; ``patch_size``: side of the square crops;
    ``patches_per_image``: crops per image and epoch; ``channels``: 1 (gray) or 3 (colour);
    ``task`` and ``task_params``: a named degradation of ``converge.physics.tasks``;
    ``sigma_range``: ``[low, high]`` 8-bit levels for blind denoising, one level per patch drawn
    uniformly (then ``task`` must be ``denoise`` and ``task_params`` must not set ``sigma``);
    ``sigma_sampling``: how that level is drawn, ``uniform`` or ``log_uniform`` (uniform in
    ``log sigma``, ``low > 0``: as many patches between 20 and 40 as between 40 and 80);
    ``quality_range``: ``[low, high]`` JPEG qualities for blind deblocking, one integer per patch drawn
    uniformly from ``low..high`` (then ``task`` must be ``deblock`` without a fixed ``quality``);
    ``saturation_range``: ``[low, high]``, colour only: each crop's colours are pushed ``k`` times
    further from their grey level (``grey + k (x - grey)``, clipped to [0, 1]), ``k`` drawn uniformly per
    crop (1 leaves a crop as it is), so a model also sees colours more saturated than its training set's;
    ``saturation_share``: the fraction of crops so pushed (default 1: all), each crop drawn on its own;
    the rest keep their colours;
    ``multitask``: a :class:`MultiTaskSection` that replaces ``task``, ``task_params`` and the ranges
    (MTDEQ: each patch degraded by a drawn problem and noise level, the level recorded is its noise
    sigma); ``patch_size`` must then be a multiple of every SR factor, and ``batch_size`` and
    ``patches_per_image`` multiples of its ``per_crop``. For example (the paper's sets, 16 crops a
    batch)::

        data:
          train_set: cbsd400
          patch_size: 128
          patches_per_image: 60
          batch_size: 80                 # 16 crops x per_crop 5
          channels: 3
          multitask:
            sr_factors: [1, 2, 3, 4]
            blur_sigmas: [0.4, 0.8, 1.2, 1.6, 2.0, 2.4]
            blur_size: 25
            drop_probabilities: [0.2, 0.4, 0.5, 0.6, 0.8, 0.9]
            noise_sigmas: [0, 1.275, 2.55, ..., 62.475]   # 0.005 s * 255, s = 0..49
            per_crop: 5
    """

    train_set: str
    patch_size: int = 40
    patches_per_image: int = 128
    batch_size: int = 32
    channels: int = 1
    task: str = "denoise"
    task_params: dict[str, Any] = field(default_factory=dict)
    sigma_range: tuple[float, float] | None = None
    quality_range: tuple[int, int] | None = None
    sigma_sampling: str = "uniform"
    augment: bool = True
    saturation_range: tuple[float, float] | None = None
    saturation_share: float = 1.0
    multitask: MultiTaskSection | None = None

    def __post_init__(self) -> None:
        for name in ("patch_size", "patches_per_image", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, got {self.channels}")
        if self.sigma_range is not None:
            low, high = self.sigma_range
            if not 0 <= low <= high:
                raise ConfigError(
                    f"data.sigma_range must be [low, high] with 0 <= low <= high, got {list(self.sigma_range)}"
                )
            if self.task != "denoise" or "sigma" in self.task_params:
                raise ConfigError("data.sigma_range needs task 'denoise' without a fixed task_params.sigma")
        _check_choice("data.sigma_sampling", self.sigma_sampling, SIGMA_SAMPLINGS)
        if self.sigma_sampling != "uniform" and (self.sigma_range is None or self.sigma_range[0] <= 0):
            raise ConfigError(
                f"data.sigma_sampling {self.sigma_sampling!r} needs a data.sigma_range with a positive lower end"
            )
        if self.quality_range is not None:
            low, high = self.quality_range
            if not JPEG_QUALITIES[0] <= low <= high <= JPEG_QUALITIES[1]:
                raise ConfigError(
                    "data.quality_range must be [low, high] with 1 <= low <= high <= 100, "
                    f"got {list(self.quality_range)}"
                )
            if self.task != "deblock" or "quality" in self.task_params:
                raise ConfigError("data.quality_range needs task 'deblock' without a fixed task_params.quality")
        if self.saturation_range is not None:
            low, high = self.saturation_range
            if self.channels != 3 or not 0 <= low <= high:
                raise ConfigError(
                    "data.saturation_range needs colour crops (channels: 3) and 0 <= low <= high, "
                    f"got {list(self.saturation_range)} with channels {self.channels}"
                )
        if not 0 < self.saturation_share <= 1 or (self.saturation_share < 1 and self.saturation_range is None):
            raise ConfigError(
                f"data.saturation_share must be in (0, 1] and below 1 only with a saturation_range, "
                f"got {self.saturation_share}"
            )
        if self.multitask is not None:
            self._check_multitask(self.multitask)

    def _check_multitask(self, multitask: MultiTaskSection) -> None:
        if self.task != "denoise" or self.task_params or self.sigma_range is not None or self.quality_range is not None:
            raise ConfigError(
                "data.multitask replaces task, task_params, sigma_range and quality_range: remove them"
            )
        misfits = [factor for factor in multitask.sr_factors if self.patch_size % factor]
        if misfits:
            multiple = math.lcm(*multitask.sr_factors)
            raise ConfigError(
                f"data.patch_size {self.patch_size} is not a multiple of the super-resolution factor(s) "
                f"{', '.join(map(str, misfits))} of data.multitask.sr_factors: choose a multiple of {multiple}"
            )
        for name in ("batch_size", "patches_per_image"):
            if getattr(self, name) % multitask.per_crop:
                raise ConfigError(
                    f"data.{name} {getattr(self, name)} is not a multiple of data.multitask.per_crop "
                    f"{multitask.per_crop}: batches and images hold whole groups of degradations of one crop"
                )


@dataclass(frozen=True)
class OptimSection:
    """Optimiser: ``adam``, ``adamw`` or ``rmsprop`` (PyTorch's defaults otherwise) with learning
    rate, betas (Adam only), ``eps`` (the term added to the denominator of every update; PyTorch's
    1e-8 by default, the GroupSC authors train with 1e-3) and weight decay; ``grad_clip`` (a max
    global gradient norm) or ``None`` for no clipping."""

    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = DEFAULT_BETAS
    eps: float = DEFAULT_EPS
    weight_decay: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        _check_choice("optim.name", self.name, OPTIMIZERS)
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if not self.eps > 0:
            raise ConfigError(f"optim.eps must be positive, got {self.eps}")
        if self.name == "rmsprop" and self.betas != DEFAULT_BETAS:
            raise ConfigError("optim.betas apply to adam and adamw only: remove them for rmsprop")


@dataclass(frozen=True)
class ScheduleSection:
    """Learning-rate schedule after ``warmup_steps`` of linear warm-up.

    ``cosine``: from ``optim.lr`` down to ``min_lr`` at the last step; ``step``: multiply by ``gamma``
    at each of ``milestones`` (steps), or every ``every`` steps (``lr * gamma ** (step // every)``);
    ``constant``: keep ``optim.lr``.
    """

    name: str = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    every: int | None = None

    def __post_init__(self) -> None:
        _check_choice("schedule.name", self.name, SCHEDULES)
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.every is not None:
            if self.every < 1:
                raise ConfigError(f"schedule.every must be a positive number of steps, got {self.every}")
            if self.name != "step" or self.milestones:
                raise ConfigError("schedule.every needs name 'step' and no milestones: use one or the other")


@dataclass(frozen=True)
class EvalSection:
    """Periodic evaluation: PSNR on the first ``max_images`` of ``bench`` (``None``: all) every
    ``every`` steps and at the end, with the seeded evaluation degradation of ``task``.

    ``mode``: ``restore`` runs the model's inference (``restore``: DURR's learned policy);
    ``training`` runs the map being trained, ``training_forward(y, operator, level)`` clamped to [0, 1], with
    the eval task's level (DURR's refined policy while its restoration unit trains).
    """

    bench: str
    task: str = "denoise"
    task_params: dict[str, Any] = field(default_factory=dict)
    every: int = 1000
    max_images: int | None = 8
    mode: str = "restore"

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"eval.every must be a positive number of steps, got {self.every}")
        _check_choice("eval.mode", self.mode, EVAL_MODES)


@dataclass(frozen=True)
class DQNSection:
    """Deep Q-learning of DURR's policy unit (``trainer: dqn``); the restoration unit stays frozen.

    Every training step plays one episode per patch of a data batch (epsilon-greedy, at most the
    model's ``max_loops`` unit steps), stores the episodes in a replay buffer of ``replay_capacity``
    episodes, then makes ``updates_per_step`` optimiser updates, each on ``batch_size`` replayed
    episodes, once the buffer holds that many. ``gamma``: discount; ``epsilon_start`` decays
    linearly to ``epsilon_end`` over the first ``epsilon_steps`` steps; ``target_every``: updates
    between copies of the policy into the target network; ``reward``: ``mse`` (the paper's ``lam
    (L(x_{n-1}) - L(x_n))``, ``L`` the per-patch MSE on the [0, 1] scale) or ``psnr`` (``lam`` times
    the decibels a loop gains; :func:`~converge.models.durr.dqn.continue_rewards`); ``lam``: its scale;
    ``double``: Double DQN targets (the next action chosen by the online network, valued by the
    target network; :func:`~converge.models.durr.dqn.q_targets`). ``train_encoder``: the whole policy
    network learns, its convolutional encoder too (the paper), and the replay stores the estimates
    (in half precision) instead of their features; else the encoder keeps its initial weights.
    """

    replay_capacity: int = 10000
    batch_size: int = 64
    updates_per_step: int = 1
    gamma: float = 0.95
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_steps: int = 1000
    target_every: int = 100
    reward: str = "mse"
    lam: float = 1000.0
    double: bool = False
    train_encoder: bool = False

    def __post_init__(self) -> None:
        for name in ("replay_capacity", "batch_size", "updates_per_step", "epsilon_steps", "target_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dqn.{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"dqn.gamma must lie in [0, 1], got {self.gamma}")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"dqn.{name} must lie in [0, 1], got {getattr(self, name)}")
        _check_choice("dqn.reward", self.reward, REWARDS)
        if not self.lam > 0:
            raise ConfigError(f"dqn.lam must be positive, got {self.lam}")


@dataclass(frozen=True)
class BacktrackSection:
    """Backtracking against divergence (the GroupSC authors' safeguard): every ``every`` steps the
    mean training loss of those steps is compared with the mean of the steps before the last
    snapshot. Above ``factor`` times it, the model and optimiser are reloaded from the snapshot and
    the learning rate is multiplied by ``lr_factor`` (for the rest of the run, cumulatively);
    otherwise a new snapshot is taken. The step count goes on either way. ``factor`` 1.05 is a
    0.2 dB fall of the training PSNR, the authors' test.
    """

    every: int
    factor: float = 1.05
    lr_factor: float = 0.8

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"backtrack.every must be a positive number of steps, got {self.every}")
        if not self.factor >= 1.0:
            raise ConfigError(f"backtrack.factor must be at least 1 (a loss ratio), got {self.factor}")
        if not 0.0 < self.lr_factor <= 1.0:
            raise ConfigError(f"backtrack.lr_factor must lie in (0, 1], got {self.lr_factor}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Exactly one of ``steps`` and ``epochs`` is set.

    ``loss``: one of ``mse``, ``l1``, ``charbonnier``, ``noise_mse``; ``checkpoint_every`` and
    ``log_every``: in steps; ``export``: which weights become ``model.safetensors`` (``final`` or the
    ``best`` evaluated ones); ``seed``: seeds model initialisation, patch sampling and training noise.
    ``init_weights``: a safetensors file (saved for this very model and parameters, or one that the
    model's ``adopt_weights`` takes: MTDEQ from its U-Net prior's) that a fresh run loads before
    step 0; a resumed run ignores it. :func:`load_config` resolves a relative path
    against the config file's folder. ``trainer``: ``supervised`` or ``dqn`` (needs a ``dqn``
    section, and no ``loss``: its loss is the temporal-difference Huber loss). ``backtrack``: a
    :class:`BacktrackSection`, or ``None`` for none. ``precision``: ``fp32``, or ``bf16`` to run the
    model's training forward under bfloat16 autocast (about half the step time of a convolutional
    net on a CPU with AVX512-BF16; the loss, the optimiser state and evaluation stay in float32;
    see docs/training-speed.md). ``channels_last``: keep the model's weights and the batches in
    channels-last memory order (NHWC), which the CPU's convolutions run faster on; the numbers are the
    same. ``max_bad_steps``: a run stops with an error, exporting nothing,
    after this many consecutive steps whose loss is not finite or over 100 times the lowest loss so
    far (the best evaluated weights stay in ``best.safetensors``).
    """

    model: ModelSection
    data: DataSection
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    eval: EvalSection | None = None
    loss: str = "mse"
    steps: int | None = None
    epochs: int | None = None
    checkpoint_every: int = 500
    log_every: int = 50
    export: str = "final"
    seed: int = 0
    init_weights: str | None = None
    trainer: str = "supervised"
    dqn: DQNSection | None = None
    backtrack: BacktrackSection | None = None
    precision: str = "fp32"
    channels_last: bool = False
    max_bad_steps: int = 20

    def __post_init__(self) -> None:
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("export", self.export, EXPORTS)
        trainer_class(self.trainer)  # an unknown kind raises, listing the registered ones
        if (self.trainer == "dqn") != (self.dqn is not None):
            raise ConfigError("a dqn section goes with trainer: dqn, and trainer: dqn needs a dqn section")
        if self.trainer == "dqn" and self.loss != "mse":
            raise ConfigError("loss does not apply to trainer: dqn (it fits Q-values with a Huber loss): remove it")
        if self.trainer == "dqn" and self.backtrack is not None:
            raise ConfigError("backtrack applies to trainer: supervised only: remove it")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("set exactly one of 'steps' and 'epochs' in the training config")
        for name in ("steps", "epochs", "checkpoint_every", "log_every", "max_bad_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        if self.export == "best" and self.eval is None:
            raise ConfigError("export: best needs an eval section to decide which weights are best")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read and check a YAML training config; a missing file or bad YAML raises :class:`ConfigError`.

    ``overrides`` are ``dotted.key=value`` strings applied on top of the file, the value parsed as
    YAML (``data.task_params.sigma=15``, ``optim.lr=3e-4``, ``eval=null``). A relative
    ``init_weights`` from the file is taken from the config file's folder, one from an override from
    the working directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read training config {path}: {error.strerror or error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"training config {path} is not valid YAML: {error}") from None
    if isinstance(raw, dict) and raw.get("init_weights") is not None:
        raw["init_weights"] = str((path.parent / raw["init_weights"]).resolve())
    for override in overrides:
        raw = apply_override(raw, override)
    return config_from_dict(raw)


def apply_override(raw: object, override: str) -> dict[str, Any]:
    """``raw`` (a parsed config) with one ``dotted.key=value`` override set (nested mappings created)."""
    key, separator, text = override.partition("=")
    if not separator or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"an override must look like section.key=value, got {override!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"the value of override {override!r} is not valid YAML") from None
    if key == "init_weights" and isinstance(value, str):
        value = str(Path(value).resolve())
    merged = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    node = merged
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value
    return merged


def config_from_dict(raw: object) -> TrainConfig:
    """Build a :class:`TrainConfig` from plain data (the parsed YAML), rejecting unknown keys."""
    return _build(TrainConfig, raw, "config")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain, YAML-safe data that :func:`config_from_dict` turns back into an equal config."""
    return plain_data(dataclasses.asdict(config))


def _build(cls: type, raw: object, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}")
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown key {key!r} in {where}: valid keys are {', '.join(fields)}")
    missing = [
        name
        for name, item in fields.items()
        if name not in raw and item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where} is missing required key(s) {', '.join(missing)}")
    values = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in raw.items()}
    return cls(**values)


def _convert(hint: Any, value: object, where: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert it (lists -> tuples, YAML's "1e-3" -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where} must not be empty")
        hint = next(option for option in options if option is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, where) for item in value)
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(arg, item, where) for arg, item in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {where} {value!r}: choose one of {', '.join(choices)}")
