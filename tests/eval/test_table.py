import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from converge.errors import ConfigError


def run_table(spec: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converge", "bench", str(spec), "--out", str(tmp_path / "results"), *extra],
        capture_output=True, text=True, timeout=600,
    )


def save_tiny_dncnn(path: Path, seed: int) -> Path:
    import torch

    from converge.models.backbones import DnCNN, DnCNNConfig
    from converge.zoo import save_weights

    torch.manual_seed(seed)
    return save_weights(DnCNN(DnCNNConfig(depth=3, features=4)), {"task": "denoise"}, path)


def test_table_measures_cells_reuses_reports_and_notes_failures(tmp_path):
    weights = save_tiny_dncnn(tmp_path / "tiny.safetensors", seed=0)
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump({
        "title": "toy table",
        "column": {"option": "--sigma", "header": "sigma", "values": [15, 25]},
        "eval": ["--bench", "set12", "--limit", "1"],
        "metrics": ["psnr", "ssim"],
        "rows": [
            {"label": "noisy input", "eval": ["--model", "input"], "paper": [24.61, None], "unseen": [25]},
            {"label": "missing", "eval": ["--model", "no-such-model"]},
            {"label": "tiny dncnn", "eval": ["--model", str(weights)]},
            {"label": "quoted only", "paper": [30.0, "28.00/0.7700"]},
            {"label": "one level", "eval": ["--model", "input"], "only": [25]},
        ],
    }))
    first = run_table(spec, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("running:") == 6
    payload = json.loads((tmp_path / "results" / "toy.json").read_text())
    measured = {(cell["row"], cell["column"]): cell for cell in payload["cells"]}
    assert set(measured) == {(row, sigma) for row in ("noisy input", "tiny dncnn") for sigma in ("15", "25")} | {
        ("one level", "25")}
    report = json.loads(Path(measured[("noisy input", "25")]["report"]).read_text())
    assert report["task_params"]["sigma"] == 25 and report["summary"]["images"] == 1
    table = (tmp_path / "results" / "toy.md").read_text()
    psnr15, psnr25 = (measured[("noisy input", s)]["psnr"] for s in ("15", "25"))
    ssim25 = measured[("noisy input", "25")]["ssim"]
    assert f"| noisy input, measured here | {psnr15:.2f} / " in table
    assert f"{psnr25:.2f} / {ssim25:.4f}* |" in table
    assert "| noisy input, paper | 24.61 | - |" in table
    assert "| missing, measured here | - | - |" in table
    assert "| quoted only, paper | 30.00 | 28.00/0.7700 |" in table
    assert f"| one level, measured here | - | {psnr25:.2f} / {ssim25:.4f} |" in table
    reasons = {(cell["row"], cell["column"]): cell["reason"] for cell in payload["not_measured"]}
    assert set(reasons) == {("missing", "15"), ("missing", "25")}
    assert "unknown model 'no-such-model'" in reasons[("missing", "15")]
    second = run_table(spec, tmp_path, "--no-run")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("not run:") == 2 and "--model no-such-model --sigma 15" in second.stderr
    save_tiny_dncnn(weights, seed=1)
    retrained = run_table(spec, tmp_path, "--no-run")
    assert retrained.stderr.count("not run:") == 4 and f"--model {weights} --sigma 25" in retrained.stderr
    assert "--model input" not in retrained.stderr
    payload = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert {cell["row"] for cell in payload["cells"]} == {"noisy input", "one level"}


def test_spec_with_a_short_paper_row_is_refused(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({
        "title": "bad", "column": {"option": "--sigma", "header": "sigma", "values": [15, 25]},
        "rows": [{"label": "short", "paper": [30.0]}],
    }))
    result = run_table(spec, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "quotes 1 paper numbers for 2 columns" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = subprocess.run([sys.executable, "-m", "converge", "bench", "no-such"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown table 'no-such'" in unknown.stderr


def test_every_shipped_table_loads_and_its_cells_parse_as_eval_options() -> None:
    from converge.cli import _eval_options
    from converge.eval.table import load_spec, shipped_tables, table_cells, table_columns

    names = shipped_tables()
    assert {"durr-table2", "durr-table3", "nerd-table1-bsd68", "groupsc-table4-bsd68", "mtdeq-table1-set5"} <= set(names)
    base = ["--model", "input", "--bench", "set12"]
    defaults = dict(_eval_options(base))
    for name in names:
        _, spec = load_spec(name)
        columns = {column["key"]: column for column in table_columns(spec)}
        for cell in table_cells(spec):
            options = dict(_eval_options(cell.arguments))
            assert options["model"] != "None" and options["bench"] != "None", cell.command
            own = dict(_eval_options([*base, *map(str, columns[cell.column]["eval"])]))
            set_by_column = {key: value for key, value in own.items() if value != defaults[key]}
            assert set_by_column and set_by_column.items() <= options.items(), cell.command


def test_listed_columns_carry_their_own_options(tmp_path):
    from converge.eval.table import load_spec, table_cells, to_markdown

    spec_path = tmp_path / "mixed.yaml"
    spec_path.write_text(yaml.safe_dump({
        "title": "mixed",
        "eval": ["--bench", "set5"],
        "columns": [
            {"name": "deblur 1.6", "eval": ["--task", "deblur", "--blur-sigma", "1.6"]},
            {"name": "sr x2", "eval": ["--task", "sr", "--factor", "2"]},
        ],
        "rows": [
            {"label": "bicubic", "eval": ["--model", "bicubic"], "only": ["sr x2"], "paper": [None, 30.0]},
            {"label": "input", "eval": ["--model", "input"], "only": ["deblur 1.6"]},
        ],
    }))
    _, spec = load_spec(str(spec_path))
    cells = table_cells(spec)
    assert [(cell.row, cell.column) for cell in cells] == [("bicubic", "sr x2"), ("input", "deblur 1.6")]
    assert cells[0].arguments == ("--bench", "set5", "--model", "bicubic", "--task", "sr", "--factor", "2")
    payload = {"command": "c", "machine": "m", "cells": [], "not_measured": []}
    assert "| PSNR | deblur 1.6 | sr x2 |" in to_markdown(spec, payload)
    spec_path.write_text(yaml.safe_dump({"title": "t", "columns": [{"name": "a"}], "rows": []}))
    with pytest.raises(ConfigError, match="needs a name and its eval options"):
        load_spec(str(spec_path))


def test_a_family_cell_is_keyed_by_the_weights_of_its_level() -> None:
    from converge.cli import _eval_options
    from converge.eval.table import cell_key
    from converge.restorers import weights_digest

    deblock = ["--model", "groupsc", "--bench", "classic5", "--task", "deblock"]
    _, digest = cell_key([*deblock, "--quality", "20"], _eval_options)
    assert digest == weights_digest("groupsc", "deblock", 1, quality=20) != weights_digest("groupsc", "deblock", 1)
    denoise = ["--model", "groupsc", "--bench", "cbsd68", "--sigma", "25"]
    assert cell_key(denoise, _eval_options)[1] == weights_digest("groupsc", "denoise", 3, sigma=25.0)
    assert cell_key([*denoise, "--blind"], _eval_options)[1] == weights_digest("groupsc", "denoise", 3)


def test_a_cell_stopped_part_way_is_noted_and_finished_from_its_partial(tmp_path):
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump({
        "title": "toy table",
        "column": {"option": "--sigma", "header": "sigma", "values": [25]},
        "eval": ["--bench", "set12", "--limit", "2"],
        "metrics": ["psnr", "ssim"],
        "rows": [{"label": "noisy input", "eval": ["--model", "input"]}],
    }))
    assert run_table(spec, tmp_path).returncode == 0
    report = next((tmp_path / "results" / "tables").rglob("*.json"))
    payload = json.loads(report.read_text())
    payload["images"] = payload["images"][:1]
    payload["images"][0]["psnr"] = 99.0
    partial = report.with_name(report.name + ".partial")
    partial.write_text(json.dumps(payload))
    report.unlink()

    laid_out = run_table(spec, tmp_path, "--no-run")
    assert laid_out.returncode == 0, laid_out.stderr
    notes = json.loads((tmp_path / "results" / "toy.json").read_text())["not_measured"]
    assert [note["reason"] for note in notes] == [
        f"not finished: 1 image scored in {partial}; its command goes on from there"
    ]

    finished = run_table(spec, tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert not partial.exists()
    rows = json.loads(report.read_text())["images"]
    assert rows[0]["psnr"] == 99.0 and len(rows) == 2


def test_a_plug_and_play_cell_is_keyed_by_its_prior_and_schedule(monkeypatch) -> None:
    from converge import restorers
    from converge.cli import _eval_options
    from converge.eval.table import cell_key

    admm = ["--model", "admm", "--bench", "set5", "--task", "deblur", "--sigma", "2.55"]
    bm3d, dncnn = cell_key(admm, _eval_options)[1], cell_key([*admm, "--prior", "dncnn-s25"], _eval_options)[1]
    assert bm3d is not None and dncnn is not None and bm3d != dncnn
    assert bm3d == cell_key([*admm, "--prior", "bm3d"], _eval_options)[1]
    retuned = {**restorers._PNP_SCHEDULES, "deblur": restorers.PnPSchedule(40, 0.5)}
    monkeypatch.setattr(restorers, "_PNP_SCHEDULES", retuned)
    assert cell_key(admm, _eval_options)[1] != bm3d
