"""Super-resolution degradation: filter, then keep every ``factor``-th pixel.

.. math:: A x = S_o (k * x), \\qquad (S_o u)[i, j] = u[f i + o, f j + o], \\quad o = (f - 1) // 2

``A^T y = k^T * (S_o^T y)`` with ``S_o^T`` the zero-filling upsampler. For circular boundaries the data
prox is exact and costs a few FFTs (Zhao et al., "Fast single image super-resolution using a new
analytical solution for l2-l2 problems", IEEE TIP 2016): by the Woodbury identity

.. math:: (A^T A + \\rho I)^{-1} = \\rho^{-1} \\left(I - A^T (\\rho I + A A^T)^{-1} A\\right),

and ``A A^T = S_0 (k * k^T *) S_0^T`` is a circular filter on the low-resolution grid whose spectrum is
the mean of ``|K|^2`` over its ``f^2`` aliases (decimation folds the spectrum; the offset ``o`` is a
shift that cancels in ``A A^T``).

Image height and width must be multiples of ``factor``: the low-resolution shape then determines the
high-resolution one (needed by the adjoint) and the aliasing structure above is exact. Other sizes raise
:class:`~converge.errors.ConfigError`; crop first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from converge.errors import ConfigError
from converge.physics.base import LinearOperator, _per_sample
from converge.physics.blur import KernelBlur
from converge.physics.kernels import bicubic_kernel, gaussian_kernel

DOWNSAMPLING_KERNELS = ("bicubic", "gaussian")
DEFAULT_GAUSSIAN_SIGMA = 0.5


class Downsample(LinearOperator):
    """Filter-and-decimate by an integer ``factor`` (``(B, C, H, W) -> (B, C, H / f, W / f)``).

    ``kernel`` is ``"bicubic"`` (antialiased, ``a = -0.75``, MATLAB ``imresize`` geometry), ``"gaussian"``
    (std ``gaussian_sigma``, default 0.5 as in the MTDEQ protocol) or an explicit ``(h, w)`` tensor.
    ``boundary`` is any blur boundary; only ``"circular"`` has the closed-form prox.

    >>> sr = Downsample(2)
    >>> sr(torch.full((1, 3, 8, 8), 0.5)).shape
    torch.Size([1, 3, 4, 4])
    """

    def __init__(
        self,
        factor: int,
        kernel: str | Tensor = "bicubic",
        gaussian_sigma: float | None = None,
        boundary: str = "circular",
    ) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ConfigError(f"Downsampling factor must be a positive integer, got {factor!r}.")
        if isinstance(kernel, Tensor):
            if gaussian_sigma is not None:
                raise ConfigError("gaussian_sigma applies only to kernel='gaussian'; drop it or the explicit kernel.")
            filter_kernel = kernel
            self.kernel_name = "custom"
        elif kernel == "bicubic":
            if gaussian_sigma is not None:
                raise ConfigError("gaussian_sigma applies only to kernel='gaussian', not to 'bicubic'.")
            filter_kernel = bicubic_kernel(factor)
            self.kernel_name = kernel
        elif kernel == "gaussian":
            gaussian_sigma = DEFAULT_GAUSSIAN_SIGMA if gaussian_sigma is None else gaussian_sigma
            filter_kernel = gaussian_kernel(gaussian_sigma)
            self.kernel_name = kernel
        else:
            raise ConfigError(
                f"Unknown downsampling kernel {kernel!r}; choose one of {', '.join(DOWNSAMPLING_KERNELS)} or pass a tensor."
            )
        self.factor = factor
        self.offset = (factor - 1) // 2
        self.gaussian_sigma = gaussian_sigma
        self.blur = KernelBlur(filter_kernel, boundary=boundary)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kernel={self.kernel_name!r}, offset={self.offset}"

    def _check_size(self, x: Tensor) -> None:
        height, width = x.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ConfigError(
                f"Image size {height}x{width} is not a multiple of the downsampling factor {self.factor}; "
                "crop it to a multiple first."
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_size(x)
        return self.blur(x)[..., self.offset :: self.factor, self.offset :: self.factor]

    def upsample_zero_fill(self, y: Tensor) -> Tensor:
        """``S_o^T y``: place each low-resolution pixel at ``(f i + o, f j + o)``, zeros elsewhere."""
        height, width = y.shape[-2:]
        full = y.new_zeros(*y.shape[:-2], height * self.factor, width * self.factor)
        full[..., self.offset :: self.factor, self.offset :: self.factor] = y
        return full

    def adjoint(self, y: Tensor) -> Tensor:
        return self.blur.adjoint(self.upsample_zero_fill(y))

    def to_grid(self, y: Tensor) -> Tensor:
        """The low-resolution ``y`` zero-filled onto the high-resolution grid (``S_o^T y``)."""
        return self.upsample_zero_fill(y)

    def from_grid(self, y: Tensor) -> Tensor:
        """The sampled pixels of a grid measurement (``S_o y``)."""
        return y[..., self.offset :: self.factor, self.offset :: self.factor]

    def aliased_spectrum(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """One-sided spectrum of ``A A^T`` on the low-resolution grid of a high-resolution ``shape`` (real)."""
        f = self.factor
        low_h, low_w = shape[0] // f, shape[1] // f
        power = self.blur.transfer_function(shape, dtype, device, onesided=False).abs() ** 2
        folded = power.reshape(f, low_h, f, low_w).mean(dim=(0, 2))
        return folded[:, : low_w // 2 + 1]

    def prox_data(self, z: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Exact ``(A^T A + rho I)^{-1} (A^T y + rho z)`` for circular boundaries (Zhao et al. 2016); CG otherwise."""
        if self.blur.boundary != "circular":
            return super().prox_data(z, y, rho)
        self._check_size(z)
        rho_b = _per_sample(rho, z)
        rhs = self.adjoint(y) + rho_b * z
        low = self.forward(rhs)
        spectrum = self.aliased_spectrum(tuple(z.shape[-2:]), z.dtype, z.device)
        solved = torch.fft.irfft2(torch.fft.rfft2(low) / (spectrum + rho_b), s=low.shape[-2:])
        return (rhs - self.adjoint(solved)) / rho_b
