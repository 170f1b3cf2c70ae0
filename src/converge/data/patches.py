"""Random-crop training patches with dihedral augmentation and on-the-fly degradation.

Every item is a pure function of ``(seed, epoch, index)``: the crop position, the dihedral transform
and the degradation's randomness all come from one generator seeded by those three numbers, so a run
is reproducible whatever the number of workers or the order in which items are read. With
``per_crop > 1`` consecutive items share one crop (and its transform), drawn from a generator of
``(seed, epoch, index // per_crop)``, and each degrades it with its own generator: one clean crop
degraded several ways (MTDEQ).

An item is ``(y, x, operator, level)``: the degraded patch (its measurement placed on the image grid,
:meth:`~converge.physics.base.Operator.to_grid`), the clean patch, the operator that degraded it and
the level it was degraded at. :func:`collate_patches` stacks items into a batch whose operators form
one :class:`~converge.physics.batch.OperatorBatch`, so one batch may mix degradations.

Example::

    >>> import torch
    >>> from converge.data.patches import PatchDataset, collate_patches
    >>> from converge.physics import Identity
    >>> def add_noise(x, generator):
    ...     return x + 25 / 255 * torch.randn(x.shape, generator=generator), Identity(), 25.0
    >>> dataset = PatchDataset([torch.rand(1, 64, 64)], patch_size=32, patches_per_image=4, degrade=add_noise)
    >>> y, x, operator, level = collate_patches([dataset[0], dataset[1]])
    >>> tuple(y.shape), tuple(x.shape), len(operator), level.tolist()
    ((2, 1, 32, 32), (2, 1, 32, 32), 2, [25.0, 25.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from converge.data.registry import convert_channels, load_images
from converge.data.seeding import stable_seed
from converge.errors import ConfigError
from converge.physics.base import Identity, Operator
from converge.physics.batch import OperatorBatch

Degrade = Callable[[Tensor, torch.Generator], tuple[Tensor, Operator, float]]
Patch = tuple[Tensor, Tensor, Operator, Tensor]
DIHEDRAL_TRANSFORMS = 8
_UNDEGRADED = Identity()


class PatchDataset(Dataset):
    """``(y, x, operator, level)`` items: ``(C, p, p)`` patches, ``x`` a random crop of a clean image,
    ``y`` its degradation by ``operator`` (on the image grid), and the degradation level that produced
    ``y`` (a float32 scalar tensor).

    ``images`` is a sequence of ``(C, H, W)`` or ``(1, C, H, W)`` tensors (float in [0, 1], or uint8
    holding 8-bit levels) or the name of a set of the shared data (kept in memory as 8-bit). Each image
    gives ``patches_per_image`` items, so ``len = len(images) * patches_per_image``.

    With ``augment`` each patch goes through one of the 8 symmetries of the square (``rot90`` by
    ``k`` quarter turns, then an optional horizontal flip). ``degrade(x, generator)`` receives the clean
    patch as a ``(1, C, p, p)`` batch and the item's generator and returns ``(y, operator, level)``:
    the ``(1, C, h, w)`` measurement, the operator that made it (before any noise) and the level it
    drew (noise sigma in 8-bit levels, JPEG quality, NaN for none). Without ``degrade``, ``y`` is
    ``x``, the operator the identity and ``level`` NaN. ``channels=1`` turns colour images into
    grayscale (MATLAB ``rgb2gray``, 8-bit levels). ``per_crop``: consecutive items that share one crop
    (items ``k * per_crop`` to ``(k + 1) * per_crop - 1``), each with its own degradation; it must
    divide ``patches_per_image``. ``saturation``: ``(low, high)`` for colour crops, each crop's colours
    pushed ``k`` times further from their grey level, ``k`` uniform in it (:func:`saturated`);
    ``saturation_share``: the probability that a crop is pushed at all (1: every crop). Call
    :meth:`set_epoch` at the start of every epoch to draw new patches.
    """

    def __init__(
        self,
        images: Sequence[Tensor] | str,
        patch_size: int,
        patches_per_image: int,
        degrade: Degrade | None = None,
        augment: bool = True,
        seed: int = 0,
        channels: int | None = None,
        per_crop: int = 1,
        saturation: tuple[float, float] | None = None,
        saturation_share: float = 1.0,
    ) -> None:
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not isinstance(patches_per_image, int) or patches_per_image < 1:
            raise ConfigError(f"patches_per_image must be a positive integer, got {patches_per_image!r}")
        if not isinstance(per_crop, int) or per_crop < 1 or patches_per_image % per_crop:
            raise ConfigError(
                f"per_crop must be a positive integer dividing patches_per_image {patches_per_image}, got {per_crop!r}"
            )
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1, 3 or None, got {channels!r}")
        if degrade is not None and not callable(degrade):
            raise ConfigError(f"degrade must be a callable (x, generator) -> y, got {type(degrade).__name__}")
        if isinstance(images, str):
            stored = [_to_uint8(image[0]) for _, image in load_images(images, channels)]
        else:
            stored = [_as_stored(image, index, channels) for index, image in enumerate(images)]
        if not stored:
            raise ConfigError("PatchDataset needs at least one image")
        if len({image.shape[0] for image in stored}) > 1:
            raise ConfigError("images have different channel counts: pass channels=1 or 3 to make them agree")
        for index, image in enumerate(stored):
            height, width = image.shape[-2:]
            if min(height, width) < patch_size:
                raise ConfigError(
                    f"image {index} is {height}x{width}, smaller than patch_size {patch_size}: "
                    "lower patch_size or leave the image out"
                )
        self.images = stored
        self.patch_size = patch_size
        self.patches_per_image = patches_per_image
        self.degrade = degrade
        self.augment = augment
        self.seed = seed
        self.per_crop = per_crop
        if saturation is not None and stored[0].shape[0] != 3:
            raise ConfigError("saturation applies to colour images (channels=3)")
        if not 0 < saturation_share <= 1:
            raise ConfigError(f"saturation_share must be in (0, 1], got {saturation_share!r}")
        self.saturation = saturation
        self.saturation_share = saturation_share
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose patches the next reads return (each epoch draws its own crops)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def clean_images(self) -> list[Tensor]:
        """Every clean image the patches are cut from, each ``(1, C, H, W)`` float32 in [0, 1]."""
        return [
            (image.to(torch.float32) / 255.0 if image.dtype == torch.uint8 else image.clone())[None]
            for image in self.images
        ]

    def __getitem__(self, index: int) -> Patch:
        """Item ``index`` of the current epoch: ``y`` and ``x`` ``(C, p, p)`` float32, the operator and
        the 0-d float32 ``level``."""
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        generator = torch.Generator().manual_seed(self._crop_seed(index))
        image = self.images[index // self.patches_per_image]
        height, width = image.shape[-2:]
        top = int(torch.randint(height - self.patch_size + 1, (1,), generator=generator))
        left = int(torch.randint(width - self.patch_size + 1, (1,), generator=generator))
        patch = image[:, top : top + self.patch_size, left : left + self.patch_size]
        if self.augment:
            patch = dihedral(patch, int(torch.randint(DIHEDRAL_TRANSFORMS, (1,), generator=generator)))
        x = patch.to(torch.float32, copy=True).contiguous()
        if image.dtype == torch.uint8:
            x = x / 255.0
        # With every crop pushed no share is drawn, so such runs keep the random stream they had before
        # saturation_share existed (their resumes and crops stay the same).
        if self.saturation is not None and (
            self.saturation_share == 1 or float(torch.rand((), generator=generator)) < self.saturation_share
        ):
            low, high = self.saturation
            x = saturated(x, low + (high - low) * float(torch.rand((), generator=generator)))
        if self.degrade is None:
            return x.clone(), x, _UNDEGRADED, torch.tensor(math.nan)
        if self.per_crop > 1:
            generator = torch.Generator().manual_seed(stable_seed("patch", self.seed, self.epoch, index))
        y, operator, level = self._degraded(x, generator)
        return y, x, operator, torch.tensor(level, dtype=torch.float32)

    def _crop_seed(self, index: int) -> int:
        """The seed of item ``index``'s crop: its own (its degradation then draws from the same
        generator), or its group's when ``per_crop`` items share one crop."""
        if self.per_crop == 1:
            return stable_seed("patch", self.seed, self.epoch, index)
        return stable_seed("patch-crop", self.seed, self.epoch, index // self.per_crop)

    def _degraded(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Operator, float]:
        result = self.degrade(x[None], generator)
        if not (isinstance(result, tuple) and len(result) == 3):
            raise ConfigError("degrade must return (y, operator, level)")
        y, operator, level = result
        if not isinstance(operator, Operator):
            raise ConfigError(f"degrade must return the operator it applied, got {type(operator).__name__}")
        if not isinstance(y, Tensor) or y.ndim != 4 or y.shape[0] != 1:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ConfigError(f"degrade must return a (1, C, H, W) tensor for a (1, C, p, p) patch, got {shape}")
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise ConfigError(f"degrade must return its level as a number, got {level!r}")
        grid = operator.to_grid(y)
        if grid.shape != x[None].shape:
            raise ConfigError(
                f"degrade's measurement does not fill the {tuple(x.shape)} patch grid: {tuple(grid.shape[1:])}"
            )
        return grid[0], operator, float(level)


def collate_patches(items: Sequence[Patch]) -> tuple[Tensor, Tensor, OperatorBatch, Tensor]:
    """Items of :class:`PatchDataset` as one batch: ``y`` and ``x`` ``(B, C, p, p)``, their operators as
    one :class:`~converge.physics.batch.OperatorBatch`, and ``level`` ``(B,)``."""
    ys, xs, operators, levels = zip(*items, strict=True)
    return torch.stack(ys), torch.stack(xs), OperatorBatch(operators), torch.stack(levels)


def saturated(image: Tensor, factor: float) -> Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` colour ``image`` with its colours pushed ``factor`` times
    further from each pixel's grey level (the channel mean), clipped to [0, 1]; 1 leaves it unchanged.

    >>> saturated(torch.tensor([[[0.375]], [[0.5]], [[0.625]]]), 2.0).flatten().tolist()
    [0.25, 0.5, 0.75]
    """
    grey = image.mean(dim=-3, keepdim=True)
    return (grey + factor * (image - grey)).clamp(0.0, 1.0)


def dihedral(image: Tensor, transform: int) -> Tensor:
    """Apply symmetry ``transform`` in 0..7 of the square to ``(..., H, W)``: ``transform % 4`` quarter
    turns, then a horizontal flip when ``transform >= 4``."""
    if not 0 <= transform < DIHEDRAL_TRANSFORMS:
        raise ValueError(f"dihedral transform must be in 0..7, got {transform}")
    rotated = torch.rot90(image, transform % 4, dims=(-2, -1))
    return torch.flip(rotated, dims=(-1,)) if transform >= 4 else rotated


def _as_stored(image: Tensor, index: int, channels: int | None) -> Tensor:
    """A user image as ``(C, H, W)``: uint8 stays 8-bit, floats become float32."""
    if not isinstance(image, Tensor):
        raise ConfigError(
            f"image {index} is a {type(image).__name__}, not a tensor: pass (C, H, W) tensors or a set name"
        )
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise ConfigError(f"image {index} has shape {tuple(image.shape)}: pass (C, H, W) or (1, C, H, W) tensors")
    if image.dtype == torch.uint8:
        if channels is None or channels == image.shape[0]:
            return image
        return _to_uint8(convert_channels(image[None].to(torch.float32) / 255.0, channels)[0])
    if not image.is_floating_point():
        raise ConfigError(f"image {index} has dtype {image.dtype}: pass float images in [0, 1] or uint8 images")
    return convert_channels(image[None].to(torch.float32), channels)[0]


def _to_uint8(image: Tensor) -> Tensor:
    """8-bit storage of an image in [0, 1] whose values are already multiples of 1/255."""
    return torch.round(image * 255.0).clamp(0, 255).to(torch.uint8)
