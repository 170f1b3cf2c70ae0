"""Iterative algorithms that combine a forward operator with a prior (plug-and-play).

An algorithm is data fidelity + prior + iteration: :mod:`~converge.optim.data_fidelity` reaches the
operator's own gradient and prox, :mod:`~converge.optim.priors` wraps trained and classical denoisers,
and each algorithm lives in its own module, which registers it by name
(:func:`~converge.optim.registry.get_algorithm`). Images are ``(B, C, H, W)`` floats in [0, 1].

The algorithms, by registered name:

- ``forward_backward`` (:mod:`~converge.optim.forward_backward`): proximal gradient, PnP-PGD;
- ``admm`` (:mod:`~converge.optim.admm`): PnP-ADMM, the data step through the operator's prox;
- ``hqs`` (:mod:`~converge.optim.hqs`): half-quadratic splitting, as in DPIR;
- ``red`` (:mod:`~converge.optim.red`): regularisation by denoising, gradient form.

Fixed-level runs iterate to a tolerance; ``forward_backward``, ``admm`` and ``hqs`` also follow a schedule
of levels (and, for the splittings, data-step weights ``rho``): :func:`dpir_schedule`.
"""

from converge.optim.admm import admm
from converge.optim.data_fidelity import DataFidelity, L2DataFidelity
from converge.optim.forward_backward import dpir_schedule, forward_backward
from converge.optim.hqs import hqs
from converge.optim.priors import BaselineDenoiser, Denoiser, IdentityDenoiser, ModelDenoiser, make_denoiser
from converge.optim.red import red
from converge.optim.registry import AlgorithmInfo, algorithm_names, get_algorithm, register_algorithm

__all__ = [
    "AlgorithmInfo",
    "BaselineDenoiser",
    "DataFidelity",
    "Denoiser",
    "IdentityDenoiser",
    "L2DataFidelity",
    "ModelDenoiser",
    "admm",
    "algorithm_names",
    "dpir_schedule",
    "forward_backward",
    "get_algorithm",
    "hqs",
    "make_denoiser",
    "red",
    "register_algorithm",
]
