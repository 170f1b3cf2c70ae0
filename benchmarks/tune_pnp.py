"""Tune the plug-and-play schedule (iterations, DPIR's lambda, end-level floor) per task on the validation split.

For each task of the MTDEQ protocol (completion 80% / 90%, Gaussian deblurring 1.6 / 2.0 at noise
2.55, super-resolution x2 / x3 bicubic and Gaussian at noise 0 and 2.55) and each (iterations,
lambda, floor) of a grid, PnP-ADMM with ``--prior`` restores the first ``--images`` colour
``bsds-val32`` images (BSDS500 validation images, in no test table), degraded with the seeded
evaluation noise, and the mean PSNR is recorded. The floor is the level a task quieter than it ends
at (``PnPSchedule.floor``, in 1/255 units here). The paper tunes once, for the Gauss prior, and reuses
the setting for every other prior; the best setting per task family goes into ``_PNP_SCHEDULES`` of
``converge/restorers.py`` by hand, citing this file. Rows of a setting run again replace the earlier
ones in ``benchmarks/results/tune_pnp-PRIOR.{json,md}``, so the grid can be searched in stages.

    python benchmarks/tune_pnp.py --prior drunet-color --images 6
    python benchmarks/tune_pnp.py --prior drunet-color --tasks "completion 80%" --floors 0.255 5 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from converge import restorers
from converge.atomic import write_json_and_markdown
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
FLOORS = (0.255,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", required=True, help="a denoiser name or a .safetensors file from converge train")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--iterations", nargs="*", type=int, default=list(ITERATIONS))
    parser.add_argument("--lambdas", nargs="*", type=float, default=list(LAMBDAS))
    parser.add_argument("--floors", nargs="*", type=float, default=list(FLOORS), help="end-level floors, x/255")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior_name = Path(args.prior).stem if args.prior.endswith(".safetensors") else args.prior
    out = Path(__file__).parent / "results" / f"tune_pnp-{prior_name}"
    rows = _earlier_rows(out.with_suffix(".json"), args.images)
    for label in args.tasks:
        name, params = TASKS[label]
        task = make_task(name, **params)
        for iterations in args.iterations:
            for lam in args.lambdas:
                for floor in args.floors:
                    restorers._PNP_SCHEDULES[name] = restorers.PnPSchedule(iterations, lam, floor / 255.0)
                    start = time.perf_counter()
                    restorer = restorers.make_restorer("admm", task, prior=args.prior)
                    report = evaluate(restorer, "admm", BENCH, task, limit=args.images)
                    setting = {"task": label, "iterations": iterations, "lam": lam, "floor": floor}
                    rows = [row for row in rows if {key: row[key] for key in setting} != setting]
                    rows.append({**setting, "psnr": report.summary()["psnr"],
                                 "seconds": round(time.perf_counter() - start, 1)})
                    print(rows[-1], flush=True)
                    _write(out, args, rows)


def _earlier_rows(path: Path, images: int) -> list[dict]:
    """The rows of an earlier run on as many images (those of another image count are dropped)."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    return earlier["rows"] if earlier["images"] == images else []


def _write(out: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    """The JSON rows and a Markdown table per task, best setting first."""
    command = f"python benchmarks/tune_pnp.py --prior {args.prior} --images {args.images} (in stages: see --help)"
    lines = [f"# PnP-ADMM schedule on {BENCH} (first {args.images}), prior {args.prior}", "",
             f"Command: `{command}`. Mean PSNR (dB); floor in 1/255 units.", "",
             "| task | iterations | lam | floor | PSNR | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for label in TASKS:
        ranked = sorted((row for row in rows if row["task"] == label), key=lambda row: -row["psnr"])
        lines += [f"| {label} | {row['iterations']} | {row['lam']:g} | {row['floor']:g} | {row['psnr']:.2f} | "
                  f"{row['seconds']:.0f} |" for row in ranked]
    payload = {"command": command, "prior": args.prior, "images": args.images, "rows": rows}
    write_json_and_markdown(out, payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
