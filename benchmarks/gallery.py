"""The README's gallery: before/after panels made by the shipped models, not picked by hand.

Three cases, each a centre crop of a test image degraded with the evaluation seed of ``converge eval``
and restored by the model ``converge restore`` would choose for it (:func:`converge.choice.choose_model`,
``balanced``), shown by :func:`converge.panel.compare_panel` with PSNR/SSIM against the clean crop:
grey denoising at sigma 25 (Set12 ``08``), JPEG deblocking at quality 10 (LIVE1 ``bikes``, luma) and
Bayer demosaicking (Kodak24 ``kodim19``). Writes ``docs/gallery/*.jpg`` (JPEG at quality 92, to keep
the repository small) and prints which model made each.

    python benchmarks/gallery.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from converge.choice import choose_model
from converge.color import rgb_to_y
from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator
from converge.panel import compare_panel
from converge.physics.tasks import make_task
from converge.restorers import make_restorer

OUT = Path(__file__).resolve().parents[1] / "docs" / "gallery"
CROP = 192
CASES = (
    ("denoise-sigma25", "set12", "08", "denoise", {"sigma": 25}, False),
    ("deblock-q10", "live1", "bikes", "deblock", {"quality": 10}, True),
    ("demosaic", "kodak24", "kodim19", "demosaic", {}, False),
)


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for label, bench, stem, task_name, params, luma in CASES:
        clean = dict(load_images(bench))[stem]
        clean = rgb_to_y(clean) if luma and clean.shape[1] == 3 else clean
        top, left = (clean.shape[-2] - CROP) // 2, (clean.shape[-1] - CROP) // 2
        clean = clean[..., top : top + CROP, left : left + CROP].contiguous()
        task = make_task(task_name, **params)
        observed, operator = task.degrade(clean, evaluation_generator(bench, stem, task.tag))
        level = params.get("quality" if task_name == "deblock" else "sigma")
        chosen = choose_model(task_name, 3 if task_name == "demosaic" else clean.shape[1], level)
        restored = make_restorer(chosen.name, task)(observed, operator)
        shown = operator.from_raw(observed) if task_name == "demosaic" and observed.shape[1] == 1 else observed
        panel = compare_panel(shown, restored.image, clean, restored.model)
        path = OUT / f"{label}.jpg"
        panel.save(path, format="JPEG", quality=92)
        print(f"{path.name}: {restored.model} ({chosen.reason})")


if __name__ == "__main__":
    main()
