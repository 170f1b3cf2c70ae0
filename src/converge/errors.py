"""One exception type per failure family; the CLI turns each into a one-line message and exit code 2."""


class ConvergeError(Exception):
    """Base of every error a user can act on; its message is one sentence."""


class ImageReadError(ConvergeError):
    """An input file is missing, is not an image, is truncated, empty or of an unsupported mode."""


class ImageWriteError(ConvergeError):
    """An output image could not be written (bad extension, unwritable folder, bad tensor)."""


class ConfigError(ConvergeError):
    """An option, task name or configuration value is unknown or out of range."""


class DataError(ConvergeError):
    """A benchmark or training set is missing or fails its checksum."""


class WeightsError(ConvergeError):
    """Shipped or user weights are missing, corrupt or do not match their model config."""


class TrainingError(ConvergeError):
    """A training run diverged (its loss turned non-finite or exploded) and was stopped."""
