"""What one DE-GRAD training step costs under each gradient mode, at equal forward iterations.

The training runs (``benchmarks/degrad_gradients.py``) compare the modes as they train, where each
mode's forward solve takes as many iterations as its own weights need. This isolates the backward pass:
the same weights (the shipped ``degrad-deblur``, a trained equilibrium, so the implicit gradient's
adjoint solve meets a realistic Jacobian), the same batch (``--batch`` crops of ``--crop`` pixels from
CBSD400 under the config's blur and noise), and a forward solve of exactly ``--iterations``
evaluations of the update (tolerance 0; ``unroll`` runs that many plain steps). Each mode runs in a
fresh one-thread process: ``--warmup`` steps, then ``--repeats`` timed Adam steps (forward, MSE loss,
backward, update). Per mode: the median seconds of the whole step and of the forward call alone
(which, for ``phantom``, builds its differentiable steps, and for ``unroll`` all of them), the
evaluations of the update in the forward (``unroll``: one more, its residual), the adjoint solve's
iterations (``ift``), and the process's peak resident memory over its baseline after
the warm-up batch was built. Writes ``benchmarks/results/degrad_step_cost.{json,md}``.

    python benchmarks/degrad_step_cost.py --iterations 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from converge.atomic import write_json_and_markdown

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "degrad_step_cost"
CONFIG = ROOT / "configs" / "degrad-deblur-compact.yaml"
MODES = ("jfb", "ift", "phantom", "unroll")
WEIGHTS = "degrad-deblur"


def measure(mode: str, iterations: int, batch: int, crop: int, warmup: int, repeats: int) -> dict[str, Any]:
    """In this process (one thread): the step times of ``mode`` (see the module docstring)."""
    import dataclasses
    import resource
    import time

    import torch
    import yaml

    from converge import zoo
    from converge.data.registry import load_images
    from converge.models.degrad import DEGRAD
    from converge.physics.tasks import make_task

    torch.set_num_threads(1)
    trained = zoo.load_model(WEIGHTS)
    model = DEGRAD(dataclasses.replace(trained.config, backward=mode, max_iter=iterations, tol=0.0))
    model.load_state_dict(trained.state_dict())
    model.train()
    params = yaml.safe_load(CONFIG.read_text())["data"]["task_params"]
    task = make_task("deblur", **params)
    generator = torch.Generator().manual_seed(0)
    crops = []
    for _, image in load_images("cbsd400", 3):
        top = int(torch.randint(0, image.shape[-2] - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.shape[-1] - crop + 1, (1,), generator=generator))
        crops.append(image[..., top : top + crop, left : left + crop])
        if len(crops) == batch:
            break
    clean = torch.cat(crops)
    observed, operator = task.degrade(clean, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state = {key: value.clone() for key, value in model.state_dict().items()}
    totals, forwards, adjoint_iterations, forward_iterations = [], [], [], []
    for repeat in range(warmup + repeats):
        model.load_state_dict(state)  # every step from the same weights
        started = time.perf_counter()
        restored = model(observed, physics=operator)
        forwarded = time.perf_counter()
        loss = torch.nn.functional.mse_loss(restored, clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        finished = time.perf_counter()
        if repeat >= warmup:
            totals.append(finished - started)
            forwards.append(forwarded - started)
            forward_iterations.append(float(model.deq.last_info.iterations.double().mean()))
            backward_info = getattr(model.deq, "last_backward_info", None)
            if mode == "ift" and backward_info is not None:
                adjoint_iterations.append(float(backward_info.iterations.double().mean()))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "seconds_per_step": statistics.median(totals),
        "forward_seconds": statistics.median(forwards),
        "backward_seconds": statistics.median(total - forward for total, forward in zip(totals, forwards)),
        "forward_iterations": statistics.fmean(forward_iterations),
        "adjoint_iterations": statistics.fmean(adjoint_iterations) if adjoint_iterations else None,
        "peak_over_baseline_mib": round(peak_mib - baseline_mib, 1),
        "seconds_each": totals,
    }


def markdown(payload: dict[str, Any]) -> str:
    rows = {row["mode"]: row for row in payload["modes"]}
    jfb = rows.get("jfb")
    lines = [
        "# DE-GRAD: one training step per gradient mode, at equal forward iterations",
        "",
        f"Made by `{payload['command']}` ({payload['machine']}). The shipped `{WEIGHTS}` weights, one batch of "
        f"{payload['batch']} crops of {payload['crop']}x{payload['crop']} from CBSD400 under the paper's blur "
        f"and noise, a forward solve of exactly {payload['iterations']} evaluations of the update (`unroll`: "
        f"{payload['iterations']} plain steps, all differentiated), one thread, each mode in a fresh process; "
        f"median of {payload['repeats']} Adam steps after {payload['warmup']} warm-up.",
        "",
        "| mode | s / step | forward s | backward + update s | forward evaluations | adjoint iterations "
        "| peak MiB over baseline | step time / JFB's |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["modes"]:
        ratio = "-" if jfb is None else f"{row['seconds_per_step'] / jfb['seconds_per_step']:.2f}"
        adjoint = "-" if row["adjoint_iterations"] is None else f"{row['adjoint_iterations']:.1f}"
        lines.append(
            f"| {row['mode']} | {row['seconds_per_step']:.2f} | {row['forward_seconds']:.2f} | "
            f"{row['backward_seconds']:.2f} | {row['forward_iterations']:.0f} | {adjoint} | "
            f"{row['peak_over_baseline_mib']:.0f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=25, help="forward evaluations of the update")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.iterations, args.batch, args.crop, args.warmup, args.repeats)
    if args.one:
        print(json.dumps(measure(args.one, *sizes)))
        return
    rows = []
    for mode in args.modes:
        sizes_given = ["--iterations", str(args.iterations), "--batch", str(args.batch), "--crop", str(args.crop),
                       "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        command = [sys.executable, __file__, "--one", mode, *sizes_given]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise SystemExit(f"{mode}: {done.stderr.strip().splitlines()[-1]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    payload = {
        "command": "python benchmarks/degrad_step_cost.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "iterations": args.iterations, "batch": args.batch, "crop": args.crop,
        "warmup": args.warmup, "repeats": args.repeats, "modes": rows,
    }
    write_json_and_markdown(OUT, payload, markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
