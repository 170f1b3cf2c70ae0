"""Classical restorers for side-by-side tables: BM3D, TV, NL-means, Wiener deconvolution, bicubic
upsampling, Malvar-He-Cutler demosaicking, filling missing pixels from their neighbours, the input itself.

Every baseline is a :class:`ClassicalRestorer`: ``restorer(y, sigma=None) -> x`` with ``y`` and ``x``
``(B, C, H, W)`` float tensors in [0, 1] (``y`` may overshoot slightly: benchmark noise is not clipped)
and ``sigma`` the Gaussian noise standard deviation on the same scale (``25 / 255``). Outputs keep the
dtype and device of ``y`` and are clipped to [0, 1]. The denoisers run on the CPU in float64 NumPy,
one image of the batch at a time, and are not differentiable.

scikit-image and bm3d are imported inside the calls that need them, so importing this module is cheap.
Each baseline registers a :class:`BaselineSpec` (its name, description and the tasks it restores) with
:func:`register_baseline`; :data:`BASELINES` holds them by name and :func:`get_baseline` builds one.
"""

from __future__ import annotations

import inspect
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from converge.errors import ConfigError

Sigma = float | Tensor | None

BM3D_PROFILES = ("np", "refilter", "vn", "vn_old", "high", "deb")
BM3D_BLOCK = 8  # the side of the bm3d package's blocks: smaller images cannot be matched
WIENER_BALANCE = 100.0  # c of WienerDeconvolution, tuned on validation images (see its docstring)
WIENER_NOISE_FLOOR = 1.0 / 255.0
FILL_WIDTH = 1.0  # pixels: the Gaussian of fill_missing's normalised convolution (tuned: see MaskFill)
FILL_TRUST = 0.1  # kept-pixel density at which fill_missing stops borrowing from its coarser level


class ClassicalRestorer(ABC):
    """A classical restorer: ``restorer(y, sigma=None) -> x``, ``(B, C, H, W)`` in [0, 1] both ways."""

    @abstractmethod
    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        """Restore ``y``; ``sigma`` is a float or a ``(B,)`` tensor of noise levels in [0, 1] units."""


class _PerImageDenoiser(ClassicalRestorer):
    """A NumPy denoiser applied to each image of the batch with its own noise level."""

    name: str

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        _check_image(y, self.name)
        sigmas = _per_image_sigma(sigma, y.shape[0], self.name)
        # Gray images go to the libraries as (H, W): the tuned 2-D code paths, not one-channel colour.
        images = y.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        if y.shape[1] == 1:
            images = images[..., 0]
        restored = np.stack([self._denoise(image, noise_level) for image, noise_level in zip(images, sigmas)])
        if y.shape[1] == 1:
            restored = restored[..., None]
        out = torch.from_numpy(restored).permute(0, 3, 1, 2)
        return out.clamp(0.0, 1.0).to(device=y.device, dtype=y.dtype)

    @abstractmethod
    def _denoise(self, image: np.ndarray, sigma: float) -> np.ndarray:
        """Denoise one float64 image, ``(H, W)`` if gray else ``(H, W, C)``; returns the same shape."""


