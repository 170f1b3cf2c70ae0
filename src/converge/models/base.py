"""The restorer contract every model follows.

A restorer maps an observation ``y`` (``(B, C, H, W)`` float in [0, 1]), optionally the degradation
that made it (``physics``) and the noise level ``sigma`` (on the same [0, 1] scale: ``25 / 255`` for
"sigma 25", a float or a ``(B,)`` tensor) to an estimate ``x`` of the clean image of the same layout.
``forward`` is the differentiable map; ``training_forward(y, operator, level)`` is what the trainer
fits, with the batch's :class:`~converge.physics.batch.OperatorBatch`; ``restore`` is inference: no
autograd, output clamped to [0, 1], and a :class:`RestoreInfo` saying how the loop went.

What callers rely on is declared here with a default, never discovered: the inference options a
model takes (:attr:`Restorer.inference_options`), its receptive radius (for tiling), a data-driven
initialisation, starting from weights saved with other parameters, and parameters that old weights
may still name (:attr:`Restorer.retired_params`).
"""

from __future__ import annotations

import math
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.physics.base import Operator

if TYPE_CHECKING:
    from converge.deq import SolverInfo

Sigma = float | Tensor


@dataclass
class RestoreInfo:
    """How one call to :meth:`Restorer.restore` went.

    ``iterations``: loop count, one int for the batch or one per sample; ``residuals``: relative
    fixed-point residual per iteration (``None`` for a model without a loop); ``seconds``: wall time;
    ``noise_level``: the noise level the model estimated for each image, in 8-bit grey levels
    (``None`` when it was told the level or needed none); ``converged``: whether each loop met its
    tolerance (``None`` for a model without a tolerance); ``extra``: model-specific details (for
    instance a policy's stop probabilities).
    """

    iterations: int | list[int]
    residuals: list[float] | None = None
    seconds: float = 0.0
    noise_level: list[float] | None = None
    converged: list[bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_solver(cls, info: SolverInfo, seconds: float, **extra: Any) -> RestoreInfo:
        """The info of a restore that ran one fixed-point solve: iterations and convergence per image,
        per iteration the largest relative residual over the images still iterating, and the
        solver's one-line ``summary`` in ``extra`` beside ``extra``'s own entries."""
        history = info.residual_history
        worst = torch.where(torch.isnan(history), -math.inf, history).amax(dim=1)
        return cls(
            iterations=info.iterations.tolist(),
            residuals=worst.tolist(),
            seconds=seconds,
            converged=info.converged.tolist(),
            extra={"summary": info.summary(), **extra},
        )


@dataclass(frozen=True)
class InferenceOption:
    """An option a model takes at inference (``--loops``, ``--stride``, ``--window`` on the CLI).

    ``description``: what it sets, a noun phrase ("loop count"); ``check(model, value)`` returns the
    value to use or raises :class:`ConfigError`; ``per_call``: passed to every :meth:`Restorer.restore`
    call as a keyword (``True``), or set once with :meth:`Restorer.set_inference` (``False``).
    """

    description: str
    check: Callable[[Any, Any], Any]
    per_call: bool = True


class Restorer(nn.Module, metaclass=ABCMeta):
    """Base of every model: ``forward(y, physics, sigma) -> x`` plus a timed, gradient-free ``restore``."""

    config_class: ClassVar[type]
    """The frozen dataclass of the model's hyper-parameters (``model(config_class(**params))``)."""
    registry_name: ClassVar[str]
    """The name the model registered under (:func:`~converge.models.registry.register_model`)."""
    training_skips_parameters: ClassVar[bool] = False
    """Whether :meth:`training_forward` leaves some parameters out (DURR's policy unit), which
    distributed training must then look for at every step."""
    tasks: ClassVar[tuple[str, ...]] = ("denoise",)
    """The tasks (names of :mod:`converge.physics.tasks`) the model can be trained for and restore."""
    example_params: ClassVar[Mapping[str, Any]] = {}
    """Small hyper-parameters that build the model in a blink (the contract test, examples); the
    config's defaults are the paper's."""
    inference_options: ClassVar[Mapping[str, InferenceOption]] = {}
    """The inference options the model takes, by name; none by default."""
    exact_tiling: ClassVar[bool] = True
    """Whether restoring in tiles with a :attr:`receptive_radius` halo gives the whole-image result
    (to float rounding); ``False`` for a model whose radius is only approximate."""
    plug_and_play_prior: ClassVar[str | None] = None
    """The submodule that plug-and-play algorithms use as this model's denoiser when its weights are
    given as a prior (MTDEQ: ``prior``, its U-Net); ``None``: the model itself is the denoiser."""
    retired_params: ClassVar[frozenset[str]] = frozenset()
    """Parameters that weights saved by an older version may still name and that no longer exist:
    dropped when such weights load (the values they held are implied by the weights' task)."""

    @abstractmethod
    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Estimate ``x`` ``(B, C, H, W)`` from ``y``; differentiable, output not clamped."""

    def training_forward(self, y: Tensor, operator: Operator, level: Tensor) -> Tensor:
        """The map the trainer fits: ``y`` ``(B, C, H, W)`` -> ``x`` ``(B, C, H, W)``, differentiable.

        ``operator``: the batch's degradations, one per sample (an
        :class:`~converge.physics.batch.OperatorBatch`; measurements on the image grid). ``level``
        ``(B,)`` float is the degradation level each sample was made at (noise sigma in 8-bit levels,
        JPEG quality, or NaN when the task has none): the hook through which a model may use what it
        was trained at (DURR unfolds each sample for the loops its refined policy assigns to that
        level). The default returns ``self(y, physics=operator)``.
        """
        return self(y, physics=operator)

    def training_loss_weights(self, x_hat: Tensor) -> Tensor | None:
        """How much each pixel of the training output ``x_hat`` ``(B, C, H, W)`` counts in the loss: a
        tensor that broadcasts to it with mean 1, or ``None`` (the default) for equal weights."""
        return None

    def training_metrics(self) -> dict[str, float]:
        """Figures of the last training forward that the trainer averages into its log beside the loss:
        for a model that finds a fixed point with a :class:`~converge.deq.DEQ` held as ``deq``, the mean
        number of evaluations its forward solve spent per sample (``forward_iterations``); none for
        other models (or when the last forward ran no solve)."""
        info = getattr(getattr(self, "deq", None), "last_info", None)
        return {} if info is None else {"forward_iterations": float(info.iterations.double().mean())}

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: ``forward`` under ``torch.no_grad``, clamped to [0, 1], with a one-iteration info.

        Models with a loop override this to report their iteration counts and residuals; a model with
        per-call :attr:`inference_options` takes them here as keywords.
        """
        start = time.perf_counter()
        with torch.no_grad():
            x = self(y, physics=physics, sigma=sigma).clamp(0.0, 1.0)
        return x, RestoreInfo(iterations=1, seconds=time.perf_counter() - start)

    def set_inference(self, **settings: Any) -> None:
        """Change inference settings (the :attr:`inference_options` with ``per_call=False``) for later calls.

        A model without settings has nothing to change: any keyword raises :class:`ConfigError`.
        """
        if settings:
            raise ConfigError(f"{type(self).__name__} has no inference setting {', '.join(sorted(settings))}")

    def checked_inference_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked by their declared validators; an option the model does not take raises
        :class:`ConfigError` naming the registered models that do."""
        checked = {}
        for name, value in options.items():
            declared = self.inference_options.get(name)
            if declared is None:
                raise ConfigError(f"{type(self).__name__} {_models_taking(name)}")
            checked[name] = declared.check(self, value)
        return checked

    @property
    def channels(self) -> int:
        """Image channels the model was trained on (1 grey, 3 colour): its config's ``channels``."""
        return self.config.channels

    @property
    def receptive_radius(self) -> int | None:
        """Pixels of context on each side that influence one output pixel (the halo tiled restoration
        needs), or ``None`` for a model that cannot be restored in tiles (the default)."""
        return None

    def initialise_from_data(self, images: Sequence[Tensor], generator: torch.Generator) -> None:
        """Start the parameters from clean training images (each ``(1, C, H, W)`` in [0, 1]) before step
        0 of a fresh run; the default keeps the constructor's initialisation."""

    def adopt_weights(self, tensors: Mapping[str, Tensor], params: Mapping[str, Any], saved_model: str) -> None:
        """Start from ``tensors`` saved for the registered model ``saved_model`` with parameters ``params``
        that do not describe this model exactly: this model with other parameters (GroupSC: another
        noise level) or another model it contains (MTDEQ: its U-Net prior). The default cannot and
        raises :class:`ConfigError`."""
        raise ConfigError(f"{type(self).__name__} starts only from weights saved with its own parameters")

    def _on_model_channels(self, y: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply ``run`` to ``y`` ``(B, C, H, W)`` at the channel count in ``self.config.channels``.

        A gray model given a colour image processes each channel as its own gray image (valid for
        noise independent across channels); any other mismatch raises :class:`ConfigError`.
        """
        samples = self._channels_as_samples(y)
        return run(y) if samples is y else run(samples).reshape(y.shape)

    def _channels_as_samples(self, y: Tensor) -> Tensor:
        """``y`` ``(B, C, H, W)`` as the model's input: ``y`` itself at the model's channel count, each
        channel its own gray sample ``(B * C, 1, H, W)`` for a gray model; else :class:`ConfigError`."""
        expected = self.channels
        if y.shape[1] == expected:
            return y
        if expected == 1:
            return y.reshape(-1, 1, *y.shape[2:])
        raise ConfigError(f"this {type(self).__name__} expects {expected}-channel images, got {y.shape[1]} channels")


def _models_taking(option: str) -> str:
    """The end of the message for a model that lacks inference ``option``: what it sets and which
    registered models take it."""
    from converge.models.registry import registered_models

    takers = {
        name: cls.inference_options[option]
        for name, cls in registered_models().items()
        if option in cls.inference_options
    }
    if not takers:
        return f"takes no --{option}: no model does"
    description = next(iter(takers.values())).description
    return f"has no {description} to set: --{option} applies to {', '.join(takers)}"
