"""Where a model runs: a device name from the command line or the API, checked against this machine."""

from __future__ import annotations

from pathlib import Path

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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (the ``avx512_bf16`` or ``amx_bf16`` flag of Linux's
    ``/proc/cpuinfo``). Without it bf16 autocast is emulated and many times slower than float32
    (docs/training-speed.md, "Machines without native bf16"). Where ``/proc/cpuinfo`` is missing (not Linux)
    the answer is ``True``: nothing is known against it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags
