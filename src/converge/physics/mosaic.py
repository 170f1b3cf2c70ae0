"""Bayer colour filter array: demosaicking as a fixed channel-wise mask on an RGB image.

``A x = m x`` (pixel-wise), where ``m`` is 1 on the one colour channel each pixel measures. The
measurement keeps the ``(B, 3, H, W)`` shape with zeros on the unmeasured channels; :meth:`BayerMosaic.to_raw`
collapses it to the single-channel raw image a camera records.
"""

from __future__ import annotations

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.mask import MaskOperator

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_CHANNEL_OF_LETTER = {"R": 0, "G": 1, "B": 2}


class BayerMosaic(MaskOperator):
    """Bayer sampling of ``(B, 3, H, W)`` RGB images; any ``H, W`` (odd sizes cut the 2x2 tile).

    ``pattern`` names the 2x2 tile in row-major order from the top-left pixel: ``"RGGB"`` measures red
    at ``(0, 0)``, green at ``(0, 1)`` and ``(1, 0)``, blue at ``(1, 1)``.

    >>> mosaic = BayerMosaic("RGGB")
    >>> mosaic.to_raw(mosaic(torch.rand(1, 3, 4, 4))).shape
    torch.Size([1, 1, 4, 4])
    """

    def __init__(self, pattern: str = "RGGB") -> None:
        super().__init__()
        if pattern not in BAYER_PATTERNS:
            raise ConfigError(f"Unknown Bayer pattern {pattern!r}; choose one of {', '.join(BAYER_PATTERNS)}.")
        self.pattern = pattern
        channels = torch.tensor([_CHANNEL_OF_LETTER[letter] for letter in pattern]).reshape(2, 2)
        self.register_buffer("tile_channels", channels, persistent=False)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}"

    def channel_mask(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The ``(1, 3, H, W)`` 0/1 mask: exactly one channel is 1 at each pixel."""
        rows = torch.arange(height, device=device) % 2
        cols = torch.arange(width, device=device) % 2
        measured = self.tile_channels.to(device)[rows[:, None], cols[None, :]]
        channel_ids = torch.arange(3, device=device).reshape(3, 1, 1)
        return (measured[None] == channel_ids).to(dtype)[None]

    def _mask_like(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"a Bayer mosaic is taken of RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
        return self.channel_mask(x.shape[-2], x.shape[-1], x.dtype, x.device)

    def to_raw(self, y: Tensor) -> Tensor:
        """Collapse a masked ``(B, 3, H, W)`` measurement to the ``(B, 1, H, W)`` raw sensor image."""
        return (y * self._mask_like(y)).sum(dim=1, keepdim=True)

    def from_raw(self, raw: Tensor) -> Tensor:
        """Spread a ``(B, 1, H, W)`` raw image onto the channels it measured: the ``(B, 3, H, W)`` measurement."""
        if raw.ndim != 4 or raw.shape[1] != 1:
            raise ValueError(f"BayerMosaic.from_raw expects (B, 1, H, W) tensors, got shape {tuple(raw.shape)}")
        return raw * self.channel_mask(raw.shape[-2], raw.shape[-1], raw.dtype, raw.device)
