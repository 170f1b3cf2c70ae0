"""Seconds per training step of every trainable model's compact config, per numeric mode and thread count.

For each config, each case runs in a fresh process (so thread counts and compiled graphs do not leak):
the config's own trainer, data and batch shape, its evaluation switched off, ``--warmup`` steps, then the
median of ``--steps`` timed optimiser steps (``Trainer._train_step``: forward, loss, backward, update)
and the median time to draw one batch of patches (crops, augmentation, degradation, collation), which
the trainer does between steps in the same process.

Cases: ``fp32``; ``bf16`` (the config's ``precision: bf16``: the model's training forward under
``torch.autocast(cpu, bfloat16)``, loss and optimiser in float32); each with ``channels_last`` memory
format; each with ``torch.compile`` (inductor) of the model's ``training_forward``; at 1 and 2 torch
threads; and two 1-thread processes side by side (``pair``: the step time each of them sees), which is
how this 2-core machine runs two trainings at once.

``--emulated-bf16 CONFIG`` times one config's 1-thread step in fp32 and in bf16 on a CPU without native
bfloat16, where the trainer refuses bf16 (the check is lifted for this measurement only): what that refusal
saves. It writes ``train_speed_emulated_bf16.json``.

``--quality CONFIG`` instead trains the config twice for ``--quality-steps`` steps, in fp32 and in bf16,
same seed and data, and scores both on the validation split (``bsds-val32``, never a test set) at the
config's evaluation task: whether the fast mode keeps the quality.

Writes ``train_speed.json`` (and ``train_speed_quality.json``) to ``--out-dir`` and the Markdown tables
to ``--doc``.

Usage:
    python benchmarks/train_speed.py [--configs configs/dncnn-denoise-compact.yaml ...] [--steps 4]
        [--warmup 2] [--out-dir benchmarks/results] [--doc docs/training-speed.md]
    python benchmarks/train_speed.py --quality configs/dncnn-denoise-compact.yaml --quality-steps 1000
    python benchmarks/train_speed.py --emulated-bf16 configs/unet-denoise-color-compact.yaml --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIGS = (
    "configs/dncnn-denoise-compact.yaml",
    "configs/unet-denoise-color-compact.yaml",
    "configs/nerd-denoise-compact.yaml",
    "configs/groupsc-denoise-compact.yaml",
    "configs/durr-denoise-compact.yaml",
    "configs/durr-policy-denoise-compact.yaml",
    "configs/mtdeq-multitask-compact.yaml",
    "configs/degrad-deblur-compact.yaml",
)
# (precision, channels_last, compiled, threads): every case at one thread, the plain modes at two.
CASES = (
    ("fp32", False, False, 1),
    ("bf16", False, False, 1),
    ("fp32", True, False, 1),
    ("bf16", True, False, 1),
    ("fp32", False, True, 1),
    ("bf16", False, True, 1),
    ("fp32", False, False, 2),
    ("bf16", False, False, 2),
)
# The stage-one weights a policy config starts from when its own run folder is not here (other configs
# whose start is missing are timed from their random initialisation).
SHIPPED_DURR = "src/converge/weights/durr-gray-denoise-blind.safetensors"


def measure_case(config_path: str, precision: str, channels_last: bool, compiled: bool, threads: int,
                 steps: int, warmup: int) -> dict[str, Any]:
    """Time one case in this process (see the module docstring); returns the medians in seconds."""
    import torch
    from torch.utils.data import DataLoader

    from converge.data.patches import collate_patches
    from converge.train.config import load_config
    from converge.train.registry import trainer_class

    torch.set_num_threads(threads)
    overrides = [f"precision={precision}", f"channels_last={str(channels_last).lower()}", "eval=null", "export=final"]
    config = load_config(REPOSITORY / config_path, overrides)
    if config.init_weights is not None and not Path(config.init_weights).is_file():
        # Timing needs no trained start: the policy stage its stage-one unit, the others none.
        start = REPOSITORY / SHIPPED_DURR if config.trainer == "dqn" else None
        config = load_config(REPOSITORY / config_path, [*overrides, f"init_weights={start or 'null'}"])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_class(config.trainer)(config, run_dir, progress=False)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if compiled:
            trainer.model.training_forward = torch.compile(trainer.model.training_forward)
        batches = trainer._epoch_batches(0, 0, config.data.batch_size)
        loader = iter(DataLoader(trainer.dataset, batch_sampler=batches, collate_fn=collate_patches))
        step_seconds, data_seconds = [], []
        for index in range(warmup + steps):
            started = time.perf_counter()
            y, x, operator, level = next(loader)
            drawn = time.perf_counter()
            y, x = y.contiguous(memory_format=memory_format), x.contiguous(memory_format=memory_format)
            trainer._train_step(y, x, operator, level)
            trainer.step += 1
            if index >= warmup:
                step_seconds.append(time.perf_counter() - drawn)
                data_seconds.append(drawn - started)
    return {"step": statistics.median(step_seconds), "data": statistics.median(data_seconds)}


def run_case(config_path: str, case: tuple, steps: int, warmup: int) -> dict[str, Any]:
    """One case in a fresh process: its medians, or the last line of its error."""
    precision, channels_last, compiled, threads = case
    command = [sys.executable, __file__, "--case", config_path, precision, str(int(channels_last)),
               str(int(compiled)), str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    return _result_of(subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY))


def run_pair(config_path: str, precision: str, steps: int, warmup: int) -> list[dict[str, Any]]:
    """Two 1-thread processes of the same case side by side: each one's medians."""
    command = [sys.executable, __file__, "--case", config_path, precision, "0", "0", "1",
               "--steps", str(steps), "--warmup", str(warmup)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
                 for _ in range(2)]
    return [_result_of(subprocess.CompletedProcess(command, p.wait(), *p.communicate())) for p in processes]


