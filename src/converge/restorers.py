"""The one table from a restorer name (a classical baseline, a shipped model or a plug-and-play
algorithm) to a callable.

A restorer maps a degraded observation ``y`` (``(1, C, H, W)`` in [0, 1]) and the operator that made
it to a :class:`Restoration`. Baselines come from :mod:`converge.baselines`, learned models from
:mod:`converge.zoo`, plug-and-play algorithms (run with a denoiser prior) from :mod:`converge.optim`;
the CLI, the benchmark runner and the demo all resolve names here.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from converge.color import rgb_to_ycbcr, ycbcr_to_rgb
from converge.devices import resolve_device
from converge.errors import ConfigError
from converge.models.base import RestoreInfo
from converge.physics.base import LinearOperator, Operator
from converge.physics.mosaic import BayerMosaic
from converge.physics.tasks import Task
from converge.progress import report
from converge.tiling import DEFAULT_MAX_MEMORY

# Tasks whose operator acts pixel by pixel, so a tile can be restored without the rest of the image.
_TILEABLE_TASKS = ("denoise", "deblock")

DEFAULT_PRIOR = "bm3d"
PRECISIONS = ("fp32", "bf16", "auto")
"""How a learned model computes: ``fp32``; ``bf16`` (bfloat16 autocast); ``auto``: bf16 for a shipped
model measured to lose at most 0.02 dB under it (its manifest's ``bf16_inference``) on a CPU that
computes bfloat16 in hardware, fp32 otherwise."""
"""The denoiser a plug-and-play algorithm runs with when no prior is named: BM3D is told the level of
each iteration and works at any level, where the shipped networks are trained at one."""


@dataclass(frozen=True)
class PnPSchedule:
    """The :func:`~converge.optim.dpir_schedule` of a scheduled plug-and-play run (admm, hqs,
    forward_backward) for one task: ``iterations``, DPIR's ``lam`` of the penalty and ``floor``, the
    last denoiser level ([0, 1] scale) when the task's noise is lower (a noiseless task ends there)."""

    iterations: int
    lam: float = 0.23
    floor: float = 0.255 / 255.0


# One schedule per task with a linear operator (JPEG deblocking is not among them). deblur, sr and
# inpaint: tuned once for the Gauss prior drunet-color on the first 6 bsds-val32 images, the best mean
# over each task's protocol columns (benchmarks/results/tune_pnp-drunet-color.md, docs/plug-and-play.md)
# and reused for every other prior; denoise and demosaic keep untuned starting values.
_PNP_SCHEDULES = {
    "denoise": PnPSchedule(4),
    "deblur": PnPSchedule(8),
    "sr": PnPSchedule(24),
    "inpaint": PnPSchedule(24, floor=5.0 / 255.0),
    "demosaic": PnPSchedule(24),
}
# RED has one fixed level (the task's noise level, this one for a noiseless task) and weight lam.
_RED_FLOOR_SIGMA = 5.0 / 255.0
_RED_LAM = 0.2


@dataclass(frozen=True)
class Restoration:
    """A restored image ``(1, C, H, W)`` in [0, 1], with the loop count (when the model has one), the
    restorer's time, what restored it (the baseline, the zoo entry (for a family, the one picked for
    this image) or the weights file) and, when the restorer estimated the image's noise level (blind),
    that estimate in 8-bit levels; ``tiles``: how many tiles it was restored in when the memory budget
    made :func:`make_restorer` tile it (``None``: in one piece, or in the tiles the caller asked for);
    ``residuals``: for an iterative restorer, its relative residual (a DEQ solver's) or relative change
    (a plug-and-play algorithm's) at each iteration; ``precision``: ``fp32`` or ``bf16`` (see
    :data:`PRECISIONS`)."""

    image: Tensor
    seconds: float
    iterations: float | None = None
    model: str | None = None
    noise_level: float | None = None
    tiles: int | None = None
    residuals: tuple[float, ...] | None = None
    precision: str = "fp32"


RestoreFunction = Callable[[Tensor, Operator], Restoration]


def restorer_names() -> dict[str, str]:
    """Every name ``make_restorer`` accepts, with a one-line description."""
    from converge import baselines, zoo
    from converge.optim import algorithm_names

    names = {name: spec.description for name, spec in baselines.BASELINES.items() if name == spec.name}
    names.update({name: _algorithm_description(name) for name in algorithm_names()})
    names.update({name: entry.description for name, entry in zoo.ZOO.items()})
    for family in sorted(set(zoo.zoo_names()) - set(zoo.ZOO)):
        members = ", ".join(sorted(entry.name for entry in zoo.ZOO.values() if entry.model == family))
        names[family] = f"the {family} weights that fit the task and noise level ({members})"
    return names


def restorers_for_task(task: str) -> list[str]:
    """The names that restore ``task``: shipped model families and entries with weights for it, the
    baselines that handle it and, for a task with a linear operator, the plug-and-play algorithms."""
    from converge import baselines, zoo
    from converge.optim import algorithm_names

    shipped = sorted({entry.model for entry in zoo.ZOO.values() if entry.task == task} - set(zoo.ZOO))
    shipped += sorted(entry.name for entry in zoo.ZOO.values() if entry.task == task)
    if task in _PNP_SCHEDULES:
        shipped += sorted(entry.name for entry in zoo.ZOO.values() if entry.algorithm is not None)
    classical = [name for name, spec in baselines.BASELINES.items() if name == spec.name and task in spec.tasks]
    return shipped + classical + (algorithm_names() if task in _PNP_SCHEDULES else [])


def weights_digest(
    name: str,
    task: str | None = None,
    channels: int | None = None,
    sigma: float | None = None,
    quality: int | None = None,
    *,
    blind: bool = False,
    prior: str | None = None,
) -> str | None:
    """SHA-256 (hex) of the weights that model ``name`` restores with: a ``.safetensors`` file, or the
    weights of a zoo entry, or of the zoo family's entries that can restore ``task`` (every entry when
    ``task`` is None) on images of ``channels`` channels: the one entry the family picks for a given
    noise ``sigma`` (8-bit levels) or JPEG ``quality`` when not ``blind``, else all of them (those for
    ``channels`` when the family has any). ``None`` for a classical baseline or a missing file.
    Evaluation reports carry it, so a report of older weights is never read as one of the current
    weights, and shipping a family's weights for one task, channel count or level leaves its other
    reports current.

    For a plug-and-play algorithm it is the digest of what decides its result instead: the algorithm,
    its ``prior`` (default :data:`DEFAULT_PRIOR`) and that prior's weights, and the task's
    :class:`PnPSchedule`, so retuning a schedule or retraining a prior outdates the reports. A zoo entry
    that restores through an algorithm (MTDEQ) has that algorithm's digest with itself as the prior
    (with ``task`` None, the digest of its own weights)."""
    from converge import zoo
    from converge.optim import algorithm_names

    through = _restores_through(name)
    if through is not None and task is not None:
        return weights_digest(through, task, channels, sigma, quality, blind=blind, prior=name)
    if name in algorithm_names():
        prior = prior or DEFAULT_PRIOR
        prior_sigma = sigma if sigma is not None else 255.0 * _RED_FLOOR_SIGMA
        prior_task = None if _restores_through(prior) else "denoise"  # a many-task prior: its own weights
        setting = (name, prior, weights_digest(prior, prior_task, channels, prior_sigma, blind=blind),
                   _PNP_SCHEDULES.get(task or ""), _RED_LAM, _RED_FLOOR_SIGMA)
        return hashlib.sha256(repr(setting).encode()).hexdigest()
    if name in zoo.zoo_names():
        entries = [
            entry for entry in zoo.ZOO.values() if name in (entry.name, entry.model) and task in (None, entry.task)
        ]
        level_given = sigma is not None or quality is not None
        if entries and name not in zoo.ZOO and task is not None and level_given and not blind:
            entries = [zoo.resolve_entry(name, task, sigma, quality, channels=channels)]
        for_channels = [entry for entry in entries if entry.channels == channels]
        files = sorted(zoo.weights_path(entry.name) for entry in for_channels or entries)
    elif name.endswith(".safetensors"):
        files = [Path(name)]
    else:
        return None
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        if not path.is_file():
            return None
        digest.update(path.read_bytes())
    return digest.hexdigest()


def make_restorer(
    name: str,
    task: Task,
    tile: int | None = None,
    *,
    blind: bool = False,
    loops: int | None = None,
    stride: int | None = None,
    window: int | None = None,
    device: str | torch.device = "cpu",
    prior: str | None = None,
    max_memory: float | None = None,
    precision: str = "fp32",
) -> RestoreFunction:
    """Resolve ``name`` for ``task``; ``tile`` (pixels) runs a learned model in overlapping tiles.

    ``max_memory`` (bytes, default :data:`~converge.tiling.DEFAULT_MAX_MEMORY`): a shipped model whose
    peak memory per pixel is measured (its manifest's ``memory_bytes_per_pixel``) restores an image too
    large for it in one piece in the largest tiles that keep it under this budget
    (:func:`~converge.tiling.tile_pixels_for_memory`), or refuses it with :class:`ConfigError` before
    any work when it cannot be tiled or not even one tile fits.

    ``blind``: the task's noise level is unknown to the restorer (the user gave none, or a blind
    benchmark): learned models get ``sigma=None`` and estimate it themselves when they use it,
    baselines get :func:`~converge.physics.noise.estimate_noise_sigma` of each image, and a zoo model
    family picks, for each image, its blind entry or else the one nearest that estimate. ``loops``:
    the number of loops a model whose ``restore`` takes ``loops`` (DURR) runs instead of choosing;
    ``stride``: the block stride of a model whose ``restore`` takes one (GroupSC's csr and group);
    ``window``: the attention window of a model whose ``set_inference`` takes one (NERD), set once.
    ``device`` (``cpu``, ``cuda``, ``cuda:N``): where a learned model runs; the observation is moved
    there and the restored image back to the observation's device. Classical baselines run on the CPU.
    ``precision`` (:data:`PRECISIONS`): how a learned model computes; ``bf16`` for a baseline or a
    plug-and-play algorithm raises :class:`ConfigError` (they compute in fp32).

    A registered plug-and-play algorithm (:func:`converge.optim.algorithm_names`: ``admm``, ``hqs``,
    ``forward_backward``, ``red``) runs on the task's linear operator with the denoiser ``prior``
    (:func:`~converge.optim.make_denoiser`; default :data:`DEFAULT_PRIOR`): see :func:`_algorithm_restorer`.
    ``prior`` with any other name raises :class:`ConfigError`.

    A grey model restores a colour JPEG (``deblock``) plane by plane in YCbCr (see
    :func:`~converge.color.rgb_to_ycbcr`): its luma and its chroma; a single-channel raw Bayer image
    (``demosaic``) is spread onto its three channels first. Raises :class:`ConfigError` for an
    unknown name or a restorer that does not handle the task or the options.
    """
    from converge import baselines, zoo
    from converge.optim import algorithm_names

    given = (("loops", loops), ("stride", stride), ("window", window))
    options = {key: value for key, value in given if value is not None}
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    through = _restores_through(name)
    if through is not None:
        if prior is not None:
            raise ConfigError(f"'{name}' is itself the prior of {through}: drop --prior")
        if precision == "bf16":
            raise ConfigError(f"'{name}' restores through {through}, which computes in fp32: drop --precision bf16")
        if task.name not in _PNP_SCHEDULES:
            raise ConfigError(
                f"'{name}' restores through {through} the tasks with a linear operator ({', '.join(_PNP_SCHEDULES)}), "
                f"not '{task.name}': for {task.name} use {', '.join(restorers_for_task(task.name))}"
            )
        return make_restorer(through, task, tile, blind=blind, loops=loops, stride=stride, window=window,
                             device=device, prior=name, max_memory=max_memory, precision=precision)
    learned = name in zoo.zoo_names() or name.endswith(".safetensors")
    if precision == "bf16" and not learned:
        raise ConfigError(f"'{name}' computes in fp32: --precision bf16 applies to learned models")
    if name in algorithm_names():
        if options or tile is not None:
            option = next(iter(options), "tile")
            raise ConfigError(f"plug-and-play algorithm '{name}' has no {option} to set: drop --{option}")
        return _algorithm_restorer(name, prior or DEFAULT_PRIOR, task, blind, device)
    if prior is not None:
        raise ConfigError(f"--prior applies to the plug-and-play algorithms: {', '.join(algorithm_names())}")
    if name in baselines.BASELINES:
        if task.name not in baselines.BASELINES[name].tasks:
            handled = ", ".join(baselines.BASELINES[name].tasks)
            raise ConfigError(
                f"baseline '{name}' restores task(s) {handled}, not '{task.name}': "
                f"for {task.name} use {', '.join(restorers_for_task(task.name))}"
            )
        if options:
            option = next(iter(options))
            raise ConfigError(f"baseline '{name}' has no {option} to set: drop --{option}")
        return _baseline_restorer(name, task, blind)
    if name in zoo.zoo_names():
        trained = sorted({entry.task for entry in zoo.ZOO.values() if name in (entry.name, entry.model)})
        if task.name not in trained:
            raise ConfigError(
                f"model '{name}' has weights for task(s) {', '.join(trained)}, not '{task.name}': "
                f"for {task.name} use {', '.join(restorers_for_task(task.name))}"
            )
        budget = max_memory or DEFAULT_MAX_MEMORY
        return _zoo_restorer(name, task, tile, blind, options, device, budget, precision)
    if name.endswith(".safetensors"):
        model = _trained_model(Path(name), task).to(device)
        return _model_restorer(name, model, task, tile, blind, options, device, bf16=precision == "bf16")
    valid = ", ".join(sorted(restorer_names()))
    raise ConfigError(f"unknown model '{name}'; choose one of: {valid}, or a .safetensors file from `converge train`")


def _restores_through(name: str) -> str | None:
    """The plug-and-play algorithm zoo entry ``name`` restores through as its prior (MTDEQ: ``admm``), or None."""
    from converge import zoo

    entry = zoo.ZOO.get(name)
    return None if entry is None else entry.algorithm


def _algorithm_description(name: str) -> str:
    label = {"admm": "ADMM", "hqs": "half-quadratic splitting", "forward_backward": "forward-backward", "red": "RED"}
    return f"plug-and-play {label.get(name, name)} with a denoiser prior (--prior, default {DEFAULT_PRIOR})"


def _algorithm_restorer(name: str, prior: str, task: Task, blind: bool, device: torch.device) -> RestoreFunction:
    """Plug-and-play algorithm ``name`` on ``(y, operator)`` with denoiser ``prior``.

    ``admm``, ``hqs`` and ``forward_backward`` follow :func:`~converge.optim.dpir_schedule` for the
    task's noise level ([0, 1] scale; ``blind``: the level estimated from each image) with the task's
    :class:`PnPSchedule` (iterations, lambda, and the floor a quieter task ends at). ``red`` runs at
    that level (5/255 for a noiseless task) with ``lam`` 0.2, to its default tolerance and iteration
    cap. Every algorithm starts where :func:`_pnp_start` says (bicubic for SR, the holes filled from
    their neighbours for inpainting, ``A^T y`` otherwise). A diverged run returns the algorithm's
    lowest-change iterate after the algorithm's own one-sentence ``RuntimeWarning``. A model prior runs
    on ``device``, a classical one on the CPU; the denoiser is built now, once per channel
    count, so an unknown prior fails before any image is restored.
    """
    from converge.optim import dpir_schedule, get_algorithm, make_denoiser
    from converge.optim.priors import DENOISING_BASELINES, Denoiser
    from converge.physics.noise import estimate_noise_sigma

    if task.name not in _PNP_SCHEDULES:
        raise ConfigError(
            f"plug-and-play algorithm '{name}' restores the tasks with a linear operator "
            f"({', '.join(_PNP_SCHEDULES)}), not '{task.name}'"
        )
    algorithm = get_algorithm(name)
    plan = _PNP_SCHEDULES[task.name]
    task_sigma = _noise_sigma(task) or 0.0
    runs_on = torch.device("cpu") if prior in (*DENOISING_BASELINES, "identity") else device
    label = f"{name}+{prior}"
    denoisers: dict[int, Denoiser] = {}

    def denoiser_for(channels: int) -> Denoiser:
        if channels not in denoisers:
            level = task_sigma if task_sigma > 0 else _RED_FLOOR_SIGMA  # picks a model family's member
            denoisers[channels] = make_denoiser(prior, sigma=level, channels=channels, device=runs_on)
        return denoisers[channels]

    denoiser_for(1)

    def restore(y: Tensor, operator: Operator) -> Restoration:
        start = time.perf_counter()
        if not isinstance(operator, LinearOperator):
            kind = type(operator).__name__
            raise ConfigError(f"plug-and-play algorithm '{name}' needs a linear operator, not {kind}")
        given_on = y.device
        if given_on != runs_on:
            y, operator = y.to(runs_on), copy.deepcopy(operator).to(runs_on)
        if isinstance(operator, BayerMosaic) and y.shape[1] == 1:
            y = operator.from_raw(y)
        sigma = float(estimate_noise_sigma(y)[0]) if blind else task_sigma
        x0 = _pnp_start(y, operator, task)
        denoiser = denoiser_for(y.shape[1])
        with torch.no_grad():
            if name == "red":
                image, info = algorithm(y, operator, denoiser, sigma=sigma or _RED_FLOOR_SIGMA, lam=_RED_LAM, x0=x0)
            else:
                sigmas, rhos = dpir_schedule(plan.iterations, sigma, lam=plan.lam, sigma_min=plan.floor)
                if name == "forward_backward":
                    image, info = algorithm(y, operator, denoiser, schedule=sigmas, x0=x0)
                else:
                    image, info = algorithm(y, operator, denoiser, schedule=sigmas, rho=rhos, x0=x0)
        image = image.clamp(0.0, 1.0).to(given_on)
        level = 255.0 * sigma if blind else None
        seconds = time.perf_counter() - start
        return Restoration(image, seconds, float(info.iterations), label, level, residuals=tuple(info.relative_change))

    return restore


def _pnp_start(y: Tensor, operator: Operator, task: Task) -> Tensor | None:
    """Where a plug-and-play algorithm starts: the bicubic upsampling for super-resolution (the MTDEQ /
    pnp-ReG protocol), for inpainting the observation with its missing pixels filled from their
    neighbours (:func:`~converge.baselines.fill_missing`; the protocol's 0.5 there left the Gauss prior
    near 16 dB on validation crops, ``docs/plug-and-play.md``), else ``A^T y`` (``None``)."""
    from converge.baselines import bicubic_upsample, fill_missing
    from converge.physics.mask import MaskOperator

    if task.name == "sr":
        return bicubic_upsample(y, task.params["factor"])
    if task.name == "inpaint" and isinstance(operator, MaskOperator):
        return fill_missing(y, operator(torch.ones_like(y)))
    return None


def _zoo_restorer(
    name: str,
    task: Task,
    tile: int | None,
    blind: bool,
    options: dict[str, int],
    device: torch.device,
    max_memory: float = DEFAULT_MAX_MEMORY,
    precision: str = "fp32",
) -> RestoreFunction:
    """The restorer of zoo entry ``name`` or, for a model family, one that picks the family's entry for
    each image: by its channels and the task's level or, ``blind``, the family's blind entry or else
    the entry nearest to the noise level estimated from the image. The entry for the task's own level
    is loaded and checked at once, so a bad name or option fails before any image is restored. Each
    entry computes in ``precision`` (:data:`PRECISIONS`; ``auto`` is decided per entry)."""
    from converge import zoo
    from converge.devices import cpu_has_native_bf16
    from converge.physics.noise import estimate_noise_sigma

    built: dict[str, RestoreFunction] = {}
    quality = task.params.get("quality")

    def entry_restorer(entry: zoo.ZooEntry) -> RestoreFunction:
        if entry.name not in built:
            model = zoo.load_model(entry.name, device=device)
            budget = None if entry.memory_per_pixel is None else (entry.memory_per_pixel, max_memory)
            bf16 = precision == "bf16" or (
                precision == "auto" and entry.bf16_inference and device.type == "cpu" and cpu_has_native_bf16()
            )
            built[entry.name] = _model_restorer(entry.name, model, task, tile, blind, options, device, budget, bf16)
        return built[entry.name]

    first = entry_restorer(zoo.resolve_entry(name, task.name, task.params.get("sigma"), quality, blind=blind))
    if name in zoo.ZOO:
        return first

    def restore(y: Tensor, operator: Operator) -> Restoration:
        sigma = task.params.get("sigma")
        if blind:
            estimated = zoo.needs_level(name, task.name, channels=y.shape[1])
            sigma = 255.0 * float(estimate_noise_sigma(y)[0]) if estimated else None
        entry = zoo.resolve_entry(name, task.name, sigma, quality, channels=y.shape[1], blind=blind)
        result = entry_restorer(entry)(y, operator)
        if blind and sigma is not None and result.noise_level is None:
            return replace(result, noise_level=sigma)
        return result

    return restore


def _trained_model(weights: Path, task: Task) -> torch.nn.Module:
    """The model of a weights file written by training (its YAML config beside it), checked against ``task``."""
    from converge import zoo

    if not weights.is_file():
        raise ConfigError(f"weights file {weights} does not exist")
    trained_for = zoo.read_weights_config(weights.with_suffix(".yaml")).get("task")
    if trained_for is not None and trained_for != task.name:
        raise ConfigError(f"{weights} was trained for task '{trained_for}', not '{task.name}'")
    return zoo.load_weights(weights)


def _noise_sigma(task: Task) -> float | None:
    """The task's additive noise level on the [0, 1] scale, or None when it has no noise."""
    return None if task.noise is None else float(task.noise.sigma)


def _baseline_restorer(name: str, task: Task, blind: bool) -> RestoreFunction:
    """Baseline ``name`` built with the task parameters it takes (and, when it needs one, each image's
    operator) and, when it needs the noise level, given the task's or (``blind``) the one estimated from
    each image."""
    from converge import baselines

    spec = baselines.BASELINES[name]
    options = {option: task.params[option] for option in spec.task_options}
    once = None if spec.needs_operator else baselines.get_baseline(name, **options)

    def restorer(y: Tensor, operator: Operator, **sigma: float) -> Tensor:
        built = once or baselines.get_baseline(name, **options, operator=operator)
        return built(y, **sigma)

    if not spec.needs_sigma:
        return _timed(name, lambda y, operator: restorer(y, operator))
    if blind:
        from converge.physics.noise import estimate_noise_sigma

        def restore_blind(y: Tensor, operator: Operator) -> Restoration:
            start = time.perf_counter()
            sigma = float(estimate_noise_sigma(y)[0])
            image = restorer(y, operator, sigma=sigma).clamp(0.0, 1.0)
            return Restoration(image, time.perf_counter() - start, model=name, noise_level=255.0 * sigma)

        return restore_blind
    sigma = _noise_sigma(task)
    return _timed(name, lambda y, operator: restorer(y, operator, sigma=sigma))


def _model_restorer(
    label: str,
    model: torch.nn.Module,
    task: Task,
    tile: int | None,
    blind: bool,
    options: dict[str, int],
    device: torch.device,
    memory: tuple[float, float] | None = None,
    bf16: bool = False,
) -> RestoreFunction:
    """``model`` (on ``device``) as a restorer of observations on any device, once ``tile`` and the
    inference ``options`` are checked against it: those its ``set_inference`` takes are set on it now,
    the others are passed to each ``restore``. ``memory``: the model's peak bytes per pixel and the
    budget in bytes; an image too large for the budget in one piece is tiled to fit (``tile`` unset).
    ``bf16``: the model computes under bfloat16 autocast; the result is float32 all the same."""
    from converge.tiling import one_piece_bytes, tile_pixels_for_memory, tiled_apply

    if tile is not None:
        if task.name not in _TILEABLE_TASKS:
            raise ConfigError(f"tiled restoration supports tasks {', '.join(_TILEABLE_TASKS)}, not '{task.name}'")
        if model.receptive_radius is None:
            raise ConfigError(f"model '{label}' cannot be restored in tiles: drop --tile")
    options = model.checked_inference_options(options)
    declared = model.inference_options
    settings = {key: value for key, value in options.items() if not declared[key].per_call}
    if settings:
        model.set_inference(**settings)
    options = {key: value for key, value in options.items() if declared[key].per_call}
    sigma = None if blind else _noise_sigma(task)
    on_planes = task.name == "deblock" and model.channels == 1

    def planned_tile_pixels(y: Tensor) -> int | None:
        """The crop size that keeps ``y``'s restore under the memory budget (``None``: one piece)."""
        if tile is not None or memory is None:
            return None
        bytes_per_pixel, budget = memory
        if task.name in _TILEABLE_TASKS and model.receptive_radius is not None:
            return tile_pixels_for_memory(y.shape, y.shape[1], bytes_per_pixel, model.receptive_radius, budget)
        needed = one_piece_bytes(y.shape, y.shape[1], bytes_per_pixel) / 2**30
        if needed > budget / 2**30:
            raise ConfigError(
                f"model '{label}' needs about {needed:.1f} GiB for a {y.shape[-1]}x{y.shape[-2]} image and cannot "
                f"be restored in tiles for task '{task.name}': over the memory budget of {budget / 2**30:.1f} GiB "
                "(--max-memory)"
            )
        return None

    def restore_image(y: Tensor, operator: Operator) -> tuple[Tensor, RestoreInfo | None, int | None]:
        pixels = planned_tile_pixels(y)
        if tile is None and pixels is None:
            return (*model.restore(y, physics=operator, sigma=sigma, **options), None)
        counted: list[int] = []

        def tile_done(done: int, total: int) -> None:
            counted.append(total)
            report("tile", done, total)

        restored = tiled_apply(
            lambda crop: model(crop, physics=operator, sigma=sigma).float(),
            y,
            tile=tile,
            halo=model.receptive_radius,
            max_pixels=pixels,
            progress=tile_done,
        )
        return restored, None, counted[-1] if pixels is not None else None

    def restore(y: Tensor, operator: Operator) -> Restoration:
        start = time.perf_counter()
        given_on = y.device
        if given_on != device:
            # A copy: the caller's operator (often its task's) stays where the caller uses it.
            y, operator = y.to(device), copy.deepcopy(operator).to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if isinstance(operator, BayerMosaic) and y.shape[1] == 1:
                y = operator.from_raw(y)
            if on_planes and y.shape[1] == 3:
                # Y, Cb and Cr restored as a batch of grey images.
                ycbcr = rgb_to_ycbcr(y)
                planes, info, tiles = restore_image(ycbcr.reshape(-1, 1, *ycbcr.shape[-2:]), operator)
                image = ycbcr_to_rgb(planes.float().reshape(ycbcr.shape))
            else:
                image, info, tiles = restore_image(y, operator)
        # A tiled result is a fresh tensor, clamped in place (a large image has no room for a copy); a
        # model's own result may be its input (no loops), which stays the caller's.
        image = (image.clamp_(0.0, 1.0) if tiles is not None else image.clamp(0.0, 1.0)).to(given_on, torch.float32)
        seconds = time.perf_counter() - start
        precision = "bf16" if bf16 else "fp32"
        if info is None:
            return Restoration(image, seconds, model=label, tiles=tiles, precision=precision)
        residuals = None if info.residuals is None else tuple(info.residuals)
        level = _mean(info.noise_level)
        return Restoration(image, seconds, _mean(info.iterations), label, level, tiles, residuals, precision)

    return restore


def _mean(values: int | float | list | Tensor | None) -> float | None:
    """The mean of a per-image count or level (``None`` stays ``None``)."""
    if values is None:
        return None
    return float(torch.as_tensor(values, dtype=torch.float64).mean())


def _timed(name: str, function: Callable[[Tensor, Operator], Tensor]) -> RestoreFunction:
    def restore(y: Tensor, operator: Operator) -> Restoration:
        start = time.perf_counter()
        image = function(y, operator)
        return Restoration(image.clamp(0.0, 1.0), time.perf_counter() - start, model=name)

    return restore
