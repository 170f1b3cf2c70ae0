"""NERD's solver behaviour on trained weights: the paper's Fig. 1 and Fig. 10 analogues.

- ``iterations`` (Fig. 1): PSNR of what the solver returns when stopped after ``k`` iterations, for
  ``k = 0 ... K`` on every image of the bench (Set12, sigma 25 by default): the image decoded from
  the lowest-residual iterate among ``z_0 ... z_k`` (``converge.deq`` returns that one), and beside it
  the PSNR of the raw ``k``-th iterate, ``x_k = y + decode(z_k)``. One solve of ``K`` steps with
  tolerance 0 per image; the iterates are read off the inputs of the update ``f``, which Broyden
  evaluates exactly once per iterate.
- ``solvers`` (Fig. 10): relative residual ``||f(z) - z|| / ||f(z)||`` after each evaluation of
  ``f`` for Broyden, Anderson and plain fixed-point iteration, from ``z = 0``, on the first
  ``--solver-images`` images (0: skip this part), with the PSNR each reaches after ``K`` evaluations.

Noise is the evaluation noise of ``converge eval`` (seeded per bench, image and task), so the
``k = 17`` point is what ``converge eval --model ... --bench set12 --sigma 25`` scores with the
tolerance switched off. Writes ``nerd_convergence.{json,md}`` to ``--out-dir`` and the two plots
(``nerd_iterations.png``, ``nerd_solvers.png``) to ``--plot-dir`` (needs matplotlib: the ``bench``
extra).

Usage:
    python benchmarks/nerd_convergence.py [--weights nerd-s25 | PATH.safetensors] [--bench set12]
        [--sigma 25] [--max-iter 40] [--solver-images 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator
from converge.deq import get_solver, relative_residual
from converge.eval.metrics import psnr
from converge.models.nerd import NERD
from converge.physics.tasks import make_task
from converge.restorers import weights_digest
from converge.zoo import load_model, load_weights

SOLVERS = ("broyden", "anderson", "fixed_point")


def load_nerd(spec: str) -> NERD:
    """A zoo name (``nerd-s25``) or a ``.safetensors`` path with its YAML beside it."""
    model = load_weights(spec) if spec.endswith(".safetensors") else load_model(spec)
    if not isinstance(model, NERD):
        raise SystemExit(f"{spec} is a {type(model).__name__}, not a NERD model")
    return model.eval()


def decode(model: NERD, y: Tensor, z: Tensor) -> Tensor:
    decoded = model.decoder(z)
    return (y + decoded if model.config.equilibrium == "noise" else decoded).clamp(0.0, 1.0)


def iterate_psnrs(model: NERD, y: Tensor, clean: Tensor, max_iter: int) -> tuple[list[float], list[float]]:
    """Along one Broyden solve with tolerance 0, for ``k = 0 ... max_iter``: the PSNR of the solver's
    output after ``k`` iterations (the lowest-residual iterate so far) and of the raw iterate ``z_k``."""
    s = model.injection(y)
    scores: list[float] = []
    residuals: list[float] = []

    def recording_update(z: Tensor) -> Tensor:
        scores.append(float(psnr(decode(model, y, z), clean)[0]))
        fz = model.implicit(z, s)
        residuals.append(float(relative_residual(z, fz)[0]))
        return fz

    # Broyden evaluates f once per iterate, at z_0 = 0, z_1, ...: K + 1 evaluations show z_0 ... z_K.
    get_solver("broyden")(recording_update, torch.zeros_like(s), max_iter=max_iter + 1, tol=0.0)
    raw = scores[: max_iter + 1]
    returned, best = [], 0
    for k in range(len(raw)):
        best = k if residuals[k] < residuals[best] else best
        returned.append(raw[best])
    return returned, raw


def residual_histories(model: NERD, y: Tensor, clean: Tensor, max_iter: int) -> dict[str, dict[str, Any]]:
    s = model.injection(y)
    results = {}
    for name in SOLVERS:
        calls = 0

        def update(z: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return model.implicit(z, s)

        z, info = get_solver(name)(update, torch.zeros_like(s), max_iter=max_iter, tol=0.0)
        history = info.residual_history[:, 0].tolist()
        results[name] = {
            "residuals": history,
            "f_evals": calls,
            "final_residual": float(relative_residual(z, model.implicit(z, s))[0]),
            "psnr": float(psnr(decode(model, y, z), clean)[0]),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="nerd-s25")
    parser.add_argument("--bench", default="set12")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--solver-images", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images for the iteration sweep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plot-dir", type=Path, default=Path("docs/models"))
    args = parser.parse_args()
    if importlib.util.find_spec("matplotlib") is None:
        sys.exit("nerd_convergence: the plots need matplotlib: pip install -e '.[bench]'")
    torch.set_num_threads(args.threads)

    model = load_nerd(args.weights)
    task = make_task("denoise", sigma=args.sigma)
    images = list(load_images(args.bench, channels=1))
    if args.limit is not None:
        images = images[: args.limit]
    sweep: dict[str, list[float]] = {}
    raw_sweep: dict[str, list[float]] = {}
    solvers: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with torch.no_grad(), parametrize.cached():
        for index, (name, clean) in enumerate(images):
            noisy, _ = task.degrade(clean, evaluation_generator(args.bench, name, task.tag))
            sweep[name], raw_sweep[name] = iterate_psnrs(model, noisy, clean, args.max_iter)
            if index < args.solver_images:
                solvers[name] = residual_histories(model, noisy, clean, args.max_iter)
            print(f"{name}: k=0 {sweep[name][0]:.2f}, k={args.max_iter} {sweep[name][-1]:.2f} dB", file=sys.stderr, flush=True)
    mean_by_k = [statistics.fmean(scores[k] for scores in sweep.values()) for k in range(args.max_iter + 1)]
    raw_mean_by_k = [statistics.fmean(scores[k] for scores in raw_sweep.values()) for k in range(args.max_iter + 1)]
    median_residuals = (
        {
            solver: [statistics.median(runs[solver]["residuals"][k] for runs in solvers.values()) for k in range(args.max_iter)]
            for solver in SOLVERS
        }
        if solvers
        else {}
    )
    payload = {
        "command": "python " + " ".join(sys.argv),
        "weights": args.weights,
        "weights_sha256": weights_digest(args.weights),
        "model": dict(vars(model.config)),
        "bench": args.bench,
        "sigma": args.sigma,
        "images": len(images),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "mean_psnr_by_iteration": mean_by_k,
        "psnr_by_iteration": sweep,
        "mean_iterate_psnr_by_iteration": raw_mean_by_k,
        "iterate_psnr_by_iteration": raw_sweep,
        "solver_images": list(solvers),
        "median_residual_by_eval": median_residuals,
        "solvers": solvers,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "nerd_convergence.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / "nerd_convergence.md").write_text(markdown(payload))
    plot(payload, args.plot_dir)
    print(markdown(payload))


def markdown(payload: dict[str, Any]) -> str:
    by_k = payload["mean_psnr_by_iteration"]
    raw_by_k = payload["mean_iterate_psnr_by_iteration"]
    shown = [k for k in (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 17, 20, 25, 30, 35, 40) if k < len(by_k)]
    lines = [
        f"# NERD solver behaviour ({payload['weights']}, {payload['bench']}, sigma {payload['sigma']:g})",
        "",
        f"Command: `{payload['command']}`  ",
        f"Weights: sha256 `{payload['weights_sha256']}`  ",
        f"Machine: {payload['machine']}; {payload['seconds']} s",
        "",
        f"Mean PSNR (dB) over {payload['images']} images after k Broyden iterations: the solver's output "
        "(the lowest-residual iterate so far) and the raw k-th iterate:",
        "",
        "| k | " + " | ".join(str(k) for k in shown) + " |",
        "|---|" + "---|" * len(shown),
        "| output | " + " | ".join(f"{by_k[k]:.2f}" for k in shown) + " |",
        "| iterate | " + " | ".join(f"{raw_by_k[k]:.2f}" for k in shown) + " |",
        "",
        f"Largest drop below an earlier k, from k = 3 on: output {largest_drop(by_k):.3f} dB, "
        f"raw iterate {largest_drop(raw_by_k):.3f} dB; peak output {max(by_k):.2f} at k = "
        f"{by_k.index(max(by_k))}, {by_k[-1]:.2f} at k = {len(by_k) - 1}.",
    ]
    if not payload["solver_images"]:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Median relative residual over {len(payload['solver_images'])} images after n evaluations of f:",
        "",
    ]
    evals = [n for n in (1, 5, 10, 17, 25, 40) if n <= len(by_k) - 1]
    lines += ["| solver | " + " | ".join(f"n={n}" for n in evals) + " | PSNR at the end |", "|---|" + "---|" * (len(evals) + 1)]
    for solver, history in payload["median_residual_by_eval"].items():
        end = statistics.fmean(runs[solver]["psnr"] for runs in payload["solvers"].values())
        lines.append(f"| {solver} | " + " | ".join(f"{history[n - 1]:.2e}" for n in evals) + f" | {end:.2f} |")
    return "\n".join(lines) + "\n"


def largest_drop(scores: list[float], start: int = 3) -> float:
    """The most that ``scores[k]`` falls below the best of ``scores[:k]``, over ``k >= start``."""
    return max([0.0] + [max(scores[:k]) - scores[k] for k in range(start, len(scores))])


def plot(payload: dict[str, Any], plot_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    by_k = payload["mean_psnr_by_iteration"]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(range(len(by_k)), payload["mean_iterate_psnr_by_iteration"], color="0.6", label="raw iterate")
    axis.plot(range(len(by_k)), by_k, marker="o", markersize=3, label="solver output")
    axis.legend()
    axis.set_xlabel("Broyden iterations at inference")
    axis.set_ylabel(f"mean PSNR on {payload['bench']} (dB)")
    axis.set_title(f"NERD, sigma {payload['sigma']:g}: PSNR against solver iterations")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(plot_dir / "nerd_iterations.png", dpi=120)
    if not payload["solver_images"]:
        return
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for solver, history in payload["median_residual_by_eval"].items():
        axis.semilogy(range(1, len(history) + 1), history, label=solver.replace("_", " "))
    axis.set_xlabel("evaluations of f")
    axis.set_ylabel("relative residual (median)")
    axis.set_title("NERD forward solvers")
    axis.legend()
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(plot_dir / "nerd_solvers.png", dpi=120)


if __name__ == "__main__":
    main()
