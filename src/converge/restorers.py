"""The one table from a restorer name (a classical baseline or a shipped model) to a callable.

A restorer maps a degraded observation ``y`` (``(1, C, H, W)`` in [0, 1]) and the operator that made
it to a :class:`Restoration`. Baselines come from :mod:`converge.baselines`, learned models from
:mod:`converge.zoo`; the CLI, the benchmark runner and the demo all resolve names here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Operator
from converge.physics.tasks import Task

# Which task each classical baseline restores; "input" returns the observation unchanged.
# Tasks whose operator acts pixel by pixel, so a tile can be restored without the rest of the image.
_TILEABLE_TASKS = ("denoise", "deblock")

_BASELINE_TASKS = {
    "input": ("denoise", "deblur", "inpaint", "demosaic", "deblock"),
    "bm3d": ("denoise",),
    "tv": ("denoise",),
    "nlm": ("denoise",),
    "bicubic": ("sr",),
}


@dataclass(frozen=True)
class Restoration:
    """A restored image ``(1, C, H, W)`` in [0, 1], with the loop count (when the model has one) and time."""

    image: Tensor
    seconds: float
    iterations: float | None = None


Restorer = Callable[[Tensor, Operator], Restoration]


def restorer_names() -> dict[str, str]:
    """Every name ``make_restorer`` accepts, with a one-line description."""
    from converge import baselines, zoo

    names = {name: baselines.BASELINES[name].description for name in _BASELINE_TASKS}
    names.update({name: entry.description for name, entry in zoo.ZOO.items()})
    for family in sorted(set(zoo.zoo_names()) - set(zoo.ZOO)):
        members = ", ".join(sorted(entry.name for entry in zoo.ZOO.values() if entry.model == family))
        names[family] = f"the {family} weights that fit the task and noise level ({members})"
    return names


def make_restorer(name: str, task: Task, tile: int | None = None) -> Restorer:
    """Resolve ``name`` for ``task``; ``tile`` (pixels) runs a learned model in overlapping tiles.

    Raises :class:`ConfigError` for an unknown name or a restorer that does not handle the task.
    """
    from converge import zoo

    if name in _BASELINE_TASKS:
        if task.name not in _BASELINE_TASKS[name]:
            handled = ", ".join(_BASELINE_TASKS[name])
            raise ConfigError(f"baseline '{name}' restores task(s) {handled}, not '{task.name}'")
        return _baseline_restorer(name, task)
    if name in zoo.zoo_names():
        entry = zoo.resolve_entry(name, task.name, task.params.get("sigma"))
        if entry.task != task.name:
            raise ConfigError(f"model '{name}' was trained for task '{entry.task}', not '{task.name}'")
        if tile is not None and task.name not in _TILEABLE_TASKS:
            raise ConfigError(f"tiled restoration supports tasks {', '.join(_TILEABLE_TASKS)}, not '{task.name}'")
        return _model_restorer(zoo.load_model(entry.name), task, tile)
    if name.endswith(".safetensors"):
        return _model_restorer(_trained_model(Path(name), task), task, tile)
    valid = ", ".join(sorted(restorer_names()))
    raise ConfigError(f"unknown model '{name}'; choose one of: {valid}, or a .safetensors file from `converge train`")


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


def _baseline_restorer(name: str, task: Task) -> Restorer:
    from converge import baselines

    if name == "input":
        return _timed(lambda y, operator: y)
    if name == "bicubic":
        factor = int(task.params["factor"])
        return _timed(lambda y, operator: baselines.bicubic_upsample(y, factor))
    denoiser = baselines.get_baseline(name)
    sigma = _noise_sigma(task)
    return _timed(lambda y, operator: denoiser(y, sigma=sigma))


def _model_restorer(model: torch.nn.Module, task: Task, tile: int | None) -> Restorer:
    from converge.tiling import tiled_apply

    sigma = _noise_sigma(task)

    def restore(y: Tensor, operator: Operator) -> Restoration:
        start = time.perf_counter()
        with torch.no_grad():
            if tile is None:
                image, info = model.restore(y, physics=operator, sigma=sigma)
                iterations = info.iterations
            else:
                image = tiled_apply(
                    lambda crop: model(crop, physics=operator, sigma=sigma),
                    y,
                    tile=tile,
                    halo=model.receptive_radius,
                )
                iterations = None
        return Restoration(image.clamp(0.0, 1.0), time.perf_counter() - start, _mean_iterations(iterations))

    return restore


def _mean_iterations(iterations: int | float | list | Tensor | None) -> float | None:
    if iterations is None:
        return None
    return float(torch.as_tensor(iterations, dtype=torch.float64).mean())


def _timed(function: Callable[[Tensor, Operator], Tensor]) -> Restorer:
    def restore(y: Tensor, operator: Operator) -> Restoration:
        start = time.perf_counter()
        image = function(y, operator)
        return Restoration(image.clamp(0.0, 1.0), time.perf_counter() - start)

    return restore
