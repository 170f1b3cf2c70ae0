import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converge", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def clean_png(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(48), np.arange(40)) * 2.0
    pixels = np.clip(ramp + rng.normal(0, 3, ramp.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "clean.png"
    Image.fromarray(pixels).save(path)
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("restore", "degrade", "eval", "bench", "train", "zoo", "demo"):
        assert command in result.stdout


def test_restore_corrupt_file_fails_cleanly(tmp_path):
    corrupt = tmp_path / "noisy.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    output = tmp_path / "out.png"
    result = run_cli("restore", str(corrupt), str(output), "--model", "input")
    assert_one_line_error(result, "noisy.png")
    assert not output.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["noisy.png"]


def test_restore_missing_file(tmp_path):
    assert_one_line_error(run_cli("restore", str(tmp_path / "none.png"), str(tmp_path / "o.png")), "no such file")


def test_unknown_model_and_task(tmp_path, clean_png):
    assert_one_line_error(run_cli("restore", str(clean_png), str(tmp_path / "o.png"), "-m", "nope"), "unknown model")
    assert_one_line_error(run_cli("degrade", str(clean_png), str(tmp_path / "o.png"), "-t", "nope"), "nope")


def test_option_not_taken_by_the_task(tmp_path, clean_png):
    result = run_cli("degrade", str(clean_png), str(tmp_path / "o.png"), "--task", "denoise", "--quality", "10")
    assert_one_line_error(result, "quality")


def test_degrade_is_reproducible_and_restore_improves(tmp_path, clean_png):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for target in (first, second):
        assert run_cli("degrade", str(clean_png), str(target), "--sigma", "25", "--seed", "3").returncode == 0
    assert first.read_bytes() == second.read_bytes()
    restored = tmp_path / "r.png"
    result = run_cli("restore", str(first), str(restored), "--model", "tv", "--sigma", "25")
    assert result.returncode == 0, result.stderr
    clean = np.asarray(Image.open(clean_png), dtype=float)
    noisy_error = np.mean((np.asarray(Image.open(first), dtype=float) - clean) ** 2)
    restored_error = np.mean((np.asarray(Image.open(restored), dtype=float) - clean) ** 2)
    assert restored_error < noisy_error


def test_restore_estimates_sigma_when_not_given(tmp_path, clean_png):
    noisy = tmp_path / "n.png"
    run_cli("degrade", str(clean_png), str(noisy), "--sigma", "20")
    result = run_cli("restore", str(noisy), str(tmp_path / "r.png"), "--model", "tv")
    assert result.returncode == 0, result.stderr
    assert "estimated noise level" in result.stderr


@pytest.mark.parametrize("model", ["tv", "dncnn-s25"])
def test_restore_estimates_the_noise_level_once_per_image(tmp_path, clean_png, monkeypatch, model):
    from typer.testing import CliRunner

    from converge import cli
    from converge.physics import noise

    noisy = tmp_path / "n.png"
    run_cli("degrade", str(clean_png), str(noisy), "--sigma", "20")
    estimates = []
    estimate = noise.estimate_noise_sigma
    monkeypatch.setattr(noise, "estimate_noise_sigma", lambda y: estimates.append(y) or estimate(y))
    result = CliRunner().invoke(cli.app, ["restore", str(noisy), str(tmp_path / "r.png"), "--model", model])
    assert result.exit_code == 0, result.output
    assert len(estimates) == 1


def test_torchrun_processes_share_a_folder(tmp_path, clean_png, monkeypatch):
    from typer.testing import CliRunner

    from converge import cli

    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (source / name).write_bytes(clean_png.read_bytes())
    monkeypatch.setenv("WORLD_SIZE", "2")
    written = []
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        target = tmp_path / f"out{rank}"
        command = ["restore", str(source), str(target), "--model", "input", "--sigma", "25"]
        result = CliRunner().invoke(cli.app, command)
        assert result.exit_code == 0, result.output
        written.append(sorted(path.name for path in target.iterdir()))
    assert written == [["b.png"], ["a.png", "c.png"]]


def test_restore_and_eval_check_the_device(tmp_path, clean_png):
    import torch

    result = run_cli("restore", str(clean_png), str(tmp_path / "r.png"), "--sigma", "25", "--device", "tpu")
    assert_one_line_error(result, "unknown device")
    assert not (tmp_path / "r.png").exists()
    assert run_cli("restore", str(clean_png), str(tmp_path / "r.png"), "--sigma", "25", "--device", "cpu").returncode == 0
    if not torch.cuda.is_available():
        evaluation = run_cli("eval", "--model", "dncnn-s25", "--bench", "set12", "--limit", "1", "--device", "cuda",
                             "--out", str(tmp_path / "results"))
        assert_one_line_error(evaluation, "no CUDA GPU")


def test_where_eval_runs_or_writes_is_not_part_of_its_options():
    from converge import cli

    base = ["--model", "dncnn-s25", "--bench", "set12", "--sigma", "25"]
    assert cli._eval_options([*base, "--device", "cuda:1", "--out", "elsewhere"]) == cli._eval_options(base)
    assert cli._eval_options([*base, "--blind"]) != cli._eval_options(base)


def test_folder_in_folder_out(tmp_path, clean_png):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("x.png", "y.png"):
        (source / name).write_bytes(clean_png.read_bytes())
    (source / "notes.txt").write_text("not an image")
    result = run_cli("degrade", str(source), str(tmp_path / "out"), "--task", "deblock", "--quality", "20")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["x.png", "y.png"]


def test_inpaint_writes_its_mask(tmp_path, clean_png):
    target = tmp_path / "holes.png"
    assert run_cli("degrade", str(clean_png), str(target), "--task", "inpaint", "--drop", "0.5").returncode == 0
    mask = np.asarray(Image.open(tmp_path / "holes.mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    assert 0.4 < (mask == 0).mean() < 0.6
    restored = tmp_path / "r.png"
    assert_one_line_error(run_cli("restore", str(target), str(restored), "-t", "inpaint", "-m", "input"), "--mask")
    result = run_cli(
        "restore", str(target), str(restored), "-t", "inpaint", "-m", "input", "--mask", str(tmp_path / "holes.mask.png")
    )
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(restored)), np.asarray(Image.open(target)))


def test_inpaint_mask_of_another_size_is_refused(tmp_path, clean_png):
    target = tmp_path / "holes.png"
    assert run_cli("degrade", str(clean_png), str(target), "--task", "inpaint").returncode == 0
    Image.fromarray(np.full((10, 12), 255, dtype=np.uint8)).save(tmp_path / "small.png")
    restored = tmp_path / "r.png"
    result = run_cli("restore", str(target), str(restored), "-t", "inpaint", "-m", "input", "--mask", str(tmp_path / "small.png"))
    assert_one_line_error(result, "is 12x10 but the image is 40x48")
    assert not restored.exists()


def test_deblur_with_a_user_kernel_round_trip(tmp_path, clean_png):
    kernel = np.zeros((5, 5))
    kernel[2, :] = 2.0
    np.save(tmp_path / "motion.npy", kernel)
    blurred, restored = tmp_path / "blurred.png", tmp_path / "restored.png"
    result = run_cli("degrade", str(clean_png), str(blurred), "-t", "deblur", "--kernel", str(tmp_path / "motion.npy"))
    assert result.returncode == 0, result.stderr
    assert "summed to 10, normalised to 1" in result.stderr and "kernelmotion.npy" in result.stderr
    clean = np.asarray(Image.open(clean_png), dtype=np.float64)
    expected = sum(np.roll(clean, shift, axis=1) for shift in range(-2, 3)) / 5
    assert np.abs(np.asarray(Image.open(blurred), dtype=np.float64) - expected).mean() < 3.5
    result = run_cli(
        "restore", str(blurred), str(restored), "-t", "deblur", "-m", "input", "--kernel", str(tmp_path / "motion.npy")
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(restored).size == (40, 48)


def test_bad_kernel_and_clashing_blur_options_are_refused(tmp_path, clean_png):
    np.save(tmp_path / "even.npy", np.ones((4, 4)))
    np.save(tmp_path / "good.npy", np.ones((3, 3)) / 9)
    out = tmp_path / "o.png"
    even = run_cli("restore", str(clean_png), str(out), "-t", "deblur", "-m", "input", "--kernel", str(tmp_path / "even.npy"))
    assert_one_line_error(even, "odd sides")
    both = run_cli(
        "degrade", str(clean_png), str(out), "-t", "deblur", "--kernel", str(tmp_path / "good.npy"), "--blur-sigma", "2"
    )
    assert_one_line_error(both, "give one")
    assert_one_line_error(run_cli("degrade", str(clean_png), str(out), "--kernel", str(tmp_path / "good.npy")), "deblur")
    assert not out.exists()


def test_restore_takes_the_blur_width(tmp_path, clean_png):
    blurred, restored = tmp_path / "b.png", tmp_path / "r.png"
    assert run_cli("degrade", str(clean_png), str(blurred), "-t", "deblur", "--blur-sigma", "2").returncode == 0
    result = run_cli("restore", str(blurred), str(restored), "-t", "deblur", "--blur-sigma", "2", "-m", "wiener")
    assert result.returncode == 0, result.stderr
    wrong = run_cli("restore", str(blurred), str(restored), "-t", "deblur", "--blur-sigma", "-1", "-m", "wiener")
    assert_one_line_error(wrong, "positive")


def test_restore_writes_a_comparison_panel_with_scores_from_the_reference(tmp_path, clean_png):
    blurred, restored, panel = tmp_path / "b.png", tmp_path / "r.png", tmp_path / "panel.png"
    assert run_cli("degrade", str(clean_png), str(blurred), "-t", "deblur", "--blur-sigma", "1.6").returncode == 0
    deblur = ("-t", "deblur", "--blur-sigma", "1.6", "-m", "wiener")
    result = run_cli("restore", str(blurred), str(restored), *deblur, "--compare", str(panel), "--reference", str(clean_png))
    assert result.returncode == 0, result.stderr
    assert "comparison panel" in result.stderr and Image.open(panel).mode == "RGB"
    assert Image.open(panel).size[0] > 3 * 40


def test_comparison_panel_mistakes_are_refused_before_anything_is_written(tmp_path, clean_png):
    restored, panel = tmp_path / "r.png", tmp_path / "panel.png"
    args = ("restore", str(clean_png), str(restored), "-m", "input", "--sigma", "25")
    assert_one_line_error(run_cli(*args, "--reference", str(clean_png)), "--reference goes with --compare")
    assert_one_line_error(run_cli(*args, "--compare", str(tmp_path / "p.jpg")), "written as PNG")
    small = tmp_path / "small.png"
    Image.open(clean_png).crop((0, 0, 20, 20)).save(small)
    assert_one_line_error(run_cli(*args, "--compare", str(panel), "--reference", str(small)), "the output will be 40x48")
    assert_one_line_error(run_cli("restore", str(tmp_path), str(tmp_path / "out"), "--compare", str(panel)), "one image")
    assert not restored.exists() and not panel.exists()


def test_eval_writes_an_html_report_with_a_picture_per_image(tmp_path):
    report = tmp_path / "report"
    args = ("eval", "-m", "tv", "-b", "set12", "--sigma", "25", "--limit", "2", "--out", str(tmp_path / "r"))
    result = run_cli(*args, "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (report / "images").iterdir()) == ["01.png", "02.png"]
    page = (report / "index.html").read_text()
    assert page.count('<img class="picture"') == 2 and "tv on set12" in page
    afile = tmp_path / "file.html"
    afile.write_text("x")
    assert_one_line_error(run_cli(*args, "--report", str(afile)), "is a file")


def test_demosaicking_grey_images_is_refused_in_one_line(tmp_path, clean_png):
    graded = run_cli("eval", "-m", "malvar", "-b", "set12", "--task", "demosaic", "--limit", "1", "--out", str(tmp_path))
    assert_one_line_error(graded, "set12 is scored in grey")
    mosaic = tmp_path / "mosaic.png"
    assert_one_line_error(run_cli("degrade", str(clean_png), str(mosaic), "--task", "demosaic"), "RGB images")
    assert not mosaic.exists()


def test_a_tight_memory_budget_tiles_the_default_model_or_refuses_one_that_cannot_tile(tmp_path):
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)).save(noisy)
    output = tmp_path / "out.png"
    tiled = run_cli("restore", str(noisy), str(output), "--sigma", "25", "--max-memory", "0.53")
    assert tiled.returncode == 0, tiled.stderr
    assert "tiles to stay in the memory budget" in tiled.stderr and Image.open(output).size == (400, 400)
    output.unlink()
    refused = run_cli("restore", str(noisy), str(output), "-m", "durr", "--sigma", "25", "--max-memory", "0.5")
    assert_one_line_error(refused, "cannot be restored in tiles")
    assert_one_line_error(run_cli("restore", str(noisy), str(output), "--max-memory", "0"), "--max-memory must be")
    assert not output.exists()


def test_restore_keeps_transparency_or_says_it_is_left_out(tmp_path):
    rgba = np.zeros((24, 20, 4), dtype=np.uint8)
    rgba[..., :3] = 128
    rgba[..., 3] = np.tile(np.arange(20, dtype=np.uint8) * 12, (24, 1))
    source = tmp_path / "logo.png"
    Image.fromarray(rgba).save(source)
    output = tmp_path / "out.png"
    result = run_cli("restore", str(source), str(output), "-m", "tv", "--sigma", "10")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(output))[..., 3], rgba[..., 3])
    upscaled = run_cli("restore", str(source), str(tmp_path / "up.png"), "-t", "sr", "--factor", "2", "-m", "bicubic")
    assert upscaled.returncode == 0 and "transparency is left out" in upscaled.stderr
    assert Image.open(tmp_path / "up.png").mode == "RGB"


