"""Quality of DURR's learnt stopping policy: PSNR at the policy's stop vs the oracle stop.

For each of the first ``--images`` images of the bench (BSD68 by default) and each noise level, the
noisy input is the seeded evaluation noise of ``converge eval`` (``evaluation_generator``), and the
frozen restoration unit is unfolded once, ``X_0 = y, X_{n+1} = X_n + dt f(X_n)``, scoring the
clamped estimate after every loop. Three stops are read off that one trajectory:

- ``policy``: the first loop ``n >= min_loops`` at which the learnt policy, fed ``X_0 ... X_n``,
  prefers STOP (``max_loops`` if it never does): what ``DURR.restore`` returns without ``--loops``.
  The first case is checked against ``restore`` itself.
- ``oracle``: the loop count with the best PSNR for that image (the per-image best stop).
- ``schedule``: the refined policy of stage 1 for the true noise level (``scheduled_loops``; levels
  above its last pair get the last pair's loops), a non-blind reference.

The trajectory is followed until it has passed both the policy's stop and the schedule's loops and
its PSNR has fallen ``--margin`` dB below the best so far (or ``max_loops``): DURR's unit gives
PSNR curves that rise to one peak and then fall, so the oracle is the peak. Writes
``durr_policy.{json,md}`` to ``--out-dir``.

Usage:
    python benchmarks/durr_policy.py --weights RUN/model.safetensors [--bench bsd68] [--images 8]
        [--sigmas 25 35 45 55 65 75] [--margin 1.0] [--threads 1] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator
from converge.eval.metrics import psnr
from converge.models.durr import CONTINUE, DURR, STOP
from converge.physics.tasks import make_task
from converge.zoo import load_weights

STOPS = ("policy", "oracle", "schedule")


@torch.no_grad()
def follow_trajectory(model: DURR, noisy: Tensor, clean: Tensor, sigma: float, margin: float) -> dict[str, Any]:
    """PSNR (dB) of every loop of one ``(1, C, H, W)`` image's trajectory and the three stops on it."""
    config = model.config
    schedule = int(model.scheduled_loops(torch.tensor([sigma]))[0])
    estimate, scores, policy_stop, hidden = noisy, [], None, None
    for n in range(config.max_loops + 1):
        scores.append(float(psnr(estimate.clamp(0.0, 1.0), clean)[0]))
        if policy_stop is None and n < config.max_loops:
            q, hidden = model.policy(estimate, hidden)
            if n >= config.min_loops and bool(q[0, STOP] > q[0, CONTINUE]):
                policy_stop = n
        seen_stops = policy_stop is not None and n >= max(policy_stop, schedule)
        if n == config.max_loops or (seen_stops and scores[-1] < max(scores) - margin):
            break
        estimate = model.unit_step(estimate)
    policy_stop = config.max_loops if policy_stop is None else policy_stop
    oracle = max(range(len(scores)), key=scores.__getitem__)
    loops = {"policy": policy_stop, "oracle": oracle, "schedule": min(schedule, len(scores) - 1)}
    return {"psnr_by_loop": scores, "loops": loops, "psnr": {name: scores[n] for name, n in loops.items()}}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over images of PSNR and loops per stop, and the policy's gap to the oracle."""
    summary = {
        f"{kind}_{name}": statistics.fmean(record[kind][name] for record in records)
        for kind in ("psnr", "loops")
        for name in STOPS
    }
    summary["policy_gap_db"] = summary["psnr_oracle"] - summary["psnr_policy"]
    summary["schedule_gap_db"] = summary["psnr_oracle"] - summary["psnr_schedule"]
    summary["policy_loops_each"] = [record["loops"]["policy"] for record in records]
    summary["oracle_loops_each"] = [record["loops"]["oracle"] for record in records]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a DURR .safetensors with its YAML beside it")
    parser.add_argument("--bench", default="bsd68")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[25, 35, 45, 55, 65, 75])
    parser.add_argument("--margin", type=float, default=1.0, help="dB below the best PSNR that ends a trajectory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights)
    if not isinstance(model, DURR):
        raise SystemExit(f"{args.weights} holds a {type(model).__name__}, not a DURR model")
    images = list(load_images(args.bench, channels=model.config.channels))[: args.images]
    started, cpu_started = time.perf_counter(), time.process_time()
    levels: dict[str, Any] = {}
    for sigma in args.sigmas:
        task = make_task("denoise", sigma=sigma)
        records = []
        for name, clean in images:
            noisy, _ = task.degrade(clean, evaluation_generator(args.bench, name, task.tag))
            record = follow_trajectory(model, noisy, clean, sigma, args.margin)
            if not levels and not records:
                _, info = model.restore(noisy)
                if info.iterations[0] != record["loops"]["policy"]:
                    raise SystemExit(f"restore took {info.iterations[0]} loops, the trajectory's policy stop is "
                                     f"{record['loops']['policy']}: the benchmark no longer follows DURR.restore")
            records.append({"image": name, **record})
        levels[f"{sigma:g}"] = {"summary": summarise(records), "images": records}
        summary = levels[f"{sigma:g}"]["summary"]
        print(f"sigma {sigma:g}: policy {summary['psnr_policy']:.2f} dB / {summary['loops_policy']:.1f} loops, "
              f"oracle {summary['psnr_oracle']:.2f} / {summary['loops_oracle']:.1f}", file=sys.stderr, flush=True)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "weights": args.weights,
        "model": dict(vars(model.config)),
        "bench": args.bench,
        "images": [name for name, _ in images],
        "margin_db": args.margin,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "levels": levels,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "durr_policy.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / "durr_policy.md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict[str, Any]) -> str:
    """The per-level table of the JSON payload."""
    lines = [
        f"# DURR stopping policy vs the oracle stop ({payload['bench']}, first {len(payload['images'])} images)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}; {payload['seconds']} s wall, {payload['cpu_seconds']} s CPU",
        "",
        "Mean PSNR (dB) and mean loops at each stop; gap = oracle - policy.",
        "",
        "| sigma | policy PSNR | oracle PSNR | schedule PSNR | gap | policy loops | oracle loops | schedule loops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sigma, level in payload["levels"].items():
        s = level["summary"]
        lines.append(
            f"| {sigma} | {s['psnr_policy']:.2f} | {s['psnr_oracle']:.2f} | {s['psnr_schedule']:.2f} | "
            f"{s['policy_gap_db']:.3f} | {s['loops_policy']:.1f} | {s['loops_oracle']:.1f} | "
            f"{s['loops_schedule']:.1f} |"
        )
    lines += ["", "Loops per image (policy / oracle):", ""]
    for sigma, level in payload["levels"].items():
        pairs = zip(level["summary"]["policy_loops_each"], level["summary"]["oracle_loops_each"], strict=True)
        lines.append(f"- sigma {sigma}: " + ", ".join(f"{p}/{o}" for p, o in pairs))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
