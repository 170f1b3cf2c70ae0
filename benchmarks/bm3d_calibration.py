"""Calibrate our data and noise protocol: BM3D on Set12 and BSD68 at sigma 15/25/50 vs the papers.

Runs the same evaluation as ``converge eval --model bm3d --bench B --sigma S`` for every pair, in
parallel processes, and writes ``benchmarks/results/bm3d_calibration.{json,md}``.

    python benchmarks/bm3d_calibration.py --jobs 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# BM3D as published in the denoising papers' tables (NERD Table I, GroupSC Table 4, DnCNN Table 2).
PAPER_BM3D = {
    ("set12", 15): 32.37,
    ("set12", 25): 29.97,
    ("set12", 50): 26.72,
    ("bsd68", 15): 31.07,
    ("bsd68", 25): 28.57,
    ("bsd68", 50): 25.62,
}


def run_one(bench: str, sigma: int, reports: Path) -> dict:
    import torch

    from converge.eval.runner import evaluate
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer

    torch.set_num_threads(1)
    task = make_task("denoise", sigma=sigma)
    command = f"converge eval --model bm3d --bench {bench} --task denoise --sigma {sigma}"
    start = time.perf_counter()
    report = evaluate(make_restorer("bm3d", task), "bm3d", bench, task, command=command)
    report.write(reports, f"bm3d-{bench}-{task.tag}")
    summary = report.summary()
    return {
        "bench": bench,
        "sigma": sigma,
        "psnr": summary["psnr"],
        "ssim": summary["ssim"],
        "paper_psnr": PAPER_BM3D[(bench, sigma)],
        "gap_db": summary["psnr"] - PAPER_BM3D[(bench, sigma)],
        "images": summary["images"],
        "wall_seconds": time.perf_counter() - start,
    }


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "| set | sigma | BM3D measured PSNR | SSIM | papers' BM3D | measured - paper |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['bench']} | {row['sigma']} | {row['psnr']:.2f} | {row['ssim']:.4f} "
            f"| {row['paper_psnr']:.2f} | {row['gap_db']:+.2f} |"
        )
    lines.append("")
    lines.append(f"bm3d {meta['bm3d']}, profile 'np', {meta['machine']}; command: `{meta['command']}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes (one thread each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    from importlib.metadata import version

    from converge.atomic import write_text_atomic

    reports = args.out / "bm3d_calibration_reports"
    reports.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, bench, sigma, reports) for bench, sigma in PAPER_BM3D]
        rows = [future.result() for future in futures]
    meta = {
        "bm3d": version("bm3d"),
        "machine": f"{platform.processor() or platform.machine()}, {args.jobs} process(es) x 1 thread",
        "command": f"python benchmarks/bm3d_calibration.py --jobs {args.jobs}",
    }
    write_text_atomic(args.out / "bm3d_calibration.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    write_text_atomic(args.out / "bm3d_calibration.md", to_markdown(rows, meta))
    print(to_markdown(rows, meta))


if __name__ == "__main__":
    main()
