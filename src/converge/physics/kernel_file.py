"""A user's own blur kernel, read from a ``.npy`` array or a grey image and checked before use.

A kernel must be 2-D, odd-sized in both directions (its centre tap is the origin, see
:mod:`converge.physics.kernels`), finite and non-negative with a positive sum. One whose taps do not sum
to 1 is normalised, and the returned note says so; an image kernel (a PNG of the point-spread function)
is always normalised, as its grey levels are only proportional to the taps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from converge.errors import ConfigError, ImageReadError

SUM_TOLERANCE = 1e-3


def read_kernel(path: str | Path) -> tuple[Tensor, str | None]:
    """Read and check the kernel at ``path``; return it as an ``(h, w)`` float64 tensor summing to 1,
    and a note for the user when it had to be normalised (``None`` otherwise).

    Raises :class:`~converge.errors.ConfigError` (one line naming the file) for a missing or unreadable
    file and for a kernel that breaks a rule of the module docstring.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such kernel file")
    if path.suffix.lower() == ".npy":
        kernel = _read_array(path)
        from_image = False
    else:
        kernel = _read_grey_image(path)
        from_image = True
    return checked_kernel(kernel, str(path), always_normalise=from_image)


def checked_kernel(kernel: Tensor, label: str, *, always_normalise: bool = False) -> tuple[Tensor, str | None]:
    """Check ``kernel`` against the rules above (``label`` names it in errors); return it in float64,
    normalised to sum 1, and a note when a sum other than 1 was normalised away."""
    if kernel.ndim != 2:
        raise ConfigError(f"{label}: a blur kernel must be 2-D, got shape {tuple(kernel.shape)}")
    height, width = kernel.shape
    if height % 2 == 0 or width % 2 == 0:
        raise ConfigError(f"{label}: a blur kernel must have odd sides (centre tap = origin), not {height}x{width}")
    kernel = kernel.to(torch.float64)
    if not torch.isfinite(kernel).all():
        raise ConfigError(f"{label}: the kernel holds NaN or infinite values")
    if (kernel < 0).any():
        raise ConfigError(f"{label}: the kernel has negative taps (smallest {kernel.min().item():.3g})")
    total = kernel.sum().item()
    if total <= 0:
        raise ConfigError(f"{label}: the kernel's taps sum to 0")
    note = None
    if abs(total - 1.0) > SUM_TOLERANCE and not always_normalise:
        note = f"{label}: the kernel's taps summed to {total:.4g}, normalised to 1"
    return kernel / total, note


def _read_array(path: Path) -> Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}: not a NumPy .npy array ({reason})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{path}: the kernel must be a numeric array, got {getattr(array, 'dtype', type(array))}")
    if np.iscomplexobj(array):
        raise ConfigError(f"{path}: the kernel must be real, got a complex array")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _read_grey_image(path: Path) -> Tensor:
    from converge.imageio import read_image

    try:
        image = read_image(path)
    except ImageReadError as error:
        raise ConfigError(f"kernel {error}") from None
    if image.shape[1] != 1:
        raise ConfigError(f"{path}: a kernel image must be grey, got a colour image")
    return image[0, 0]
