"""What was done to the image: degradation operators, noise, and the named tasks built from them.

Every linear operator owns its forward map, exact adjoint, data-term gradient and data-term prox
(closed form where one exists). Images are ``(B, C, H, W)`` float tensors in [0, 1].
"""

from converge.physics.base import Identity, LinearOperator, Operator, conjugate_gradient
from converge.physics.batch import OperatorBatch, as_operator_batch
from converge.physics.blur import GaussianBlur, KernelBlur
from converge.physics.downsample import Downsample
from converge.physics.jpeg import JPEGCompression
from converge.physics.kernels import bicubic_kernel, gaussian_kernel
from converge.physics.mask import PixelMask, RandomPixelDrop
from converge.physics.mosaic import BayerMosaic
from converge.physics.noise import GaussianNoise, estimate_noise_sigma
from converge.physics.tasks import Task, make_task, task_names, task_parameters

__all__ = [
    "BayerMosaic",
    "Downsample",
    "GaussianBlur",
    "GaussianNoise",
    "Identity",
    "JPEGCompression",
    "KernelBlur",
    "LinearOperator",
    "OperatorBatch",
    "Operator",
    "PixelMask",
    "RandomPixelDrop",
    "Task",
    "as_operator_batch",
    "bicubic_kernel",
    "conjugate_gradient",
    "estimate_noise_sigma",
    "gaussian_kernel",
    "make_task",
    "task_names",
    "task_parameters",
]
