"""A noise-level-conditional U-Net denoiser in the DRUNet style (Zhang et al., "Plug-and-Play Image
Restoration with Deep Denoiser Prior", IEEE TPAMI 2021): the Gaussian-denoiser prior of plug-and-play
algorithms and the network that MTDEQ trains inside its fixed point.

The input is the noisy image with one more channel, the noise-level map (``sigma`` on the [0, 1]
scale at every pixel); four scales of ``widths`` features::

    head: conv3x3(C + 1 -> w0)
    down i (i = 0..2):  blocks x ResBlock(w_i),  conv2x2 stride 2 (w_i -> w_{i+1})
    body:               blocks x ResBlock(w3)
    up i (i = 2..0):    convT2x2 stride 2 (w_{i+1} -> w_i),  + skip,  blocks x ResBlock(w_i)
    tail: conv3x3(w0 -> C)

with ``ResBlock(w) = x + conv3x3(relu(conv3x3(x)))``, no bias and no normalisation layer. The skips are
additions, as in DRUNet. The output is the image itself (not a residual). Sizes that are not
multiples of 8 are padded (replicate) before the network and cropped after.

Example::

    >>> import torch
    >>> model = UNetDenoiser(UNetConfig(widths=(4, 8, 8, 8), blocks=1)).eval()
    >>> model(torch.rand(1, 1, 20, 18), sigma=25 / 255).shape
    torch.Size([1, 1, 20, 18])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.base import Restorer, Sigma
from converge.models.registry import register_model
from converge.physics.base import Operator

SCALES = 4
_MULTIPLE = 2 ** (SCALES - 1)


@dataclass(frozen=True)
class UNetConfig:
    """U-Net hyper-parameters (defaults: DRUNet's size, about 32.6M parameters).

    ``channels``: image channels (1 gray, 3 colour); ``widths``: features at each of the 4 scales
    (64, 128, 256, 512); ``blocks``: residual blocks per scale on each side (4).
    """

    channels: int = 1
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        if self.channels not in (1, 3):
            raise ConfigError(f"U-Net channels must be 1 or 3, got {self.channels}")
        if len(self.widths) != SCALES or any(int(width) < 1 for width in self.widths):
            raise ConfigError(f"U-Net widths must be {SCALES} positive integers, got {list(self.widths)}")
        if self.blocks < 1:
            raise ConfigError(f"U-Net blocks must be at least 1, got {self.blocks}")


class ResBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))`` at ``width`` features, no bias."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.second = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.second(F.relu(self.first(x)))


def _stage(width: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(width) for _ in range(blocks)))


@register_model("unet")
class UNetDenoiser(Restorer):
    """Gaussian denoiser told its noise level: ``x = U(y, sigma)``, ``(B, C, H, W)`` in [0, 1].

    ``forward(y, sigma=...)`` takes ``sigma`` on the [0, 1] scale, a float or a ``(B,)`` tensor;
    without one it is estimated from each image (:func:`~converge.physics.noise.estimate_noise_sigma`).
    ``training_forward(y, operator, level)`` takes the level in 8-bit grey levels, as the trainer records it.
    """

    config_class = UNetConfig
    example_params = {"widths": (4, 8, 8, 8), "blocks": 1}

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        widths, blocks, channels = self.config.widths, self.config.blocks, self.config.channels
        self.head = nn.Conv2d(channels + 1, widths[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            nn.Sequential(_stage(widths[i], blocks), nn.Conv2d(widths[i], widths[i + 1], 2, stride=2, bias=False))
            for i in range(SCALES - 1)
        )
        self.body = _stage(widths[-1], blocks)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2, bias=False) for i in range(SCALES - 1)
        )
        self.up_stages = nn.ModuleList(_stage(widths[i], blocks) for i in range(SCALES - 1))
        self.tail = nn.Conv2d(widths[0], channels, 3, padding=1, bias=False)

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Denoise ``y`` ``(B, C, H, W)`` at noise level ``sigma`` ([0, 1] scale; estimated if ``None``)."""
        if sigma is None:
            from converge.physics.noise import estimate_noise_sigma

            sigma = estimate_noise_sigma(y).to(y.dtype)
        return self._on_model_channels(y, lambda images: self.denoise(images, self._levels(sigma, y, images)))

    def training_forward(self, y: Tensor, operator: Operator, level: Tensor) -> Tensor:
        """``y`` ``(B, C, H, W)`` denoised at ``level`` ``(B,)`` (8-bit grey levels)."""
        return self.denoise(y, level.to(y.dtype) / 255.0)

    def denoise(self, y: Tensor, sigma: Tensor) -> Tensor:
        """The network on ``y`` ``(B, C, H, W)`` (the model's channels) with per-sample ``sigma`` ``(B,)``."""
        height, width = y.shape[-2:]
        pad_h, pad_w = -height % _MULTIPLE, -width % _MULTIPLE
        padded = F.pad(y, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else y
        level_map = sigma.reshape(-1, 1, 1, 1).to(padded.dtype).expand(padded.shape[0], 1, *padded.shape[-2:])
        features = self.head(torch.cat([padded, level_map], dim=1))
        skips = []
        for stage in self.down:
            skips.append(features)
            features = stage(features)
        features = self.body(features)
        for index in reversed(range(SCALES - 1)):
            features = self.up_stages[index](self.up[index](features) + skips[index])
        return self.tail(features)[..., :height, :width]

    @staticmethod
    def _levels(sigma: Sigma, y: Tensor, images: Tensor) -> Tensor:
        """``sigma`` as one level per sample of ``images`` (the channels of a colour ``y`` given to a gray
        model are samples too, each with its image's level)."""
        levels = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).reshape(-1)
        if levels.numel() == 1:
            return levels.expand(images.shape[0])
        if levels.numel() != y.shape[0]:
            raise ConfigError(f"sigma has {levels.numel()} values for a batch of {y.shape[0]} images")
        return levels.repeat_interleave(images.shape[0] // y.shape[0])
