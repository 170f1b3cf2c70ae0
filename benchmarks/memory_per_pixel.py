"""Peak memory per pixel of each shipped model at inference, the figure automatic tiling plans with.

Each zoo entry runs in a fresh process with one torch thread: it restores a 64x64 image (so the
weights, the code paths and their buffers are in place), then a ``--side`` x ``--side`` one of the
entry's own channels and task (degraded by the task, at the entry's own level); the growth of the
process's peak resident memory between the two, divided by the larger image's pixels, is the entry's
bytes per pixel (GroupSC entries are left out, see ``UNMEASURED``, and so are priors that restore
through a plug-and-play algorithm, MTDEQ: ``--model mtdeq`` is never tiled). Writes
``benchmarks/results/memory_per_pixel.json`` (entries measured now replace their earlier figures);
the figures are copied into ``memory_bytes_per_pixel`` in each weights manifest's ``zoo`` section,
which a test checks against this file.

    python benchmarks/memory_per_pixel.py --side 512
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "results" / "memory_per_pixel.json"
WARM_SIDE = 64
# GroupSC restores block by block: its peak grew by between 0 and 23 MB from a 64x64 to a 192x192 image
# (RSS noise, not a per-pixel cost), so it gets no figure and the budget neither tiles nor refuses it.
UNMEASURED = {"groupsc"}


def measure(name: str, side: int) -> dict:
    """In this process: the peak-memory growth of restoring a ``side`` x ``side`` image with ``name``."""
    import resource

    import torch

    from converge import zoo
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer

    torch.set_num_threads(1)
    entry = zoo.ZOO[name]
    task_name, params = zoo.trained_degradation(name)
    task = make_task(task_name, **params)
    restorer = make_restorer(name, task)
    generator = torch.Generator().manual_seed(0)

    def restore(size: int) -> None:
        clean = torch.rand(1, entry.channels, size, size, generator=generator)
        observed, operator = task.degrade(clean, generator)
        restorer(observed, operator)

    restore(WARM_SIDE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    restore(side)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "name": name,
        "side": side,
        "baseline_bytes": before,
        "peak_bytes": after,
        "bytes_per_pixel": round((after - before) / side**2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--names", nargs="*", help="zoo entries (default: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.side)))
        return
    from converge import zoo

    results = []
    for name in args.names or list(zoo.ZOO):
        if zoo.ZOO[name].model in UNMEASURED or zoo.ZOO[name].algorithm is not None:
            continue
        command = [sys.executable, __file__, "--one", name, "--side", str(args.side)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    # Entries measured now replace their earlier figures; the others keep theirs.
    measured = {result["name"] for result in results}
    earlier = json.loads(OUT.read_text())["results"] if OUT.is_file() else []
    results = [result for result in earlier if result["name"] not in measured and result["name"] in zoo.ZOO] + results
    payload = {
        "command": "python benchmarks/memory_per_pixel.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "results": sorted(results, key=lambda result: result["name"]),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
