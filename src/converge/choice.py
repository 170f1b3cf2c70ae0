"""Which shipped model restores an image when none is named.

Among the zoo entries scored on the validation split (``ZooEntry.validation``, written by
``benchmarks/validation_scores.py``) for the task and the image's channels, at the measured level
nearest the image's (noise sigma, given or estimated; JPEG quality), the one with the best PSNR whose
speed fits the preference (``PREFERENCES``: seconds per megapixel on one thread of this project's
CPU, ``ZooEntry.seconds_per_megapixel``; an entry of unmeasured speed is allowed, and the reason says
so). A colour image with no colour scores takes the grey ones (a grey model restores colour channel
by channel, or a JPEG's luma). A task no shipped model has scores for takes its ``FALLBACK``.

>>> sorted(PREFERENCES)
['balanced', 'best', 'fast']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from converge.errors import ConfigError

PREFERENCES = {"fast": 10.0, "balanced": 40.0, "best": math.inf}
"""Seconds per megapixel a preference allows: ``fast`` keeps a 512x512 image under about 3 s here,
``balanced`` near 10 s."""

FALLBACK = {"denoise": "dncnn-s25", "deblock": "durr", "sr": "bicubic", "deblur": "wiener", "inpaint": "fill",
            "demosaic": "malvar"}
"""The restorer of a task no shipped model has validation scores for: the default denoiser, the blind
DURR deblocker, the classical restorer of the other tasks."""


@dataclass(frozen=True)
class Choice:
    """The chosen restorer's name and the one line that says why."""

    name: str
    reason: str


def choose_model(task: str, channels: int, level: float | None, prefer: str = "balanced") -> Choice:
    """The restorer for ``task`` on a ``channels``-channel image at ``level`` (sigma in 8-bit levels,
    JPEG quality, or ``None``), as the module docstring says. Raises :class:`ConfigError` for an
    unknown ``prefer``."""
    from converge import zoo

    if prefer not in PREFERENCES:
        raise ConfigError(f"--prefer must be one of {', '.join(PREFERENCES)}, got '{prefer}'")
    scored = [(entry, record) for entry in zoo.ZOO.values() for record in entry.validation if record.task == task]
    for_channels = [pair for pair in scored if pair[1].channels == channels] or [
        pair for pair in scored if pair[1].channels == 1
    ]
    if not for_channels:
        fallback = FALLBACK[task]
        return Choice(fallback, f"{fallback}: the fallback for {task} (no shipped model has validation scores for it)")
    levels = {record.level for _, record in for_channels}
    nearest = _nearest(levels, level)
    at_level = [(entry, record) for entry, record in for_channels if record.level == nearest]
    limit = PREFERENCES[prefer]
    fitting = [pair for pair in at_level if (pair[0].seconds_per_megapixel or 0.0) <= limit]
    kind = f"the best within --prefer {prefer}"
    if not fitting:
        fitting = [min(at_level, key=lambda pair: pair[0].seconds_per_megapixel)]
        kind = f"the fastest scored model (none is within {prefer}'s {limit:g} s per megapixel)"
    ranked = sorted(fitting, key=lambda pair: (-pair[1].psnr, pair[0].name))
    best, record = ranked[0]
    against = "" if len(ranked) == 1 else f", against {ranked[1][0].name}'s {ranked[1][1].psnr:.2f}"
    speed = (
        "speed not measured"
        if best.seconds_per_megapixel is None
        else f"{best.seconds_per_megapixel:.1f} s per megapixel on one thread"
    )
    reason = (
        f"{best.name}: {kind} for {record.setting()} images, {record.psnr:.2f} dB on "
        f"{record.images} validation images{against}; {speed}"
    )
    return Choice(best.name, reason)


def _nearest(levels: set[float | None], level: float | None) -> float | None:
    """The measured level nearest ``level`` (the lowest on a tie; any when ``level`` is ``None``)."""
    numeric = sorted(value for value in levels if value is not None)
    if not numeric:
        return None
    if level is None:
        return numeric[len(numeric) // 2]
    return min(numeric, key=lambda value: (abs(value - level), value))
