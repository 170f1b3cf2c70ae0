"""GroupSC's speed/accuracy trade-off: seconds per image and PSNR against the inference block stride.

The layout of the paper's Tables 1 and 12 (gray denoising, time per image and PSNR for block strides
56 / 48 / 24 / 12 on a Titan RTX), for the three penalties on the first Set12 images at sigma 25 with
the evaluation protocol's seeded noise:

- ``sc`` codes every patch independently, so it restores the whole image at once and has no stride;
- ``csr`` and ``group`` restore overlapping blocks (``block`` pixels, one ``stride`` apart); a larger
  stride means fewer blocks, a faster restoration and more truncated non-local windows.

Models: ``--weights`` files (one per penalty, each built from its YAML), or else untrained models with
the hyper-parameters of ``--config`` whose dictionary is learned from Train400 patches (the trainer's
initialisation, one dictionary shared by the penalties) and whose thresholds are the starting ones.
CPU seconds (``time.process_time``) are the cost of an image whatever else runs on the machine; wall
seconds also show how much of a core the process got.

Writes ``groupsc_speed.{json,md}`` to ``--out-dir``.

Usage:
    python benchmarks/groupsc_speed.py [--config configs/groupsc-denoise-compact.yaml]
        [--weights A.safetensors ...] [--penalties sc csr group] [--images 3] [--crop 128]
        [--strides 30 24 12] [--sigma 25] [--threads 1] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator, stable_seed
from converge.eval.metrics import psnr
from converge.models.groupsc import GroupSC, GroupSCConfig
from converge.physics.tasks import make_task
from converge.zoo import load_weights

# The paper's Table 12 (gray denoising, sigma 15, BSD68, Titan RTX GPU), GroupSC with middle averaging
# and similarities refreshed every 6 steps: stride -> (seconds per image, PSNR).
PAPER_TABLE_12 = {56: (1.77, 31.39), 48: (2.35, 31.67), 24: (8.25, 31.69), 12: (30.05, 31.71)}


def untrained_models(config_path: Path, penalties: list[str], seed: int) -> dict[str, GroupSC]:
    """One model per penalty with ``config_path``'s hyper-parameters and one dictionary learned from Train400."""
    params = yaml.safe_load(config_path.read_text())["model"]["params"]
    base = GroupSC(GroupSCConfig(**{**params, "penalty": penalties[0]}))
    channels = base.config.channels
    images = [image for _, image in load_images("cbsd432" if channels == 3 else "train400")]
    base.initialise_from_data(images, torch.Generator().manual_seed(stable_seed("initialise-from-data", seed)))
    models = {penalties[0]: base.eval()}
    for penalty in penalties[1:]:
        model = GroupSC(GroupSCConfig(**{**params, "penalty": penalty}))
        model.set_dictionary(base.dictionary.detach())
        models[penalty] = model.eval()
    return models


def trained_models(paths: list[str]) -> dict[str, GroupSC]:
    models = {}
    for path in paths:
        model = load_weights(path)
        if not isinstance(model, GroupSC):
            raise SystemExit(f"{path} holds a {type(model).__name__}, not a GroupSC model")
        models[model.config.penalty] = model
    return models


