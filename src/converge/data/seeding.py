"""Seeds that do not depend on the process, the machine or Python's hash randomisation.

Evaluation noise is drawn from a generator keyed by (benchmark, image, task), so every run of every
model sees the same noisy images; training seeds every random source from one integer.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

_SEED_MASK = (1 << 63) - 1


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of the parts' ``str`` forms, joined with NUL so that
    ``("ab", "c")`` and ``("a", "bc")`` differ."""
    digest = hashlib.sha256("\0".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & _SEED_MASK


def evaluation_generator(bench: str, image: str, task_tag: str) -> torch.Generator:
    """A CPU generator for the degradation of one benchmark image, e.g. ``("bsd68", "test001", "denoise-25")``.

    Draw on the CPU and move the result to the device: CUDA generators give other streams.
    """
    return torch.Generator().manual_seed(stable_seed("evaluation", bench, image, task_tag))


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
