"""Quality of DURR's learnt stopping policy: PSNR at the policy's stop vs the oracle stop.

For each of the first ``--images`` images of the bench and each level (``--task denoise``: noise
sigma, BSD68 by default; ``--task deblock``: JPEG quality, LIVE1 by default), the degraded input is
the seeded evaluation degradation of ``converge eval`` (``evaluation_generator``; a colour image is
read as its BT.601 luma, as ``converge eval --color y`` does), and the frozen restoration unit is
unfolded once, ``X_0 = y, X_{n+1} = X_n + dt f(X_n)``, scoring the
clamped estimate after every loop. Three stops are read off that one trajectory:

- ``policy``: the first loop ``n >= min_loops`` at which the learnt policy, fed ``X_0 ... X_n``,
  prefers STOP (``max_loops`` if it never does): what ``DURR.restore`` returns without ``--loops``.
  The first case is checked against ``restore`` itself.
- ``oracle``: the loop count with the best PSNR for that image (the per-image best stop).
- ``schedule``: the refined policy of stage 1 for the true level (``scheduled_loops``; levels
  outside its pairs get the nearest pair's loops), a non-blind reference.

The trajectory is followed until it has passed both the policy's stop and the schedule's loops and
its PSNR has fallen ``--margin`` dB below the best so far (or ``max_loops``): DURR's unit gives
PSNR curves that rise to one peak and then fall, so the oracle is the peak. ``--stops oracle
schedule`` leaves the policy out: the paper's Table 1 and Fig. 4 (peak PSNR and the loops at the
peak) for a restoration unit whose policy is not trained (stage 1, or the naive-policy control).
Writes ``NAME.{json,md}`` (``--name``, default ``durr_policy``) to ``--out-dir``.

Usage:
    python benchmarks/durr_policy.py --weights RUN/model.safetensors [--task denoise] [--bench bsd68]
        [--images 8] [--levels 25 35 45 55 65 75] [--stops policy oracle schedule] [--margin 1.0]
        [--threads 1] [--name durr_policy] [--out-dir benchmarks/results]
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

from converge.color import rgb_to_y
from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator
from converge.eval.metrics import psnr
from converge.models.durr import CONTINUE, DURR, STOP
from converge.physics.tasks import make_task
from converge.zoo import load_weights

STOPS = ("policy", "oracle", "schedule")
TASKS = {  # task -> (the task parameter that sets its level, default bench, default levels)
    "denoise": ("sigma", "bsd68", [25, 35, 45, 55, 65, 75]),
    "deblock": ("quality", "live1", [10, 20, 30, 40]),
}


@torch.no_grad()
def follow_trajectory(
    model: DURR, noisy: Tensor, clean: Tensor, level: float, margin: float, stops: tuple[str, ...] = STOPS
) -> dict[str, Any]:
    """PSNR (dB) of every loop of one ``(1, C, H, W)`` image's trajectory and the ``stops`` on it
    (``level``: the true noise sigma or JPEG quality, for the schedule)."""
    config = model.config
    schedule = int(model.scheduled_loops(torch.tensor([level]))[0])
    with_policy = "policy" in stops
    estimate, scores, policy_stop, hidden = noisy, [], None if with_policy else 0, None
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
    every = {"policy": policy_stop, "oracle": oracle, "schedule": min(schedule, len(scores) - 1)}
    loops = {name: every[name] for name in stops}
    return {"psnr_by_loop": scores, "loops": loops, "psnr": {name: scores[n] for name, n in loops.items()}}


def summarise(records: list[dict[str, Any]], stops: tuple[str, ...] = STOPS) -> dict[str, Any]:
    """Means over images of PSNR and loops per stop, each stop's gap to the oracle and the loops
    each image stopped at."""
    summary = {
        f"{kind}_{name}": statistics.fmean(record[kind][name] for record in records)
        for kind in ("psnr", "loops")
        for name in stops
    }
    for name in stops:
        if name != "oracle":
            summary[f"{name}_gap_db"] = summary["psnr_oracle"] - summary[f"psnr_{name}"]
        summary[f"{name}_loops_each"] = [record["loops"][name] for record in records]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a DURR .safetensors with its YAML beside it")
    parser.add_argument("--task", choices=sorted(TASKS), default="denoise")
    parser.add_argument("--bench", help="default: bsd68 for denoise, live1 for deblock")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--levels", type=float, nargs="+", help="noise sigmas or JPEG qualities (default: the paper's)")
    parser.add_argument("--stops", nargs="+", choices=STOPS, default=list(STOPS), help="oracle is always included")
    parser.add_argument("--margin", type=float, default=1.0, help="dB below the best PSNR that ends a trajectory")
    parser.add_argument("--name", default="durr_policy", help="file name of the reports, without suffix")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights)
    if not isinstance(model, DURR):
        raise SystemExit(f"{args.weights} holds a {type(model).__name__}, not a DURR model")
    stops = tuple(name for name in STOPS if name in args.stops or name == "oracle")
    level_name, default_bench, default_levels = TASKS[args.task]
    bench = args.bench or default_bench
    images = [(name, _as_model_channels(clean, model.config.channels)) for name, clean in load_images(bench)]
    images = images[: args.images]
    started, cpu_started = time.perf_counter(), time.process_time()
    levels: dict[str, Any] = {}
    for level in args.levels or default_levels:
        task = make_task(args.task, **{level_name: int(level) if args.task == "deblock" else level})
        records = []
        for name, clean in images:
            noisy, _ = task.degrade(clean, evaluation_generator(bench, name, task.tag))
            record = follow_trajectory(model, noisy, clean, level, args.margin, stops)
            if "policy" in stops and not levels and not records:
                _, info = model.restore(noisy)
                if info.iterations[0] != record["loops"]["policy"]:
                    raise SystemExit(f"restore took {info.iterations[0]} loops, the trajectory's policy stop is "
                                     f"{record['loops']['policy']}: the benchmark no longer follows DURR.restore")
            records.append({"image": name, **record})
        levels[f"{level:g}"] = {"summary": summarise(records, stops), "images": records}
        summary = levels[f"{level:g}"]["summary"]
        said = ", ".join(
            f"{name} {summary[f'psnr_{name}']:.2f} dB / {summary[f'loops_{name}']:.1f} loops" for name in stops
        )
        print(f"{level_name} {level:g}: {said}", file=sys.stderr, flush=True)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "weights": args.weights,
        "model": dict(vars(model.config)),
        "task": args.task,
        "level_name": level_name,
        "bench": bench,
        "stops": list(stops),
        "images": [name for name, _ in images],
        "margin_db": args.margin,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "levels": levels,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / f"{args.name}.md").write_text(markdown(payload))
    print(markdown(payload))


def _as_model_channels(image: Tensor, channels: int) -> Tensor:
    """A colour image read by a gray model becomes its BT.601 luma (``converge eval --color y``)."""
    return rgb_to_y(image) if channels == 1 and image.shape[1] == 3 else image


def markdown(payload: dict[str, Any]) -> str:
    """The per-level table of the JSON payload."""
    stops, level_name = payload["stops"], payload["level_name"]
    gaps = [name for name in stops if name != "oracle"]
    lines = [
        f"# DURR stops vs the oracle stop ({payload['bench']}, first {len(payload['images'])} images)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}; {payload['seconds']} s wall, {payload['cpu_seconds']} s CPU",
        "",
        "Mean PSNR (dB) and mean loops at each stop; gap = oracle PSNR - that stop's PSNR.",
        "",
        f"| {level_name} | " + " | ".join(
            [f"{name} PSNR" for name in stops] + [f"{name} gap" for name in gaps] + [f"{name} loops" for name in stops]
        ) + " |",
        "|---" * (1 + 2 * len(stops) + len(gaps)) + "|",
    ]
    for value, level in payload["levels"].items():
        s = level["summary"]
        cells = [f"{s[f'psnr_{name}']:.2f}" for name in stops] + [f"{s[f'{name}_gap_db']:.3f}" for name in gaps]
        cells += [f"{s[f'loops_{name}']:.1f}" for name in stops]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    lines += ["", "Loops per image (" + " / ".join(stops) + "):", ""]
    for value, level in payload["levels"].items():
        each = zip(*(level["summary"][f"{name}_loops_each"] for name in stops), strict=True)
        lines.append(f"- {level_name} {value}: " + ", ".join("/".join(str(n) for n in loops) for loops in each))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
