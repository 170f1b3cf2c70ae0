"""Overlapped tiled inference: restore images larger than memory allows, without seams.

The image is cut into a grid of *cores* that partition it. For each core,

- the **kept region** is the core grown by ``overlap`` pixels on every side, and
- the **crop** handed to ``fn`` is the kept region grown by a further ``halo`` pixels of context.

Both are clipped to the image. ``fn``'s output is cut back to the kept region, multiplied by a smooth
weight and accumulated; the sum is divided by the summed weights. Along each axis a weight rises
from 0 to 1 over the ``2 * overlap`` pixels centred on a core's start and falls likewise around its
end, as ``sin^2`` and ``cos^2`` of the same ramp, so two neighbours' weights add up to one there.
At the image border there is no ramp: the weight stays 1 up to the edge.

Exactness. Suppose each output pixel of ``fn`` depends only on inputs within a radius ``r`` of it
and, through padding, on where the image border is (any stack of convolutions, whatever padding).
A pixel of a crop that lies at least ``r`` pixels inside every crop edge that is not also an image
edge then has its whole receptive field in the crop and sees the true border where there is one,
so ``fn`` computes it exactly as on the whole image. Every pixel that gets a non-zero weight lies in
its tile's kept region, hence ``halo`` pixels inside such edges. With ``r <= halo`` every term of
the weighted average equals the whole-image output, and so does the average: the tiled result is
the whole-image result up to float rounding. Models with global operations (image-wide
normalisation, global pooling, noise estimation over the whole image) have no finite radius and
get no such guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from converge.errors import ConfigError

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 16
DEFAULT_MAX_MEMORY = 4 * 2**30
"""The memory budget (bytes) automatic tiling keeps a restore under: ``converge restore --max-memory``."""
PROCESS_ALLOWANCE = 512 * 2**20
"""Bytes set aside for the process itself (Python, torch, the weights) when planning the tiles."""

TileFn = Callable[[Tensor], Tensor]
ProgressFn = Callable[[int, int], None]


def tiled_apply(
    fn: TileFn,
    y: Tensor,
    tile: int | None = None,
    halo: int = 32,
    overlap: int = DEFAULT_OVERLAP,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
) -> Tensor:
    """Apply ``fn`` to ``y`` tile by tile and blend the tiles into one image.

    ``fn`` maps a ``(B, C, h, w)`` crop to a ``(B, C', h, w)`` output (same batch and spatial size).
    ``y``: ``(B, C, H, W)``. Returns ``(B, C', H, W)`` in the dtype and device of ``fn``'s output.

    ``tile`` is the largest core side (default 256); cores are spread evenly, so a 300-pixel side
    with ``tile=256`` gets two cores of 150. ``halo`` is the context added around each kept region;
    choose it at least the receptive-field radius of ``fn`` for an exact result (see the module
    docstring). ``overlap`` is how far kept regions reach into their neighbours' cores, i.e. half the
    width of the blend band.

    ``max_pixels`` replaces ``tile``: the largest square tile is chosen such that every crop handed
    to ``fn`` (core plus overlap plus halo on each side) has at most ``max_pixels`` pixels per image,
    and the whole image is passed in one call when ``H * W <= max_pixels``.

    Gradients flow through when the caller has them enabled; this function does not switch them
    off (wrap the call in ``torch.no_grad()`` for inference). ``progress(done, total)`` is called
    after each tile.

    >>> out = tiled_apply(lambda t: 2 * t, torch.rand(1, 3, 70, 90), tile=32, halo=4, overlap=4)
    >>> out.shape
    torch.Size([1, 3, 70, 90])
    """
    if y.ndim != 4 or y.shape[-2] == 0 or y.shape[-1] == 0:
        raise ValueError(f"tiled_apply expects a non-empty (B, C, H, W) tensor, got shape {tuple(y.shape)}")
    height, width = y.shape[-2:]
    tile_h, tile_w = _tile_size(height, width, tile, halo, overlap, max_pixels)

    rows = _axis_tiles(height, tile_h, halo, overlap, y.device)
    cols = _axis_tiles(width, tile_w, halo, overlap, y.device)
    total = len(rows) * len(cols)

    accumulated: Tensor | None = None
    weight_sum: Tensor | None = None
    done = 0
    for row in rows:
        for col in cols:
            crop = y[..., row.crop, col.crop]
            out = fn(crop)
            if out.ndim != 4 or out.shape[0] != crop.shape[0] or out.shape[-2:] != crop.shape[-2:]:
                raise ValueError(
                    f"fn must keep the batch and spatial size of its input: got {tuple(out.shape)} "
                    f"for a crop of shape {tuple(crop.shape)}"
                )
            if accumulated is None:
                accumulated = out.new_zeros(out.shape[0], out.shape[1], height, width)
                weight_sum = out.new_zeros(1, 1, height, width)
            weight = torch.outer(row.weight, col.weight).to(out)
            accumulated[..., row.kept, col.kept] += out[..., row.kept_in_crop, col.kept_in_crop] * weight
            weight_sum[..., row.kept, col.kept] += weight
            done += 1
            if progress is not None:
                progress(done, total)
    return accumulated.div_(weight_sum)


@dataclass(frozen=True)
class _AxisTile:
    """One tile along one axis: slices of the image it reads and keeps, and its blend weight there."""

    crop: slice
    kept: slice
    kept_in_crop: slice
    weight: Tensor


def _axis_tile(
    core_start: int, core_stop: int, length: int, halo: int, overlap: int, device: torch.device
) -> _AxisTile:
    """The tile whose core is ``[core_start, core_stop)`` on an axis of ``length`` pixels."""
    kept_start, kept_stop = max(core_start - overlap, 0), min(core_stop + overlap, length)
    crop_start, crop_stop = max(kept_start - halo, 0), min(kept_stop + halo, length)

    # Built in float64 and cast per tile, so float64 models get weights at full precision.
    position = torch.arange(kept_start, kept_stop, dtype=torch.float64, device=device) + 0.5
    weight = torch.ones_like(position)
    if overlap > 0:
        if core_start > 0:
            weight = weight * _rising_ramp(position - (core_start - overlap), 2 * overlap)
        if core_stop < length:
            weight = weight * (1.0 - _rising_ramp(position - (core_stop - overlap), 2 * overlap))
    return _AxisTile(
        crop=slice(crop_start, crop_stop),
        kept=slice(kept_start, kept_stop),
        kept_in_crop=slice(kept_start - crop_start, kept_stop - crop_start),
        weight=weight,
    )


def _rising_ramp(offset: Tensor, width: int) -> Tensor:
    """Raised-cosine step: 0 before ``offset = 0``, ``sin^2(pi/2 * offset / width)`` across, 1 after."""
    return torch.sin(0.5 * math.pi * (offset / width).clamp(0.0, 1.0)) ** 2


def _axis_tiles(length: int, tile: int, halo: int, overlap: int, device: torch.device) -> list[_AxisTile]:
    """Split ``[0, length)`` into ``ceil(length / tile)`` near-equal cores (sizes differ by at most 1)."""
    count = math.ceil(length / tile)
    bounds = [i * length // count for i in range(count + 1)]
    return [_axis_tile(bounds[i], bounds[i + 1], length, halo, overlap, device) for i in range(count)]


def _tile_size(
    height: int, width: int, tile: int | None, halo: int, overlap: int, max_pixels: int | None
) -> tuple[int, int]:
    """Validate the options and return the largest core size along each axis."""
    if halo < 0:
        raise ConfigError(f"halo must be >= 0, got {halo}.")
    if overlap < 0:
        raise ConfigError(f"overlap must be >= 0, got {overlap}.")
    if max_pixels is None:
        tile = DEFAULT_TILE if tile is None else tile
        if tile <= 0:
            raise ConfigError(f"tile must be a positive number of pixels, got {tile}.")
        if overlap > tile:
            raise ConfigError(f"overlap ({overlap}) must not exceed tile ({tile}); lower overlap or raise tile.")
        return tile, tile

    if tile is not None:
        raise ConfigError("Pass either tile or max_pixels, not both: max_pixels chooses the tile size.")
    if max_pixels <= 0:
        raise ConfigError(f"max_pixels must be positive, got {max_pixels}.")
    if height * width <= max_pixels:
        return height, width
    margin = 2 * (halo + overlap)
    side = math.isqrt(max_pixels) - margin
    if side < max(overlap, 1):
        raise ConfigError(
            f"max_pixels={max_pixels} leaves no room for a tile once halo and overlap are added; "
            f"allow at least {(max(overlap, 1) + margin) ** 2} pixels or lower halo/overlap."
        )
    return side, side


def one_piece_bytes(shape: tuple[int, ...], out_channels: int, bytes_per_pixel: float) -> float:
    """Bytes a restore of an image of ``shape`` ``(B, C, H, W)`` takes in one piece: the model's peak
    (``bytes_per_pixel``), :data:`PROCESS_ALLOWANCE` and the float32 input and output."""
    batch, channels, height, width = shape
    pixels = batch * height * width
    return PROCESS_ALLOWANCE + 4 * pixels * (channels + out_channels) + bytes_per_pixel * pixels


def tile_pixels_for_memory(
    shape: tuple[int, ...],
    out_channels: int,
    bytes_per_pixel: float,
    halo: int,
    budget: float = DEFAULT_MAX_MEMORY,
    overlap: int = DEFAULT_OVERLAP,
) -> int | None:
    """The ``max_pixels`` of :func:`tiled_apply` that keeps restoring an image of ``shape`` ``(B, C, H, W)``
    under ``budget`` bytes, or ``None`` when the whole image fits in one call.

    ``bytes_per_pixel``: the model's peak memory per pixel of a crop (``benchmarks/memory_per_pixel.py``).
    Besides the crops the budget holds :data:`PROCESS_ALLOWANCE` and the float32 images that live through
    the whole restore: the input, the blended output and its weights. Raises :class:`ConfigError` when
    not even the smallest tile fits.

    >>> tile_pixels_for_memory((1, 1, 512, 512), 1, 400.0, halo=20) is None
    True
    >>> tile_pixels_for_memory((1, 1, 12000, 12000), 1, 400.0, halo=20)
    5075240
    """
    batch, channels, height, width = shape
    pixels = height * width
    if one_piece_bytes(shape, out_channels, bytes_per_pixel) <= budget:
        return None
    resident = PROCESS_ALLOWANCE + 4 * batch * pixels * (channels + out_channels)
    room = budget - resident - 4 * pixels
    smallest = (1 + 2 * (halo + overlap)) ** 2
    if room < bytes_per_pixel * batch * smallest:
        needed = (resident + 4 * pixels + bytes_per_pixel * batch * smallest) / 2**30
        raise ConfigError(
            f"a {width}x{height} image needs about {needed:.1f} GiB even in the smallest tiles, over the "
            f"memory budget of {budget / 2**30:.1f} GiB: raise --max-memory or restore a smaller image"
        )
    return int(room / (bytes_per_pixel * batch))