def measure(model: GroupSC, noisy: torch.Tensor, clean: torch.Tensor, stride: int | None) -> dict[str, Any]:
    started = time.process_time()
    restored, info = model.restore(noisy, stride=stride)
    return {
        "cpu_seconds": time.process_time() - started,
        "wall_seconds": info.seconds,
        "psnr": float(psnr(restored, clean)[0]),
        "blocks": info.extra["blocks"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = trained_models(args.weights) if args.weights else untrained_models(args.config, args.penalties, args.seed)
    task = make_task("denoise", sigma=args.sigma)
    channels = next(iter(models.values())).config.channels
    bench = "set12" if channels == 1 else "kodak24"
    images = [(name, image) for name, image in load_images(bench)][: args.images]
    rows = []
    for name, clean in images:
        if args.crop is not None:
            top, left = ((size - args.crop) // 2 for size in clean.shape[-2:])
            clean = clean[..., top : top + args.crop, left : left + args.crop]
        noisy, _ = task.degrade(clean, evaluation_generator(bench, name, task.tag))
        for penalty, model in models.items():
            strides = [None] if penalty == "sc" else args.strides
            for stride in strides:
                row = {"image": name, "size": list(clean.shape[-2:]), "penalty": penalty, "stride": stride,
                       **measure(model, noisy, clean, stride)}
                rows.append(row)
                label = "whole image" if stride is None else f"stride {stride}"
                print(f"{name} {penalty} {label}: {row['cpu_seconds']:.1f} s CPU, {row['wall_seconds']:.1f} s wall, "
                      f"{row['psnr']:.2f} dB, {row['blocks']} blocks", file=sys.stderr, flush=True)
    return {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "models": args.weights or f"untrained, learned-dictionary start, {args.config}",
        "config": {penalty: dataclasses.asdict(model.config) for penalty, model in models.items()},
        "bench": bench,
        "sigma": args.sigma,
        "rows": rows,
        "paper_table_12": {str(stride): value for stride, value in PAPER_TABLE_12.items()},
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over images per (penalty, stride), in the order first met."""
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["penalty"], row["stride"]), []).append(row)
    return [
        {
            "penalty": penalty,
            "stride": stride,
            "images": len(members),
            "blocks": members[0]["blocks"],
            **{key: sum(row[key] for row in members) / len(members) for key in ("cpu_seconds", "wall_seconds", "psnr")},
        }
        for (penalty, stride), members in groups.items()
    ]


def markdown(payload: dict[str, Any]) -> str:
    sizes = sorted({tuple(row["size"]) for row in payload["rows"]})
    first = next(iter(payload["config"].values()))
    lines = [
        "# GroupSC inference speed against block stride",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Models: {payload['models']}  ",
        f"Images: {payload['bench']}, {', '.join(sorted({row['image'] for row in payload['rows']}))} "
        f"({', '.join(f'{h}x{w}' for h, w in sizes)}), Gaussian noise sigma {payload['sigma']:g} (evaluation seeds).  ",
        f"Model sizes: {first['patch_size']}x{first['patch_size']} patches, {first['atoms']} atoms, "
        f"K = {first['steps']}, window/block {first['window']}/{first['block']} pixels, "
        f"similarities every {first['similarity_every']} steps.",
        "",
        "Means over the images. CPU seconds count this process only; `sc` codes the whole image "
        "(no blocks, no stride).",
        "",
        "| penalty | stride | blocks per image | CPU s / image | wall s / image | PSNR (dB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary(payload["rows"]):
        stride = "whole image" if row["stride"] is None else str(row["stride"])
        lines.append(f"| {row['penalty']} | {stride} | {row['blocks']} | {row['cpu_seconds']:.2f} | "
                     f"{row['wall_seconds']:.2f} | {row['psnr']:.2f} |")
    lines += [
        "",
        "The paper's Table 12 (GroupSC, 9x9 patches, window 56, middle averaging, similarities every 6 steps; "
        "gray BSD68 at sigma 15; Titan RTX GPU; trained):",
        "",
        "| stride | s / image | PSNR (dB) |",
        "|---:|---:|---:|",
    ]
    for stride, (seconds, decibels) in payload["paper_table_12"].items():
        lines.append(f"| {stride} | {seconds:.2f} | {decibels:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/groupsc-denoise-compact.yaml"))
    parser.add_argument("--weights", nargs="*", default=[], help="GroupSC .safetensors files, one per penalty")
    parser.add_argument("--penalties", nargs="+", default=["sc", "csr", "group"], choices=["sc", "csr", "group"])
    parser.add_argument("--images", type=int, default=3, help="the first N images of the set")
    parser.add_argument("--crop", type=int, default=None, help="restore a centred square of this side instead")
    parser.add_argument("--strides", type=int, nargs="+", default=[30, 24, 18, 12])
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    payload = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "groupsc_speed.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / "groupsc_speed.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