class BM3D(_PerImageDenoiser):
    """BM3D (Dabov et al., 2007) from the ``bm3d`` package (non-commercial licence, optional install).

    Grayscale images go through ``bm3d.bm3d``, RGB images through ``bm3d.bm3d_rgb`` (block matching
    on luminance in an opponent colour space); ``sigma`` is passed as ``sigma_psd``. ``profile`` is one
    of the package's presets ('np' is its default "normal profile").
    """

    name = "bm3d"

    def __init__(self, profile: str = "np") -> None:
        if profile not in BM3D_PROFILES:
            raise ConfigError(f"Unknown BM3D profile {profile!r}; choose one of {', '.join(BM3D_PROFILES)}.")
        self.profile = profile

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        if y.ndim == 4 and y.shape[1] not in (1, 3):
            raise ValueError(f"bm3d handles 1 (gray) or 3 (RGB) channels, got {y.shape[1]}")
        if y.ndim == 4 and min(y.shape[-2:]) < BM3D_BLOCK:
            size = f"{y.shape[-2]}x{y.shape[-1]}"
            raise ConfigError(f"bm3d needs images of at least {BM3D_BLOCK}x{BM3D_BLOCK} pixels (its block), got {size}")
        return super().__call__(y, sigma)

    def _denoise(self, image: np.ndarray, sigma: float) -> np.ndarray:
        try:
            import bm3d
        except ImportError as error:
            raise ConfigError("bm3d is not installed; pip install bm3d (non-commercial licence).") from error
        if image.ndim == 3:
            return bm3d.bm3d_rgb(image, sigma_psd=sigma, profile=self.profile)
        return bm3d.bm3d(image, sigma_psd=sigma, profile=self.profile)


class TVChambolle(_PerImageDenoiser):
    """Total-variation denoising, scikit-image ``denoise_tv_chambolle`` (each channel on its own).

    Minimises ``0.5 ||x - y||^2 + w TV(x)`` with ``w = 1.3 * sigma^1.2``, iterated to a relative
    change of 2e-5 (at most 1000 iterations): the library's looser default stops early at high noise.

    Tuning (Set12 01, 02, 05; noise seeded per image; mean PSNR in dB over the three):
    a grid ``w = a * sigma`` found the best ``a`` to be 0.7, 0.8, 0.9 at sigma 15, 25, 50
    (31.23, 28.66, 25.41 dB); ``1.3 * sigma^1.2`` fits that trend and gives 31.22, 28.65, 25.40 dB,
    against 31.15, 28.66, 25.29 for a constant ``0.8 * sigma``. The script drew
    ``y = x + sigma * default_rng(1000 * int(name) + s).standard_normal(x.shape)`` and scored
    ``clip(denoise_tv_chambolle(y, weight=w, eps=2e-5, max_num_iter=1000), 0, 1)``.
    """

    name = "tv"

    @staticmethod
    def weight(sigma: float) -> float:
        """TV weight ``w`` for noise level ``sigma`` (both in [0, 1] units)."""
        return 1.3 * sigma**1.2

    def _denoise(self, image: np.ndarray, sigma: float) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        channel_axis = -1 if image.ndim == 3 else None
        return denoise_tv_chambolle(
            image, weight=self.weight(sigma), eps=2e-5, max_num_iter=1000, channel_axis=channel_axis
        )


class NLMeans(_PerImageDenoiser):
    """Non-local means, scikit-image ``denoise_nl_means`` (fast mode, 7x7 patches, 23x23 search window).

    ``sigma`` is passed to the library, which subtracts the expected noise from patch distances; the
    filtering parameter is ``h = 0.3 * sigma^0.7``.

    Tuning (Set12 01, 02, 05, same seeded noise as :class:`TVChambolle`): a grid ``h = k * sigma``
    found the best ``k`` to be 0.7, 0.6, 0.5 at sigma 15, 25, 50 (31.52, 29.17, 25.62 dB mean PSNR);
    ``0.3 * sigma^0.7`` follows that trend and gives 31.52, 29.17, 25.62 dB, against 31.48, 29.17,
    25.40 for a constant ``0.6 * sigma``. Scored as
    ``clip(denoise_nl_means(y, h=h, sigma=sigma, fast_mode=True, patch_size=7, patch_distance=11), 0, 1)``.
    Colour images use the same ``h`` (not tuned separately).
    """

    name = "nlm"

    @staticmethod
    def h(sigma: float) -> float:
        """NL-means filtering parameter ``h`` for noise level ``sigma`` (both in [0, 1] units)."""
        return 0.3 * sigma**0.7

    def _denoise(self, image: np.ndarray, sigma: float) -> np.ndarray:
        from skimage.restoration import denoise_nl_means

        channel_axis = -1 if image.ndim == 3 else None
        return denoise_nl_means(
            image,
            h=self.h(sigma),
            sigma=sigma,
            fast_mode=True,
            patch_size=7,
            patch_distance=11,
            channel_axis=channel_axis,
        )


