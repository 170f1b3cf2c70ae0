"""The algorithm contract and the name -> algorithm registry.

An algorithm is a function (or class) ``algorithm(y, operator, denoiser, *, ...) -> (x, AlgorithmInfo)``
that combines a measurement ``y``, a :class:`~converge.physics.base.LinearOperator` and a
:class:`~converge.optim.priors.Denoiser`, with every option keyword-only. The module that defines an
algorithm registers it, so a config can say ``algorithm: forward_backward`` and a user can add their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converge.errors import ConfigError

Algorithm = Callable[..., Any]


@dataclass(frozen=True)
class AlgorithmInfo:
    """What a run of an algorithm did, for the whole batch.

    Attributes:
        algorithm: registry name of the algorithm.
        iterations: iterations run (the last one included when the run stopped on divergence).
        relative_change: per iteration, the batch maximum of ``||x_{k+1} - x_k|| / ||x_k||``.
        converged: the last relative change reached the tolerance (fixed-sigma runs; ``False`` for a
            schedule, which runs its full length).
        diverged: the run was stopped by the divergence guard; the returned iterate is then each
            sample's lowest-change finite one.
    """

    algorithm: str
    iterations: int
    relative_change: list[float]
    converged: bool
    diverged: bool


_ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, algorithm: Algorithm, *, overwrite: bool = False) -> Algorithm:
    """Make ``algorithm`` available as ``name``; returns it. A taken name raises :class:`ConfigError`
    unless ``overwrite=True``."""
    if name in _ALGORITHMS and not overwrite:
        raise ConfigError(f"An algorithm named '{name}' is already registered; pass overwrite=True to replace it.")
    _ALGORITHMS[name] = algorithm
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm called ``name`` (``forward_backward``, ...)."""
    if name not in _ALGORITHMS:
        raise ConfigError(f"Unknown algorithm '{name}'; choose one of {sorted(_ALGORITHMS)}.")
    return _ALGORITHMS[name]


def algorithm_names() -> list[str]:
    """Names of all registered algorithms, sorted."""
    return sorted(_ALGORITHMS)
