"""Colour conversions: ITU-R BT.601 luma as the benchmark protocols score it (MATLAB ``rgb2ycbcr``
ranges), and the full-range YCbCr in which JPEG (JFIF) stores colour images."""

from __future__ import annotations

import torch
from torch import Tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)
# JFIF's BT.601 full-range transform: rows give Y, Cb - 1/2 and Cr - 1/2 from R, G, B.
_JPEG_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772),
    (0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402),
)


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


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """Full-range BT.601 YCbCr of an RGB image, as JPEG (JFIF) stores colour; ``(B, 3, H, W) -> (B, 3, H, W)``.

    ``x`` in [0, 1]. ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 1/2 + (B - Y) / 1.772``,
    ``Cr = 1/2 + (R - Y) / 1.402``, all in [0, 1]. The Y plane is the one a JPEG encoder compresses
    and the luminance a grey JPEG of the same image holds, so a grey deblocking model restores it
    as it was trained (unlike the [16/255, 235/255] luma of :func:`rgb_to_y`, which rescales the
    artefacts). :func:`ycbcr_to_rgb` inverts it.
    """
    _check_three_channels(x, "rgb_to_ycbcr")
    return _mix(_ycbcr_matrix(x), x) + _chroma_offset(x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: full-range BT.601 YCbCr ``(B, 3, H, W)`` to RGB ``(B, 3, H, W)``.

    Not clamped: a YCbCr triple outside the RGB cube maps outside [0, 1].
    """
    _check_three_channels(x, "ycbcr_to_rgb")
    inverse = torch.linalg.inv(_ycbcr_matrix(x).to(torch.float64)).to(x.dtype)
    return _mix(inverse, x - _chroma_offset(x))


def _ycbcr_matrix(x: Tensor) -> Tensor:
    return torch.tensor(_JPEG_YCBCR, dtype=x.dtype, device=x.device)


def _chroma_offset(x: Tensor) -> Tensor:
    return torch.tensor((0.0, 0.5, 0.5), dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)


def _mix(matrix: Tensor, x: Tensor) -> Tensor:
    """``matrix`` ``(3, 3)`` applied to the channel vector of every pixel of ``x`` ``(B, 3, H, W)``."""
    return torch.einsum("ij,bjhw->bihw", matrix, x)


def _check_three_channels(x: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
