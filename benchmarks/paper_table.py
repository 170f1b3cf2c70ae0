"""A paper's results table, measured here: one `converge eval` command per cell, beside the paper's numbers.

A table spec (YAML, ``benchmarks/tables/``) names the columns (one `converge eval` option, such as
``--sigma``, and its values), the eval options every cell shares, and the rows: each row's own eval
options (none for a row that only quotes the paper) and the paper's numbers for it. Every measured
cell is exactly one `converge eval` command. A cell whose report already exists anywhere under
``--reuse`` (default ``benchmarks/results``) with the same options (whatever its ``--out``) and
the same weights (the SHA-256 that `converge eval` records) is read, not rerun; the others run
(``--jobs`` at a time, one torch thread each when more than one; none with ``--no-run``) and write
their reports to ``benchmarks/results/tables/NAME/ROW/``. A cell whose command fails, for example
because its weights are not shipped yet, stays empty and its one-line error goes into the notes.

Writes ``NAME.json`` and ``NAME.md`` (NAME: the spec's file name) to ``--out-dir``.

Usage:
    python benchmarks/paper_table.py benchmarks/tables/durr-table2.yaml [--jobs 2] [--no-run]
        [--reuse benchmarks/results] [--out-dir benchmarks/results]

Spec::

    title: "DURR, Table 2: blind gray denoising on BSD68, PSNR (dB)"
    note: "free text printed under the title"
    column: {option: --sigma, header: sigma, values: [25, 35, 45, 55, 65, 75]}
    eval: [--bench, bsd68, --task, denoise]     # options every cell shares
    metrics: [psnr]                             # psnr and/or ssim, shown as PSNR / SSIM
    rows:
      - label: BM3D (sigma known)
        eval: [--model, bm3d]                   # leave out for a row that only quotes the paper
        paper: [28.55, 27.07, 25.99, 25.26, 24.69, 22.63]   # null: no number; a string is quoted as is
        unseen: [65, 75]                        # column values marked * (not in the training data)
        only: [25, 35]                          # the columns this row measures (default: all)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from converge.atomic import write_text_atomic

METRICS = ("psnr", "ssim")


@dataclass(frozen=True)
class Cell:
    """One measured cell: its row and column and the `converge eval` arguments that measure it."""

    row: str
    column: str
    arguments: tuple[str, ...]

    @property
    def command(self) -> str:
        return "converge eval " + " ".join(shlex.quote(argument) for argument in self.arguments)


def eval_options(arguments: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The options `converge eval` parses from ``arguments``, defaults filled in and ``--out``
    left out: two argument lists that measure the same thing give the same key."""
    import typer.main

    from converge.cli import app

    command = typer.main.get_command(app).commands["eval"]
    context = command.make_context("eval", list(arguments), resilient_parsing=True)
    return tuple(sorted((name, str(value)) for name, value in context.params.items() if name != "out"))


ReportKey = tuple[tuple[tuple[str, str], ...], str | None]


def cell_key(arguments: list[str] | tuple[str, ...]) -> ReportKey:
    """What identifies a measurement: the eval options and the digest of the weights they name now."""
    from converge.restorers import weights_digest

    options = eval_options(arguments)
    return options, weights_digest(dict(options)["model"])