def test_restore_reads_standard_input_and_writes_standard_output(tmp_path, clean_png):
    piped = subprocess.run(
        [sys.executable, "-m", "converge", "restore", "-", "-", "-m", "tv", "--sigma", "10"],
        input=clean_png.read_bytes(), capture_output=True, timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    restored = tmp_path / "restored.png"
    restored.write_bytes(piped.stdout)
    assert Image.open(restored).size == Image.open(clean_png).size
    broken = subprocess.run(
        [sys.executable, "-m", "converge", "restore", "-", "-", "-m", "tv", "--sigma", "10"],
        input=b"not an image", capture_output=True, timeout=300,
    )
    assert broken.returncode == 2 and broken.stdout == b"" and b"Traceback" not in broken.stderr


def test_sr_round_trip_shapes(tmp_path, clean_png):
    low, up = tmp_path / "low.png", tmp_path / "up.png"
    assert run_cli("degrade", str(clean_png), str(low), "--task", "sr", "--factor", "2").returncode == 0
    assert Image.open(low).size == (20, 24)
    result = run_cli("restore", str(low), str(up), "--task", "sr", "--factor", "2", "--model", "bicubic")
    assert result.returncode == 0, result.stderr
    assert Image.open(up).size == (40, 48)


def test_eval_writes_markdown_and_json_and_logs_each_image(tmp_path):
    result = run_cli(
        "eval", "--model", "input", "--bench", "set12", "--sigma", "25", "--limit", "2", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads((tmp_path / "input-set12-denoise-sigma25-first2.json").read_text())
    assert payload["summary"]["images"] == 2
    assert (tmp_path / "input-set12-denoise-sigma25-first2.md").exists()
    assert "input on set12: 1/2 images (01)" in result.stderr and "2/2 images (02)" in result.stderr


def test_eval_on_the_luma_of_a_colour_set_writes_a_report_of_its_own(tmp_path):
    common = ("eval", "--model", "input", "--bench", "kodak24", "--sigma", "25", "--limit", "1", "--out", str(tmp_path))
    assert run_cli(*common).returncode == 0
    assert run_cli(*common, "--color", "y").returncode == 0
    native = json.loads((tmp_path / "input-kodak24-denoise-sigma25-first1.json").read_text())
    luma = json.loads((tmp_path / "input-kodak24-denoise-sigma25-y-first1.json").read_text())
    assert native["protocol"]["color"] == "native" and luma["protocol"]["color"] == "y"


def test_eval_goes_on_from_the_partial_report_of_an_interrupted_run(tmp_path):
    arguments = ("eval", "-m", "input", "-b", "set12", "--sigma", "25", "--limit", "2", "--out", str(tmp_path))
    assert run_cli(*arguments).returncode == 0
    report = tmp_path / "input-set12-denoise-sigma25-first2.json"
    partial = tmp_path / "input-set12-denoise-sigma25-first2.json.partial"
    # What the run would have left after its first image, marked so that reuse shows.
    payload = json.loads(report.read_text())
    payload["images"] = payload["images"][:1]
    payload["images"][0]["psnr"] = 99.0
    partial.write_text(json.dumps(payload))
    result = run_cli(*arguments)
    assert result.returncode == 0, result.stderr
    assert "1/2 images (01, kept from the interrupted run" in result.stderr
    assert [image["psnr"] == 99.0 for image in json.loads(report.read_text())["images"]] == [True, False]
    assert not partial.exists()


def test_eval_unknown_bench(tmp_path):
    assert_one_line_error(run_cli("eval", "-m", "input", "-b", "nope", "--out", str(tmp_path)), "nope")


def test_demo_restores_the_example_with_the_default_model(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    decibels = [float(line.split("PSNR")[1].split("dB")[0]) for line in result.stdout.splitlines() if "PSNR" in line]
    noisy_db, restored_db = decibels
    assert restored_db > noisy_db + 5.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["parrots-noisy.png", "parrots-restored.png"]


def test_a_model_named_far_from_its_noise_level_warns(tmp_path, clean_png):
    noisy = tmp_path / "n.png"
    run_cli("degrade", str(clean_png), str(noisy), "--sigma", "50")
    far = run_cli("restore", str(noisy), str(tmp_path / "r.png"), "--model", "dncnn-s25", "--sigma", "50")
    near = run_cli("restore", str(noisy), str(tmp_path / "r.png"), "--model", "dncnn-s25", "--sigma", "25")
    assert far.returncode == 0 and near.returncode == 0
    assert "warning: dncnn-s25 was trained for noise level 25" in far.stderr
    assert "warning" not in near.stderr


def test_restore_with_weights_written_by_training(tmp_path, clean_png):
    import torch

    from converge.models.backbones import DnCNN, DnCNNConfig
    from converge.zoo import save_weights

    torch.manual_seed(0)
    weights = save_weights(DnCNN(DnCNNConfig(depth=3, features=4)), {"task": "denoise"}, tmp_path / "m.safetensors")
    output = tmp_path / "out.png"
    result = run_cli("restore", str(clean_png), str(output), "-m", str(weights), "--sigma", "25")
    assert result.returncode == 0, result.stderr
    assert Image.open(output).size == Image.open(clean_png).size
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", str(weights), "-t", "deblock", "-q", "20"),
        "trained for task 'denoise'",
    )
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", str(tmp_path / "none.safetensors")), "does not exist"
    )


def test_restore_loops_reach_durr_and_are_printed(tmp_path, clean_png):
    import torch

    from converge.models.durr import DURR, DURRConfig
    from converge.models.groupsc import GroupSC, GroupSCConfig
    from converge.zoo import save_weights

    torch.manual_seed(0)
    durr = DURR(DURRConfig(features=4, bottom_convs=1, policy_features=4, policy_hidden=4))
    weights = save_weights(durr, {"task": "denoise"}, tmp_path / "durr.safetensors")
    output = tmp_path / "out.png"
    result = run_cli("restore", str(clean_png), str(output), "-m", str(weights), "--sigma", "25", "--loops", "3")
    assert result.returncode == 0, result.stderr
    assert "iterations 3," in result.stderr
    evaluated = run_cli("eval", "-m", str(weights), "-b", "set12", "--sigma", "25", "--limit", "1", "--loops", "2",
                        "--out", str(tmp_path))
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "durr-set12-denoise-sigma25-loops2-first1.json").read_text())
    assert [image["iterations"] for image in report["images"]] == [2]
    assert_one_line_error(run_cli("eval", "-m", str(weights), "-b", "set12", "--loops", "-1"), "--loops must be")
    many = run_cli("restore", str(clean_png), str(output), "-m", "durr", "--sigma", "25", "--loops", "100000")
    assert_one_line_error(many, "--loops 100000 is over 120")
    groupsc = GroupSC(GroupSCConfig(patch_size=5, atoms=8, steps=2, window=12, stride=8))
    other = save_weights(groupsc, {"task": "denoise"}, tmp_path / "groupsc.safetensors")
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", str(other), "--loops", "3"), "no loop count to set"
    )


