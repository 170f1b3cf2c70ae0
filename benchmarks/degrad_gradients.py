"""DE-GRAD's gradient modes compared on equal wall-clock: what each training step costs and what it buys.

Reads the run folders of ``converge train configs/degrad-deblur-compact.yaml`` made with one backward
mode each (``--set model.params.backward=jfb|ift|phantom|unroll``, same data, seed and start) and writes,
per run: the steps done, seconds per step, the forward solve's mean evaluations of f and the peak memory
(from the training log's ``forward_iterations`` and ``peak_memory_mib``), the best validation PSNR,
and the validation PSNR reached within the shortest run's training time (the last evaluation at or
before it), so that every mode is judged on the same wall-clock budget. Writes
``benchmarks/results/degrad_gradients.{json,md}`` and, with matplotlib (the ``bench`` extra), a
PSNR-against-training-time plot ``docs/models/degrad_gradients.png``.

    python benchmarks/degrad_gradients.py jfb=../runs/degrad-jfb ift=../runs/degrad-ift \\
        phantom=../runs/degrad-phantom unroll=../runs/degrad-unroll
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from converge.atomic import write_json_and_markdown

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "degrad_gradients"
PLOT = ROOT / "docs" / "models" / "degrad_gradients.png"


def read_run(label: str, folder: Path) -> dict[str, Any]:
    """One run's figures from its ``log.jsonl`` and ``config.yaml``."""
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    training = [record for record in records if "loss" in record and "seconds" in record]
    if not training:
        raise SystemExit(f"{folder}: no training records in log.jsonl")
    seconds_at = {record["step"]: record["seconds"] for record in training}
    curve = [(seconds_at[record["step"]], record["eval_psnr"]) for record in records
             if "eval_psnr" in record and record["step"] in seconds_at]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    last = training[-1]
    iterations = [record["forward_iterations"] for record in training if "forward_iterations" in record]
    memory = [record["peak_memory_mib"] for record in training if "peak_memory_mib" in record]
    return {
        "label": label,
        "folder": str(folder),
        "backward": config["model"]["params"].get("backward", "jfb"),
        "steps": last["step"],
        "seconds": last["seconds"],
        "seconds_per_step": last["seconds"] / last["step"],
        "forward_iterations": statistics.fmean(iterations) if iterations else None,
        "peak_memory_mib": max(memory) if memory else None,
        "curve": curve,
        "best_psnr": max((psnr for _, psnr in curve), default=None),
    }


def at_budget(run: dict[str, Any], budget: float) -> float | None:
    """The run's validation PSNR at its last evaluation within ``budget`` seconds of training."""
    reached = [psnr for seconds, psnr in run["curve"] if seconds <= budget]
    return reached[-1] if reached else None


def markdown(runs: list[dict[str, Any]], budget: float, command: str) -> str:
    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    lines = [
        "# DE-GRAD: the gradient modes on equal wall-clock",
        "",
        f"Made by `{command}`. Each run: `configs/degrad-deblur-compact.yaml` with its backward mode, the same "
        "data, seed and pretrained start. Validation: the config's `bsds-val32` images under the paper's blur "
        f"and noise. Equal budget: {budget / 60:.0f} min of training steps (the shortest run).",
        "",
        "| mode | steps | s / step | forward evaluations of f | peak MiB | val PSNR at the budget | best val PSNR |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {_name(run)} | {run['steps']} | {run['seconds_per_step']:.2f} | "
            f"{cell(run['forward_iterations'], '.1f')} | {cell(run['peak_memory_mib'], '.0f')} | "
            f"{cell(at_budget(run, budget), '.2f')} | {cell(run['best_psnr'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def _name(run: dict[str, Any]) -> str:
    """The run's label, and its backward mode where the label does not say it."""
    return run["label"] if run["label"] == run["backward"] else f"{run['label']} ({run['backward']})"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        if run["curve"]:
            minutes, psnrs = zip(*((seconds / 60, psnr) for seconds, psnr in run["curve"]))
            axes.plot(minutes, psnrs, marker="o", label=_name(run))
    axes.set_xlabel("training time (min, one CPU thread)")
    axes.set_ylabel("validation PSNR (dB)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER, one per backward mode")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    args = parser.parse_args()
    pairs = [run.split("=", 1) for run in args.runs]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("give each run as LABEL=RUN_FOLDER")
    runs = [read_run(label, Path(folder)) for label, folder in pairs]
    budget = min(run["seconds"] for run in runs)
    command = "python benchmarks/degrad_gradients.py " + " ".join(args.runs)
    payload = {"command": command, "budget_seconds": budget,
               "runs": [{**run, "psnr_at_budget": at_budget(run, budget)} for run in runs]}
    write_json_and_markdown(OUT, payload, markdown(runs, budget, command))
    if not args.no_plot:
        plot(runs, PLOT)
    print(markdown(runs, budget, command))


if __name__ == "__main__":
    main()
