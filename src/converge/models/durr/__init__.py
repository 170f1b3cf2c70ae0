"""DURR, the dynamically unfolding recurrent restorer, with the code that trains its policy.

- :mod:`~converge.models.durr.model`: the restorer (restoration unit, policy unit, the loop).
- :mod:`~converge.models.durr.dqn`: deep Q-learning pieces for the stop / continue policy.
- :mod:`~converge.models.durr.training`: the ``trainer: dqn`` training loop (:class:`PolicyTrainer`).

Only the model is imported here: model discovery imports this package, and the training modules
import :mod:`converge.train`, which imports :mod:`converge.models`; the trainer registry imports
:mod:`~converge.models.durr.training` when a config asks for ``trainer: dqn``.
"""

from converge.models.durr.model import (
    CONTINUE,
    DEBLOCK_LOOP_SCHEDULE,
    DENOISE_LOOP_SCHEDULE,
    DURR,
    JPEG_BLOCK,
    POLICY_TILE,
    STOP,
    DURRConfig,
    PolicyUnit,
    RestorationUnit,
    block_grid_statistics,
    policy_tiles,
)

__all__ = [
    "CONTINUE",
    "DEBLOCK_LOOP_SCHEDULE",
    "DENOISE_LOOP_SCHEDULE",
    "DURR",
    "JPEG_BLOCK",
    "POLICY_TILE",
    "STOP",
    "DURRConfig",
    "PolicyUnit",
    "RestorationUnit",
    "block_grid_statistics",
    "policy_tiles",
]
