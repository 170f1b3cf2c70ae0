"""Tune the plug-and-play schedule (iterations per task and DPIR's lambda) on the validation split.

For each task of the MTDEQ protocol (completion 80% / 90%, Gaussian deblurring 1.6 / 2.0 at noise
2.55, super-resolution x2 / x3 bicubic and Gaussian at noise 0 and 2.55) and each (iterations,
lambda) of a grid, PnP-ADMM with ``--prior`` restores the first ``--images`` colour ``bsds-val32``
images (BSDS500 validation images, in no test table), degraded with the seeded evaluation noise, and
the mean PSNR is recorded. The paper tunes once, for the Gauss prior, and reuses the setting for every
other prior; the best setting per task family goes into ``_PNP_ITERATIONS`` and ``_PNP_LAM`` of
``converge/restorers.py`` by hand, citing this file. Writes ``benchmarks/results/tune_pnp-PRIOR.{json,md}``.

    python benchmarks/tune_pnp.py --prior drunet-color --images 6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from converge import restorers
from converge.eval.runner import evaluate
from converge.physics.tasks import make_task

BENCH = "bsds-val32"
TASKS = {
    "completion 80%": ("inpaint", {"p": 0.8}),
    "completion 90%": ("inpaint", {"p": 0.9}),
    "deblur 1.6": ("deblur", {"blur_sigma": 1.6, "sigma": 2.55}),
    "deblur 2.0": ("deblur", {"blur_sigma": 2.0, "sigma": 2.55}),
    "x2 bicubic 0": ("sr", {"factor": 2}),
    "x2 bicubic 0.01": ("sr", {"factor": 2, "sigma": 2.55}),
    "x3 gaussian 0": ("sr", {"factor": 3, "kernel": "gaussian"}),
    "x3 gaussian 0.01": ("sr", {"factor": 3, "kernel": "gaussian", "sigma": 2.55}),
}
ITERATIONS = (8, 24, 40)
LAMBDAS = (0.1, 0.23, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", required=True, help="a denoiser name or a .safetensors file from converge train")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for label in args.tasks:
        name, params = TASKS[label]
        task = make_task(name, **params)
        for iterations in ITERATIONS:
            for lam in LAMBDAS:
                restorers._PNP_ITERATIONS[name] = iterations
                restorers._PNP_LAM = lam
                start = time.perf_counter()
                restorer = restorers.make_restorer("admm", task, prior=args.prior)
                report = evaluate(restorer, "admm", BENCH, task, limit=args.images)
                seconds = round(time.perf_counter() - start, 1)
                psnr = report.summary()["psnr"]
                rows.append({"task": label, "iterations": iterations, "lam": lam, "psnr": psnr, "seconds": seconds})
                print(rows[-1], flush=True)
    prior_name = Path(args.prior).stem if args.prior.endswith(".safetensors") else args.prior
    out = Path(__file__).parent / "results" / f"tune_pnp-{prior_name}"
    command = f"python benchmarks/tune_pnp.py --prior {args.prior} --images {args.images}"
    lines = [f"# PnP-ADMM schedule on {BENCH} (first {args.images}), prior {args.prior}", "",
             f"Command: `{command}`. Mean PSNR (dB).", "",
             "| task | " + " | ".join(f"K {k}, lam {lam:g}" for k in ITERATIONS for lam in LAMBDAS) + " |",
             "|---|" + "---:|" * (len(ITERATIONS) * len(LAMBDAS))]
    for label in args.tasks:
        cells = [row["psnr"] for row in rows if row["task"] == label]
        lines.append(f"| {label} | " + " | ".join(f"{value:.2f}" for value in cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "prior": args.prior, "images": args.images, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
