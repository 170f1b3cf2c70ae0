"""A larger fuzz run than CI's: mutated image files through the reader and random command lines through
the CLI (``tests/fuzz_cases.py``), counted by outcome. Writes ``benchmarks/results/fuzz.json`` with the
counts, the slowest trials and every violation of the rule (a result or one clean refusal).

    python benchmarks/fuzz.py --reads 60000 --commands 3000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_cases import cli_trial, read_trial, small_images  # noqa: E402

OUT = Path(__file__).parent / "results" / "fuzz.json"


def run(trials: int, trial, *arguments) -> dict:
    counts = {"result": 0, "refused": 0, "violation": 0}
    violations, slowest = [], []
    start = time.perf_counter()
    for _ in range(trials):
        outcome = trial(*arguments)
        counts[outcome.kind] += 1
        if outcome.kind == "violation":
            violations.append(outcome.detail)
        slowest = sorted([*slowest, (outcome.seconds, outcome.trial)], reverse=True)[:5]
    return {
        "trials": trials,
        **counts,
        "seconds": round(time.perf_counter() - start, 1),
        "slowest": [{"seconds": round(seconds, 2), "trial": trial} for seconds, trial in slowest],
        "violations": violations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=6000)
    parser.add_argument("--commands", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        reads = run(args.reads, read_trial, root, random.Random(args.seed))
        print("reads", {key: value for key, value in reads.items() if key != "slowest"}, flush=True)
        sources = small_images(root, random.Random(args.seed + 1))
        commands = run(args.commands, cli_trial, root, sources, random.Random(args.seed))
        print("commands", {key: value for key, value in commands.items() if key != "slowest"}, flush=True)
    payload = {
        "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "reads": reads,
        "commands": commands,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