def index_reports(folder: Path) -> dict[ReportKey, Path]:
    """Every `converge eval` JSON report under ``folder``, keyed by the options of its command and
    the digest of the weights it was measured with."""
    found: dict[ReportKey, Path] = {}
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else ():
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            words = shlex.split(payload["protocol"]["command"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if words[:2] == ["converge", "eval"] and "summary" in payload:
            found.setdefault((eval_options(words[2:]), payload["protocol"].get("weights_sha256")), path)
    return found


def table_cells(spec: dict[str, Any]) -> list[Cell]:
    """The measured cells of a spec, row by row."""
    column = spec["column"]
    cells = []
    for row in spec["rows"]:
        if "eval" not in row:
            continue
        for value in row.get("only", column["values"]):
            arguments = (*spec.get("eval", ()), *row["eval"], column["option"], str(value))
            cells.append(Cell(row["label"], str(value), tuple(str(argument) for argument in arguments)))
    return cells


def run_cell(cell: Cell, reports: Path, single_thread: bool) -> str | None:
    """Run one cell's command, its reports into a folder of ``reports`` named after its row (report
    names come from the model, which two rows may share); the error line when it fails."""
    environment = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if single_thread else {}))
    folder = reports / re.sub(r"[^a-z0-9]+", "-", cell.row.lower()).strip("-")
    result = subprocess.run(
        [sys.executable, "-m", "converge", "eval", *cell.arguments, "--out", str(folder)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else f"exit code {result.returncode}"


def measure(
    spec: dict[str, Any], reuse: Path, reports: Path, jobs: int, run: bool
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
    """The scores of every cell (reused, or measured now into ``reports`` when ``run``) and why the
    others have none."""
    cells = table_cells(spec)
    known = {**index_reports(reports), **index_reports(reuse)}
    missing: dict[ReportKey, Cell] = {}
    for cell in cells:
        key = cell_key(cell.arguments)
        if key not in known and key not in missing:
            missing[key] = cell
            print(f"{'running' if run else 'not run'}: {cell.command}", file=sys.stderr, flush=True)
    failures: dict[ReportKey, str] = {}
    if run and missing:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = pool.map(lambda cell: run_cell(cell, reports, jobs > 1), missing.values())
            for (key, cell), error in zip(missing.items(), outcomes, strict=True):
                if error is not None:
                    failures[key] = error
                    print(f"failed: {cell.command}: {error}", file=sys.stderr, flush=True)
        known = {**index_reports(reports), **index_reports(reuse)}
    scores, errors = {}, {}
    for cell in cells:
        key = cell_key(cell.arguments)
        path = known.get(key)
        if path is None:
            errors[(cell.row, cell.column)] = failures.get(key, "not run yet")
            continue
        payload = json.loads(path.read_text(encoding="utf-8"))
        scores[(cell.row, cell.column)] = {
            **{metric: payload["summary"][metric] for metric in METRICS},
            "images": payload["summary"]["images"],
            "seconds_per_image": payload["summary"]["seconds"],
            "command": payload["protocol"]["command"],
            "report": str(path),
        }
    return scores, errors


def markdown(spec: dict[str, Any], payload: dict[str, Any]) -> str:
    """The table: for each row the measured line (when it has eval options) and the paper's line."""
    column = spec["column"]
    values = [str(value) for value in column["values"]]
    metrics = spec.get("metrics", ["psnr"])
    measured = {(cell["row"], cell["column"]): cell for cell in payload["cells"]}
    lines = [f"# {spec['title']}", ""]
    if spec.get("note"):
        lines += [spec["note"].strip(), ""]
    lines += [
        f"Made by `{payload['command']}` ({payload['machine']}). Each measured cell is the mean of one "
        "`converge eval` command over the set (commands and reports below); *: a level the model did not "
        "see in training; -: not measured (see the notes) or not in the paper.",
        "",
        f"| {' / '.join(metric.upper() for metric in metrics)} | "
        + " | ".join(_column_name(column, value) for value in values)
        + " |",
        "|---" + "|---:" * len(values) + "|",
    ]
    for row in spec["rows"]:
        unseen = {str(value) for value in row.get("unseen", ())}
        star = {value: "*" if value in unseen else "" for value in values}
        if "eval" in row:
            cells = []
            for value in values:
                cell = measured.get((row["label"], value))
                text = "-" if cell is None else " / ".join(_format(metric, cell[metric]) for metric in metrics)
                cells.append(text + (star[value] if cell is not None else ""))
            lines.append(f"| {row['label']}, measured here | " + " | ".join(cells) + " |")
        if row.get("paper") is not None:
            quoted = [_quoted(number) + ("" if number is None else star[value])
                      for value, number in zip(values, row["paper"], strict=True)]
            lines.append(f"| {row.get('paper_label', row['label'])}, paper | " + " | ".join(quoted) + " |")
    lines += ["", "## Commands", ""]
    for cell in payload["cells"]:
        lines.append(f"- {cell['row']}, {_column_name(column, cell['column'])}: `{cell['command']}` ({cell['report']})")
    if payload["not_measured"]:
        lines += ["", "## Notes: cells not measured", ""]
        for cell in payload["not_measured"]:
            lines.append(f"- {cell['row']}, {_column_name(column, cell['column'])}: {cell['reason']}")
    return "\n".join(lines) + "\n"


def _column_name(column: dict[str, Any], value: object) -> str:
    """A column's heading: the spec's header and the option's value (``sigma 25``, or ``kodak24`` alone)."""
    return f"{column.get('header', '')} {value}".strip()


def _quoted(number: float | str | None) -> str:
    """A paper's number as the table shows it: two decimals, a string as is, - when there is none."""
    if number is None:
        return "-"
    return number if isinstance(number, str) else f"{number:.2f}"


def _format(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "ssim" else f"{value:.2f}"


def load_spec(path: Path) -> dict[str, Any]:
    """A table spec, checked: every paper row has one number (or null) per column."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    values = spec["column"]["values"]
    for row in spec["rows"]:
        paper = row.get("paper")
        if paper is not None and len(paper) != len(values):
            raise SystemExit(
                f"{path}: row '{row['label']}' quotes {len(paper)} paper numbers for {len(values)} columns"
            )
        if "eval" not in row and paper is None:
            raise SystemExit(f"{path}: row '{row['label']}' has neither eval options nor paper numbers")
    unknown = set(spec.get("metrics", ["psnr"])) - set(METRICS)
    if unknown:
        raise SystemExit(f"{path}: unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="a table spec (YAML), e.g. benchmarks/tables/durr-table2.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (one torch thread each when > 1)")
    parser.add_argument("--no-run", action="store_true", help="lay out the table from existing reports only")
    parser.add_argument("--reuse", type=Path, default=Path("benchmarks/results"), help="reports found here are reused")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    spec = load_spec(args.spec)
    name = args.spec.stem
    reports = args.out_dir / "tables" / name
    started = time.perf_counter()
    scores, errors = measure(spec, args.reuse, reports, args.jobs, run=not args.no_run)
    import torch

    payload = {
        "command": "python " + " ".join(shlex.quote(argument) for argument in sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "spec": spec,
        "cells": [{"row": row, "column": column, **score} for (row, column), score in scores.items()],
        "not_measured": [{"row": row, "column": column, "reason": reason} for (row, column), reason in errors.items()],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out_dir / f"{name}.json", json.dumps(payload, indent=1))
    write_text_atomic(args.out_dir / f"{name}.md", markdown(spec, payload))
    print(markdown(spec, payload))


if __name__ == "__main__":
    main()