def test_eval_blind_names_its_report(tmp_path):
    result = run_cli(
        "eval", "-m", "input", "-b", "set12", "--sigma", "25", "--limit", "1", "--blind", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "input-set12-denoise-sigma25-blind-first1.json").exists()
    assert_one_line_error(
        run_cli("eval", "-m", "input", "-b", "set12", "-t", "deblock", "--blind", "--out", str(tmp_path)), "--blind"
    )


def test_train_stops_with_until_and_a_resume_finishes_the_run(tmp_path):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "steps": 2, "log_every": 1, "checkpoint_every": 1, "loss": "noise_mse",
        "model": {"name": "dncnn", "params": {"depth": 3, "features": 4}},
        "data": {"train_set": "train400", "patch_size": 16, "patches_per_image": 1, "batch_size": 4,
                 "task": "denoise", "task_params": {"sigma": 25}},
    }))
    run_dir = tmp_path / "run"
    first = run_cli("train", str(config), "--run-dir", str(run_dir), "--until", "1")
    assert first.returncode == 0, first.stderr
    assert yaml.safe_load((run_dir / "model.yaml").read_text())["trained_steps"] == 1
    second = run_cli("train", str(config), "--run-dir", str(run_dir), "--resume")
    assert second.returncode == 0, second.stderr
    assert yaml.safe_load((run_dir / "model.yaml").read_text())["trained_steps"] == 2
    assert_one_line_error(
        run_cli("train", str(config), "--run-dir", str(tmp_path / "other"), "--device", "tpu"), "unknown device"
    )


