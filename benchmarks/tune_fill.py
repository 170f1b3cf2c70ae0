"""Tune the two constants of the inpainting fill baseline on validation images.

For each (width, trust density) of a grid, the mean PSNR of ``fill_missing`` on the first 8 colour
bsds-val32 images (BSDS500 validation images, in no test table) with 50%, 80% and 90% of the pixels
dropped, each mask seeded per image as ``converge eval`` seeds it. A trust density of 1e-9 is, in
effect, plain normalised convolution (no pyramid). Writes ``benchmarks/results/tune_fill.{json,md}``.

    python benchmarks/tune_fill.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from converge import baselines
from converge.atomic import write_json_and_markdown
from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator
from converge.eval.metrics import psnr
from converge.physics.tasks import make_task

BENCH = "bsds-val32"
IMAGES = 8
DROPS = (0.5, 0.8, 0.9)
SETTINGS = ((1.0, 1e-9), (1.0, 0.05), (1.0, 0.1), (1.0, 0.2), (0.7, 0.1), (1.5, 0.1))
OUT = Path(__file__).parent / "results" / "tune_fill"


def main() -> None:
    torch.set_num_threads(1)
    images = list(load_images(BENCH))[:IMAGES]
    rows = []
    for drop in DROPS:
        task = make_task("inpaint", p=drop)
        degraded = [task.degrade(image, evaluation_generator(BENCH, name, task.tag)) for name, image in images]
        for width, trust in SETTINGS:
            baselines.FILL_WIDTH, baselines.FILL_TRUST = width, trust
            scores = [
                psnr(baselines.MaskFill(operator)(y), image).item()
                for (y, operator), (_, image) in zip(degraded, images)
            ]
            rows.append({"drop": drop, "width": width, "trust": trust, "psnr": sum(scores) / len(scores)})
            print(rows[-1], flush=True)
    lines = [
        f"# Fill width and trust density on {BENCH} (first {IMAGES}, colour)",
        "",
        "Command: `python benchmarks/tune_fill.py`. Mean PSNR (dB); trust 1e-9 is plain normalised convolution.",
        "",
        "| width | trust | " + " | ".join(f"{drop:.0%} dropped" for drop in DROPS) + " |",
        "|---:|---:|" + "---:|" * len(DROPS),
    ]
    for width, trust in SETTINGS:
        cells = [row["psnr"] for row in rows if (row["width"], row["trust"]) == (width, trust)]
        lines.append(f"| {width:g} | {trust:.2g} | " + " | ".join(f"{value:.2f}" for value in cells) + " |")
    write_json_and_markdown(OUT, {"bench": BENCH, "images": IMAGES, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
