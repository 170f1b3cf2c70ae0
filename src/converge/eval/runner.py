"""Run one restorer over one benchmark set under one task, with the seeded evaluation protocol.

Every clean image is degraded with a generator seeded from (set, image, task tag), so every run
and every machine sees the same observations; the restorer's output is scored against the clean
image with PSNR and SSIM (optionally on the Y channel and with a border crop). For super-resolution
each clean image is first cropped from its top-left corner to a multiple of the factor (the usual SR
"modcrop"; the report's protocol says so), so that every set can be downsampled by every factor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from converge.atomic import write_text_atomic
from converge.color import rgb_to_y
from converge.data.registry import convert_channels, get_set, load_images
from converge.data.seeding import evaluation_generator
from converge.errors import ConfigError
from converge.eval.metrics import psnr, ssim
from converge.eval.report import BenchmarkReport, ImageScore
from converge.physics.tasks import Task
from converge.progress import Step, observe
from converge.restorers import Restoration, RestoreFunction

# How a benchmark image is prepared before it is degraded: kept as stored, reduced to luma (the
# deblocking tables score grey JPEG of the BT.601 Y channel of colour sets such as LIVE1: studio range,
# 16 to 235), or to MATLAB rgb2gray rounded to 8 bits (full range, how Train400 and BSD68 were made).
COLOR_MODES = ("native", "y", "gray")


def restored_channels(bench: str, color: str) -> int:
    """The channels of the images a restorer sees in an evaluation on ``bench`` in colour mode ``color``."""
    return 1 if color in ("y", "gray") else get_set(bench).channels


def modcrop(image: Tensor, factor: int) -> Tensor:
    """``image`` ``(B, C, H, W)`` cropped from its top-left corner to sides that are multiples of ``factor``.

    >>> modcrop(torch.zeros(1, 3, 10, 7), 3).shape
    torch.Size([1, 3, 9, 6])
    """
    height, width = image.shape[-2:]
    return image[..., : height - height % factor, : width - width % factor]


def evaluate(
    restorer: RestoreFunction,
    model: str,
    bench: str,
    task: Task,
    *,
    color: str = "native",
    y_channel: bool = False,
    crop_border: int = 0,
    limit: int | None = None,
    on_image: Callable[[str, int, bool], None] | None = None,
    on_restored: Callable[[str, Tensor, Restoration, Tensor, list[float]], None] | None = None,
    command: str = "",
    weights_sha256: str | None = None,
    checkpoint: Path | None = None,
) -> BenchmarkReport:
    """Restore every image of ``bench`` (or its first ``limit``) degraded by ``task``; return the scores.

    ``on_image(name, total, resumed)`` is called after each image (for progress bars), and
    ``on_restored(name, observed, restoration, clean, psnrs)`` after each image restored now (not one
    taken from ``checkpoint``), with the images as scored and the PSNR of each iterate the restorer
    reported (:mod:`converge.progress`; empty for a restorer whose loop is not on the image), for
    pictures of the run. ``command`` and
    ``weights_sha256`` (see :func:`converge.restorers.weights_digest`) are recorded in the report.
    ``checkpoint``: a JSON file the report so far is written to (atomically) after each image. When
    it already holds the report of an interrupted run of the same thing (:meth:`BenchmarkReport.same_run`),
    its images are taken from it (``resumed`` true) instead of being restored again; any other
    content is replaced.
    """
    if task.name == "demosaic" and restored_channels(bench, color) != 3:
        raise ConfigError(f"demosaicking is scored on colour images and {bench} is scored in grey: choose a colour set")
    images = list(load_images(bench))
    if limit is not None:
        images = images[:limit]
    report = BenchmarkReport(
        model=model,
        bench=bench,
        task=task.name,
        task_params=dict(task.params),
        protocol={
            "color": color,
            "y_channel": y_channel,
            "crop_border": crop_border,
            "noise_seed": f"sha256(bench/image/{task.tag})",
            "command": command,
            "weights_sha256": weights_sha256,
            **({"sr_crop": "top-left, to a multiple of the factor"} if task.name == "sr" else {}),
        },
    )
    names = [name for name, _ in images]
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    report.rows = _resumed_rows(checkpoint, report, names)
    if on_image is not None:
        for row in report.rows:
            on_image(row.image, len(images), True)
    for name, clean in images[len(report.rows) :]:
        if color == "y" and clean.shape[1] == 3:
            clean = rgb_to_y(clean)
        elif color == "gray":
            clean = convert_channels(clean, 1)
        if task.name == "sr":
            clean = modcrop(clean, task.params["factor"])
        observed, operator = task.degrade(clean, evaluation_generator(bench, name, task.tag))
        if on_restored is None:
            restored = restorer(observed, operator)
        else:
            psnrs: list[float] = []

            def iterate_psnr(step: Step) -> None:
                if step.image is not None and step.image.shape == clean.shape:
                    psnrs.append(float(psnr(step.image.clamp(0.0, 1.0), clean)[0]))

            with observe(iterate_psnr):
                restored = restorer(observed, operator)
            on_restored(name, observed, restored, clean, psnrs)
        scored_input = observed if observed.shape == clean.shape else None
        report.rows.append(
            ImageScore(
                image=name,
                psnr=float(psnr(restored.image, clean, crop_border=crop_border, y_channel=y_channel)[0]),
                ssim=float(ssim(restored.image, clean, crop_border=crop_border, y_channel=y_channel)[0]),
                input_psnr=float("nan")
                if scored_input is None
                else float(psnr(scored_input, clean, crop_border=crop_border, y_channel=y_channel)[0]),
                seconds=restored.seconds,
                iterations=restored.iterations,
                model=restored.model,
                noise_level=restored.noise_level,
            )
        )
        if checkpoint is not None:
            write_text_atomic(checkpoint, report.to_json())
        if on_image is not None:
            on_image(name, len(images), False)
    return report


def _resumed_rows(checkpoint: Path | None, report: BenchmarkReport, names: list[str]) -> list[ImageScore]:
    """The scored images an interrupted run of the same thing left in ``checkpoint`` (the first of
    ``names``, in order), or none when there is no such file or it holds anything else."""
    if checkpoint is None or not checkpoint.is_file():
        return []
    try:
        earlier = BenchmarkReport.from_json(checkpoint.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    scored = [row.image for row in earlier.rows]
    if not report.same_run(earlier) or scored != names[: len(scored)]:
        return []
    return list(earlier.rows)