def test_window_reaches_nerd_and_names_the_report(tmp_path, clean_png):
    from converge.models.nerd import NERD, NERDConfig
    from converge.zoo import save_weights

    nerd = NERD(NERDConfig(features=8, heads=2, groups=2, window=3, expansion=1, max_iter=3))
    weights = save_weights(nerd, {"task": "denoise"}, tmp_path / "nerd.safetensors")
    evaluated = run_cli("eval", "-m", str(weights), "-b", "set12", "--sigma", "25", "--limit", "1", "--window", "5",
                        "--out", str(tmp_path))
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "nerd-set12-denoise-sigma25-window5-first1.json").exists()
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(tmp_path / "out.png"), "-m", str(weights), "--window", "4"),
        "window must be a positive odd integer",
    )


def test_stride_reaches_groupsc_and_is_checked(tmp_path, clean_png):
    import torch

    from converge.models.durr import DURR, DURRConfig
    from converge.models.groupsc import GroupSC, GroupSCConfig
    from converge.zoo import save_weights

    torch.manual_seed(0)
    groupsc = GroupSC(GroupSCConfig(patch_size=5, atoms=8, steps=2, window=12, stride=8))
    weights = save_weights(groupsc, {"task": "denoise"}, tmp_path / "groupsc.safetensors")
    output = tmp_path / "out.png"
    result = run_cli("restore", str(clean_png), str(output), "-m", str(weights), "--sigma", "25", "--stride", "4")
    assert result.returncode == 0, result.stderr
    evaluated = run_cli("eval", "-m", str(weights), "-b", "set12", "--sigma", "25", "--limit", "1", "--stride", "8",
                        "--out", str(tmp_path))
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "groupsc-set12-denoise-sigma25-stride8-first1.json").exists()
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", str(weights), "--sigma", "25", "--stride", "9"),
        "stride must be an integer from 1 to block - patch_size + 1 = 8",
    )
    durr = save_weights(DURR(DURRConfig(features=4, bottom_convs=1, policy_features=4, policy_hidden=4)),
                        {"task": "denoise"}, tmp_path / "durr.safetensors")
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", str(durr), "--stride", "4"), "no block stride to set"
    )
    assert_one_line_error(
        run_cli("restore", str(clean_png), str(output), "-m", "bm3d", "--sigma", "25", "--stride", "4"),
        "has no stride to set",
    )


