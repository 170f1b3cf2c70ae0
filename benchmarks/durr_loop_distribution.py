"""How many loops DURR's policy chooses, image by image, per degradation level.

Reads ``converge eval`` reports of a blind DURR model (the cells of ``converge bench durr-table2`` or
``durr-table3``, one report per level) and tabulates, per level (noise sigma or JPEG quality), the
per-image loop counts (each report's ``iterations``): mean, minimum, quartiles, maximum and the
count of images at each loop number. Writes ``NAME.{json,md}`` (``--name``, default
``durr_loop_distribution``) to ``--out-dir`` and, with ``--plot``, a PNG of one histogram per level
(needs matplotlib, the ``bench`` extra). No model is run: the reports already hold the loops.

Usage:
    python benchmarks/durr_loop_distribution.py REPORT.json [REPORT.json ...]
        [--name durr_loop_distribution] [--out-dir benchmarks/results] [--plot docs/models/PNG]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from converge.atomic import write_text_atomic

LEVEL_NAMES = {"denoise": "sigma", "deblock": "quality"}


def level_of(report: dict[str, Any]) -> tuple[str, float]:
    """``(level name, level)`` of an eval report: its noise sigma or its JPEG quality."""
    name = LEVEL_NAMES.get(report["task"])
    if name is None or name not in report["task_params"]:
        raise SystemExit(f"not a denoising or deblocking report: task {report['task']!r}, {report['task_params']}")
    return name, float(report["task_params"][name])


def distribution(loops: list[int]) -> dict[str, Any]:
    """Summary of one level's per-image loop counts."""
    lower, median, upper = statistics.quantiles(loops, n=4, method="inclusive") if len(loops) > 1 else loops * 3
    return {
        "images": len(loops),
        "mean": statistics.fmean(loops),
        "min": min(loops),
        "quartile_1": lower,
        "median": median,
        "quartile_3": upper,
        "max": max(loops),
        "histogram": {str(count): number for count, number in sorted(Counter(loops).items())},
    }


def collect(paths: list[Path]) -> dict[str, Any]:
    """Per-level distributions of the reports, which must share a model, bench and task."""
    reports = [json.loads(path.read_text()) for path in paths]
    first = reports[0]
    levels: dict[str, Any] = {}
    for path, report in zip(paths, reports):
        if (report["model"], report["bench"], report["task"]) != (first["model"], first["bench"], first["task"]):
            raise SystemExit(f"{path}: another model, bench or task than {paths[0]}")
        _, level = level_of(report)
        loops = [round(image["iterations"]) for image in report["images"]]
        levels[f"{level:g}"] = {"report": str(path), **distribution(loops)}
    ordered = dict(sorted(levels.items(), key=lambda item: float(item[0])))
    return {"model": first["model"], "bench": first["bench"], "task": first["task"],
            "level_name": level_of(first)[0], "levels": ordered}


def markdown(payload: dict[str, Any], command: str) -> str:
    """The distribution table, one row per level."""
    lines = [
        f"# Loops chosen by {payload['model']}'s policy per image ({payload['bench']}, {payload['task']})",
        "",
        f"Command: `{command}`",
        "",
        f"| {payload['level_name']} | images | mean | min | 25% | median | 75% | max | images per loop count |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for level, row in payload["levels"].items():
        histogram = ", ".join(f"{count}: {number}" for count, number in row["histogram"].items())
        lines.append(
            f"| {level} | {row['images']} | {row['mean']:.2f} | {row['min']} | {row['quartile_1']:g} | "
            f"{row['median']:g} | {row['quartile_3']:g} | {row['max']} | {histogram} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], out: Path) -> None:
    """One bar chart of images per loop count for each level, sharing the loop axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = payload["levels"]
    figure, axes = plt.subplots(1, len(levels), figsize=(2.2 * len(levels), 2.6), sharex=True, squeeze=False)
    highest = max(row["max"] for row in levels.values())
    for axis, (level, row) in zip(axes[0], levels.items()):
        counts = {int(count): number for count, number in row["histogram"].items()}
        axis.bar(list(counts), list(counts.values()), width=0.8)
        axis.set_title(f"{payload['level_name']} {level}", fontsize=9)
        axis.set_xlabel("loops", fontsize=8)
        axis.set_xlim(0.5, highest + 0.5)
        axis.tick_params(labelsize=7)
    axes[0][0].set_ylabel("images", fontsize=8)
    figure.suptitle(f"loops chosen by the policy per image ({payload['bench']})", fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="converge eval JSON reports, one per level")
    parser.add_argument("--name", default="durr_loop_distribution")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--plot", type=Path, help="PNG to write (optional)")
    args = parser.parse_args()
    missing = [str(path) for path in args.reports if not path.is_file()]
    if missing:
        raise SystemExit(f"no such report: {', '.join(missing)}")
    command = "python benchmarks/durr_loop_distribution.py " + " ".join(str(path) for path in args.reports)
    command += f" --name {args.name}" + (f" --plot {args.plot}" if args.plot else "")
    payload = {"command": command, **collect(args.reports)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out_dir / f"{args.name}.json", json.dumps(payload, indent=1))
    write_text_atomic(args.out_dir / f"{args.name}.md", markdown(payload, command))
    if args.plot:
        plot(payload, args.plot)
    print(f"wrote {args.out_dir / args.name}.{{json,md}}" + (f" and {args.plot}" if args.plot else ""))


if __name__ == "__main__":
    main()