class BicubicUpsample(ClassicalRestorer):
    """Super-resolution baseline: :func:`bicubic_upsample` by ``factor``; ``sigma`` is accepted and unused."""

    def __init__(self, factor: int) -> None:
        self.factor = _check_factor(factor)

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        return bicubic_upsample(y, self.factor)


class Identity(ClassicalRestorer):
    """The "input" column of a table: a copy of the degraded observation; ``sigma`` is accepted and unused.

    For masking tasks (inpainting, demosaicking) pass the masked image, for SR use :class:`BicubicUpsample`.
    """

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        _check_image(y, "input")
        return y.clone()


class WienerDeconvolution(ClassicalRestorer):
    """Deblurring baseline: the Wiener filter of ``blur`` (a :class:`~converge.physics.blur.KernelBlur`)
    for white noise of level ``sigma`` and a ``1 / |omega|^2`` image spectrum,

    .. math:: \\hat X = \\frac{\\overline{K}\\, Y}{|K|^2 + \\beta\\, |L|^2}, \\qquad \\beta = c\\, \\max(\\sigma, \\sigma_0)^2,

    with ``K`` the blur's transfer function, ``L`` the 5-point Laplacian's, ``c`` =
    :data:`WIENER_BALANCE` and the floor ``sigma_0`` = 1/255 (a noiseless input still has its 8-bit
    rounding; ``sigma=None`` is a noiseless input). A blur with a non-circular boundary is deconvolved
    on the input mirrored by the kernel's size and cropped back (so its edges do not ring). Runs in
    float64 on the input's device; the result is clipped to [0, 1] and keeps ``y``'s dtype.

    Tuning (``python benchmarks/tune_wiener.py``, 16 grey bsds-val32 images, Gaussian blur 1.6 and 2.0
    at noise 2.55, blur 1.6 at noise 7.65): ``c = 100`` was best or within 0.01 dB of it in all three
    (26.79, 25.93, 25.52 dB) on a grid from 3 to 3000.
    """

    def __init__(self, operator: object) -> None:
        from converge.physics.blur import KernelBlur

        if not isinstance(operator, KernelBlur):
            raise ConfigError(f"wiener deconvolves a shift-invariant blur, not {type(operator).__name__}")
        self.blur = operator

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        from converge.physics.kernels import kernel_transfer_function, pad

        _check_image(y, "wiener")
        levels = [0.0] * y.shape[0] if sigma is None else _per_image_sigma(sigma, y.shape[0], "wiener")
        sigmas = torch.tensor(levels, dtype=torch.float64, device=y.device)
        balance = WIENER_BALANCE * sigmas.clamp(min=WIENER_NOISE_FLOOR) ** 2
        margin = 0 if self.blur.boundary == "circular" else max(self.blur.kernel.shape)
        image = pad(y.to(torch.float64), (margin,) * 4, "reflect") if margin else y.to(torch.float64)
        shape = tuple(image.shape[-2:])
        transfer = kernel_transfer_function(self.blur.kernel.to(image.device), shape)
        laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
        smoothness = kernel_transfer_function(laplacian.to(image.device), shape).abs() ** 2
        gain = transfer.conj() / (transfer.abs() ** 2 + balance[:, None, None, None] * smoothness)
        restored = torch.fft.irfft2(torch.fft.rfft2(image) * gain, s=shape)
        if margin:
            restored = restored[..., margin:-margin, margin:-margin]
        return restored.clamp(0.0, 1.0).to(y.dtype)


