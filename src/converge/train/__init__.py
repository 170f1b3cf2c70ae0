"""Training: YAML configs, losses, the resumable training loop and the registry of trainers."""

from converge.train.config import TrainConfig, config_from_dict, config_to_dict, load_config
from converge.train.losses import LOSSES, get_loss
from converge.train.registry import register_trainer, trainer_class, trainer_kinds
from converge.train.trainer import Trainer, train

__all__ = [
    "LOSSES",
    "TrainConfig",
    "Trainer",
    "config_from_dict",
    "config_to_dict",
    "get_loss",
    "load_config",
    "register_trainer",
    "train",
    "trainer_class",
    "trainer_kinds",
]
