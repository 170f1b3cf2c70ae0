"""PSNR against plug-and-play iteration for several priors in the same ADMM: what each iteration buys.

For each task (by default deblurring std 1.6, super-resolution x3 bicubic and completion at 90%
dropped, all of the MTDEQ protocol) and each prior, PnP-ADMM on the task's tuned schedule
(``converge.restorers``) restores every image of ``--bench`` degraded with the evaluation seed, and the
PSNR of each iterate against the clean image (the iterates an algorithm reports through
``converge.progress``) is averaged over the images. Writes ``benchmarks/results/pnp_convergence.{json,md}``
(mean PSNR per iteration, seconds per image) and, with matplotlib (the ``bench`` extra), one panel per
task in ``docs/models/pnp_convergence.png``.

    python benchmarks/pnp_convergence.py --priors drunet-color mtdeq --bench set5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from converge.atomic import write_json_and_markdown
from converge.eval.runner import evaluate
from converge.physics.tasks import make_task
from converge.restorers import make_restorer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pnp_convergence"
PLOT = ROOT / "docs" / "models" / "pnp_convergence.png"
TASKS = {
    "deblur 1.6": ("deblur", {"blur_sigma": 1.6, "sigma": 2.55}),
    "x3 bicubic 0.01": ("sr", {"factor": 3, "sigma": 2.55}),
    "completion 90%": ("inpaint", {"p": 0.9}),
}


def curve(prior: str, label: str, bench: str) -> dict[str, Any]:
    """Mean PSNR of each ADMM iterate over ``bench`` for ``prior`` on task ``label``."""
    name, params = TASKS[label]
    task = make_task(name, **params)
    per_image: list[list[float]] = []

    def keep(_name: str, _observed: Any, _restored: Any, _clean: Any, psnrs: list[float]) -> None:
        per_image.append(psnrs)

    report = evaluate(make_restorer("admm", task, prior=prior), "admm", bench, task, on_restored=keep)
    steps = min(len(psnrs) for psnrs in per_image)
    mean = [sum(psnrs[k] for psnrs in per_image) / len(per_image) for k in range(steps)]
    summary = report.summary()
    return {"prior": prior, "task": label, "psnr_per_iteration": mean, "final_psnr": summary["psnr"],
            "seconds_per_image": summary["seconds"], "images": summary["images"]}


def markdown(rows: list[dict[str, Any]], command: str, bench: str) -> str:
    lines = [f"# PSNR per PnP-ADMM iteration on {bench}", "",
             f"Command: `{command}`. Mean PSNR (dB) of the iterates over the images; the last column is the "
             "scored (clamped) output.", "",
             "| task | prior | iteration 1 | middle | last iterate | output | s/image |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        psnrs = row["psnr_per_iteration"]
        lines.append(f"| {row['task']} | {row['prior']} | {psnrs[0]:.2f} | {psnrs[len(psnrs) // 2]:.2f} | "
                     f"{psnrs[-1]:.2f} | {row['final_psnr']:.2f} | {row['seconds_per_image']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for row in (row for row in rows if row["task"] == task):
            psnrs = row["psnr_per_iteration"]
            axis.plot(range(1, len(psnrs) + 1), psnrs, marker=".", label=row["prior"])
        axis.set_title(task)
        axis.set_xlabel("ADMM iteration")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean PSNR (dB)")
    axes[0][-1].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--priors", nargs="+", default=["drunet-color", "mtdeq"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--bench", default="set5")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [curve(prior, task, args.bench) for task in args.tasks for prior in args.priors]
    command = "python benchmarks/pnp_convergence.py " + " ".join(sys.argv[1:])
    write_json_and_markdown(OUT, {"command": command, "bench": args.bench, "rows": rows},
                            markdown(rows, command, args.bench))
    if not args.no_plot:
        plot(rows, PLOT)


if __name__ == "__main__":
    main()
