"""Additive white Gaussian noise (the synthetic protocol) and single-image noise-level estimation.

Noise levels are on the image scale: ``sigma = 25 / 255`` is "sigma 25".
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.errors import ConfigError

_PATCH_BUDGET = 1 << 24


class GaussianNoise(nn.Module):
    """``y = x + sigma n`` with ``n ~ N(0, I)``: no clipping, no quantisation (the standard synthetic protocol).

    ``sigma`` is a float or a ``(B,)`` tensor of per-sample levels, in [0, 1] units. Noise is drawn from
    ``generator`` (on the generator's device, in the input's dtype) so a seeded generator reproduces it.

    >>> noise = GaussianNoise(25 / 255)
    >>> a = noise(torch.zeros(1, 1, 4, 4), torch.Generator().manual_seed(0))
    >>> b = noise(torch.zeros(1, 1, 4, 4), torch.Generator().manual_seed(0))
    >>> torch.equal(a, b)
    True
    """

    sigma: Tensor

    def __init__(self, sigma: float | Tensor) -> None:
        super().__init__()
        levels = torch.as_tensor(sigma, dtype=torch.float64).detach().clone()
        if levels.ndim > 1:
            raise ConfigError(f"Noise sigma must be a number or a (B,) tensor, got shape {tuple(levels.shape)}.")
        if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any()):
            raise ConfigError(f"Noise sigma must be finite and non-negative, got {sigma}.")
        self.register_buffer("sigma", levels)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma.tolist()}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        sigma = self.sigma.to(dtype=x.dtype, device=x.device)
        if sigma.ndim == 1:
            if sigma.numel() != x.shape[0]:
                raise ValueError(f"GaussianNoise has {sigma.numel()} per-sample levels for a batch of {x.shape[0]}")
            sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        draw_device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=draw_device).to(x.device)
        return x + sigma * noise


@functools.lru_cache(maxsize=16)
def _texture_threshold(patch_size: int, channels: int, confidence: float) -> float:
    """``confidence`` quantile of a pure-noise patch's gradient energy, per unit noise variance.

    The energy ``n^T M n`` (``M = D_h^T D_h + D_v^T D_v`` on a patch, every channel) of unit white noise has
    mean ``tr M`` and variance ``2 tr M^2``; it is approximated by the Gamma law with those two moments.
    """
    index = torch.arange(patch_size * patch_size).reshape(patch_size, patch_size)
    pairs = [(index[:, 1:], index[:, :-1]), (index[1:, :], index[:-1, :])]
    differences = []
    for ahead, behind in pairs:
        rows = torch.arange(ahead.numel())
        difference = torch.zeros(ahead.numel(), patch_size * patch_size, dtype=torch.float64)
        difference[rows, ahead.reshape(-1)] = 1.0
        difference[rows, behind.reshape(-1)] = -1.0
        differences.append(difference)
    gradient = torch.cat(differences)
    energy_form = gradient.T @ gradient
    trace = channels * energy_form.trace()
    trace_of_square = channels * (energy_form @ energy_form).trace()
    shape = trace**2 / (2 * trace_of_square)
    scale = 2 * trace_of_square / trace
    low, high = torch.zeros((), dtype=torch.float64), 10 * trace
    for _ in range(100):
        middle = (low + high) / 2
        if torch.special.gammainc(shape, middle / scale) < confidence:
            low = middle
        else:
            high = middle
    return float((low + high) / 2)


def _corrected_min_eigenvalue(patches: Tensor) -> Tensor:
    """Noise variance from ``(P, N)`` patch columns: the smallest covariance eigenvalue, bias-corrected.

    For white noise the eigenvalues of a sample covariance spread over the Marchenko-Pastur support
    ``sigma^2 (1 +- sqrt(P / N))^2``, so the smallest one underestimates ``sigma^2`` (the bias Chen, Zhu
    and Heng, ICCV 2015, point out); dividing by ``(1 - sqrt(P / N))^2`` removes it.
    """
    dims, count = patches.shape
    centred = patches - patches.mean(dim=1, keepdim=True)
    smallest = torch.linalg.eigvalsh(centred @ centred.T / count)[0].clamp_min(0)
    return smallest / (1 - (dims / count) ** 0.5) ** 2


def _estimate_one(image: Tensor, patch_size: int, confidence: float, max_iter: int) -> Tensor:
    channels, height, width = image.shape
    dims = channels * patch_size * patch_size
    positions = max(height - patch_size + 1, 0) * max(width - patch_size + 1, 0)
    if positions < 4 * dims:
        raise ConfigError(
            f"a {height}x{width} image is too small to estimate its noise level (that needs {4 * dims} patches "
            f"of {patch_size}x{patch_size} pixels, it has {positions}): give the level (--sigma)"
        )
    stride = 1
    while positions * dims > _PATCH_BUDGET * stride * stride:
        stride += 1
    patches = F.unfold(image[None], patch_size, stride=stride)[0]
    along = (patch_size, patch_size - 1)
    horizontal = (image[:, :, 1:] - image[:, :, :-1]).pow(2).sum(0, keepdim=True)
    vertical = (image[:, 1:, :] - image[:, :-1, :]).pow(2).sum(0, keepdim=True)
    energy = (
        F.avg_pool2d(horizontal[None], along, stride=stride) + F.avg_pool2d(vertical[None], along[::-1], stride=stride)
    ).reshape(-1) * (patch_size * (patch_size - 1))
    unclipped = ~((patches == 0) | (patches == 1)).any(dim=0)
    if int(unclipped.sum()) >= 4 * dims:
        patches, energy = patches[:, unclipped], energy[unclipped]
    threshold = _texture_threshold(patch_size, channels, confidence)

    variance = _corrected_min_eigenvalue(patches)
    for _ in range(max_iter):
        weak_texture = energy < variance * threshold
        if int(weak_texture.sum()) < 4 * dims:
            break
        updated = _corrected_min_eigenvalue(patches[:, weak_texture])
        converged = bool((updated - variance).abs() <= 1e-3 * variance)
        variance = updated
        if converged:
            break
    return variance.sqrt()


def estimate_noise_sigma(
    y: Tensor, patch_size: int = 7, confidence: float = 0.99, max_iter: int = 30
) -> Tensor:
    """Blind estimate of the white Gaussian noise level of each image of ``y`` ``(B, C, H, W)``; returns ``(B,)``.

    Principal-component analysis of ``patch_size``-square patches (all channels together) restricted to
    weak-texture, i.e. low-rank, patches, after Liu, Tanaka and Okutomi ("Single-image noise level
    estimation for blind denoising", IEEE TIP 2013, the estimator GroupSC uses):

    1. ``sigma^2`` <- the smallest eigenvalue of the covariance of all patches;
    2. keep the patches whose gradient energy is below the ``confidence`` quantile of that of pure noise
       at the current ``sigma`` (a patch of noise only would pass with probability ``confidence``);
    3. ``sigma^2`` <- the smallest eigenvalue of the kept patches' covariance; repeat 2-3 until it changes
       by less than 0.1% (at most ``max_iter`` times).

    Unlike the paper, each smallest eigenvalue is divided by ``(1 - sqrt(P / N))^2`` (``P`` patch
    dimensions, ``N`` patches): the Marchenko-Pastur lower edge, which otherwise biases the estimate low.
    Patches holding a value of exactly 0 or 1 are left out (while enough others remain): a stored noisy
    image is clipped there, and its flat saturated areas, which the weak-texture selection favours,
    would show less noise than the rest. Large images are sampled with a stride so at most 2^24 patch
    values are held. Computed in double precision; an image must hold at least ``4 P`` patches (about 20x20 grey, 31x31 colour pixels). Textured images at low noise levels
    are overestimated somewhat, since fine texture is indistinguishable from noise.

    >>> clean = torch.linspace(0, 1, 64).reshape(1, 1, 1, 64).expand(1, 1, 64, 64)
    >>> noisy = GaussianNoise(0.1)(clean, torch.Generator().manual_seed(0))
    >>> abs(estimate_noise_sigma(noisy).item() - 0.1) < 0.01
    True
    """
    if y.ndim != 4:
        raise ValueError(f"estimate_noise_sigma expects (B, C, H, W) tensors, got shape {tuple(y.shape)}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"Noise-estimation confidence must be in (0, 1), got {confidence}.")
    estimates = [
        _estimate_one(image.detach().to(torch.float64), patch_size, confidence, max_iter) for image in y
    ]
    return torch.stack(estimates).to(dtype=y.dtype if y.is_floating_point() else torch.float32, device=y.device)
