"""Redo on the validation split the choices that were once made on test sets (issue 39, item 3).

Each choice is between weights that the project trained and kept: the runs in ``segments/``, files
that an earlier commit shipped (``git:REV:PATH``, read with ``git show`` into a temporary folder with
their manifest) and the shipped file. Every candidate is scored by ``converge eval`` on the first
``--images`` bsds-val32 images (the 32 BSDS images held out of CBSD432 and absent from Train400) read as
MATLAB grey, at each of the choice's noise levels or JPEG qualities; the candidate with the highest mean
PSNR over the levels wins. The script
says whether the shipped weights are that winner, and writes every report and a summary (JSON and
Markdown) under ``--out``.

    python benchmarks/validation_choices.py --images 8 [--only nerd-s25 groupsc-s25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "src/converge/weights"
OUT = Path(__file__).parent / "results" / "validation_choices"
# name -> (task, noise levels or JPEG qualities, extra eval options, {label: weights file relative to the
# repository root, or git:REV:PATH}); the shipped file comes last. Labels say which run each file is
# (segments/README.md has their recipes).
CHOICES: dict[str, tuple[str, tuple[int, ...], tuple[str, ...], dict[str, str]]] = {
    "nerd-s25": ("denoise", (25,), (), {
        "first run, 10,000 steps": "segments/nerd-denoise-compact/model.safetensors",
        "continued, +8,000 steps": "segments/nerd-denoise-continued-compact/model.safetensors",
        "shipped: continued again, +3,000 steps": f"{SHIPPED}/nerd-gray-s25.safetensors",
    }),
    "groupsc-s25": ("denoise", (25,), (), {
        "36x36 run, 3,500 steps": "segments/groupsc-denoise-compact/model.safetensors",
        "36x36, +1,500 steps": "segments/groupsc-denoise-finetune-compact-s25-continued/model.safetensors",
        "shipped: 44x44 fine-tune, +600 steps": f"{SHIPPED}/groupsc-gray-s25.safetensors",
    }),
    "groupsc-s50": ("denoise", (50,), (), {
        "fine-tune, 600 steps": "segments/groupsc-denoise-finetune-compact-s50/model.safetensors",
        "shipped: +1,500 steps": f"{SHIPPED}/groupsc-gray-s50.safetensors",
    }),
    "durr-denoise-blind": ("denoise", (25, 50), ("--blind",), {
        "policy seed 0": "segments/durr-policy-denoise-continued2/model.safetensors",
        "policy seed 2": "segments/durr-policy-denoise-continued2-seed2/model.safetensors",
        "shipped: policy seed 1": f"{SHIPPED}/durr-gray-denoise-blind.safetensors",
    }),
    "durr-deblock-blind": ("deblock", (10, 20, 30, 40), (), {
        "first policy, encoder statistics only": f"git:25d23d9:{SHIPPED}/durr-gray-deblock-blind.safetensors",
        "shipped: policy that also reads the block grid": f"{SHIPPED}/durr-gray-deblock-blind.safetensors",
    }),
}
# The eval option that sets a task's level (``--sigma``, ``--quality``), which also names it in reports.
LEVEL_TAG = {"denoise": "sigma", "deblock": "quality"}


def materialise(weights: str, folder: Path) -> str:
    """The path ``converge eval`` reads for a candidate: ``weights`` itself, or for ``git:REV:PATH`` the
    file and its ``.yaml`` manifest as commit REV held them, written into ``folder``."""
    if not weights.startswith("git:"):
        return weights
    _, revision, path = weights.split(":", 2)
    target = folder / Path(path).name
    for suffix in (".safetensors", ".yaml"):
        source = Path(path).with_suffix(suffix).as_posix()
        blob = subprocess.run(["git", "show", f"{revision}:{source}"], cwd=ROOT, check=True, capture_output=True)
        target.with_suffix(suffix).write_bytes(blob.stdout)
    return str(target)


def score(weights: str, task: str, level: int, options: tuple[str, ...], images: int, out: Path) -> float:
    """Mean PSNR of ``converge eval`` for one candidate at one noise level or JPEG quality; the report is
    kept in ``out``."""
    command = [sys.executable, "-m", "converge", "eval", "--model", weights, "--bench", "bsds-val32",
               "--task", task, f"--{LEVEL_TAG[task]}", str(level), "--color", "gray", "--limit", str(images),
               *options, "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=ROOT, check=True, env=environment, stdout=subprocess.DEVNULL)
    (report,) = [path for path in out.glob(f"*{LEVEL_TAG[task]}{level}-*.json")]
    return json.loads(report.read_text())["summary"]["psnr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--only", nargs="*", choices=sorted(CHOICES), default=sorted(CHOICES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for name in args.only:
        task, levels, options, candidates = CHOICES[name]
        rows = []
        for index, (label, weights) in enumerate(candidates.items()):
            with tempfile.TemporaryDirectory() as folder:
                path = materialise(weights, Path(folder))
                scores = [score(path, task, level, options, args.images, args.out / name / f"candidate{index}")
                          for level in levels]
            rows.append({"candidate": label, "weights": weights, "psnr": dict(zip(map(str, levels), scores)),
                         "mean": sum(scores) / len(scores)})
            print(name, rows[-1], flush=True)
        winner = max(rows, key=lambda row: row["mean"])
        summary = {"choice": name, "task": task, "images": args.images, "levels": list(levels),
                   "options": list(options),
                   "command": f"python benchmarks/validation_choices.py --images {args.images} --only {name}",
                   "rows": rows, "winner": winner["candidate"], "shipped_wins": winner is rows[-1]}
        (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
        header = " | ".join(f"{LEVEL_TAG[task]} {level}" for level in levels)
        lines = [f"# {name}: candidates on the first {args.images} bsds-val32 images (grey)", "",
                 f"`{summary['command']}`", "", f"| candidate | weights | {header} | mean |",
                 "|---|---|" + "---:|" * (len(levels) + 1)]
        for row in rows:
            cells = " | ".join(f"{row['psnr'][str(level)]:.3f}" for level in levels)
            mark = " **(winner)**" if row is winner else ""
            lines.append(f"| {row['candidate']}{mark} | `{row['weights']}` | {cells} | {row['mean']:.3f} |")
        (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
