"""JPEG compression artefacts (deblocking): a non-linear, forward-only degradation.

The image is quantised to 8 bits (rounded), encoded and decoded with Pillow (libjpeg's standard tables
scaled by ``quality``, as MATLAB ``imwrite`` and OpenCV do), and returned as floats in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import Operator

CHROMA_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


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
