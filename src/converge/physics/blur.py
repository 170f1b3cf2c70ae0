"""Shift-invariant blur ``A x = k * x`` applied to every channel, with a chosen image boundary.

``circular`` boundaries are evaluated with FFTs and have a closed-form data prox. The other boundaries
(``reflect``, ``replicate``, ``zeros``) pad the image, then run a valid convolution; their adjoint is the
exact transpose of that map (transposed convolution, then the padded border folded back onto the
interior) and their prox uses the conjugate-gradient fallback of :class:`LinearOperator`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import LinearOperator, _per_sample
from converge.physics.kernels import (
    PADDING_MODES,
    apply_transfer_function,
    convolution_padding,
    gaussian_kernel,
    kernel_transfer_function,
    pad,
    pad_adjoint,
)

_TRANSFER_CACHE_SIZE = 4


class KernelBlur(LinearOperator):
    """Convolution of each channel with a fixed ``(h, w)`` kernel (odd or even sizes).

    .. math:: (A x)_c = k * x_c, \\qquad A^T y = \\tilde k \\star y \\ (\\text{plus the boundary fold})

    The kernel origin is tap ``(h // 2, w // 2)`` (see :mod:`converge.physics.kernels`). Images are
    ``(B, C, H, W)``; the measurement has the same shape. The kernel is held in double precision and
    cast to the input's dtype at use.

    >>> blur = KernelBlur(torch.ones(3, 3) / 9, boundary="reflect")
    >>> blur(torch.ones(1, 1, 5, 5)).allclose(torch.ones(1, 1, 5, 5))
    True
    """

    kernel: Tensor

    def __init__(self, kernel: Tensor, boundary: str = "circular") -> None:
        super().__init__()
        if kernel.ndim != 2 or kernel.numel() == 0:
            raise ConfigError(f"A blur kernel must be a non-empty (h, w) tensor, got shape {tuple(kernel.shape)}.")
        if boundary not in PADDING_MODES:
            raise ConfigError(f"Unknown blur boundary {boundary!r}; choose one of {', '.join(PADDING_MODES)}.")
        self.boundary = boundary
        self.register_buffer("kernel", kernel.detach().to(torch.float64).clone())
        self._transfer_cache: dict[tuple, Tensor] = {}

    def extra_repr(self) -> str:
        return f"kernel_size={tuple(self.kernel.shape)}, boundary={self.boundary!r}"

    def transfer_function(
        self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device, onesided: bool = True
    ) -> Tensor:
        """Circular-convolution spectrum of the kernel on ``shape`` images (cached per shape, dtype, device)."""
        key = (tuple(shape), dtype, device, onesided, self.kernel.data_ptr(), self.kernel._version)
        cached = self._transfer_cache.get(key)
        if cached is None:
            if len(self._transfer_cache) >= _TRANSFER_CACHE_SIZE:
                self._transfer_cache.clear()
            kernel = self.kernel.to(device=device, dtype=dtype)
            cached = kernel_transfer_function(kernel, tuple(shape), onesided=onesided)
            self._transfer_cache[key] = cached
        return cached

    def _spectrum_of(self, x: Tensor) -> Tensor:
        return self.transfer_function(tuple(x.shape[-2:]), x.dtype, x.device)

    def _flipped_weight(self, like: Tensor) -> Tensor:
        return self.kernel.flip(-2, -1).to(dtype=like.dtype, device=like.device)[None, None]

    def forward(self, x: Tensor) -> Tensor:
        if self.boundary == "circular":
            return apply_transfer_function(x, self._spectrum_of(x))
        pads = convolution_padding(tuple(self.kernel.shape))
        padded = pad(x, pads, self.boundary)
        flat = padded.reshape(-1, 1, *padded.shape[-2:])
        return F.conv2d(flat, self._flipped_weight(x)).reshape(x.shape)

    def adjoint(self, y: Tensor) -> Tensor:
        if self.boundary == "circular":
            return apply_transfer_function(y, self._spectrum_of(y).conj())
        pads = convolution_padding(tuple(self.kernel.shape))
        spread = F.conv_transpose2d(y.reshape(-1, 1, *y.shape[-2:]), self._flipped_weight(y))
        return pad_adjoint(spread.reshape(*y.shape[:-2], *spread.shape[-2:]), pads, self.boundary)

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Closed form for circular boundaries: ``F^{-1}[(conj(K) Y + rho Z) / (|K|^2 + rho)]``; CG otherwise."""
        if self.boundary != "circular":
            return super().prox_data(z, y, rho)
        spectrum = self._spectrum_of(z)
        rho_b = _per_sample(rho, z)
        numerator = spectrum.conj() * torch.fft.rfft2(y) + rho_b * torch.fft.rfft2(z)
        denominator = spectrum.abs() ** 2 + rho_b
        return torch.fft.irfft2(numerator / denominator, s=z.shape[-2:])


class GaussianBlur(KernelBlur):
    """Isotropic Gaussian blur of standard deviation ``sigma`` pixels on a ``size x size`` support.

    ``size`` defaults to ``2 ceil(4 sigma) + 1``. The kernel sums to 1.

    >>> blur = GaussianBlur(1.6, size=25)
    >>> blur.kernel.shape, round(blur.kernel.sum().item(), 12)
    (torch.Size([25, 25]), 1.0)
    """

    def __init__(self, sigma: float, size: int | None = None, boundary: str = "circular") -> None:
        super().__init__(gaussian_kernel(sigma, size), boundary=boundary)
        self.sigma = float(sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, " + super().extra_repr()
