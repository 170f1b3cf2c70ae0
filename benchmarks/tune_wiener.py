"""Tune the balance constant c of the Wiener deconvolution baseline on validation images.

For each c of a log grid, the mean PSNR of ``WienerDeconvolution`` on the first 16 grey bsds-val32
images (BSDS500 validation images, in no test table), for Gaussian blurs of width 1.6 and 2.0 at noise
level 2.55 (MTDEQ's deblurring protocol) and at width 1.6 with noise 7.65, the noise seeded per image
as ``converge eval`` seeds it. Writes ``benchmarks/results/tune_wiener.{json,md}``.

    python benchmarks/tune_wiener.py
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
IMAGES = 16
BALANCES = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
SETTINGS = ((1.6, 2.55), (2.0, 2.55), (1.6, 7.65))
OUT = Path(__file__).parent / "results" / "tune_wiener"


def main() -> None:
    torch.set_num_threads(1)
    images = [(name, image.to(torch.float64)) for name, image in list(load_images(BENCH, channels=1))[:IMAGES]]
    rows = []
    for blur_sigma, sigma in SETTINGS:
        task = make_task("deblur", blur_sigma=blur_sigma, sigma=sigma)
        observed = [task.degrade(image, evaluation_generator(BENCH, name, task.tag))[0] for name, image in images]
        for balance in BALANCES:
            baselines.WIENER_BALANCE = balance
            restorer = baselines.WienerDeconvolution(task.operator)
            scores = [psnr(restorer(y, sigma=sigma / 255.0), image).item() for y, (_, image) in zip(observed, images)]
            rows.append({"blur_sigma": blur_sigma, "sigma": sigma, "balance": balance, "psnr": sum(scores) / len(scores)})
            print(rows[-1], flush=True)
    lines = [
        f"# Wiener balance c on {BENCH} (first {IMAGES}, grey)",
        "",
        "Command: `python benchmarks/tune_wiener.py`. Mean PSNR (dB).",
        "",
        "| c | " + " | ".join(f"blur {b:g}, noise {s:g}" for b, s in SETTINGS) + " |",
        "|---:|" + "---:|" * len(SETTINGS),
    ]
    for balance in BALANCES:
        cells = [row["psnr"] for row in rows if row["balance"] == balance]
        lines.append(f"| {balance:g} | " + " | ".join(f"{value:.2f}" for value in cells) + " |")
    write_json_and_markdown(OUT, {"bench": BENCH, "images": IMAGES, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
