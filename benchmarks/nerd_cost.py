"""NERD's cost: training memory against an explicit unrolled twin, and CPU inference time.

- ``memory``: one training step (forward, MSE loss, backward) of the same NERD layer trained two
  ways, each in a fresh subprocess so its peak resident memory (``VmHWM``) is its own: the DEQ as
  the config trains it (Broyden forward without a graph, phantom-gradient backward through ``T``
  damped steps) and its explicit twin, 17 plain steps from ``z = 0`` all kept for backpropagation
  (``backward="unroll"``). Reports the bytes autograd saved for backward and the peak RSS increase
  over the process before the step, for the ``compact`` setting (48 features, q = 15, batch 8 of
  40x40) and the ``paper`` setting (128 features, q = 65, one 48x48 patch: at the paper's batch of 4 64x64 patches
  the twin needs more than this machine's 24 GiB).
- ``speed``: wall time of ``model.restore`` on the first 256x256 image of Set12 at sigma 25 with
  the weights' solver settings, 1 and 2 threads, median of 3 runs after one warm-up, with the
  iterations the solver took.

Writes ``nerd_cost.{json,md}`` to ``--out-dir``.

Usage:
    python benchmarks/nerd_cost.py [--weights nerd-s25 | PATH.safetensors] [--settings compact paper]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SETTINGS: dict[str, dict[str, Any]] = {
    "compact": {
        "model": {"features": 48, "heads": 4, "groups": 4, "window": 15, "expansion": 2,
                  "max_iter": 17, "phantom_steps": 6},
        "batch": 8,
        "patch": 40,
    },
    "paper": {
        "model": {"features": 128, "heads": 4, "groups": 4, "window": 65, "expansion": 4,
                  "max_iter": 17, "phantom_steps": 8},
        # The paper trains batch 4 of 64x64; at q = 65 every unrolled step keeps 4225 attention
        # weights per pixel and head (1.1 GB per step at that size), so the twin would not fit in
        # this machine's 24 GiB next to other jobs: one 48x48 patch keeps the ratio measurable.
        "batch": 1,
        "patch": 48,
    },
}
UNROLLED_STEPS = 17


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB (``VmHWM``: not inherited across ``exec``)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def memory_worker(setting: str, backward: str) -> dict[str, Any]:
    """One training step of ``setting`` with ``backward`` (``phantom`` or ``unroll``)."""
    from converge.models.nerd import NERD, NERDConfig

    spec = SETTINGS[setting]
    params = dict(spec["model"])
    if backward == "unroll":
        params["max_iter"] = UNROLLED_STEPS
    torch.manual_seed(0)
    model = NERD(NERDConfig(backward=backward, **params)).train()
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(spec["batch"], 1, spec["patch"], spec["patch"], generator=generator)
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=generator)
    baseline = peak_rss_kib()
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
    loss.backward()
    seconds = time.perf_counter() - start
    return {
        "setting": setting,
        "backward": backward,
        "forward_steps": params["max_iter"],
        "phantom_steps": params["phantom_steps"] if backward == "phantom" else None,
        "saved_mib": sum(storages.values()) / 2**20,
        "peak_rss_increase_mib": (peak_rss_kib() - baseline) / 1024,
        "step_seconds": seconds,
    }


def memory_rows(settings: list[str], threads: int) -> list[dict[str, Any]]:
    rows = []
    for setting in settings:
        for backward in ("phantom", "unroll"):
            command = [sys.executable, __file__, "--memory-worker", setting, backward, "--threads", str(threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"{setting} {backward}: saved {row['saved_mib']:.0f} MiB, peak RSS +{row['peak_rss_increase_mib']:.0f} "
                  f"MiB, {row['step_seconds']:.1f} s", file=sys.stderr, flush=True)
    return rows


def speed_rows(weights: str, thread_counts: list[int]) -> list[dict[str, Any]]:
    from converge.data.registry import load_images
    from converge.data.seeding import evaluation_generator
    from converge.physics.tasks import make_task
    from converge.zoo import load_model, load_weights

    model = load_weights(weights) if weights.endswith(".safetensors") else load_model(weights)
    task = make_task("denoise", sigma=25)
    name, clean = next((name, image) for name, image in load_images("set12") if image.shape[-2:] == (256, 256))
    noisy, _ = task.degrade(clean, evaluation_generator("set12", name, task.tag))
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        model.restore(noisy)
        times, iterations = [], []
        for _ in range(3):
            _, info = model.restore(noisy)
            times.append(info.seconds)
            iterations.append(info.iterations[0])
        rows.append({"image": name, "threads": threads, "seconds": statistics.median(times), "times": times,
                     "iterations": iterations})
        print(f"{threads} thread(s): {statistics.median(times):.2f} s per 256x256 image", file=sys.stderr, flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# NERD cost",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}",
        "",
        "Training step memory, DEQ (phantom gradient) vs its explicit 17-step unrolled twin:",
        "",
        "| setting | backward | forward steps | saved for backward (MiB) | peak RSS increase (MiB) | step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in payload["memory"]:
        mode = f"phantom T={row['phantom_steps']}" if row["backward"] == "phantom" else "unrolled"
        lines.append(f"| {row['setting']} | {mode} | {row['forward_steps']} | {row['saved_mib']:.0f} | "
                     f"{row['peak_rss_increase_mib']:.0f} | {row['step_seconds']:.1f} |")
    lines += ["", "| setting | unrolled / DEQ saved bytes | unrolled / DEQ peak RSS increase |", "|---|---|---|"]
    for setting, ratio in payload["memory_ratios"].items():
        lines.append(f"| {setting} | {ratio['saved']:.2f} | {ratio['peak_rss']:.2f} |")
    if payload["speed"]:
        lines += ["", f"Inference on one 256x256 image ({payload['weights']}, sigma 25):", "",
                  "| threads | seconds (median of 3) | iterations |", "|---|---|---|"]
        for row in payload["speed"]:
            lines.append(f"| {row['threads']} | {row['seconds']:.2f} | {row['iterations'][0]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="nerd-s25")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="threads for the memory workers")
    parser.add_argument("--speed-threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--memory-worker", nargs=2, metavar=("SETTING", "BACKWARD"), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(*args.memory_worker)))
        return
    memory = memory_rows(args.settings, args.threads)
    ratios = {}
    for setting in args.settings:
        deq, twin = (next(row for row in memory if row["setting"] == setting and row["backward"] == mode)
                     for mode in ("phantom", "unroll"))
        ratios[setting] = {"saved": twin["saved_mib"] / deq["saved_mib"],
                           "peak_rss": twin["peak_rss_increase_mib"] / deq["peak_rss_increase_mib"]}
    payload = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "weights": args.weights,
        "memory": memory,
        "memory_ratios": ratios,
        "speed": speed_rows(args.weights, args.speed_threads) if args.speed_threads else [],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "nerd_cost.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / "nerd_cost.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