class MaskFill(ClassicalRestorer):
    """Inpainting baseline: :func:`fill_missing` with the mask of ``operator`` (a
    :class:`~converge.physics.mask.MaskOperator`); ``sigma`` is accepted and unused.

    Tuning (``python benchmarks/tune_fill.py``: 8 colour bsds-val32 images, 50%, 80% and 90% of the
    pixels dropped): width 1 px with trust density 0.1 was best at 80% (25.00 dB), 0.11 dB under width
    1.5 at 90% and 0.33 dB under width 0.7 at 50%, among widths 0.7, 1, 1.5 and densities of about 0
    (plain normalised convolution), 0.05, 0.1 and 0.2.
    """

    def __init__(self, operator: object) -> None:
        from converge.physics.mask import MaskOperator

        if not isinstance(operator, MaskOperator):
            raise ConfigError(f"fill needs a pixel mask, not {type(operator).__name__}")
        self.mask_operator = operator

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        _check_image(y, "fill")
        return fill_missing(y, self.mask_operator(torch.ones_like(y))).clamp(0.0, 1.0)


def fill_missing(y: Tensor, mask: Tensor) -> Tensor:
    """``y`` ``(B, C, H, W)`` with the pixels where ``mask`` (0/1, broadcastable to ``y``) is 0 filled
    in from the kept ones; kept pixels are returned unchanged.

    Each missing pixel gets the normalised convolution of the kept pixels with a Gaussian of width
    :data:`FILL_WIDTH` (the Gaussian-weighted mean of the kept pixels near it). Where the kept pixels
    near it weigh less than :data:`FILL_TRUST` (a full neighbourhood weighs 1), the value is blended
    with the same fill done on a half-size image (sums pooled 2x2) and upsampled, down to one pixel,
    so holes of any size are filled (push-pull). An image with no kept pixel is filled with 0.5.
    Differentiable; keeps ``y``'s dtype; not clipped.

    >>> y = torch.tensor([[[[0.25, 0.0, 0.75]]]])
    >>> fill_missing(y, torch.tensor([[[[1.0, 0.0, 1.0]]]])).tolist()
    [[[[0.25, 0.5, 0.75]]]]
    """
    _check_image(y, "fill_missing")
    mask = mask.to(y.dtype).expand_as(y)
    return mask * y + (1.0 - mask) * _push_pull(mask * y, mask)


def _push_pull(weighted: Tensor, weight: Tensor) -> Tensor:
    """The normalised-convolution estimate ``blur(weighted) / blur(weight)``, blended where the blurred
    ``weight`` is under :data:`FILL_TRUST` with the estimate one pyramid level coarser."""
    density = _gaussian_blur(weight, FILL_WIDTH)
    local = _gaussian_blur(weighted, FILL_WIDTH) / density.clamp(min=1e-12)
    trust = (density / FILL_TRUST).clamp(max=1.0)
    if bool((trust >= 1.0).all()):
        return local
    if max(weight.shape[-2:]) == 1:
        return torch.where(weight > 0, local, torch.full_like(local, 0.5))
    pooled = (F.avg_pool2d(weighted, 2, ceil_mode=True), F.avg_pool2d(weight, 2, ceil_mode=True))
    coarse = F.interpolate(_push_pull(*pooled), size=weight.shape[-2:], mode="bilinear", align_corners=False)
    return trust * local + (1.0 - trust) * coarse


