"""What DURR's policy can read about JPEG quality: its encoder's pooled features vs block-grid statistics.

For the first ``--images`` images of the bench (LIVE1 by default, read as BT.601 luma), each JPEG
quality's seeded evaluation degradation (as ``converge eval``) is cut into the policy's 40x40 tiles.
Two measurements:

- Linear probes: a ridge regression (weight ``--ridge``) of the quality on each tile's standardised
  inputs, fitted on the tiles of the first half of the images and scored (R^2 per tile, and the mean
  prediction per image) on the other half, for three input sets: ``encoder`` (the mean and standard
  deviation of the policy encoder's maps: what the policy reads without block statistics),
  ``block grid`` (:func:`~converge.models.durr.block_grid_statistics`) and both.
- Trajectories: the restoration unit unfolded for ``--loops`` loops from the central ``--crop``
  pixels of each input (offsets on the 8x8 block grid; whole images take minutes per loop on one
  core), with the mean blockiness (the two ``log(max phase / mean phase)`` statistics averaged, over
  every tile of every crop) after each loop and each crop's best-PSNR loop count: a stopping rule has
  to see the quality and the unit's progress.

Writes ``NAME.{json,md}`` (``--name``, default ``durr_policy_inputs``) to ``--out-dir``.

Usage:
    python benchmarks/durr_policy_inputs.py --weights src/converge/weights/durr-gray-deblock-blind.safetensors
        [--bench live1] [--images 8] [--qualities 10 20 30 40] [--loops 14] [--crop 160] [--name durr_policy_inputs]
"""

from __future__ import annotations

import argparse
import json
import platform
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
from converge.models.durr import DURR, block_grid_statistics, policy_tiles
from converge.physics.tasks import make_task
from converge.zoo import load_weights

INPUT_SETS = ("encoder", "block grid", "both")


