"""Pixel masks for inpainting / completion: ``A x = m x`` (pixel-wise product) with a 0/1 mask ``m``.

Missing pixels read as 0 in the measurement. ``A`` is self-adjoint and its data prox is pixel-wise:
``prox(z, y, rho) = (m y + rho z) / (m + rho)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import LinearOperator, Operator, _per_sample


class MaskOperator(LinearOperator):
    """A pixel-wise 0/1 mask ``A x = m x``: self-adjoint, with the pixel-wise prox ``(m y + rho z) / (m + rho)``.

    Subclasses say which mask applies to a given tensor through :meth:`_mask_like`.
    """

    def _mask_like(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return x * self._mask_like(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return y * self._mask_like(y)

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        mask = self._mask_like(z)
        rho_b = _per_sample(rho, z)
        return (mask * y + rho_b * z) / (mask + rho_b)


class PixelMask(MaskOperator):
    """Keep the pixels where ``mask`` is 1, zero the others.

    ``mask`` is a 0/1 (or boolean) tensor broadcastable to the images: ``(1 or B, 1 or C, H, W)``.

    >>> mask = torch.tensor([[[[1.0, 0.0]]]])
    >>> PixelMask(mask)(torch.tensor([[[[0.25, 0.75]]]])).tolist()
    [[[[0.25, 0.0]]]]
    """

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        if mask.ndim != 4:
            raise ConfigError(f"A pixel mask must be (1 or B, 1 or C, H, W), got shape {tuple(mask.shape)}.")
        values = mask.detach().to(torch.float32)
        if not bool(((values == 0) | (values == 1)).all()):
            raise ConfigError("A pixel mask must contain only 0 and 1 values.")
        self.register_buffer("mask", values)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}, kept={self.mask.mean().item():.3f}"

    def _mask_like(self, x: Tensor) -> Tensor:
        return self.mask.to(dtype=x.dtype, device=x.device)


class RandomPixelDrop(Operator):
    """Random completion mask: each pixel is dropped with probability ``p``, the same for all channels.

    One uniform value ``u`` is drawn per pixel (float32, from ``generator`` when given) and the pixel is
    dropped when ``u < p`` (so ``p = 0.8`` drops 80% of the pixels, keeping those with ``u >= 1 - p_keep``).
    :meth:`sample` returns the concrete :class:`PixelMask`; calling the operator draws a fresh mask.

    >>> drop = RandomPixelDrop(0.5)
    >>> mask = drop.sample((2, 3, 8, 8), torch.Generator().manual_seed(0))
    >>> tuple(mask.mask.shape)
    (2, 1, 8, 8)
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"Pixel drop probability must be in [0, 1), got {p}.")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> PixelMask:
        """A :class:`PixelMask` of shape ``(B, 1, H, W)`` for images of ``shape`` ``(B, C, H, W)``.

        Values are drawn on the generator's device (so a CPU generator gives the same mask for images on
        any device) and the mask is moved to ``device``.
        """
        if len(shape) != 4:
            raise ValueError(f"RandomPixelDrop.sample expects a (B, C, H, W) shape, got {tuple(shape)}")
        draw_device = generator.device if generator is not None else device
        uniform = torch.rand(
            (shape[0], 1, shape[2], shape[3]), generator=generator, dtype=torch.float32, device=draw_device
        )
        return PixelMask((uniform >= self.p).to(device=device))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``m x`` for a freshly drawn mask; use :meth:`sample` when the mask is needed afterwards."""
        return self.sample(x.shape, generator, x.device)(x)
