"""Kill-and-resume and tampered-checkpoint trials of ``converge train``: right or refused, never else.

A small DnCNN run (``configs/dncnn-denoise-compact.yaml`` shrunk by ``--set`` options: 60 steps, a
checkpoint every 3, 4 layers of 8 features, batch 4, fp32, one thread) is trained once without a
stop: the reference. Then:

- **kill trials**: the run is started, killed (SIGKILL) after a random delay, resumed with
  ``--resume``, and killed again with probability one half, until a resume finishes. Its final weights
  must equal the reference's tensor for tensor, its folder must hold no temporary file, and the
  finishing process must exit 0 without a traceback.
- **tamper trials**: a checkpoint of the reference run (taken at step 30) is damaged (one flipped bit,
  truncation, zero bytes, random bytes, garbage appended, or a torn last line of ``log.jsonl``) and
  resumed. The trial is right when the resume refuses with exit 2 and one ``error:`` line, or
  finishes with the reference's weights; anything else is a violation.

Writes ``benchmarks/results/kill_resume.json``; the counts go into ``docs/reliability.md``.

    python benchmarks/kill_resume.py --kills 20 --tampers 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "kill_resume.json"
SETTINGS = (
    "steps=60", "checkpoint_every=3", "log_every=3", "model.params.depth=4", "model.params.features=8",
    "data.batch_size=4", "precision=fp32", "channels_last=false", "eval.every=1000",
)
DAMAGES = ("bit flip", "truncated", "zero bytes", "random bytes", "garbage appended", "torn log line")


def train(run_dir: Path, resume: bool, until: int | None = None) -> subprocess.Popen:
    """Start ``converge train`` on the small run in ``run_dir``."""
    words = [sys.executable, "-m", "converge", "train", str(ROOT / "configs" / "dncnn-denoise-compact.yaml"),
             "--run-dir", str(run_dir), "--threads", "1"]
    for setting in SETTINGS:
        words += ["--set", setting]
    words += ["--resume"] if resume else []
    words += [] if until is None else ["--until", str(until)]
    return subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def same_weights(path: Path, reference: dict) -> bool:
    if not path.is_file():
        return False
    found = tensors(path)
    return found.keys() == reference.keys() and all(bool((found[k] == reference[k]).all()) for k in reference)


def kill_trial(folder: Path, reference: dict, rng: random.Random, longest: float) -> dict:
    """Start, kill after a random delay, resume (killed again half the time) until a resume finishes."""
    kills = 0
    process = train(folder, resume=False)
    while True:
        try:
            process.wait(timeout=rng.uniform(0.5, longest))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            kills += 1
            process = train(folder, resume=(folder / "checkpoint.pt").is_file())
            if rng.random() < 0.5:
                continue
            _, stderr = process.communicate()
            break
        _, stderr = process.communicate()
        break
    leftovers = sorted(path.name for path in folder.iterdir() if ".tmp" in path.name)
    right = process.returncode == 0 and "Traceback" not in stderr and not leftovers
    right = right and same_weights(folder / "model.safetensors", reference)
    return {"kills": kills, "exit": process.returncode, "leftovers": leftovers, "right": right}


def damage(folder: Path, kind: str, rng: random.Random) -> None:
    """Damage the checkpoint (or the log) in ``folder`` in the way ``kind`` names."""
    checkpoint = folder / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    if kind == "bit flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncated":
        data = data[: rng.randrange(len(data))]
    elif kind == "zero bytes":
        data = bytearray()
    elif kind == "random bytes":
        data = bytearray(rng.randbytes(len(data)))
    elif kind == "garbage appended":
        data += rng.randbytes(rng.randrange(1, 4096))
    else:
        log = folder / "log.jsonl"
        text = log.read_text()
        log.write_text(text[: len(text) - rng.randrange(2, 40)])
    checkpoint.write_bytes(bytes(data))


def tamper_trial(folder: Path, kind: str, reference: dict, rng: random.Random) -> dict:
    damage(folder, kind, rng)
    process = train(folder, resume=True)
    _, stderr = process.communicate()
    lines = stderr.strip().splitlines()
    refused = process.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    finished = process.returncode == 0 and same_weights(folder / "model.safetensors", reference)
    return {"damage": kind, "exit": process.returncode, "refused": refused, "finished_right": finished,
            "right": (refused or finished) and "Traceback" not in stderr, "said": lines[-1] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--tampers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        process = train(scratch / "reference", resume=False)
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"the reference run failed: {stderr.strip().splitlines()[-1:]}")
        longest = time.perf_counter() - start
        reference = tensors(scratch / "reference" / "model.safetensors")
        midway = scratch / "midway"
        process = train(midway, resume=False, until=30)
        process.communicate()
        kills = []
        for index in range(args.kills):
            kills.append(kill_trial(scratch / f"kill{index}", reference, rng, longest))
            print("kill", index, kills[-1], flush=True)
        tampers = []
        for index in range(args.tampers):
            folder = scratch / f"tamper{index}"
            shutil.copytree(midway, folder)
            tampers.append(tamper_trial(folder, DAMAGES[index % len(DAMAGES)], reference, rng))
            print("tamper", index, tampers[-1], flush=True)
    payload = {
        "command": f"python benchmarks/kill_resume.py --kills {args.kills} --tampers {args.tampers}",
        "machine": f"{os.cpu_count()} cores",
        "kill_trials": len(kills),
        "kills": sum(trial["kills"] for trial in kills),
        "kill_trials_right": sum(trial["right"] for trial in kills),
        "tamper_trials": len(tampers),
        "tampers_refused": sum(trial["refused"] for trial in tampers),
        "tampers_finished_right": sum(trial["finished_right"] for trial in tampers),
        "violations": sum(not trial["right"] for trial in kills + tampers),
        "trials": {"kill": kills, "tamper": tampers},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    print({key: value for key, value in payload.items() if key != "trials"})


if __name__ == "__main__":
    main()
