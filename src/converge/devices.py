"""Where a model runs: a device name from the command line or the API, checked against this machine."""

from __future__ import annotations

import torch

from converge.errors import ConfigError


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` (``cpu``, ``cuda`` or ``cuda:N``) as a :class:`torch.device` this machine has.

    Raises :class:`ConfigError` for an unknown name, another device type, or CUDA without a GPU.
    """
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r} ({error}): use cpu, cuda or cuda:N") from None
    if chosen.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: converge runs on cpu or cuda")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this machine has no CUDA GPU (use cpu)")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return chosen