def central_crop(image: Tensor, side: int) -> Tensor:
    """The central ``side`` x ``side`` pixels of ``image`` ``(1, C, H, W)`` (at most the image), its
    offsets rounded down to the 8x8 JPEG block grid."""
    height, width = image.shape[-2:]
    top, left = (max(0, height - side) // 2) // 8 * 8, (max(0, width - side) // 2) // 8 * 8
    return image[..., top : top + side, left : left + side]


def encoder_statistics(model: DURR, image: Tensor) -> Tensor:
    """Mean and standard deviation ``(T, 2F)`` of the policy encoder's maps of each tile of ``image``
    ``(1, C, H, W)``: the policy's raw input without its block-grid statistics."""
    return model.policy.pooled(image)[0, :, : 2 * model.config.policy_features]


def probe(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], ridge: float) -> tuple[float, Tensor]:
    """Ridge regression of ``train``'s targets on its standardised inputs; R^2 and predictions on ``test``."""
    inputs, targets = train
    mean, spread = inputs.mean(dim=0), inputs.std(dim=0).clamp_min(1e-6)

    def design(x: Tensor) -> Tensor:
        return torch.cat([(x - mean) / spread, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)

    a = design(inputs)
    weights = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ targets)
    predicted = design(test[0]) @ weights
    r2 = 1.0 - float((predicted - test[1]).square().mean() / test[1].var(unbiased=False))
    return r2, predicted


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a gray DURR .safetensors with its YAML beside it")
    parser.add_argument("--bench", default="live1")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--qualities", type=int, nargs="+", default=[10, 20, 30, 40])
    parser.add_argument("--loops", type=int, default=14)
    parser.add_argument("--crop", type=int, default=160, help="side of the central crop the trajectories follow")
    parser.add_argument("--ridge", type=float, default=1.0)
    parser.add_argument("--name", default="durr_policy_inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights)
    if not isinstance(model, DURR) or model.config.channels != 1:
        raise SystemExit(f"{args.weights} is not a gray DURR model")
    if args.images < 2:
        raise SystemExit("--images must be at least 2: the probes fit on one half and score on the other")
    images = [(name, rgb_to_y(clean) if clean.shape[1] == 3 else clean) for name, clean in load_images(args.bench)]
    images = images[: args.images]
    fitted = set(range(len(images) // 2))
    started, cpu_started = time.perf_counter(), time.process_time()
    inputs: dict[str, dict[bool, list[Tensor]]] = {name: {True: [], False: []} for name in INPUT_SETS}
    targets: dict[bool, list[Tensor]] = {True: [], False: []}
    held_out: list[tuple[int, int, int]] = []  # (quality, image index, tiles) of the scored tiles, in order
    trajectories: dict[str, Any] = {}
    for quality in args.qualities:
        task = make_task("deblock", quality=quality)
        blockiness = torch.zeros(args.loops + 1)
        best_loops = []
        for index, (name, clean) in enumerate(images):
            degraded, _ = task.degrade(clean, evaluation_generator(args.bench, name, task.tag))
            tiled = policy_tiles(degraded)
            encoder, grid = encoder_statistics(model, degraded).double(), block_grid_statistics(tiled).double()
            side = index in fitted
            for set_name, values in zip(INPUT_SETS, (encoder, grid, torch.cat([encoder, grid], dim=1)), strict=True):
                inputs[set_name][side].append(values)
            targets[side].append(torch.full((tiled.shape[0],), float(quality), dtype=torch.float64))
            if not side:
                held_out.append((quality, index, tiled.shape[0]))
            estimate, reference = central_crop(degraded, args.crop), central_crop(clean, args.crop)
            scores = []
            for loop in range(args.loops + 1):
                if loop:
                    estimate = model.unit_step(estimate)
                blockiness[loop] += block_grid_statistics(policy_tiles(estimate))[:, [0, 2]].mean() / len(images)
                scores.append(float(psnr(estimate.clamp(0.0, 1.0), reference)))
            best_loops.append(max(range(len(scores)), key=scores.__getitem__))
        trajectories[str(quality)] = {
            "mean_blockiness": [round(float(value), 4) for value in blockiness],
            "best_loops": best_loops,
        }
        print(f"quality {quality}: best loops {best_loops}", file=sys.stderr, flush=True)
    probes: dict[str, Any] = {}
    for set_name in INPUT_SETS:
        train = (torch.cat(inputs[set_name][True]), torch.cat(targets[True]))
        test = (torch.cat(inputs[set_name][False]), torch.cat(targets[False]))
        r2, predicted = probe(train, test, args.ridge)
        per_image, start = [], 0
        for quality, index, count in held_out:
            per_image.append({"quality": quality, "image": images[index][0],
                              "predicted": round(float(predicted[start : start + count].mean()), 2)})
            start += count
        probes[set_name] = {"inputs": int(train[0].shape[1]), "tile_r2": round(r2, 4), "per_image": per_image}
    payload = {
        "command": "python " + " ".join(sys.argv),
        "weights": args.weights,
        "bench": args.bench,
        "images": [name for name, _ in images],
        "fitted_on": [images[index][0] for index in sorted(fitted)],
        "ridge": args.ridge,
        "crop": args.crop,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "probes": probes,
        "trajectories": trajectories,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / f"{args.name}.md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict[str, Any]) -> str:
    """Probe and trajectory tables of the JSON payload."""
    qualities = list(payload["trajectories"])
    lines = [
        f"# What DURR's policy can read about JPEG quality ({payload['bench']}, first {len(payload['images'])} images)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}; {payload['seconds']} s wall, {payload['cpu_seconds']} s CPU",
        "",
        f"Linear probes of the quality from each 40x40 tile's inputs, fitted on {', '.join(payload['fitted_on'])}, "
        "scored on the other images: R^2 per tile, and the mean predicted quality of each scored image.",
        "",
        "| inputs | count | tile R^2 | " + " | ".join(f"predicted, q {q}" for q in qualities) + " |",
        "|---" * (3 + len(qualities)) + "|",
    ]
    for set_name, result in payload["probes"].items():
        by_quality = {q: [str(round(entry["predicted"])) for entry in result["per_image"] if str(entry["quality"]) == q]
                      for q in qualities}
        lines.append(f"| {set_name} | {result['inputs']} | {result['tile_r2']:.3f} | "
                     + " | ".join(", ".join(by_quality[q]) for q in qualities) + " |")
    loops = len(next(iter(payload["trajectories"].values()))["mean_blockiness"])
    lines += [
        "",
        f"Mean blockiness (log max phase / mean phase) after each loop of the restoration unit on the central "
        f"{payload['crop']}x{payload['crop']} crops, and the loops at each crop's best PSNR:",
        "",
        "| quality | " + " | ".join(str(n) for n in range(loops)) + " | best loops |",
        "|---" * (loops + 2) + "|",
    ]
    for quality, trajectory in payload["trajectories"].items():
        cells = [f"{value:.2f}" for value in trajectory["mean_blockiness"]]
        best = ", ".join(map(str, trajectory["best_loops"]))
        lines.append(f"| {quality} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
