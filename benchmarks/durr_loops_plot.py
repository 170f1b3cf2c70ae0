"""Plot DURR's loops against the degradation level from ``benchmarks/durr_policy.py`` reports.

The paper's Fig. 4 analogue: for each label (one restoration unit, e.g. trained with the refined
or the naive policy; reports given the same label are joined, so a unit measured at more levels in
a later run needs no rerun), the mean number of loops at the peak PSNR (the oracle stop) per level (noise
sigma or JPEG quality), with the learnt policy's mean loops and the refined schedule when the report
has them. A second panel shows the mean PSNR at each of those stops (the paper's Table 1 for the
oracle). Needs matplotlib (the ``bench`` extra).

Usage:
    python benchmarks/durr_loops_plot.py REPORT.json [REPORT.json ...] [--labels refined naive]
        --out docs/models/durr_loops.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

STYLES = {"oracle": "-o", "policy": "--s", "schedule": ":^"}
NAMES = {"oracle": "peak PSNR (oracle stop)", "policy": "learnt policy", "schedule": "refined schedule"}
X_LABELS = {"sigma": "noise sigma (8-bit levels)", "quality": "JPEG quality"}


def series(report: dict[str, Any], stop: str, kind: str) -> tuple[list[float], list[float]]:
    """Levels and the mean ``kind`` (``loops`` or ``psnr``) at ``stop`` in one report."""
    levels = sorted(report["levels"], key=float)
    values = [report["levels"][level]["summary"][f"{kind}_{stop}"] for level in levels]
    return [float(level) for level in levels], values


def merged_by_label(paths: list[Path], labels: list[str]) -> dict[str, dict[str, Any]]:
    """One report per label, in order of first appearance: reports sharing a label (one unit measured
    at more levels in another run) have their levels joined; the first one's other fields are kept."""
    grouped: dict[str, dict[str, Any]] = {}
    for path, label in zip(paths, labels, strict=True):
        report = json.loads(path.read_text())
        if label in grouped:
            grouped[label]["levels"].update(report["levels"])
        else:
            grouped[label] = report
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+", help="one per report, repeated to join reports (default: the file names)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    labels = args.labels or [path.stem for path in args.reports]
    if len(labels) != len(args.reports):
        raise SystemExit(f"give one label per report: {len(args.reports)} reports, {len(labels)} labels")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loops_axis, psnr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    grouped = merged_by_label(args.reports, labels)
    for index, (label, report) in enumerate(grouped.items()):
        for stop in report.get("stops", list(STYLES)):
            if stop == "schedule" and index > 0:
                continue
            name = f"{label}: {NAMES[stop]}" if stop != "schedule" else NAMES[stop]
            loops_axis.plot(*series(report, stop, "loops"), STYLES[stop], label=name)
            psnr_axis.plot(*series(report, stop, "psnr"), STYLES[stop], label=name)
    first = json.loads(args.reports[0].read_text())
    bench, level = first["bench"], X_LABELS[first["level_name"]]
    loops_axis.set(xlabel=level, ylabel="mean loops", title=f"loops per level ({bench})")
    psnr_axis.set(xlabel=level, ylabel="mean PSNR (dB)", title=f"PSNR at each stop ({bench})")
    for axis in (loops_axis, psnr_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
