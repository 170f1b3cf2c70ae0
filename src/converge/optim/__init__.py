"""Iterative algorithms that combine a forward operator with a prior (plug-and-play).

An algorithm is data fidelity + prior + iteration: :mod:`~converge.optim.data_fidelity` reaches the
operator's own gradient and prox, :mod:`~converge.optim.priors` wraps trained and classical denoisers,
and each algorithm lives in its own module, which registers it by name
(:func:`~converge.optim.registry.get_algorithm`). Images are ``(B, C, H, W)`` floats in [0, 1].
"""

from converge.optim.data_fidelity import DataFidelity, L2DataFidelity
from converge.optim.forward_backward import dpir_schedule, forward_backward
from converge.optim.priors import BaselineDenoiser, Denoiser, IdentityDenoiser, ModelDenoiser, make_denoiser
from converge.optim.registry import AlgorithmInfo, algorithm_names, get_algorithm, register_algorithm

__all__ = [
    "AlgorithmInfo",
    "BaselineDenoiser",
    "DataFidelity",
    "Denoiser",
    "IdentityDenoiser",
    "L2DataFidelity",
    "ModelDenoiser",
    "algorithm_names",
    "dpir_schedule",
    "forward_backward",
    "get_algorithm",
    "make_denoiser",
    "register_algorithm",
]
