import math

import pytest

from converge.eval.runner import evaluate
from converge.physics.tasks import make_task
from converge.restorers import make_restorer


def test_input_baseline_scores_the_noise_level():
    task = make_task("denoise", sigma=25)
    report = evaluate(make_restorer("input", task), "input", "set12", task, limit=2)
    assert [row.image for row in report.rows] == ["01", "02"]
    # Unclipped Gaussian noise of std 25/255 has PSNR 20 log10(255 / 25) = 20.17 dB on average;
    # the "input" restorer's output is clipped to [0, 1] like any restored image, which helps a little.
    assert report.mean("input_psnr") == pytest.approx(20 * math.log10(255 / 25), abs=0.05)
    assert report.mean("input_psnr") < report.mean("psnr") < report.mean("input_psnr") + 0.5


def test_evaluation_noise_is_the_same_in_every_run():
    task = make_task("denoise", sigma=15)
    first = evaluate(make_restorer("input", task), "input", "set12", task, limit=1)
    second = evaluate(make_restorer("input", task), "input", "set12", task, limit=1)
    assert first.rows[0].psnr == second.rows[0].psnr


def test_noise_differs_between_images_and_tasks():
    sigma15, sigma25 = make_task("denoise", sigma=15), make_task("denoise", sigma=25)
    low = evaluate(make_restorer("input", sigma15), "input", "set12", sigma15, limit=2)
    high = evaluate(make_restorer("input", sigma25), "input", "set12", sigma25, limit=2)
    assert low.rows[0].psnr != low.rows[1].psnr
    assert low.mean("input_psnr") - high.mean("input_psnr") == pytest.approx(20 * math.log10(25 / 15), abs=0.1)


def test_y_mode_scores_luma_of_colour_sets():
    task = make_task("deblock", quality=10)
    report = evaluate(make_restorer("input", task), "input", "live1", task, color="y", limit=1)
    assert 20.0 < report.rows[0].psnr < 35.0


def test_report_round_trip(tmp_path):
    import json

    task = make_task("denoise", sigma=50)
    report = evaluate(make_restorer("input", task), "input", "set12", task, limit=1, command="converge eval x")
    markdown, payload = report.write(tmp_path, "r")
    data = json.loads(payload.read_text())
    assert data["summary"]["images"] == 1
    assert data["images"][0]["psnr"] == report.rows[0].psnr
    assert "converge eval x" in markdown.read_text()


def test_loops_estimated_levels_and_picked_entries_reach_the_report(tmp_path):
    import json

    import torch

    from converge.restorers import Restoration

    def looping(y: torch.Tensor, operator) -> Restoration:
        level = 20.0 + y.shape[-1] % 7
        return Restoration(y, 0.1, iterations=4.0, model=f"family-s{level:g}", noise_level=level)

    task = make_task("denoise", sigma=25)
    report = evaluate(looping, "family", "set12", task, limit=2)
    assert [row.iterations for row in report.rows] == [4.0, 4.0]
    summary = report.summary()
    assert summary["iterations"] == 4.0
    assert summary["noise_level"] == pytest.approx(sum(row.noise_level for row in report.rows) / 2)
    markdown, payload = report.write(tmp_path, "r")
    header, rule, first = markdown.read_text().splitlines()[4:7]
    assert header == "| image | input PSNR | PSNR | SSIM | seconds | iterations | estimated sigma | model |"
    assert rule.count("|") == header.count("|") and first.endswith(f"| 4 | {report.rows[0].noise_level:.3g} | "
                                                                  f"{report.rows[0].model} |")
    assert json.loads(payload.read_text())["images"][0]["model"] == report.rows[0].model


def test_a_report_shows_only_what_the_restorer_reported():
    task = make_task("denoise", sigma=25)
    report = evaluate(make_restorer("input", task), "input", "set12", task, limit=1)
    assert set(report.summary()) == {"images", "psnr", "ssim", "input_psnr", "seconds"}
    assert "| image | input PSNR | PSNR | SSIM | seconds |" in report.to_markdown()
