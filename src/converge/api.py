"""The short way in: ``converge.load(name)`` and ``converge.restore(image)``.

Images are ``(B, C, H, W)`` float tensors in [0, 1] (a ``(C, H, W)`` or ``(H, W)`` image is taken as a
batch of one). A loaded restorer checks what it is given (shape, dtype, range, finiteness) and refuses
anything else with a :class:`~converge.errors.ConfigError` naming the problem, instead of returning a
wrong image.

>>> import torch, converge
>>> model = converge.load("dncnn-s25")
>>> noisy = (0.5 + 25 / 255 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
>>> result = model(noisy)
>>> result.image.shape, result.model
(torch.Size([1, 1, 32, 32]), 'dncnn-s25')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Operator
from converge.physics.tasks import Task, make_task
from converge.restorers import RestoreFunction, Restoration, make_restorer

# Values this far outside [0, 1] are not noise around an image in [0, 1] (sigma 75 overshoots by about
# 1.2 at most on a megapixel): most likely 0-255 levels.
_RANGE_SLACK = 2.0


@dataclass(frozen=True)
class Restored:
    """What a loaded restorer returns: the restored ``(B, C, H, W)`` image in [0, 1] and, per image of
    the batch, the :class:`~converge.restorers.Restoration` (time, iterations, model, noise level)."""

    image: Tensor
    details: tuple[Restoration, ...]

    @property
    def model(self) -> str | None:
        """What restored the first image (a family picks per image: see :attr:`details`)."""
        return self.details[0].model


class LoadedRestorer:
    """A zoo model, model family, baseline or weights file made ready for one task.

    ``restorer(y)`` restores ``y`` with the task's own operator; ``restorer(y, operator)`` with the
    operator that made ``y`` (an inpainting mask, a blur kernel). Built by :func:`load`.
    """

    def __init__(self, name: str, task: Task, blind: bool, function: RestoreFunction) -> None:
        self.name = name
        self.task = task
        self.blind = blind
        self._function = function

    def __repr__(self) -> str:
        return f"LoadedRestorer({self.name!r}, task={self.task.tag!r}, blind={self.blind})"

    def __call__(self, y: Tensor, operator: Operator | None = None) -> Restored:
        """Restore every image of ``y`` (see :func:`checked_images`); returns :class:`Restored`."""
        batch = checked_images(y)
        operator = self.task.operator if operator is None else operator
        results = tuple(self._function(image[None], operator) for image in batch)
        restored = torch.cat([result.image for result in results])
        # A (C, H, W) or (H, W) input comes back in its own layout.
        return Restored(restored[0] if y.ndim == 3 else restored[0, 0] if y.ndim == 2 else restored, results)


def load(
    name: str,
    task: str = "denoise",
    *,
    device: str = "cpu",
    max_memory: float | None = None,
    precision: str = "fp32",
    **task_params: Any,
) -> LoadedRestorer:
    """The restorer called ``name`` (``converge zoo`` lists them: a zoo entry, a model family such as
    ``"durr"``, a baseline such as ``"bm3d"``, or a ``.safetensors`` file from ``converge train``) for
    ``task`` with its parameters in user units (``sigma=25``, ``quality=20``, ``factor=4``).

    A denoiser not told ``sigma`` works blind: a family picks its weights from the level it estimates
    per image. ``max_memory``: the memory budget in bytes a shipped model keeps to by restoring a large
    image in tiles (default 4 GiB, see :func:`~converge.restorers.make_restorer`). ``precision``:
    ``fp32``, ``bf16`` or ``auto`` (:data:`~converge.restorers.PRECISIONS`). Unknown names, tasks and
    parameters raise :class:`ConfigError`.
    """
    blind = task == "denoise" and "sigma" not in task_params
    chosen = make_task(task, **task_params)
    function = make_restorer(name, chosen, blind=blind, device=device, max_memory=max_memory, precision=precision)
    return LoadedRestorer(name, chosen, blind, function)


def restore(
    image: Tensor, task: str = "denoise", *, model: str | None = None, prefer: str = "balanced", **task_params: Any
) -> Restored:
    """Restore ``image`` for ``task`` with ``model``: ``converge.restore(noisy)``,
    ``converge.restore(jpeg, task="deblock", quality=20)``. Without ``model``, the one
    :func:`converge.choice.choose_model` picks for the task, the image's channels and its level (the
    ``sigma`` or ``quality`` given, else for denoising the noise level estimated from the first image),
    within the speed ``prefer`` allows. Inpainting needs its mask: ``load(name, "inpaint")(image,
    PixelMask(mask))``."""
    if task == "inpaint":
        raise ConfigError('inpainting needs its mask: converge.load("fill", "inpaint")(image, PixelMask(mask))')
    if model is None:
        from converge.choice import choose_model
        from converge.physics.noise import estimate_noise_sigma

        batch = checked_images(image)
        level = task_params.get("quality" if task == "deblock" else "sigma")
        if level is None and task == "denoise":
            level = 255.0 * float(estimate_noise_sigma(batch[:1])[0])
        model = choose_model(task, 3 if task == "demosaic" else batch.shape[1], level, prefer).name
    return load(model, task, **task_params)(image)


def checked_images(y: Tensor) -> Tensor:
    """``y`` as a ``(B, C, H, W)`` float batch with ``C`` in {1, 3}, once it is known to be a finite
    image in [0, 1] (noise may overshoot a little); anything else raises :class:`ConfigError`."""
    if not isinstance(y, Tensor):
        raise ConfigError(f"expected a torch tensor image, got {type(y).__name__}")
    if not y.is_floating_point():
        raise ConfigError(f"expected a float image in [0, 1], got dtype {y.dtype}: divide 8-bit levels by 255")
    if y.ndim not in (2, 3, 4):
        raise ConfigError(f"expected a (B, C, H, W), (C, H, W) or (H, W) image, got shape {tuple(y.shape)}")
    batch = y.reshape(1, 1, *y.shape) if y.ndim == 2 else y[None] if y.ndim == 3 else y
    if batch.shape[1] not in (1, 3) or batch.numel() == 0:
        raise ConfigError(f"expected 1 (grey) or 3 (RGB) channels and some pixels, got shape {tuple(y.shape)}")
    if not bool(torch.isfinite(batch).all()):
        raise ConfigError("the image holds NaN or infinite values")
    low, high = float(batch.min()), float(batch.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise ConfigError(f"the image spans [{low:.3g}, {high:.3g}], not [0, 1]: divide 8-bit levels by 255")
    return batch.to(torch.float32)