def test_blind_restore_of_a_folder_builds_one_restorer(tmp_path, clean_png, monkeypatch):
    from converge import cli, restorers

    source = tmp_path / "noisy"
    source.mkdir()
    for sigma in ("10", "40"):
        assert run_cli("degrade", str(clean_png), str(source / f"s{sigma}.png"), "--sigma", sigma).returncode == 0
    built = []
    real_make_restorer = restorers.make_restorer

    def counting_make_restorer(name, task, **options):
        built.append((name, task.tag))
        return real_make_restorer(name, task, **options)

    monkeypatch.setattr(restorers, "make_restorer", counting_make_restorer)
    cli.restore(source, tmp_path / "restored", task="denoise", model="tv")
    assert len(built) == 1 and built[0][0] == "tv"
    assert sorted(path.name for path in (tmp_path / "restored").iterdir()) == ["s10.png", "s40.png"]


def test_restore_deblocks_a_jpeg_at_the_quality_read_from_the_file(tmp_path, clean_png):
    jpeg = tmp_path / "in.jpg"
    Image.open(clean_png).save(jpeg, quality=37)
    read = run_cli("restore", str(jpeg), str(tmp_path / "a.png"), "-m", "groupsc", "-t", "deblock")
    assert read.returncode == 0, read.stderr
    assert "[groupsc-deblock-q40," in read.stderr and "(JPEG quality 37, read from the file)" in read.stderr
    told = run_cli("restore", str(jpeg), str(tmp_path / "b.png"), "-m", "groupsc", "-t", "deblock", "-q", "12")
    assert told.returncode == 0 and "[groupsc-deblock-q10," in told.stderr and "read from the file" not in told.stderr
    png = run_cli("restore", str(tmp_path / "a.png"), str(tmp_path / "c.png"), "-m", "groupsc", "-t", "deblock")
    assert png.returncode == 0 and "[groupsc-deblock-q10," in png.stderr and "read from the file" not in png.stderr


