import math

import pytest

from converge.eval.report import BenchmarkReport
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


def test_gray_mode_scores_the_full_range_grey_of_colour_sets_and_leaves_grey_sets_as_they_are():
    task = make_task("deblock", quality=10)
    restorer = make_restorer("input", task)
    studio = evaluate(restorer, "input", "live1", task, color="y", limit=1)
    full = evaluate(restorer, "input", "live1", task, color="gray", limit=1)
    assert 20.0 < full.rows[0].psnr < 35.0 and full.rows[0].psnr != studio.rows[0].psnr
    grey = evaluate(restorer, "input", "classic5", task, limit=1)
    assert evaluate(restorer, "input", "classic5", task, color="gray", limit=1).rows[0].psnr == grey.rows[0].psnr


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


def test_report_reads_back_from_its_json():
    task = make_task("deblock", quality=20)
    report = evaluate(make_restorer("input", task), "input", "live1", task, color="y", limit=2, command="c")
    again = BenchmarkReport.from_json(report.to_json())
    assert again.rows == report.rows and again.same_run(report)
    assert again.to_json() == report.to_json()


class CountingRestorer:
    """The "input" baseline, counting the images it restores and failing on the ``fail_at``-th."""

    def __init__(self, task, fail_at: int | None = None):
        self.inner, self.calls, self.fail_at = make_restorer("input", task), 0, fail_at

    def __call__(self, y, operator):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.inner(y, operator)


def test_an_interrupted_evaluation_resumes_from_its_checkpoint(tmp_path):
    task = make_task("denoise", sigma=25)
    checkpoint = tmp_path / "run" / "r.json.partial"
    whole = evaluate(make_restorer("input", task), "input", "set12", task, limit=4, command="c")
    with pytest.raises(KeyboardInterrupt):
        evaluate(CountingRestorer(task, fail_at=3), "input", "set12", task, limit=4, command="c", checkpoint=checkpoint)
    seen: list[tuple[str, bool]] = []
    second = CountingRestorer(task)
    resumed = evaluate(
        second,
        "input",
        "set12",
        task,
        limit=4,
        command="c",
        checkpoint=checkpoint,
        on_image=lambda name, total, kept: seen.append((name, kept)),
    )
    assert second.calls == 2
    assert seen == [("01", True), ("02", True), ("03", False), ("04", False)]
    assert [(row.image, row.psnr, row.ssim) for row in resumed.rows] == [
        (row.image, row.psnr, row.ssim) for row in whole.rows
    ]


@pytest.mark.parametrize("changed", ["command", "task", "garbage"])
def test_a_checkpoint_of_anything_else_is_not_reused(tmp_path, changed):
    task = make_task("denoise", sigma=25)
    checkpoint = tmp_path / "r.json.partial"
    if changed == "garbage":
        checkpoint.write_text("{not json")
    else:
        earlier_task = make_task("denoise", sigma=15) if changed == "task" else task
        command = "other" if changed == "command" else "c"
        evaluate(make_restorer("input", earlier_task), "input", "set12", earlier_task, limit=2, command=command,
                 checkpoint=checkpoint)
    again = CountingRestorer(task)
    report = evaluate(again, "input", "set12", task, limit=2, command="c", checkpoint=checkpoint)
    assert again.calls == 2
    assert BenchmarkReport.from_json(checkpoint.read_text()).rows == report.rows


def test_super_resolution_scores_the_high_resolution_image_cropped_to_the_factor():
    task = make_task("sr", factor=3)
    report = evaluate(make_restorer("bicubic", task), "bicubic", "set5", task)
    assert len(report.rows) == 5 and all(math.isfinite(row.psnr) for row in report.rows)
    assert report.protocol["sr_crop"] == "top-left, to a multiple of the factor"
    denoise = make_task("denoise")
    assert "sr_crop" not in evaluate(make_restorer("input", denoise), "input", "set5", denoise, limit=1).protocol