def _result_of(completed: subprocess.CompletedProcess) -> dict[str, Any]:
    if completed.returncode == 0:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
    return {"error": lines[-1][:200] if lines else f"exit {completed.returncode}"}


QUALITY_MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16 CL": ("bf16", True)}


def quality(config_path: str, steps: int, out_dir: Path, modes: list[str]) -> dict[str, Any]:
    """Train ``config_path`` for ``steps`` steps in each of ``modes`` (keys of :data:`QUALITY_MODES`),
    same seed and data, and score each on bsds-val32; merged into ``train_speed_quality.json``."""
    path = out_dir / "train_speed_quality.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    entry = next((item for item in previous if item["config"] == config_path and item["steps"] == steps), None)
    entry = entry or {"config": config_path, "steps": steps}
    for mode in modes:
        precision, channels_last = QUALITY_MODES[mode]
        with tempfile.TemporaryDirectory() as run_dir:
            command = [sys.executable, "-m", "converge", "train", config_path, "--run-dir", run_dir, "--threads", "1",
                       "--set", f"steps={steps}", "--set", f"precision={precision}", "--set", "export=final",
                       "--set", f"channels_last={str(channels_last).lower()}",
                       "--set", "eval.bench=bsds-val32", "--set", "eval.max_images=null",
                       "--set", f"eval.every={steps}", "--set", "init_weights=null"]
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPOSITORY, capture_output=True)
            log = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
            evaluated = [record for record in log if "eval_psnr" in record]
            trained = [record for record in log if "loss" in record]
            entry[mode] = {"validation_psnr": evaluated[-1]["eval_psnr"], "train_seconds": trained[-1]["seconds"],
                           "wall_seconds": round(time.perf_counter() - started, 1)}
    kept = [item for item in previous if not (item["config"] == config_path and item["steps"] == steps)]
    path.write_text(json.dumps([*kept, entry], indent=1) + "\n")
    return entry


PRECISIONS = ("fp32", "bf16")


def emulated_bf16(config_path: str, steps: int, warmup: int) -> dict[str, Any]:
    """fp32 and bf16 1-thread step times of ``config_path`` on this CPU, bf16 allowed without native support."""
    from converge.devices import cpu_has_native_bf16
    from converge.train import trainer

    native = cpu_has_native_bf16()
    trainer.cpu_has_native_bf16 = lambda: True
    times = {mode: measure_case(config_path, mode, False, False, 1, steps, warmup) for mode in PRECISIONS}
    return {"config": config_path, "machine": _machine(), "native_bf16": native, **times}


