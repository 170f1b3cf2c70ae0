"""Training: YAML configs, losses and the resumable single-process training loop."""

from converge.train.config import TrainConfig, config_from_dict, config_to_dict, load_config
from converge.train.losses import LOSSES, get_loss
from converge.train.trainer import Trainer, train

__all__ = ["LOSSES", "TrainConfig", "Trainer", "config_from_dict", "config_to_dict", "get_loss", "load_config", "train"]
