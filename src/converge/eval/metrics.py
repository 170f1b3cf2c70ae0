"""Full-reference image quality: PSNR and SSIM, batched, in float64.

Both follow scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity`` (with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``) so that our tables can be checked
against it, and both accept the two protocol switches of the restoration literature: a border crop
(super-resolution, deblurring) and evaluation on the MATLAB-style luma channel (JPEG, SR).

Example::

    >>> import torch
    >>> ref = torch.rand(2, 1, 32, 32)
    >>> psnr(ref.clamp(0.1, 0.9), ref).shape
    torch.Size([2])
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from converge.color import rgb_to_y
from converge.errors import ConfigError

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# scikit-image truncates the Gaussian at 3.5 sigma, which gives an 11-tap window for sigma = 1.5.
_SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(_SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
SSIM_WINDOW = 2 * SSIM_RADIUS + 1


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: ``10 log10(data_range^2 / mean((x - ref)^2))``.

    ``x``, ``ref``: ``(B, C, H, W)`` with values on a scale where ``data_range`` is the peak (1.0 for
    images in [0, 1]). The mean runs over channels and pixels of each image after removing
    ``crop_border`` pixels on every side; with ``y_channel=True`` RGB inputs are first mapped to the
    MATLAB luma ``converge.color.rgb_to_y`` (single-channel inputs are already luma and are used as is).
    Returns a float64 ``(B,)`` tensor; identical images give ``inf``.
    """
    x64, ref64 = _prepare(x, ref, data_range, crop_border, y_channel, min_size=1)
    mse = (x64 - ref64).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(x: Tensor, ref: Tensor, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Mean structural similarity per image (Wang et al. 2004), as scikit-image computes it.

    With Gaussian-weighted local means ``mu``, variances ``s^2`` and covariance ``s_xr`` (window 11x11,
    sigma 1.5, population statistics) the SSIM map is
    ``((2 mu_x mu_r + C1)(2 s_xr + C2)) / ((mu_x^2 + mu_r^2 + C1)(s_x^2 + s_r^2 + C2))`` with
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``. The map is kept only where the window
    fits inside the image (a 5-pixel margin is dropped), then averaged over pixels and channels.

    ``x``, ``ref``: ``(B, C, H, W)``; ``crop_border`` and ``y_channel`` as in :func:`psnr`. After the
    crop each side must be at least 11 pixels. Returns a float64 ``(B,)`` tensor in [-1, 1].
    """
    x64, ref64 = _prepare(x, ref, data_range, crop_border, y_channel, min_size=SSIM_WINDOW)
    batch, channels, height, width = x64.shape
    # One filtering pass over the five statistics, each channel of each image filtered on its own.
    stats = torch.stack((x64, ref64, x64 * x64, ref64 * ref64, x64 * ref64), dim=2)
    stats = stats.reshape(batch * channels * 5, 1, height, width)
    kernel = _gaussian_kernel_1d(x64.device)
    filtered = F.conv2d(stats, kernel.reshape(1, 1, SSIM_WINDOW, 1))
    filtered = F.conv2d(filtered, kernel.reshape(1, 1, 1, SSIM_WINDOW))
    filtered = filtered.reshape(batch, channels, 5, *filtered.shape[-2:])
    mu_x, mu_r, e_xx, e_rr, e_xr = filtered.unbind(dim=2)
    var_x = e_xx - mu_x * mu_x
    var_r = e_rr - mu_r * mu_r
    cov_xr = e_xr - mu_x * mu_r
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_r + c1) * (2 * cov_xr + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def _gaussian_kernel_1d(device: torch.device) -> Tensor:
    """The normalised, truncated 1-D Gaussian of SciPy's ``gaussian_filter`` (sigma 1.5, radius 5)."""
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return weights / weights.sum()


def _prepare(
    x: Tensor, ref: Tensor, data_range: float, crop_border: int, y_channel: bool, min_size: int
) -> tuple[Tensor, Tensor]:
    """Validate the pair, cast to float64, take the luma channel if asked, and crop the border."""
    if x.ndim != 4 or ref.ndim != 4:
        raise ValueError(
            f"metrics expect (B, C, H, W) tensors, got shapes {tuple(x.shape)} and {tuple(ref.shape)}"
        )
    if x.shape != ref.shape:
        raise ValueError(f"image and reference shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    if not (isinstance(data_range, numbers.Real) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ConfigError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    x64 = x.to(torch.float64)
    ref64 = ref.to(torch.float64)
    if y_channel:
        if x.shape[1] == 3:
            x64, ref64 = rgb_to_y(x64), rgb_to_y(ref64)
        elif x.shape[1] != 1:
            raise ValueError(f"y_channel needs RGB or single-channel images, got {x.shape[1]} channels")
    height, width = x.shape[-2:]
    if min(height, width) - 2 * crop_border < min_size:
        raise ConfigError(
            f"a {height}x{width} image with crop_border={crop_border} leaves less than {min_size} pixels per side"
        )
    if crop_border:
        x64 = x64[..., crop_border:-crop_border, crop_border:-crop_border]
        ref64 = ref64[..., crop_border:-crop_border, crop_border:-crop_border]
    return x64, ref64