def _gaussian_blur(x: Tensor, width: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` ``x`` (3 widths each side), edges replicated."""
    radius = max(1, round(3 * width))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / width) ** 2)
    row = (kernel / kernel.sum()).view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), row, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), row.transpose(-1, -2), groups=x.shape[1])


def bicubic_upsample(y: Tensor, factor: int) -> Tensor:
    """Upsample ``(B, C, h, w)`` to ``(B, C, factor h, factor w)`` as MATLAB ``imresize(y, factor)`` does.

    Output sample ``i`` sits at input coordinate ``u = (i + 0.5) / factor - 0.5`` and is a weighted sum
    of the four nearest input samples with Keys' cubic kernel, ``a = -0.5``:
    ``k(t) = 1.5|t|^3 - 2.5|t|^2 + 1`` for ``|t| <= 1``, ``-0.5|t|^3 + 2.5|t|^2 - 4|t| + 2`` for
    ``1 < |t| < 2``, else 0. Samples beyond the border are mirrored (``-1 -> 0``, ``-2 -> 1``).
    ``torch.nn.functional.interpolate(mode="bicubic")`` differs: it uses ``a = -0.75`` and repeats
    the edge. The result is clipped to [0, 1] and keeps ``y``'s dtype; it is differentiable.
    """
    _check_image(y, "bicubic")
    factor = _check_factor(factor)
    return _upsample_axis(_upsample_axis(y, factor, dim=-2), factor, dim=-1).clamp(0.0, 1.0)


class MalvarDemosaic(ClassicalRestorer):
    """Demosaicking baseline: :func:`malvar_demosaic` for Bayer ``pattern``; ``sigma`` is accepted and unused."""

    def __init__(self, pattern: str = "RGGB") -> None:
        from converge.physics.mosaic import BayerMosaic

        self.pattern = BayerMosaic(pattern).pattern  # checked now, not at the first image

    def __call__(self, y: Tensor, sigma: Sigma = None) -> Tensor:
        return malvar_demosaic(y, self.pattern)


# Malvar, He and Cutler (ICASSP 2004), Fig. 2: 5x5 gradient-corrected interpolation filters, in units
# of 1/8. Rows and columns are offsets -2..2 from the pixel being filled in.
_MHC_GREEN_AT_RED_OR_BLUE = (
    (0, 0, -1, 0, 0),
    (0, 0, 2, 0, 0),
    (-1, 2, 4, 2, -1),
    (0, 0, 2, 0, 0),
    (0, 0, -1, 0, 0),
)
_MHC_AT_GREEN_SAME_ROW = (  # red (blue) at a green pixel whose left and right neighbours are red (blue)
    (0, 0, 0.5, 0, 0),
    (0, -1, 0, -1, 0),
    (-1, 4, 5, 4, -1),
    (0, -1, 0, -1, 0),
    (0, 0, 0.5, 0, 0),
)
_MHC_RED_AT_BLUE = (  # and blue at red
    (0, 0, -1.5, 0, 0),
    (0, 2, 0, 2, 0),
    (-1.5, 0, 6, 0, -1.5),
    (0, 2, 0, 2, 0),
    (0, 0, -1.5, 0, 0),
)


def malvar_demosaic(y: Tensor, pattern: str = "RGGB") -> Tensor:
    """Fill in a Bayer mosaic ``y`` in [0, 1], ``(B, 3, H, W)`` with each pixel's measured channel as
    :class:`~converge.physics.mosaic.BayerMosaic` leaves it (the other channels are ignored) or the
    ``(B, 1, H, W)`` raw sensor image, into ``(B, 3, H, W)`` RGB with
    Malvar, He and Cutler's gradient-corrected bilinear interpolation: each missing value is its
    channel's bilinear estimate plus a fraction of the Laplacian of the measured channel at that pixel,
    one fixed 5x5 filter per case. The borders are mirrored (which keeps the Bayer phase). Measured
    values are kept; the result is clipped to [0, 1] and keeps ``y``'s dtype; it is differentiable.
    """
    from converge.physics.mosaic import BayerMosaic

    _check_image(y, "malvar")
    mosaic = BayerMosaic(pattern)
    if y.shape[1] not in (1, 3) or min(y.shape[-2:]) < 3:
        raise ConfigError(
            f"malvar demosaicks mosaics of 1 or 3 channels and at least 3x3 pixels, got shape {tuple(y.shape)}"
        )
    raw = y if y.shape[1] == 1 else mosaic.to_raw(y)
    filters = torch.tensor(
        (_MHC_GREEN_AT_RED_OR_BLUE, _MHC_AT_GREEN_SAME_ROW, tuple(zip(*_MHC_AT_GREEN_SAME_ROW)), _MHC_RED_AT_BLUE),
        dtype=y.dtype,
        device=y.device,
    )
    padded = torch.nn.functional.pad(raw, (2, 2, 2, 2), mode="reflect")
    green_at_other, same_row, same_column, across = torch.nn.functional.conv2d(padded, filters[:, None] / 8.0).unbind(1)
    height, width = y.shape[-2:]
    measured = mosaic.tile_channels[torch.arange(height)[:, None] % 2, torch.arange(width)[None, :] % 2].to(y.device)
    row_neighbour = mosaic.tile_channels[torch.arange(height)[:, None] % 2, 1 - torch.arange(width)[None, :] % 2].to(
        y.device
    )
    raw = raw[:, 0]
    channels = []
    for channel in range(3):
        if channel == 1:
            filled = green_at_other
        else:
            at_green = torch.where(row_neighbour == channel, same_row, same_column)
            filled = torch.where(measured == 1, at_green, across)
        channels.append(torch.where(measured == channel, raw, filled))
    return torch.stack(channels, dim=1).clamp(0.0, 1.0)


def _upsample_axis(x: Tensor, factor: int, dim: int) -> Tensor:
    """Keys-cubic upsampling of ``x`` along ``dim`` (-2 or -1) by an integer factor."""
    length = x.shape[dim]
    position = (torch.arange(length * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    source = torch.floor(position).long()[:, None] + torch.arange(-1, 3)
    weight = _keys_cubic(position[:, None] - source).to(x)
    # Half-sample symmetric extension with period 2 * length, as MATLAB's imresize pads.
    wrapped = source % (2 * length)
    index = torch.where(wrapped < length, wrapped, 2 * length - 1 - wrapped).to(x.device)
    if dim == -2:
        weight = weight[:, None, :]
    return sum(x.index_select(dim, index[:, tap]) * weight[..., tap] for tap in range(4))


def _keys_cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    t = t.abs()
    inner = (1.5 * t - 2.5) * t * t + 1.0
    outer = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return torch.where(t <= 1.0, inner, torch.where(t < 2.0, outer, torch.zeros_like(t)))


def _check_factor(factor: int) -> int:
    try:
        value = operator.index(factor)
    except TypeError:
        value = 0
    if value < 1:
        raise ConfigError(f"The upsampling factor must be a positive integer, got {factor!r}.")
    return value


def _check_image(y: Tensor, name: str) -> None:
    if y.ndim != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) tensor, got shape {tuple(y.shape)}")


def _per_image_sigma(sigma: Sigma, batch: int, name: str) -> list[float]:
    """One noise level per image from a float or a ``(B,)`` tensor; validates range and units."""
    if sigma is None:
        raise ConfigError(f"{name} needs the noise level: pass --sigma (e.g. --sigma 25).")
    values = torch.as_tensor(sigma, dtype=torch.float64).flatten().tolist()
    if len(values) == 1:
        values = values * batch
    if len(values) != batch:
        raise ConfigError(f"{name} got {len(values)} noise levels for a batch of {batch}; pass one or one per image.")
    for value in values:
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} needs a positive noise level, got sigma={value}.")
        if value > 1:
            raise ConfigError(f"sigma is on the [0, 1] image scale (25/255 for noise level 25), got {value}.")
    return values


@dataclass(frozen=True)
class BaselineSpec:
    """A classical baseline: its name, how to build it and the line that describes it, and the tasks
    (:func:`~converge.physics.tasks.make_task` names) it restores.

    ``build(**options)`` makes the :class:`ClassicalRestorer`. To restore a task, it is built with the
    task's parameters named in ``task_options`` (``factor`` for bicubic), with ``operator=`` the task's
    forward operator when ``needs_operator`` (the blur Wiener deconvolution inverts, the mask fill
    fills) and, when
    ``needs_sigma``, called with the noise level. A baseline that ``needs_operator`` is built for each
    image, with that image's operator (its own mask for inpainting). ``aliases`` are further names it
    answers to (not listed apart).
    """

    name: str
    build: Callable[..., ClassicalRestorer]
    description: str
    tasks: tuple[str, ...]
    task_options: tuple[str, ...] = ()
    needs_sigma: bool = False
    needs_operator: bool = False
    aliases: tuple[str, ...] = ()


# Every name a baseline answers to (its own and its aliases), in registration order.
BASELINES: dict[str, BaselineSpec] = {}


def register_baseline(spec: BaselineSpec) -> BaselineSpec:
    """Make ``spec`` available to :func:`get_baseline`, the CLI and the benchmarks under its name and aliases.

    Raises :class:`ConfigError` when one of those names is taken or ``spec`` restores no task.

    >>> BASELINES["bicubic"].tasks
    ('sr',)
    >>> register_baseline(BaselineSpec("tv", TVChambolle, "TV again.", ("denoise",)))
    Traceback (most recent call last):
    ...
    converge.errors.ConfigError: A baseline named 'tv' is already registered; choose another name.
    """
    if not spec.tasks:
        raise ConfigError(f"Baseline '{spec.name}' restores no task; give it at least one.")
    for name in (spec.name, *spec.aliases):
        if name in BASELINES:
            raise ConfigError(f"A baseline named '{name}' is already registered; choose another name.")
    for name in (spec.name, *spec.aliases):
        BASELINES[name] = spec
    return spec


_RESTORES_OBSERVATION = ("denoise", "deblur", "inpaint", "demosaic", "deblock")
register_baseline(
    BaselineSpec(
        "input", Identity, "The degraded observation itself, unchanged.", _RESTORES_OBSERVATION, aliases=("identity",)
    )
)
register_baseline(
    BaselineSpec(
        "bm3d",
        BM3D,
        "BM3D collaborative filtering (bm3d package, non-commercial); needs sigma.",
        ("denoise",),
        needs_sigma=True,
    )
)
register_baseline(
    BaselineSpec(
        "tv",
        TVChambolle,
        "Total-variation denoising (Chambolle), weight 1.3 sigma^1.2; needs sigma.",
        ("denoise",),
        needs_sigma=True,
    )
)
register_baseline(
    BaselineSpec(
        "nlm",
        NLMeans,
        "Non-local means (scikit-image, fast mode), h = 0.3 sigma^0.7; needs sigma.",
        ("denoise",),
        needs_sigma=True,
    )
)
register_baseline(
    BaselineSpec(
        "wiener",
        WienerDeconvolution,
        "Wiener deconvolution of the task's blur (FFT, 1/f^2 image spectrum); needs sigma.",
        ("deblur",),
        needs_sigma=True,
        needs_operator=True,
    )
)
register_baseline(
    BaselineSpec(
        "fill",
        MaskFill,
        "Missing pixels filled from their kept neighbours (normalised Gaussian convolution, push-pull).",
        ("inpaint",),
        needs_operator=True,
    )
)
register_baseline(
    BaselineSpec(
        "bicubic",
        BicubicUpsample,
        "MATLAB-style bicubic upsampling by factor (option factor=...).",
        ("sr",),
        task_options=("factor",),
    )
)
register_baseline(
    BaselineSpec(
        "malvar",
        MalvarDemosaic,
        "Malvar-He-Cutler gradient-corrected bilinear demosaicking (option pattern=..., default RGGB).",
        ("demosaic",),
        task_options=("pattern",),
    )
)


def get_baseline(name: str, **options: object) -> ClassicalRestorer:
    """Build the baseline ``name`` with its options (``factor`` for bicubic, ``profile`` for bm3d).

    >>> get_baseline("bicubic", factor=2)(torch.full((1, 1, 4, 4), 0.5)).shape
    torch.Size([1, 1, 8, 8])
    """
    spec = BASELINES.get(name)
    if spec is None:
        raise ConfigError(f"Unknown baseline {name!r}; choose one of {', '.join(BASELINES)}.")
    try:
        inspect.signature(spec.build).bind(**options)
    except TypeError as error:
        raise ConfigError(f"Bad options {sorted(options)} for baseline {name!r}: {error}.") from error
    return spec.build(**options)