def test_version_and_short_help():
    from converge import __version__

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"converge {__version__}"
    helped = run_cli("restore", "-h")
    assert helped.returncode == 0 and "restore [OPTIONS]" in helped.stdout


def test_eval_options_out_of_range_are_refused(tmp_path):
    base = ("eval", "-m", "input", "-b", "set12", "--sigma", "25", "--out", str(tmp_path))
    for limit in ("0", "-1"):
        assert_one_line_error(run_cli(*base, "--limit", limit), "--limit must be a positive number of images")
    assert_one_line_error(run_cli(*base, "--crop", "-4"), "--crop must be a non-negative number of pixels")
    assert_one_line_error(run_cli(*base, "--limit", "1", "--crop", "1000"), "crop_border=1000 leaves less than")
    assert not list(tmp_path.glob("*.json"))


def test_a_folder_restore_goes_on_past_a_bad_file_and_fails_at_the_end(tmp_path, clean_png):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(clean_png.read_bytes())
    (folder / "b.png").write_text("not an image")
    (folder / "c.png").write_bytes(clean_png.read_bytes())
    result = run_cli("restore", str(folder), str(tmp_path / "out"), "--sigma", "25")
    assert result.returncode == 2
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert "b.png: not an image file" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 3 images could not be restored: b.png"


