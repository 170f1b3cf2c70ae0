"""Restore one very large grey image from the command line and record its peak memory and time.

Writes a ``--side`` x ``--side`` grey PNG (a smooth ramp plus Gaussian noise of level 25) to a
temporary folder, runs ``converge restore`` on it with each ``--models`` entry at its default memory
budget, and records each run's exit code, its output line, the wall time and the peak resident memory
of the process (``RUSAGE_CHILDREN``). Writes ``benchmarks/results/large_image.json``.

    python benchmarks/large_image.py --side 12000 --models dncnn-s25
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).parent / "results" / "large_image.json"


def noisy_ramp(side: int, seed: int = 0) -> np.ndarray:
    """A ``side`` x ``side`` uint8 image: a diagonal ramp with noise of level 25, built in row bands."""
    rng = np.random.default_rng(seed)
    image = np.empty((side, side), dtype=np.uint8)
    columns = np.arange(side, dtype=np.float32)
    for top in range(0, side, 1000):
        rows = np.arange(top, min(top + 1000, side), dtype=np.float32)[:, None]
        ramp = 40.0 + 170.0 * (rows + columns) / (2.0 * side)
        image[top : top + len(rows)] = np.clip(ramp + rng.normal(0.0, 25.0, ramp.shape), 0, 255).astype(np.uint8)
    return image


def run(model: str, source: Path, target: Path) -> dict:
    """One ``converge restore`` in a child process; peak memory read once it has ended."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "converge", "restore", str(source), str(target), "--model", model, "--sigma", "25"]
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "model": model,
        "exit_code": done.returncode,
        "line": (done.stderr.strip().splitlines() or [""])[-1],
        "seconds": round(seconds, 1),
        "peak_rss_bytes": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--models", nargs="+", default=["dncnn-s25"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "large.png"
        Image.fromarray(noisy_ramp(args.side)).save(source)
        for model in args.models:
            # Each model in its own child; RUSAGE_CHILDREN is the largest of them so far, so the models
            # are best run one per invocation when their peaks are to be told apart.
            results.append(run(model, source, Path(folder) / f"restored-{model}.png"))
            print(results[-1], flush=True)
    payload = {
        "command": "python benchmarks/large_image.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "side": args.side,
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