def _machine() -> str:
    return f"{platform.machine()}, {_cpu_name()}, torch {_torch_version()}"


def markdown(
    results: list[dict[str, Any]],
    qualities: list[dict[str, Any]],
    command: str,
    machine: str,
    emulated: dict[str, Any] | None,
) -> str:
    lines = [
        "# Training speed",
        "",
        f"Made by `{command}` on {machine}. "
        "Seconds per optimiser step (median; forward, loss, backward, update) of each compact config at "
        "its own batch shape; `data`: seconds to draw one batch (crops, degradation, collation). "
        "`pair`: two 1-thread processes of the fp32 or bf16 case side by side, each one's step time.",
        "",
        "| config | fp32 1t | bf16 1t | fp32 CL 1t | bf16 CL 1t | compile fp32 1t | compile bf16 1t "
        "| fp32 2t | bf16 2t "
        "| pair fp32 | pair bf16 | data | bf16 speed-up (1t) |",
        "|---|" + "---|" * 12,
    ]
    for result in results:
        cells = [_cell(case) for case in result["cases"]]
        pairs = [" / ".join(_cell(each) for each in result["pairs"][precision]) for precision in ("fp32", "bf16")]
        fp32, bf16 = result["cases"][0], result["cases"][1]
        speedup = f"{fp32['step'] / bf16['step']:.2f}x" if "step" in fp32 and "step" in bf16 else "-"
        data = f"{fp32['data']:.3f}" if "data" in fp32 else "-"
        lines.append(f"| `{result['config']}` | " + " | ".join([*cells, *pairs, data, speedup]) + " |")
    errors = [(result["config"], case) for result in results for case in result["cases"] if "error" in case]
    if errors:
        lines += ["", "Cases that did not run (last line of their error):", ""]
        lines += [f"- `{config}`: {case['label']}: {case['error']}" for config, case in errors]
    lines += ["", "## What each compact config trains with", "",
              "The mode each config names now (`precision`, `channels_last`), chosen from the tables: a fast "
              "mode only where its quality run below stays within 0.05 dB of fp32, or where it changes only "
              "the memory order (channels-last in fp32).", "",
              "| config | precision | channels-last |", "|---|---|---|"]
    for result in results:
        config = yaml.safe_load((REPOSITORY / result["config"]).read_text())
        lines.append(f"| `{result['config']}` | {config.get('precision', 'fp32')} | "
                     f"{'yes' if config.get('channels_last') else 'no'} |")
    if qualities:
        lines += ["", "## Do the fast modes keep the quality?", "",
                  "Each config trained from the same seed and data for the same number of steps in each mode, "
                  "scored on the validation split bsds-val32 (32 BSDS500 images in no test set) at the config's "
                  "evaluation task (`python benchmarks/train_speed.py --quality CONFIG --quality-steps N "
                  "--quality-modes ...`). dB: the mode's validation PSNR minus fp32's; s/step: that run's "
                  "training seconds per step (beside another 1-thread job).", "",
                  "| config | steps | fp32 PSNR | bf16 | bf16 CL | fp32 s/step | bf16 s/step | bf16 CL s/step |",
                  "|---|---|---|---|---|---|---|---|"]
        for entry in qualities:
            reference = entry["fp32"]["validation_psnr"]
            cells = []
            for mode in ("bf16", "bf16 CL"):
                run = entry.get(mode)
                gain = None if run is None else run["validation_psnr"] - reference
                cells.append("-" if run is None else f"{run['validation_psnr']:.2f} ({gain:+.2f} dB)")
            speeds = [
                "-" if entry.get(mode) is None else f"{entry[mode]['train_seconds'] / entry['steps']:.3f}"
                for mode in QUALITY_MODES
            ]
            row = [f"`{entry['config']}`", str(entry["steps"]), f"{reference:.2f}", *cells, *speeds]
            lines.append("| " + " | ".join(row) + " |")
    if emulated:
        slower = emulated["bf16"]["step"] / emulated["fp32"]["step"]
        lines += ["", "## Machines without native bf16", "",
                  "The tables above come from a CPU that computes bfloat16 in hardware (AVX512-BF16). On one "
                  "without it, autocast emulates bf16 and a step takes many times longer, so `converge train` "
                  "refuses `precision: bf16` there and says to train with `--set precision=fp32` (a resumed "
                  "run may switch; its log records the change). Measured by `python benchmarks/train_speed.py "
                  f"--emulated-bf16 {emulated['config']} --steps 3 --warmup 1` on {emulated['machine']} "
                  f"(native bf16: {'yes' if emulated['native_bf16'] else 'no'}), one thread, beside one "
                  f"1-thread training run: fp32 {emulated['fp32']['step']:.2f} s per step, bf16 "
                  f"{emulated['bf16']['step']:.2f} s ({slower:.0f} times longer)."]
    return "\n".join(lines) + "\n"