def test_tiny_images_are_refused_with_one_line_and_nothing_written(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((3, 2), 128, dtype=np.uint8)).save(tiny)
    output = tmp_path / "out.png"
    assert_one_line_error(run_cli("restore", str(tiny), str(output)), "too small to estimate its noise level")
    assert_one_line_error(run_cli("restore", str(tiny), str(output), "-m", "bm3d", "--sigma", "25"), "at least 8x8")
    assert_one_line_error(run_cli("restore", str(tiny), str(output), "-m", "groupsc", "--sigma", "25"), "at least 7x7")
    assert not output.exists()
    assert run_cli("restore", str(tiny), str(output), "--sigma", "25").returncode == 0 and output.exists()


def test_zoo_lists_every_shipped_model_with_its_measured_score_and_prints_cards():
    from converge import zoo

    listed = run_cli("zoo")
    assert listed.returncode == 0, listed.stderr
    flat = " ".join(listed.stdout.split())
    for entry in zoo.list_models():
        assert entry.name in flat and f"{entry.score.psnr:.2f} dB" in flat, entry.name
    card = run_cli("zoo", "nerd-s25")
    assert card.returncode == 0 and card.stdout.startswith("## nerd-s15, nerd-s25, nerd-s50")
    assert_one_line_error(run_cli("zoo", "nerd-s99"), "'nerd-s99' is no shipped model or family")


