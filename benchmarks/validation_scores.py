"""Score every shipped model family on the validation split, the scores `converge restore` chooses by.

For each setting (grey and colour denoising at sigma 15, 25 and 50; grey JPEG deblocking at quality
10, 20, 30 and 40; colour demosaicking) and each model family with weights for that task and channel
count, ``converge eval --model FAMILY --bench bsds-val32 --limit IMAGES`` (grey settings on the
BT.601 luma, ``--color y``; one torch thread) writes its report under
``benchmarks/results/validation/``. The entry the family picked gets, in the ``zoo`` section of its
weights manifest, one ``validation`` record per setting: task, channels, level, mean PSNR, images, the
command and its report (speed is not taken from these runs, which may share the machine: it comes from
``benchmarks/inference_speed.py``). A test checks every record against its report. ``--collect`` only
rewrites the manifests from the reports already there.

    python benchmarks/validation_scores.py --images 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("benchmarks/results/validation")
BENCH = "bsds-val32"
SETTINGS = (
    *(("denoise", 1, level) for level in (15, 25, 50)),
    *(("denoise", 3, level) for level in (15, 25, 50)),
    *(("deblock", 1, level) for level in (10, 20, 30, 40)),
    ("demosaic", 3, None),
)


def families(task: str, channels: int) -> list[str]:
    """The model families with weights for ``task`` on ``channels``-channel images."""
    from converge import zoo

    return sorted({entry.model for entry in zoo.ZOO.values() if entry.task == task and entry.channels == channels})


def command(family: str, task: str, channels: int, level: int | None, images: int) -> list[str]:
    """The `converge eval` arguments of one family at one setting."""
    words = ["eval", "--model", family, "--bench", BENCH, "--task", task, "--limit", str(images), "--out", str(OUT)]
    if level is not None:
        words += ["--quality" if task == "deblock" else "--sigma", str(level)]
    return words + (["--color", "y"] if channels == 1 else [])


def run(images: int) -> None:
    """Every family at every setting, skipping those whose report is already there."""
    for task, channels, level in SETTINGS:
        for family in families(task, channels):
            words = command(family, task, channels, level, images)
            if _report_of(words) is not None:
                continue
            print("running: converge " + " ".join(words), flush=True)
            environment = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run([sys.executable, "-m", "converge", *words], cwd=ROOT, check=True, env=environment)


def collect(images: int) -> dict[str, list[dict]]:
    """The validation records of every zoo entry, from the reports; written into the manifests."""
    records: dict[str, list[dict]] = {}
    for task, channels, level in SETTINGS:
        for family in families(task, channels):
            words = command(family, task, channels, level, images)
            path = _report_of(words)
            if path is None:
                continue
            payload = json.loads((ROOT / path).read_text())
            picked = {row["model"] for row in payload["images"]}
            if len(picked) != 1:
                continue  # a family that picked different entries per image has no one entry to credit
            summary = payload["summary"]
            records.setdefault(picked.pop(), []).append({
                "task": task,
                "channels": channels,
                "level": level,
                "psnr": round(summary["psnr"], 3),
                "images": summary["images"],
                "command": payload["protocol"]["command"],
                "report": str(path),
            })
    _write_manifests(records)
    return records


def _report_of(words: list[str]) -> Path | None:
    """The JSON report a `converge eval` command wrote under OUT (matched by its recorded command)."""
    wanted = "converge " + " ".join(words)
    for path in sorted((ROOT / OUT).glob("*.json")) if (ROOT / OUT).is_dir() else ():
        if json.loads(path.read_text())["protocol"]["command"] == wanted:
            return path.relative_to(ROOT)
    return None


def _write_manifests(records: dict[str, list[dict]]) -> None:
    """Replace the ``validation`` records of every zoo entry's manifest (none where ``records`` has none)."""
    from converge import zoo

    for name in zoo.ZOO:
        zoo.record_measurements(name, validation=records.get(name, []))

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--collect", action="store_true", help="only rewrite the manifests from the reports")
    args = parser.parse_args()
    if not args.collect:
        run(args.images)
    for name, entries in sorted(collect(args.images).items()):
        for record in entries:
            print(name, record["task"], record["channels"], record["level"], record["psnr"])


if __name__ == "__main__":
    main()