def _cell(case: dict[str, Any]) -> str:
    return f"{case['step']:.3f}" if "step" in case else "fails"


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _torch_version() -> str:
    import torch

    return torch.__version__


def _label(case: tuple) -> str:
    precision, channels_last, compiled, threads = case
    return f"{'compile ' if compiled else ''}{precision}{' CL' if channels_last else ''} {threads}t"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPOSITORY / "benchmarks" / "results")
    parser.add_argument("--doc", type=Path, default=REPOSITORY / "docs" / "training-speed.md")
    parser.add_argument("--quality", help="a config to train in fp32 and bf16 and score on the validation split")
    parser.add_argument("--quality-steps", type=int, default=1000)
    parser.add_argument("--quality-modes", nargs="+", default=list(QUALITY_MODES), choices=list(QUALITY_MODES))
    parser.add_argument("--emulated-bf16", help="a config to time in fp32 and bf16 on a CPU without native bf16")
    parser.add_argument("--render", action="store_true", help="only rewrite --doc from the JSON already in --out-dir")
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        config_path, precision, channels_last, compiled, threads = args.case
        print(json.dumps(measure_case(config_path, precision, bool(int(channels_last)), bool(int(compiled)),
                                      int(threads), args.steps, args.warmup)))
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    quality_path = args.out_dir / "train_speed_quality.json"
    speed_path = args.out_dir / "train_speed.json"
    emulated_path = args.out_dir / "train_speed_emulated_bf16.json"
    if args.render or args.emulated_bf16:
        if args.emulated_bf16:
            measured = emulated_bf16(args.emulated_bf16, args.steps, args.warmup)
            emulated_path.write_text(json.dumps(measured, indent=1) + "\n")
        saved = json.loads(speed_path.read_text())
        results, command = saved["results"], saved["command"]
    elif args.quality:
        print(json.dumps(quality(args.quality, args.quality_steps, args.out_dir, args.quality_modes)))
        results = json.loads(speed_path.read_text())["results"] if speed_path.exists() else []
        command = json.loads(speed_path.read_text())["command"] if speed_path.exists() else "-"
    else:
        results = []
        for config_path in args.configs:
            cases = [{"label": _label(case), **run_case(config_path, case, args.steps, args.warmup)} for case in CASES]
            pairs = {
                precision: run_pair(config_path, precision, args.steps, args.warmup) for precision in ("fp32", "bf16")
            }
            results.append({"config": config_path, "cases": cases, "pairs": pairs})
            print(config_path, [(case["label"], case.get("step", case.get("error"))) for case in cases], flush=True)
        command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:])
        speed_path.write_text(
            json.dumps({"command": command.strip(), "machine": _machine(), "results": results}, indent=1) + "\n"
        )
    qualities = json.loads(quality_path.read_text()) if quality_path.exists() else []
    machine = json.loads(speed_path.read_text())["machine"]
    emulated = json.loads(emulated_path.read_text()) if emulated_path.exists() else None
    args.doc.write_text(markdown(results, qualities, command.strip(), machine, emulated))


if __name__ == "__main__":
    main()