def test_restore_runs_a_plug_and_play_algorithm_with_a_prior(tmp_path, clean_png):
    blurred, restored = tmp_path / "blurred.png", tmp_path / "restored.png"
    assert run_cli("degrade", str(clean_png), str(blurred), "--task", "deblur").returncode == 0
    result = run_cli(
        "restore", str(blurred), str(restored), "--task", "deblur", "--model", "admm", "--prior", "dncnn-s25"
    )
    assert result.returncode == 0, result.stderr
    assert "admm+dncnn-s25, iterations 8" in result.stderr
    assert Image.open(restored).size == Image.open(clean_png).size


def test_restore_writes_the_layout_and_depth_the_input_file_had(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.clip(128 + rng.normal(0, 25, (32, 32)), 0, 255).astype(np.uint8)
    cases = {
        "colour.png": (np.clip(128 + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8), "RGB"),
        "grey-in-rgb.png": (np.stack([grey] * 3, axis=-1), "RGB"),
        "sixteen.png": (grey.astype(np.uint16) * 257, "I;16"),
    }
    for name, (pixels, mode) in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        output = tmp_path / f"out-{name}"
        result = run_cli("restore", str(tmp_path / name), str(output), "--sigma", "25", "-m", "bm3d")
        assert result.returncode == 0, result.stderr
        assert Image.open(output).mode == mode, name


def test_bench_all_lays_out_every_shipped_table_and_one_page_of_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from converge import cli
    from converge.eval import table

    two = {name: title for name, title in list(table.shipped_tables().items())[:2]}
    monkeypatch.setattr(table, "shipped_tables", lambda: two)
    page = tmp_path / "results.md"
    args = ["bench", "--all", "--no-run", "--out", str(tmp_path / "out"), "--results", str(page)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.startswith("# Results: every paper table") and "at commit " in text
    for name, title in two.items():
        assert (tmp_path / "out" / f"{name}.md").is_file() and f"## {title}" in text
    assert_one_line_error(run_cli("bench", "durr-table2", "--all"), "TABLE or --all")


def test_restore_says_when_a_model_computed_in_bf16_and_checks_the_precision(tmp_path, clean_png):
    result = run_cli("restore", str(clean_png), str(tmp_path / "r.png"), "--model", "dncnn-s25", "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    assert ", bf16, " in result.stderr.splitlines()[0]
    assert_one_line_error(run_cli("restore", str(clean_png), str(tmp_path / "b.png"), "--precision", "half"), "half")
    assert not (tmp_path / "b.png").exists()
    refused = run_cli("restore", str(clean_png), str(tmp_path / "b.png"), "--model", "bm3d", "--precision", "bf16")
    assert_one_line_error(refused, "'bm3d' computes in fp32")


def test_restore_says_a_grey_deblocker_restores_a_colour_jpeg_plane_by_plane(tmp_path):
    rng = np.random.default_rng(1)
    ramp = np.add.outer(np.arange(40), np.arange(48)) * 2.0
    pixels = np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1) + rng.normal(0, 3, (40, 48, 3))
    jpeg = tmp_path / "colour.jpg"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(jpeg, quality=20)
    result = run_cli("restore", str(jpeg), str(tmp_path / "out.png"), "-m", "durr", "-t", "deblock")
    assert result.returncode == 0, result.stderr
    assert "durr-deblock-blind is a grey model: it restored the colour JPEG plane by plane in YCbCr" in result.stderr
    assert "its luma (Y) and its chroma (Cb, Cr)" in result.stderr
