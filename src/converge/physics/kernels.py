"""Pure kernel builders, FFT helpers and padding maps shared by the operators.

Conventions used throughout :mod:`converge.physics`:

* A kernel is an ``(h, w)`` tensor applied as a *convolution* whose origin is tap ``(h // 2, w // 2)``:
  ``(k * x)[n] = sum_m k[m] x[n - m + h // 2]`` (per axis). For odd sizes the origin is the centre tap.
* Circular convolution is evaluated in the Fourier domain through the kernel's transfer function
  (:func:`kernel_transfer_function`); the kernel may be larger than the image (it wraps around).
* Padding is described by ``(top, bottom, left, right)`` and a boundary mode; :func:`pad_adjoint` is the
  exact transpose of :func:`pad` (it folds the padded border back onto the interior).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from converge.errors import ConfigError

PADDING_MODES = ("reflect", "replicate", "circular", "zeros")


def default_gaussian_size(sigma: float) -> int:
    """Odd kernel size ``2 ceil(4 sigma) + 1``: the truncated tails hold under 1e-4 of the mass."""
    return 2 * math.ceil(4.0 * sigma) + 1


def gaussian_kernel(
    sigma: float, size: int | None = None, *, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> Tensor:
    """Isotropic Gaussian kernel ``exp(-(i^2 + j^2) / (2 sigma^2))`` of shape ``(size, size)``, summing to 1.

    Taps are sampled at integer offsets from the geometric centre ``(size - 1) / 2`` (for even sizes the
    centre falls between taps). ``size`` defaults to :func:`default_gaussian_size`.

    >>> gaussian_kernel(1.0, 5).sum().item()
    1.0
    """
    if not sigma > 0:
        raise ConfigError(f"Gaussian kernel sigma must be positive, got {sigma}.")
    size = default_gaussian_size(sigma) if size is None else size
    if size < 1:
        raise ConfigError(f"Gaussian kernel size must be at least 1, got {size}.")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.outer(profile, profile)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def cubic(t: Tensor, a: float = -0.75) -> Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (support ``[-2, 2]``).

    ``a = -0.75`` is PyTorch's bicubic and the SR protocol MTDEQ follows; MATLAB's ``imresize`` and
    Pillow use ``a = -0.5``.
    """
    s = t.abs()
    near = ((a + 2) * s - (a + 3)) * s * s + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return torch.where(s <= 1, near, torch.where(s < 2, far, torch.zeros_like(s)))


def bicubic_kernel(
    factor: int, *, a: float = -0.75, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> Tensor:
    """Antialiased bicubic downsampling kernel for an integer ``factor``: ``(4 factor, 4 factor)``, sums to 1.

    The cubic (``a = -0.75`` by default, see :func:`cubic`) is stretched by ``factor`` and sampled on
    ``4 factor`` taps. Its centre sits
    at ``2 factor - delta`` with ``delta = (factor - 1) / 2 - (factor - 1) // 2`` (0 for odd, 1/2 for even
    factors), so that filtering with the origin convention of this module and keeping pixels
    ``factor * j + (factor - 1) // 2`` samples output pixel ``j`` at input position
    ``factor * j + (factor - 1) / 2``: the pixel-centre geometry of MATLAB's ``imresize``.
    """
    if factor < 1:
        raise ConfigError(f"Bicubic kernel factor must be a positive integer, got {factor}.")
    delta = (factor - 1) / 2 - (factor - 1) // 2
    taps = torch.arange(4 * factor, dtype=torch.float64)
    profile = cubic((taps - 2 * factor + delta) / factor, a)
    kernel = torch.outer(profile, profile)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _wrapped_kernel(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """The kernel placed on an ``shape`` torus with its origin at ``(0, 0)`` (taps beyond the size add up)."""
    h, w = kernel.shape
    rows = (torch.arange(h, device=kernel.device) - h // 2) % shape[0]
    cols = (torch.arange(w, device=kernel.device) - w // 2) % shape[1]
    canvas = kernel.new_zeros(shape)
    return canvas.index_put((rows[:, None], cols[None, :]), kernel, accumulate=True)


def kernel_transfer_function(kernel: Tensor, shape: tuple[int, int], onesided: bool = True) -> Tensor:
    """Transfer function of circular convolution with ``kernel`` on ``shape`` images (complex tensor).

    ``onesided=True`` gives the ``rfft2`` half spectrum ``(H, W // 2 + 1)``; otherwise the full ``(H, W)``.
    """
    wrapped = _wrapped_kernel(kernel, shape)
    return torch.fft.rfft2(wrapped) if onesided else torch.fft.fft2(wrapped)


def apply_transfer_function(x: Tensor, transfer: Tensor) -> Tensor:
    """Real circular filtering ``irfft2(rfft2(x) * transfer)`` of ``x`` ``(..., H, W)`` by a one-sided spectrum."""
    return torch.fft.irfft2(torch.fft.rfft2(x) * transfer, s=x.shape[-2:])


def convolution_padding(kernel_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` padding after which a valid correlation gives a same-size convolution."""
    h, w = kernel_shape
    return h - 1 - h // 2, h // 2, w - 1 - w // 2, w // 2


def pad_indices(length: int, before: int, after: int, mode: str, device: torch.device | None = None) -> Tensor:
    """Source index, in ``[0, length)``, of each position of a padded axis (``before + length + after`` long).

    ``reflect`` mirrors about the edge sample (``dcb|abcd|cba``) and repeats the reflection for pads
    longer than the axis; ``replicate`` repeats the edge; ``circular`` wraps around.
    """
    positions = torch.arange(-before, length + after, device=device)
    if mode == "circular":
        return positions % length
    if mode == "replicate":
        return positions.clamp(0, length - 1)
    if mode == "reflect":
        if length == 1:
            return torch.zeros_like(positions)
        period = 2 * (length - 1)
        folded = positions % period
        return torch.where(folded < length, folded, period - folded)
    raise ConfigError(f"Unknown padding mode {mode!r}; choose one of {', '.join(PADDING_MODES)}.")


def pad(x: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)`` with the boundary ``mode``."""
    top, bottom, left, right = pads
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    rows = pad_indices(x.shape[-2], top, bottom, mode, x.device)
    cols = pad_indices(x.shape[-1], left, right, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def pad_adjoint(padded: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """Exact adjoint of :func:`pad`: every padded sample is added back onto the pixel it was copied from."""
    top, bottom, left, right = pads
    height = padded.shape[-2] - top - bottom
    width = padded.shape[-1] - left - right
    if mode == "zeros":
        return padded[..., top : top + height, left : left + width]
    rows = pad_indices(height, top, bottom, mode, padded.device)
    cols = pad_indices(width, left, right, mode, padded.device)
    folded_cols = padded.new_zeros(*padded.shape[:-1], width).index_add(padded.ndim - 1, cols, padded)
    return folded_cols.new_zeros(*padded.shape[:-2], height, width).index_add(padded.ndim - 2, rows, folded_cols)
