"""Colour conversions used by the benchmark protocols (ITU-R BT.601, MATLAB ``rgb2ycbcr`` ranges)."""

from __future__ import annotations

import torch
from torch import Tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma of an RGB image as MATLAB's ``rgb2ycbcr`` computes it, rescaled to [0, 1].

    ``x``: ``(B, 3, H, W)`` in [0, 1]. Returns ``(B, 1, H, W)``: ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``,
    so values lie in [16/255, 235/255]. This is the Y channel of the JPEG-deblocking and SR tables.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (16.0 + (x * weights).sum(1, keepdim=True)) / 255.0


def rgb_to_gray(x: Tensor) -> Tensor:
    """MATLAB ``rgb2gray`` luminance (0.298936 R + 0.587043 G + 0.114021 B); ``(B, 3, H, W) -> (B, 1, H, W)``.

    This is how BSD68 and Train400 were made from their colour originals (see the data MANIFEST).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_gray expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    weights = torch.tensor((0.298936, 0.587043, 0.114021), dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)
