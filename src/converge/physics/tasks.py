"""The one table of named degradations used by the CLI and the benchmarks.

Parameters are in user units: additive noise is always ``sigma``, in 8-bit grey levels (``sigma=25``
means ``25 / 255`` on the [0, 1] image scale); blur widths are in pixels.

>>> task = make_task("deblur", sigma=1)
>>> task.tag
'deblur-blur_sigma1.6-size25-boundarycircular-sigma1'
>>> y, operator = task.degrade(torch.rand(1, 1, 32, 32), torch.Generator().manual_seed(0))
>>> y.shape
torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Identity, Operator
from converge.physics.blur import GaussianBlur, KernelBlur
from converge.physics.downsample import DOWNSAMPLING_KERNELS, Downsample
from converge.physics.jpeg import CHROMA_SUBSAMPLINGS, JPEGCompression
from converge.physics.kernels import PADDING_MODES
from converge.physics.mask import RandomPixelDrop
from converge.physics.mosaic import BAYER_PATTERNS, BayerMosaic
from converge.physics.noise import GaussianNoise

GREY_LEVELS = 255.0
MAX_SR_FACTOR = 16
"""The largest super-resolution factor a task takes (its kernel has 4 x factor taps a side)."""


@dataclass(frozen=True)
class Task:
    """A named degradation: the operator, the additive noise, and the parameters they came from."""

    name: str
    params: dict[str, Any]
    operator: Operator
    noise: GaussianNoise | None = None

    @property
    def tag(self) -> str:
        """Stable identifier such as ``"denoise-sigma25"`` (parameters in table order), used to seed noise."""
        return "-".join([self.name, *(f"{key}{_format_value(value)}" for key, value in self.params.items())])

    def degrade(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Operator]:
        """Degrade clean images ``x`` ``(B, C, H, W)`` in [0, 1]; return ``(y, operator used)``.

        For inpainting a fresh mask is drawn first (one per image), then the noise, both from
        ``generator``; the returned operator is that concrete :class:`~converge.physics.mask.PixelMask`.
        """
        operator = self.operator
        if isinstance(operator, RandomPixelDrop):
            operator = operator.sample(x.shape, generator, x.device)
        y = operator(x)
        if self.noise is not None:
            y = self.noise(y, generator)
        return y, operator


def _format_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace(":", "")


def _number(name: str, value: Any, kind: type) -> float | int:
    """Parse an int/float (or its string form, as the CLI passes it); booleans are refused."""
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise ConfigError(f"Parameter {name!r} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"Parameter {name!r} must be a number, got {value!r}.")
    if kind is int:
        if not float(value).is_integer():
            raise ConfigError(f"Parameter {name!r} must be an integer, got {value!r}.")
        return int(value)
    if not math.isfinite(value):
        raise ConfigError(f"Parameter {name!r} must be finite, got {value!r}.")
    return float(value)


def _noise_level(name: str, value: Any) -> float:
    level = _number(name, value, float)
    if level < 0:
        raise ConfigError(f"Parameter {name!r} (noise level in grey levels) must be non-negative, got {value!r}.")
    return level


def _positive(name: str, value: Any) -> float:
    number = _number(name, value, float)
    if number <= 0:
        raise ConfigError(f"Parameter {name!r} must be positive, got {value!r}.")
    return number


def _int_in(low: int, high: float) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        number = _number(name, value, int)
        if not low <= number <= high:
            bound = f"from {low} to {high}" if math.isfinite(high) else f"at least {low}"
            raise ConfigError(f"Parameter {name!r} must be an integer {bound}, got {value!r}.")
        return int(number)

    return check


def _drop_probability(name: str, value: Any) -> float:
    number = _number(name, value, float)
    if not 0 <= number < 1:
        raise ConfigError(f"Parameter {name!r} (fraction of pixels dropped) must be in [0, 1), got {value!r}.")
    return number


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(f"Parameter {name!r} must be one of {', '.join(options)}, got {value!r}.")
        return value

    return check


@dataclass(frozen=True)
class _Parameter:
    default: Any
    check: Callable[[str, Any], Any]


@dataclass(frozen=True)
class _TaskSpec:
    parameters: dict[str, _Parameter]
    build: Callable[[dict[str, Any]], Operator]
    # Parameters that only apply when another one has a given value: name -> (other, value).
    applies_when: dict[str, tuple[str, Any]] = field(default_factory=dict)


def _build_sr(params: dict[str, Any]) -> Operator:
    return Downsample(params["factor"], kernel=params["kernel"], gaussian_sigma=params.get("blur_sigma"))


_SIGMA = _Parameter(0.0, _noise_level)

_TASKS: dict[str, _TaskSpec] = {
    "denoise": _TaskSpec({"sigma": _Parameter(25.0, _noise_level)}, lambda params: Identity()),
    "deblur": _TaskSpec(
        {
            "blur_sigma": _Parameter(1.6, _positive),
            "size": _Parameter(25, _int_in(1, math.inf)),
            "boundary": _Parameter("circular", _choice(PADDING_MODES)),
            "sigma": _Parameter(2.55, _noise_level),
        },
        lambda params: GaussianBlur(params["blur_sigma"], size=params["size"], boundary=params["boundary"]),
    ),
    "sr": _TaskSpec(
        {
            "factor": _Parameter(4, _int_in(2, MAX_SR_FACTOR)),
            "kernel": _Parameter("bicubic", _choice(DOWNSAMPLING_KERNELS)),
            "blur_sigma": _Parameter(0.5, _positive),
            "sigma": _SIGMA,
        },
        _build_sr,
        applies_when={"blur_sigma": ("kernel", "gaussian")},
    ),
    "inpaint": _TaskSpec(
        {"p": _Parameter(0.5, _drop_probability), "sigma": _SIGMA},
        lambda params: RandomPixelDrop(params["p"]),
    ),
    "demosaic": _TaskSpec(
        {"pattern": _Parameter("RGGB", _choice(BAYER_PATTERNS)), "sigma": _SIGMA},
        lambda params: BayerMosaic(params["pattern"]),
    ),
    "deblock": _TaskSpec(
        {
            "quality": _Parameter(10, _int_in(1, 100)),
            "subsampling": _Parameter("4:2:0", _choice(CHROMA_SUBSAMPLINGS)),
        },
        lambda params: JPEGCompression(params["quality"], subsampling=params["subsampling"]),
    ),
}


def task_names() -> list[str]:
    """Names accepted by :func:`make_task`, in table order."""
    return list(_TASKS)


def _spec(name: str) -> _TaskSpec:
    if name not in _TASKS:
        raise ConfigError(f"Unknown task {name!r}; choose one of {', '.join(_TASKS)}.")
    return _TASKS[name]


def task_parameters(name: str) -> dict[str, Any]:
    """Every parameter of task ``name`` with its default (``sr``'s ``blur_sigma`` applies to ``kernel='gaussian'``)."""
    return {key: parameter.default for key, parameter in _spec(name).parameters.items()}


def make_task(name: str, **params: Any) -> Task:
    """Build task ``name`` (see :func:`task_names`) with ``params`` overriding the defaults.

    Unknown tasks, unknown parameters, out-of-range values and parameters that do not apply (``blur_sigma``
    with bicubic SR) raise :class:`~converge.errors.ConfigError`. Numbers may be given as strings.
    """
    spec = _spec(name)
    unknown = sorted(set(params) - set(spec.parameters))
    if unknown:
        raise ConfigError(
            f"Unknown parameter {unknown[0]!r} for task {name!r}; valid parameters: {', '.join(spec.parameters)}."
        )
    resolved: dict[str, Any] = {}
    for key, parameter in spec.parameters.items():
        resolved[key] = parameter.check(key, params.get(key, parameter.default))
    for key, (other, required) in spec.applies_when.items():
        if resolved[other] != required:
            if key in params:
                raise ConfigError(f"Parameter {key!r} of task {name!r} applies only when {other}={required!r}.")
            del resolved[key]
    sigma = resolved.get("sigma", 0.0)
    noise = GaussianNoise(sigma / GREY_LEVELS) if sigma > 0 else None
    return Task(name=name, params=resolved, operator=spec.build(resolved), noise=noise)


def with_kernel(task: Task, kernel: Tensor, label: str) -> Task:
    """Deblurring ``task`` with the user's own ``(h, w)`` ``kernel`` (checked, e.g. by
    :func:`~converge.physics.kernel_file.read_kernel`) in place of the Gaussian one; ``label`` (the
    kernel's file name) replaces ``blur_sigma`` and ``size`` in the parameters and the tag.

    >>> custom = with_kernel(make_task("deblur", sigma=0), torch.ones(3, 3) / 9, "box3")
    >>> custom.tag
    'deblur-kernelbox3-boundarycircular-sigma0'
    """
    if task.name != "deblur":
        raise ConfigError(f"a blur kernel applies to task 'deblur' only, not {task.name!r}")
    params = {"kernel": label, "boundary": task.params["boundary"], "sigma": task.params["sigma"]}
    operator = KernelBlur(kernel, boundary=params["boundary"])
    return Task(name=task.name, params=params, operator=operator, noise=task.noise)
