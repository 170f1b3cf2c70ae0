"""JPEG compression artefacts (deblocking): a non-linear, forward-only degradation.

The image is quantised to 8 bits (rounded), encoded and decoded with Pillow (libjpeg's standard tables
scaled by ``quality``, as MATLAB ``imwrite`` and OpenCV do), and returned as floats in [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Operator

CHROMA_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")

# The luminance quantisation table of the JPEG standard (ITU-T T.81, Annex K, Table K.1), row by row;
# the IJG encoder (libjpeg, so Pillow) scales it by the quality (ijg_luma_table).
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def ijg_luma_table(quality: int) -> tuple[int, ...]:
    """The 64 luminance quantisation steps (row by row) that libjpeg writes at ``quality`` (1-100):
    Annex K's table times 5000 / quality below 50, times 200 - 2 quality from 50, in percent, rounded
    and kept in [1, 255] (baseline JPEG)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(max((step * scale + 50) // 100, 1), 255) for step in _ANNEX_K_LUMA)


def quality_of_luma_table(table: Sequence[int]) -> int:
    """The IJG quality (1-100) whose luminance table (:func:`ijg_luma_table`) is nearest ``table``
    (64 steps, row by row) in summed absolute difference, the lower quality on a tie: the exact
    quality for a file that libjpeg or Pillow wrote, an equivalent one for other encoders."""
    if len(table) != 64:
        raise ValueError(f"a JPEG quantisation table has 64 steps, got {len(table)}")

    def distance(quality: int) -> int:
        return sum(abs(ours - theirs) for ours, theirs in zip(ijg_luma_table(quality), table, strict=True))

    return min(range(1, 101), key=distance)


def jpeg_roundtrip(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode and decode one ``uint8`` image (``(H, W)`` grey or ``(H, W, 3)`` RGB) with Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L" if image.ndim == 2 else "RGB"))


class JPEGCompression(Operator):
    """JPEG at ``quality`` (1-100) of ``(B, 1, H, W)`` grey or ``(B, 3, H, W)`` RGB images in [0, 1].

    One channel encodes a greyscale JPEG, three channels an RGB (YCbCr) JPEG with the given chroma
    ``subsampling`` (``"4:2:0"`` by default, as most encoders). The output has the input's shape, dtype
    and device and lies on the 8-bit grid. It is not differentiable (the result is detached).

    >>> jpeg = JPEGCompression(quality=10)
    >>> jpeg(torch.full((1, 1, 16, 16), 0.5)).shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, quality: int, subsampling: str = "4:2:0") -> None:
        super().__init__()
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ConfigError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}.")
        if subsampling not in CHROMA_SUBSAMPLINGS:
            raise ConfigError(
                f"Unknown JPEG chroma subsampling {subsampling!r}; choose one of {', '.join(CHROMA_SUBSAMPLINGS)}."
            )
        self.quality = quality
        self.subsampling = subsampling

    def extra_repr(self) -> str:
        return f"quality={self.quality}, subsampling={self.subsampling!r}"

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"JPEGCompression expects (B, 1, H, W) or (B, 3, H, W) tensors, got {tuple(x.shape)}")
        levels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = [
            jpeg_roundtrip(image[..., 0] if image.shape[-1] == 1 else image, self.quality, self.subsampling)
            for image in levels
        ]
        stacked = torch.from_numpy(np.stack(decoded)).reshape(levels.shape).permute(0, 3, 1, 2)
        return stacked.to(device=x.device, dtype=x.dtype) / 255
