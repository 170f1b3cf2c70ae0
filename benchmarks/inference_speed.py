"""Seconds and peak memory per megapixel of every shipped model, per numeric mode and thread count, beside BM3D.

Each case (a zoo entry or BM3D, a precision, a thread count) runs in a fresh process (so thread counts,
allocator state and peak memory do not leak between cases): ``torch.set_num_threads`` and the BLAS/OpenMP
thread variables at the case's count; the imports, then the baseline resident memory; the entry's
restorer (``converge.restorers.make_restorer``, its default settings); one warm-up restore of a 64x64
crop; then each image restored once and timed by the restorer itself (``Restoration.seconds``).

Images: the first ``--images`` images of the standard set of the entry's task and channels (denoise grey:
bsd68, colour: cbsd68; deblock: classic5; demosaic and deblur: kodak24), centre crops of ``--size`` pixels
square (smaller when an image is), degraded as the entry was trained (``zoo.trained_degradation``: a blind
entry at sigma 25 or quality 20, not told the level; a prior for many tasks deblurring) and the
evaluation seed of each image (``evaluation_generator``), so every case of an entry sees the same
observations. BM3D runs at sigma 25 on bsd68 (grey) and cbsd68 (colour).

Per case: seconds per megapixel (median over the images of seconds / megapixels of the crop), the peak
resident memory of the process (``ru_maxrss``) and its baseline after the imports (both MiB), the mean
PSNR against the clean crop (``converge.eval.metrics.psnr``, whole crop, all channels) and the mean loop
count where the model reports one. ``bf16``: ``make_restorer(..., precision="bf16")``, the model under
bfloat16 autocast; BM3D (NumPy) runs in fp32 only.

Writes ``inference_speed.json`` to ``--out-dir`` (after every entry, so an interrupted run keeps what it
measured) and the Markdown table to ``--doc``.

With ``--record``, each zoo entry's fp32 one-thread seconds per megapixel goes into its manifest
(``seconds_per_megapixel``), the speed ``converge restore`` chooses a model by, and whether bf16 changed
its PSNR by at most 0.02 dB (``bf16_inference``), which its ``--precision auto`` uses; a test checks both
against ``inference_speed.json``.

Usage:
    python benchmarks/inference_speed.py [--models dncnn-s25 bm3d ...] [--images 2] [--size 256]
        [--threads 1 2] [--out-dir benchmarks/results] [--doc docs/inference-speed.md] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE = "bm3d"
PRECISIONS = ("fp32", "bf16")
# The standard set of each (task, channels) a shipped model restores.
BENCHES = {("denoise", 1): "bsd68", ("denoise", 3): "cbsd68", ("deblock", 1): "classic5", ("demosaic", 3): "kodak24",
           ("deblur", 3): "kodak24"}
WARMUP_SIZE = 64
# The targets: a model at most this many times BM3D's seconds per megapixel (fp32, one thread),
# and bf16 the default only where it costs at most this many dB.
TARGET_RATIO = 3.0
BF16_TOLERANCE_DB = 0.02
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class CaseSpec:
    """What one row restores: the restorer ``name`` for ``task`` with options ``params`` (``make_task``),
    on images of ``channels`` channels from ``bench``; ``blind``: the restorer is not told the noise level."""

    name: str
    task: str
    channels: int
    bench: str
    params: dict[str, Any]
    blind: bool


def case_specs(names: list[str]) -> list[CaseSpec]:
    """The rows of ``names`` (zoo entries, or ``bm3d`` for its grey and colour rows), in the given order."""
    from converge import zoo
    from converge.errors import ConfigError

    specs = []
    for name in names:
        if name == BASELINE:
            specs += [CaseSpec(BASELINE, "denoise", channels, BENCHES["denoise", channels], {"sigma": 25.0}, False)
                      for channels in (1, 3)]
            continue
        if name not in zoo.ZOO:
            raise ConfigError(f"unknown model {name!r}: choose {BASELINE} or zoo entries: {', '.join(sorted(zoo.ZOO))}")
        entry = zoo.ZOO[name]
        task, params = zoo.trained_degradation(name)
        if (task, entry.channels) not in BENCHES:
            raise ConfigError(f"no standard set for task {task!r} with {entry.channels} channel(s) "
                              f"(zoo entry {name!r}): add one to BENCHES in {Path(__file__).name}")
        blind = entry.level() is None and task == "denoise"
        specs.append(CaseSpec(name, task, entry.channels, BENCHES[task, entry.channels], params, blind))
    return specs


def measure_case(spec: CaseSpec, precision: str, threads: int, images: int, size: int) -> dict[str, Any]:
    """Time one case in this process (see the module docstring)."""
    import resource

    import torch

    from converge.data.registry import load_images
    from converge.data.seeding import evaluation_generator
    from converge.eval.metrics import psnr
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer

    if spec.name == BASELINE:
        import bm3d  # noqa: F401  (imported before the baseline, as the models' code is)
    torch.set_num_threads(threads)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    task = make_task(spec.task, **spec.params)
    clean = [(stem, _centre_crop(image, size)) for stem, image in islice(load_images(spec.bench, spec.channels), images)]
    observed = [task.degrade(image, evaluation_generator(spec.bench, stem, task.tag)) for stem, image in clean]
    restore = make_restorer(spec.name, task, blind=spec.blind, precision=precision)

    warmup = _centre_crop(clean[0][1], WARMUP_SIZE)
    restore(*task.degrade(warmup, torch.Generator().manual_seed(0)))
    seconds_per_mp, scores, iterations = [], [], []
    for (_, image), (y, operator) in zip(clean, observed):
        restored = restore(y, operator)
        seconds_per_mp.append(restored.seconds / (image.shape[-2] * image.shape[-1] / 1e6))
        scores.append(float(psnr(restored.image.float(), image)[0]))
        if restored.iterations is not None:
            iterations.append(restored.iterations)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    megapixels = max(image.shape[-2] * image.shape[-1] for _, image in clean) / 1e6
    return {
        "seconds_per_mp": statistics.median(seconds_per_mp),
        "seconds_per_mp_each": seconds_per_mp,
        "psnr": statistics.fmean(scores),
        "psnr_each": scores,
        "iterations": statistics.fmean(iterations) if iterations else None,
        "baseline_mib": round(baseline_mib, 1),
        "peak_mib": round(peak_mib, 1),
        "over_baseline_mib": round(peak_mib - baseline_mib, 1),
        "over_baseline_mib_per_mp": round((peak_mib - baseline_mib) / megapixels, 1),
        "images": [f"{stem} {image.shape[-2]}x{image.shape[-1]}" for stem, image in clean],
    }


def _centre_crop(image: Any, size: int) -> Any:
    height, width = image.shape[-2:]
    crop_height, crop_width = min(size, height), min(size, width)
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    return image[..., top : top + crop_height, left : left + crop_width].contiguous()


def run_case(spec: CaseSpec, precision: str, threads: int, images: int, size: int) -> dict[str, Any]:
    """One case in a fresh process, its thread variables set: its measurements, or the last line of its error."""
    command = [sys.executable, __file__, "--case", spec.name, str(spec.channels), precision, str(threads),
               "--images", str(images), "--size", str(size)]
    environment = {**os.environ, **{variable: str(threads) for variable in THREAD_VARIABLES}}
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, env=environment)
    if completed.returncode == 0:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
    return {"error": lines[-1][:200] if lines else f"exit {completed.returncode}"}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    reference = {row["channels"]: _seconds(row, "fp32", 1) for row in rows if row["name"] == BASELINE}
    baselines = [case["baseline_mib"] for row in rows for case in row["cases"].values() if "baseline_mib" in case]
    low, high = (f"{min(baselines):.0f}", f"{max(baselines):.0f}") if baselines else ("-", "-")
    baseline_range = f"{low} MiB" if low == high else f"{low} to {high} MiB"
    benches = ", ".join(f"{task} {'grey' if channels == 1 else 'colour'}: {bench}"
                        for (task, channels), bench in BENCHES.items())
    lines = [
        "# Inference speed",
        "",
        f"Made by `{result['command']}` on {result['machine']}, torch {result['torch']}. "
        f"First {result['images']} image(s) of each set ({benches}), centre crops of {result['size']}x{result['size']} "
        "pixels (smaller where an image is), degraded at the entry's own level (blind entries at sigma 25 or "
        "quality 20, not told it; BM3D at sigma 25) with the evaluation seeds."
        + (f" Conditions: {result['note']}" if result.get("note") else ""),
        "",
        "Each case runs in a fresh process. `s/MP`: median over the images of the restorer's seconds per "
        "megapixel, after one warm-up restore; `bf16`: the model under bfloat16 autocast; "
        "`bf16 - fp32`: mean PSNR difference on the same images. `peak MiB`: peak resident memory of the fp32 "
        "1-thread process minus its resident memory after the imports "
        f"({baseline_range}), so it counts the weights, the images and "
        "the restoration's working memory. `x BM3D`: fp32 1-thread s/MP over BM3D's on images of the same "
        f"channel count; **bold** where a model is slower than the target of {TARGET_RATIO:g}x. `x BM3D (auto)`: the "
        "same for the precision `converge restore` uses by default on this CPU (`--precision auto`: bf16 where "
        f"it changes the PSNR by at most {BF16_TOLERANCE_DB:g} dB and the CPU computes bf16 in hardware).",
        "",
        "| model | task | channels | s/MP fp32 1t | s/MP fp32 2t | s/MP bf16 1t | bf16 - fp32 (dB) | peak MiB "
        "| x BM3D (1t) | x BM3D (auto) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    from converge.devices import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    slow, slow_auto, lossy = [], [], []
    for row in rows:
        fp32, bf16 = _seconds(row, "fp32", 1), _seconds(row, "bf16", 1)
        fp32_case, delta = row["cases"].get("fp32 1t", {}), _bf16_change(row)
        difference = "-" if delta is None else f"{delta:+.3f}"
        if delta is not None and abs(delta) > BF16_TOLERANCE_DB:
            lossy.append(row["name"])
        base = reference.get(row["channels"])
        auto = bf16 if native and delta is not None and abs(delta) <= BF16_TOLERANCE_DB else fp32
        ratio, ratio_auto = (_ratio(seconds, base, row, names) for seconds, names in ((fp32, slow), (auto, slow_auto)))
        memory = f"{fp32_case['over_baseline_mib']:.0f}" if "over_baseline_mib" in fp32_case else "-"
        cells = [_format(fp32, row, "fp32 1t"), _format(_seconds(row, "fp32", 2), row, "fp32 2t"),
                 _format(bf16, row, "bf16 1t"), difference, memory, ratio, ratio_auto]
        lines.append(f"| `{row['name']}` | {row['task']} | {row['channels']} | " + " | ".join(cells) + " |")
    if reference:
        lines += ["", f"Slower than {TARGET_RATIO:g}x BM3D per megapixel (fp32, 1 thread): "
                  + (", ".join(f"`{name}`" for name in slow) or "none") + "."]
        lines += ["", f"Slower than {TARGET_RATIO:g}x BM3D at `--precision auto`: "
                  + (", ".join(f"`{name}`" for name in slow_auto) or "none") + "."]
    else:
        lines += ["", f"BM3D was not run (`--models ... {BASELINE}`), so no model is compared with it."]
    lines += ["", f"bf16 changes the PSNR by more than {BF16_TOLERANCE_DB:g} dB (fp32 stays the default): "
              + (", ".join(f"`{name}`" for name in lossy) or "none") + "."]
    errors = [(row["name"], label, case["error"]) for row in rows for label, case in row["cases"].items() if "error" in case]
    if errors:
        lines += ["", "Cases that did not run (last line of their error):", ""]
        lines += [f"- `{name}` {label}: {error}" for name, label, error in errors]
    return "\n".join(lines) + "\n"


def _ratio(seconds: float | None, base: float | None, row: dict[str, Any], slow: list[str]) -> str:
    """``seconds`` over BM3D's ``base`` as a table cell, bold (and the row's name added to ``slow``) over
    the target."""
    if seconds is None or not base or row["name"] == BASELINE:
        return "-"
    if seconds / base <= TARGET_RATIO:
        return f"{seconds / base:.2f}x"
    slow.append(row["name"])
    return f"**{seconds / base:.2f}x**"


def _bf16_change(row: dict[str, Any]) -> float | None:
    """The mean PSNR of bf16 minus that of fp32 (one thread), when both ran."""
    fp32_case, bf16_case = row["cases"].get("fp32 1t", {}), row["cases"].get("bf16 1t", {})
    return bf16_case["psnr"] - fp32_case["psnr"] if "psnr" in fp32_case and "psnr" in bf16_case else None


def _seconds(row: dict[str, Any], precision: str, threads: int) -> float | None:
    return row["cases"].get(f"{precision} {threads}t", {}).get("seconds_per_mp")


def _format(seconds: float | None, row: dict[str, Any], label: str) -> str:
    if seconds is not None:
        return f"{seconds:.3g}"
    return "fails" if "error" in row["cases"].get(label, {}) else "-"


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _torch_version() -> str:
    import torch

    return torch.__version__


def main() -> None:
    from converge import zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[entry.name for entry in zoo.list_models()] + [BASELINE],
                        help=f"zoo entries and/or {BASELINE} (its grey and colour rows); default: every entry and {BASELINE}")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out-dir", type=Path, default=REPOSITORY / "benchmarks" / "results")
    parser.add_argument("--doc", type=Path, default=REPOSITORY / "docs" / "inference-speed.md")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="the machine's conditions (another run beside it, say), for the doc")
    parser.add_argument("--record", action="store_true",
                        help="copy each zoo entry's fp32 one-thread s/MP into its manifest (seconds_per_megapixel)")
    args = parser.parse_args()
    if args.images < 1 or args.size < WARMUP_SIZE or min(args.threads) < 1:
        parser.error(f"--images and --threads must be at least 1 and --size at least {WARMUP_SIZE}")
    if args.case:
        name, channels, precision, threads = args.case
        spec = next(spec for spec in case_specs([name]) if spec.channels == int(channels))
        print(json.dumps(measure_case(spec, precision, int(threads), args.images, args.size)))
        return
    from converge.atomic import write_text_atomic

    specs = case_specs(args.models)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/inference_speed.py", *sys.argv[1:]])
    result = {"command": command, "machine": f"{platform.platform()}, {_cpu_name()}", "torch": _torch_version(),
              "images": args.images, "size": args.size, "threads": args.threads, "note": args.note, "rows": []}
    for spec in specs:
        precisions = ("fp32",) if spec.name == BASELINE else PRECISIONS
        cases = {f"{precision} {threads}t": run_case(spec, precision, threads, args.images, args.size)
                 for precision in precisions for threads in args.threads}
        result["rows"].append({**asdict(spec), "cases": cases})
        print(spec.name, spec.channels, {label: case.get("seconds_per_mp", case.get("error")) for label, case in cases.items()},
              flush=True)
        write_text_atomic(args.out_dir / "inference_speed.json", json.dumps(result, indent=1) + "\n")
    args.doc.write_text(markdown(result))
    if args.record:
        record_speeds(result)


def record_speeds(result: dict[str, Any]) -> None:
    """Write each measured zoo entry's fp32 one-thread seconds per megapixel and whether bf16 costs it
    at most ``BF16_TOLERANCE_DB`` into its manifest: ``converge.choice`` compares the first,
    ``precision="auto"`` uses the second."""
    from converge import zoo

    for row in result["rows"]:
        seconds, change = _seconds(row, "fp32", 1), _bf16_change(row)
        if row["name"] in zoo.ZOO and seconds is not None:
            safe = None if change is None else abs(change) <= BF16_TOLERANCE_DB
            zoo.record_measurements(row["name"], seconds_per_megapixel=seconds, bf16_inference=safe)

if __name__ == "__main__":
    main()
