"""A paper's results table measured here: one `converge eval` command per cell, beside the paper's numbers.

A table spec (YAML; the papers' tables ship in ``converge/eval/paper_tables/``) names the columns (one
`converge eval` option such as ``--sigma`` and its values, or a list of columns each with its own eval
options), the eval options every cell shares, and
the rows: each row's own eval options (none for a row that only quotes the paper), the columns it
measures and the paper's numbers. Every measured cell is exactly one `converge eval` command. A cell
whose report already exists under the reuse folder with the same options (whatever its ``--out``) and
the same weights (the SHA-256 each report records) is read, not rerun; the others run, several at a
time if asked, and write their reports under ``OUT/tables/NAME/ROW/``. A cell whose command fails,
for example because its weights are not shipped yet, stays empty and its one-line error goes into
the table's notes.

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
        paper_label: BM3D                       # the paper's name for the row (default: label)
        unseen: [65, 75]                        # column values marked * (not in the training data)
        only: [25, 35]                          # the columns this row measures (default: all)

Columns that differ in more than one option (a task and its parameters) are listed instead of
``column``; a column's ``name`` is its heading and what ``only`` and ``unseen`` name::

    columns:
      - {name: completion 80%, eval: [--task, inpaint, --drop, "0.8"]}
      - {name: deblur 1.6, eval: [--task, deblur, --blur-sigma, "1.6", --sigma, "2.55"]}
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from converge.atomic import write_json_and_markdown, write_text_atomic
from converge.errors import ConfigError

METRICS = ("psnr", "ssim")

# What `converge eval` would parse from a list of arguments, defaults filled in and --out left out,
# as sorted (name, value) pairs: two argument lists that measure the same thing give the same options.
EvalOptions = tuple[tuple[str, str], ...]
OptionsParser = Callable[[Sequence[str]], EvalOptions]
# A measurement: its eval options and the SHA-256 of the weights it restores with (None: no weights).
ReportKey = tuple[EvalOptions, str | None]


@dataclass(frozen=True)
class Cell:
    """One measured cell: its row and column and the `converge eval` arguments that measure it."""

    row: str
    column: str
    arguments: tuple[str, ...]

    @property
    def command(self) -> str:
        return "converge eval " + " ".join(shlex.quote(argument) for argument in self.arguments)


def shipped_tables() -> dict[str, str]:
    """The papers' tables that ship with converge: name -> title."""
    folder = _shipped_folder()
    specs = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    return {name.removesuffix(".yaml"): _read_spec(folder / name, name)["title"] for name in specs}


def load_spec(table: str) -> tuple[str, dict[str, Any]]:
    """The name and checked spec of a shipped table (``durr-table2``) or of a YAML file.

    Raises :class:`ConfigError` for an unknown name, an unreadable file or a spec whose rows do not
    fit its columns.
    """
    path = Path(table)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"table spec {path} does not exist")
        return path.stem, _checked(_read_spec(path, str(path)), str(path))
    shipped = _shipped_folder() / f"{table}.yaml"
    if not shipped.is_file():
        names = ", ".join(shipped_tables())
        raise ConfigError(f"unknown table {table!r}: choose one of {names}, or give a .yaml spec")
    return table, _checked(_read_spec(shipped, table), table)


def _shipped_folder() -> Any:
    return resources.files("converge") / "eval" / "paper_tables"


def _read_spec(source: Any, name: str) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"table spec {name} cannot be read ({error})") from None
    if not isinstance(spec, dict) or not {"title", "rows"} <= set(spec) or ("column" in spec) == ("columns" in spec):
        raise ConfigError(f"table spec {name} needs a title, rows and either a column or a list of columns")
    return spec


def table_columns(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The columns of a spec, in order, each as ``{"key", "heading", "eval"}``: ``key`` is what rows'
    ``only`` and ``unseen`` name (the option's value, or the listed column's name), ``eval`` the
    column's own `converge eval` options."""
    if "columns" in spec:
        return [
            {"key": str(column["name"]), "heading": str(column["name"]), "eval": column["eval"]}
            for column in spec["columns"]
        ]
    column = spec["column"]
    return [
        {"key": str(value), "heading": f"{column.get('header', '')} {value}".strip(), "eval": [column["option"], value]}
        for value in column["values"]
    ]


def _checked(spec: dict[str, Any], name: str) -> dict[str, Any]:
    listed = spec.get("columns", [])
    well_formed = all(isinstance(item, dict) and {"name", "eval"} <= item.keys() for item in listed)
    if not isinstance(listed, list) or not well_formed:
        raise ConfigError(f"{name}: every listed column needs a name and its eval options")
    values = [column["key"] for column in table_columns(spec)]
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: two columns have the same name")
    for row in spec["rows"]:
        paper = row.get("paper")
        if paper is not None and len(paper) != len(values):
            raise ConfigError(
                f"{name}: row '{row['label']}' quotes {len(paper)} paper numbers for {len(values)} columns"
            )
        if "eval" not in row and paper is None:
            raise ConfigError(f"{name}: row '{row['label']}' has neither eval options nor paper numbers")
        unknown = {str(value) for value in row.get("only", ())} - {str(value) for value in values}
        if unknown:
            raise ConfigError(f"{name}: row '{row['label']}' measures columns {sorted(unknown)} not in the table")
    unknown = set(spec.get("metrics", ["psnr"])) - set(METRICS)
    if unknown:
        raise ConfigError(f"{name}: unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    return spec


def table_cells(spec: dict[str, Any]) -> list[Cell]:
    """The measured cells of a spec, row by row."""
    columns = table_columns(spec)
    cells = []
    for row in spec["rows"]:
        if "eval" not in row:
            continue
        measured = {str(value) for value in row.get("only", [column["key"] for column in columns])}
        for column in columns:
            if column["key"] in measured:
                arguments = (*spec.get("eval", ()), *row["eval"], *column["eval"])
                cells.append(Cell(row["label"], column["key"], tuple(str(argument) for argument in arguments)))
    return cells


def cell_key(arguments: Sequence[str], options_of: OptionsParser) -> ReportKey:
    """What identifies a measurement: the eval options and the digest of the weights they name now."""
    from converge.eval.runner import restored_channels
    from converge.restorers import weights_digest

    options = options_of(arguments)
    named = dict(options)
    channels = restored_channels(named["bench"], named.get("color", "native"))
    level = {
        key: None if named.get(key, "None") == "None" else kind(named[key])
        for key, kind in (("sigma", float), ("quality", int))
    }
    blind = named.get("blind") == "True"
    prior = None if named.get("prior", "None") == "None" else named["prior"]
    digest = weights_digest(named.get("model", ""), named.get("task"), channels, **level, blind=blind, prior=prior)
    return options, digest


def index_reports(folder: Path, options_of: OptionsParser, pattern: str = "*.json") -> dict[ReportKey, Path]:
    """Every `converge eval` JSON report under ``folder`` (or, with ``pattern="*.json.partial"``, every
    evaluation stopped part-way), keyed by the options of its command and the digest of the weights
    it was measured with."""
    found: dict[ReportKey, Path] = {}
    for path in sorted(folder.rglob(pattern)) if folder.is_dir() else ():
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            words = shlex.split(payload["protocol"]["command"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if words[:2] == ["converge", "eval"] and "summary" in payload:
            found.setdefault((options_of(words[2:]), payload["protocol"].get("weights_sha256")), path)
    return found


def measure(
    spec: dict[str, Any],
    options_of: OptionsParser,
    reuse: Path,
    reports: Path,
    jobs: int = 1,
    run: bool = True,
    say: Callable[[str], None] = print,
    device: str = "cpu",
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
    """The scores of every cell, keyed by (row, column): reused from reports under ``reuse`` or
    ``reports``, or measured now into ``reports`` (learned models on ``device``) when ``run``; and why
    the other cells have none."""
    keyed = [(cell, cell_key(cell.arguments, options_of)) for cell in table_cells(spec)]
    # The reports folder usually lies inside the reuse folder (the CLI's default): index it once.
    folders = [reuse] if reports.resolve().is_relative_to(reuse.resolve()) else [reports, reuse]

    def index(pattern: str = "*.json") -> dict[ReportKey, Path]:
        return {key: path for folder in folders for key, path in index_reports(folder, options_of, pattern).items()}

    known = index()
    missing: dict[ReportKey, Cell] = {}
    for cell, key in keyed:
        if key not in known and key not in missing:
            missing[key] = cell
            say(f"{'running' if run else 'not run'}: {cell.command}")
    failures: dict[ReportKey, str] = {}
    if run and missing:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = pool.map(lambda cell: _run_cell(cell, reports, jobs > 1, device), missing.values())
            for (key, cell), error in zip(missing.items(), outcomes, strict=True):
                if error is not None:
                    failures[key] = error
                    say(f"failed: {cell.command}: {error}")
        known = index()
    started = index("*.json.partial")
    scores, errors = {}, {}
    for cell, key in keyed:
        path = known.get(key)
        if path is None:
            errors[(cell.row, cell.column)] = failures[key] if key in failures else _unfinished(started.get(key))
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


def _unfinished(partial: Path | None) -> str:
    """Why a cell without a report has none: not run yet, or stopped part-way (its ``partial``)."""
    if partial is None:
        return "not run yet"
    scored = len(json.loads(partial.read_text(encoding="utf-8"))["images"])
    images = "image" if scored == 1 else "images"
    return f"not finished: {scored} {images} scored in {partial}; its command goes on from there"


def _run_cell(cell: Cell, reports: Path, single_thread: bool, device: str) -> str | None:
    """Run one cell's command on ``device``, its reports into a folder of ``reports`` named after its
    row (report names come from the model, which two rows may share); the error line when it fails."""
    environment = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if single_thread else {}))
    folder = reports / re.sub(r"[^a-z0-9]+", "-", cell.row.lower()).strip("-")
    placed = ("--device", device) if device != "cpu" else ()
    result = subprocess.run(
        [sys.executable, "-m", "converge", "eval", *cell.arguments, *placed, "--out", str(folder)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else f"exit code {result.returncode}"


def write_table(
    name: str,
    spec: dict[str, Any],
    scores: dict[tuple[str, str], dict[str, Any]],
    errors: dict[tuple[str, str], str],
    out: Path,
    command: str,
) -> tuple[Path, Path]:
    """Write ``NAME.md`` and ``NAME.json`` into ``out``, atomically; returns their paths."""
    import torch

    payload = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "spec": spec,
        "cells": [{"row": row, "column": column, **score} for (row, column), score in scores.items()],
        "not_measured": [{"row": row, "column": column, "reason": reason} for (row, column), reason in errors.items()],
    }
    payload_path, markdown = write_json_and_markdown(out / name, payload, to_markdown(spec, payload))
    return markdown, payload_path


def to_markdown(spec: dict[str, Any], payload: dict[str, Any]) -> str:
    """The table: for each row the measured line (when it has eval options) and the paper's line."""
    columns = table_columns(spec)
    values = [column["key"] for column in columns]
    heading = {column["key"]: column["heading"] for column in columns}
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
        + " | ".join(heading[value] for value in values)
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
            quoted = [
                _quoted(number) + ("" if number is None else star[value])
                for value, number in zip(values, row["paper"], strict=True)
            ]
            lines.append(f"| {row.get('paper_label', row['label'])}, paper | " + " | ".join(quoted) + " |")
    lines += ["", "## Commands", ""]
    for cell in payload["cells"]:
        lines.append(f"- {cell['row']}, {heading[cell['column']]}: `{cell['command']}` ({cell['report']})")
    if payload["not_measured"]:
        lines += ["", "## Notes: cells not measured", ""]
        for cell in payload["not_measured"]:
            lines.append(f"- {cell['row']}, {heading[cell['column']]}: {cell['reason']}")
    return "\n".join(lines) + "\n"


def _quoted(number: float | str | None) -> str:
    """A paper's number as the table shows it: two decimals, a string as is, - when there is none."""
    if number is None:
        return "-"
    return number if isinstance(number, str) else f"{number:.2f}"


def _format(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "ssim" else f"{value:.2f}"


def write_results_page(path: Path, tables: Sequence[Path], command: str) -> Path:
    """One Markdown page of every table in ``tables`` (their own Markdown, headings one level down),
    headed by the command, the commit of the code (when it runs from a git checkout) and the machine;
    written atomically to ``path``."""
    import subprocess

    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=30,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = [
        "# Results: every paper table, measured here",
        "",
        f"Made by `{command}` at commit {commit} ({machine}). Each table below is also in its own file",
        "beside its cells' reports; a cell reads `-` where it was not measured (the table's notes say why).",
        "",
    ]
    for table in tables:
        body = table.read_text(encoding="utf-8").splitlines()
        lines += [("#" + line) if line.startswith("#") else line for line in body] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, "\n".join(lines).rstrip("\n") + "\n")
