"""Benchmark converge's DEQ solvers and backward modes against TorchDEQ on the same problems.

Problems (float32, batch 4, tolerance 1e-4 on ``||f(z) - z|| / ||f(z)||``, start at zeros):

- ``easy``: ``f(z) = tanh(W z + x)``, Gaussian ``W`` rescaled to ``||W||_2 = 0.9`` (power-iteration
  estimate), ``x ~ N(0, 1)``. Dense at D = 10^4; at D = 10^5 a dense W would take 40 GB, so there
  ``W`` is a sparse Gaussian matrix with 64 non-zeros per row.
- ``hard``: the same map with a symmetric ``W`` of norm exactly 0.99 and eigenvalues spread
  uniformly over ``[-0.99, 0.99]`` (a real symmetric circulant, applied by FFT), and a small input
  ``x ~ 0.01 N(0, 1)``: nearly linear, so plain iteration converges at rate 0.99.
- ``conv``: a NERD-sized convolutional update (128 channels, 64x64, batch 4): weight-normalised
  conv3x3, GroupNorm(4), ReLU, conv3x3, add the injection, GroupNorm, residual add, ReLU,
  GroupNorm (the MDEQ-style block of IMPLEMENTATION_NOTES.md), random initialisation.

Every solver, ours and TorchDEQ's, is timed on the same ``f`` in the same process; ``f`` is
wrapped to count its calls (one call = one batched evaluation), and each returned state's residual
is measured again independently. Backward modes are measured on the conv problem, each in a fresh
subprocess so that its peak resident memory is its own.

Usage:
    python benchmarks/deq_solvers.py [--out-dir benchmarks/results] [--repeats 3]
        [--conv-repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from converge.deq import DEQ, get_solver, relative_residual

TOL = 1e-4
BATCH = 4


@dataclass
class Problem:
    """A fixed-point problem ``z = f(z)`` with its starting state and iteration budgets."""

    name: str
    description: str
    f: Callable[[Tensor], Tensor]
    z0: Tensor
    max_iter: dict[str, int]
    repeats: int
    keep: list[Any] = field(default_factory=list)


def spectral_norm_estimate(apply: Callable[[Tensor], Tensor], apply_t: Callable[[Tensor], Tensor],
                           dim: int, generator: torch.Generator, steps: int = 60) -> float:
    """Power iteration on ``W^T W``; returns an estimate of ``||W||_2``."""
    v = torch.randn(dim, 1, generator=generator)
    v /= v.norm()
    for _ in range(steps):
        v = apply_t(apply(v))
        v /= v.norm()
    return float(apply(v).norm())


def easy_problem(dim: int, generator: torch.Generator, repeats: int) -> Problem:
    x = torch.randn(BATCH, dim, generator=generator)
    if dim <= 20_000:
        weight = torch.randn(dim, dim, generator=generator)
        norm = spectral_norm_estimate(lambda v: weight @ v, lambda v: weight.T @ v, dim, generator)
        weight *= 0.9 / norm
        kind = "dense Gaussian"

        def f(z: Tensor) -> Tensor:
            return torch.tanh(z @ weight.T + x)
    else:
        per_row = 64
        rows = torch.arange(dim).repeat_interleave(per_row)
        cols = torch.randint(0, dim, (dim * per_row,), generator=generator)
        values = torch.randn(dim * per_row, generator=generator)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (dim, dim)).coalesce()
        coo_t = torch.sparse_coo_tensor(coo.indices().flip(0), coo.values(), (dim, dim)).coalesce()
        weight, weight_t = coo.to_sparse_csr(), coo_t.to_sparse_csr()
        norm = spectral_norm_estimate(lambda v: weight @ v, lambda v: weight_t @ v, dim, generator)
        scale = 0.9 / norm
        weight = (coo * scale).coalesce().to_sparse_csr()
        kind = f"sparse Gaussian, {per_row} non-zeros per row"

        def f(z: Tensor) -> Tensor:
            return torch.tanh((weight @ z.T).T + x)
    return Problem(
        name=f"easy D={dim:.0e}",
        description=f"tanh(Wz + x), {kind}, ||W|| = 0.9, x ~ N(0, 1)",
        f=f, z0=torch.zeros(BATCH, dim), repeats=repeats,
        max_iter={"fixed_point": 300, "anderson": 300, "broyden": 300},
    )


def hard_problem(dim: int, generator: torch.Generator, repeats: int) -> Problem:
    eigenvalues = (torch.rand(dim // 2 + 1, generator=generator) * 2 - 1) * 0.99
    eigenvalues[0], eigenvalues[-1] = 0.99, -0.99
    x = 0.01 * torch.randn(BATCH, dim, generator=generator)

    def f(z: Tensor) -> Tensor:
        return torch.tanh(torch.fft.irfft(eigenvalues * torch.fft.rfft(z), n=dim) + x)

    return Problem(
        name=f"hard D={dim:.0e}",
        description="tanh(Wz + x), symmetric circulant W, eigenvalues uniform in [-0.99, 0.99], x ~ 0.01 N(0, 1)",
        f=f, z0=torch.zeros(BATCH, dim), repeats=repeats,
        max_iter={"fixed_point": 3000, "anderson": 500, "broyden": 500},
    )


class NerdLikeBlock(nn.Module):
    """MDEQ-style implicit block: the update NERD's group uses (IMPLEMENTATION_NOTES.md)."""

    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        weight_norm = nn.utils.parametrizations.weight_norm
        self.conv1 = weight_norm(nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        self.conv2 = weight_norm(nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        self.norm1 = nn.GroupNorm(groups, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.norm3 = nn.GroupNorm(groups, channels)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        hidden = torch.relu(self.norm1(self.conv1(z)))
        update = self.norm2(self.conv2(hidden) + x)
        return self.norm3(torch.relu(z + update))


def conv_setup(channels: int, size: int, seed: int) -> tuple[NerdLikeBlock, Tensor]:
    torch.manual_seed(seed)
    block = NerdLikeBlock(channels)
    x = torch.randn(BATCH, channels, size, size)
    return block, x


def conv_problem(channels: int, size: int, seed: int, repeats: int) -> Problem:
    block, x = conv_setup(channels, size, seed)

    def f(z: Tensor) -> Tensor:
        return block(z, x)

    return Problem(
        name=f"conv {channels}x{size}x{size}",
        description=f"NERD-sized MDEQ block, {channels} channels, {size}x{size}, random init",
        f=f, z0=torch.zeros_like(x), repeats=repeats, keep=[block],
        max_iter={"fixed_point": 200, "anderson": 100, "broyden": 100},
    )


def ours(name: str, memory_is_budget: bool = False, **options: Any) -> Callable[..., Tensor]:
    """A converge solver; ``memory_is_budget`` keeps every Broyden pair, like TorchDEQ's default."""
    solver = get_solver(name)

    def run(f: Callable[[Tensor], Tensor], z0: Tensor, max_iter: int) -> Tensor:
        memory = {"memory": max_iter} if memory_is_budget else {}
        z, _ = solver(f, z0, max_iter=max_iter, tol=TOL, **options, **memory)
        return z
    return run


def torchdeq(name: str, **options: Any) -> Callable[..., Tensor]:
    from torchdeq.solver import get_solver as get_torchdeq_solver

    solver = get_torchdeq_solver(name)

    def run(f: Callable[[Tensor], Tensor], z0: Tensor, max_iter: int) -> Tensor:
        z, _, _ = solver(f, z0, max_iter=max_iter, tol=TOL, stop_mode="rel", **options)
        return z
    return run


# (library, algorithm, label, runner); the algorithm picks the problem's iteration budget.
SOLVER_RUNS = [
    ("converge", "fixed_point", "fixed_point", ours("fixed_point")),
    ("torchdeq", "fixed_point", "fixed_point_iter", torchdeq("fixed_point_iter")),
    ("converge", "anderson", "anderson m=5", ours("anderson", m=5)),
    ("torchdeq", "anderson", "anderson m=5", torchdeq("anderson", m=5, lam=1e-4, tau=1.0)),
    ("converge", "broyden", "broyden memory=30", ours("broyden", memory=30)),
    ("converge", "broyden", "broyden memory=max_iter", ours("broyden", memory_is_budget=True)),
    ("torchdeq", "broyden", "broyden (full memory)", torchdeq("broyden")),
    ("torchdeq", "broyden", "broyden LBFGS_thres=30", torchdeq("broyden", LBFGS_thres=30)),
]

# (converge label, TorchDEQ label): defaults against defaults, and like memory against like memory.
COMPARISONS = [
    ("fixed_point", "fixed_point_iter"),
    ("anderson m=5", "anderson m=5"),
    ("broyden memory=30", "broyden (full memory)"),
    ("broyden memory=30", "broyden LBFGS_thres=30"),
    ("broyden memory=max_iter", "broyden (full memory)"),
]


def timed_solve(problem: Problem, runner: Callable[..., Tensor], max_iter: int) -> tuple[Tensor, float, int]:
    """One solve of ``problem``: the state, seconds, and the number of (batched) calls of f."""
    calls = 0

    def counted(z: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return problem.f(z)

    with torch.no_grad():
        start = time.perf_counter()
        z = runner(counted, problem.z0, max_iter)
        return z, time.perf_counter() - start, calls


def solver_rows(problems: list[Problem]) -> list[dict[str, Any]]:
    """Every solver on every problem; repeats are interleaved across solvers so that load from
    other processes drifts into all rows alike, after one short untimed warm-up per solver."""
    rows = []
    for problem in problems:
        budgets = [problem.max_iter[algorithm] for _, algorithm, _, _ in SOLVER_RUNS]
        for _, _, _, runner in SOLVER_RUNS:
            timed_solve(problem, runner, 2)
        times: list[list[float]] = [[] for _ in SOLVER_RUNS]
        results: list[tuple[Tensor, int]] = []
        for _ in range(problem.repeats):
            results = []
            for index, (_, _, _, runner) in enumerate(SOLVER_RUNS):
                z, seconds, calls = timed_solve(problem, runner, budgets[index])
                times[index].append(seconds)
                results.append((z, calls))
        for index, (library, algorithm, label, _) in enumerate(SOLVER_RUNS):
            z, calls = results[index]
            with torch.no_grad():
                worst = float(relative_residual(z, problem.f(z)).max())
            row = {
                "problem": problem.name, "library": library, "algorithm": algorithm, "solver": label,
                "max_iter": budgets[index], "f_evals": calls, "time_s": min(times[index]),
                "median_time_s": statistics.median(times[index]), "times_s": times[index],
                "max_residual": worst, "reached_tol": bool(worst <= TOL),
            }
            rows.append(row)
            print(f"{problem.name:>16} {library:>8} {label:>24}: {calls:5d} evals, "
                  f"{row['time_s']:8.3f} s, residual {worst:.2e}", flush=True)
    return rows


def spread_rows(dim: int, seeds: range) -> list[dict[str, Any]]:
    """Evaluations to tolerance on several instances of the hard problem (no timing).

    Quasi-Newton iteration counts in float32 move by tens of percent with the instance and with
    rounding, so one instance per row above cannot rank two Broyden implementations; this can.
    """
    rows = []
    for seed in seeds:
        problem = hard_problem(dim, torch.Generator().manual_seed(seed), repeats=1)
        for library, algorithm, label, runner in SOLVER_RUNS:
            if algorithm == "fixed_point":
                continue
            z, _, calls = timed_solve(problem, runner, problem.max_iter[algorithm])
            with torch.no_grad():
                worst = float(relative_residual(z, problem.f(z)).max())
            rows.append({"seed": seed, "library": library, "solver": label, "f_evals": calls,
                         "reached_tol": bool(worst <= TOL)})
        print(f"spread seed {seed}: " + ", ".join(f"{r['solver']} ({r['library']}) {r['f_evals']}"
                                                  for r in rows if r["seed"] == seed), flush=True)
    return rows


BACKWARD_MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "ift": ("ift", {"max_iter": 50, "tol": 1e-4}),
    "phantom T=8 lam=0.8": ("phantom", {"T": 8, "lam": 0.8}),
    "jfb": ("jfb", {}),
    "unroll K=20": ("unroll", {"K": 20}),
}


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB.

    ``VmHWM`` belongs to the current address space, so a worker started by ``subprocess`` does not
    inherit the parent's peak, which ``getrusage``'s ``ru_maxrss`` carries across ``exec``.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def backward_worker(label: str, channels: int, size: int, seed: int, repeats: int) -> dict[str, Any]:
    """Run one backward mode on the conv problem; report times, saved-tensor bytes and peak RSS."""
    block, x = conv_setup(channels, size, seed)
    mode, options = BACKWARD_MODES[label]
    deq = DEQ(block, solver="anderson", solver_options={"max_iter": 100, "tol": TOL},
              backward=mode, backward_options=options)
    with torch.no_grad():
        block(torch.zeros_like(x), x)  # one-off kernel set-up, not part of any measurement
    # Fixed random loss weights: a loss like mean(z^2) would have a zero gradient through the
    # block's final GroupNorm (scale invariance) and make every backward mode look free.
    loss_weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    baseline_kib = peak_rss_kib()
    forward_times, backward_times, saved_bytes, peak_kib = [], [], 0, baseline_kib
    # Run 0 is cold: it gives the memory figures; runs 1..repeats give the times.
    for repeat in range(repeats + 1):
        storages: dict[int, int] = {}

        def pack(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        block.zero_grad()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            z = deq(x)
        forward_seconds = time.perf_counter() - start
        start = time.perf_counter()
        (z * loss_weights).mean().backward()
        backward_seconds = time.perf_counter() - start
        if repeat == 0:
            peak_kib = peak_rss_kib()
            saved_bytes = sum(storages.values())
        else:
            forward_times.append(forward_seconds)
            backward_times.append(backward_seconds)
    adjoint = deq.last_backward_info
    return {
        "mode": label,
        "forward_s": min(forward_times),
        "backward_s": min(backward_times),
        "forward_times_s": forward_times,
        "backward_times_s": backward_times,
        "forward_f_evals": deq.last_info.f_evals,
        "adjoint_iterations": None if adjoint is None else int(adjoint.iterations.max()),
        "saved_mib": saved_bytes / 2**20,
        "peak_rss_increase_mib": (peak_kib - baseline_kib) / 1024,
    }


def backward_rows(channels: int, size: int, seed: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for label in BACKWARD_MODES:
        command = [sys.executable, __file__, "--backward-worker", label, "--channels", str(channels),
                   "--size", str(size), "--seed", str(seed), "--conv-repeats", str(repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        print(f"backward {label:>20}: forward {row['forward_s']:.3f} s, backward {row['backward_s']:.3f} s, "
              f"saved {row['saved_mib']:.0f} MiB, peak RSS +{row['peak_rss_increase_mib']:.0f} MiB", flush=True)
    return rows


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """converge / TorchDEQ for f-evaluations and time, per problem and compared pair."""
    by_key = {(r["problem"], r["library"], r["solver"]): r for r in rows}
    ratios = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for mine_label, theirs_label in COMPARISONS:
            mine, theirs = by_key[(problem, "converge", mine_label)], by_key[(problem, "torchdeq", theirs_label)]
            ratios.append({
                "problem": problem,
                "converge": mine_label,
                "torchdeq": theirs_label,
                "evals_ratio": mine["f_evals"] / theirs["f_evals"],
                "time_ratio": mine["time_s"] / theirs["time_s"],
                "converge_reached_tol": mine["reached_tol"],
                "torchdeq_reached_tol": theirs["reached_tol"],
            })
    return ratios


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torchdeq
        torchdeq_version = getattr(torchdeq, "__version__", None)
        if torchdeq_version is None:
            from importlib.metadata import version
            torchdeq_version = version("torchdeq")
    except ImportError:
        torchdeq_version = None
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchdeq": torchdeq_version,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def markdown(report: dict[str, Any]) -> str:
    meta = report["machine"]
    lines = [
        "# DEQ solver benchmark",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} thread(s), torch {meta['torch']}, "
        f"torchdeq {meta['torchdeq']}, Python {meta['python']}, {meta['date']}  ",
        f"Tolerance {TOL:g} on the relative residual, batch {BATCH}, float32. Times are the fastest of "
        "the repeats (other processes shared the machine; the minimum is the least disturbed, and "
        "the JSON keeps every run); `evals` counts batched calls of f; `residual` is the worst "
        "sample's residual of the returned state, measured again after the solve.",
        "",
        "## Solvers",
        "",
        "| problem | library | solver | evals | time (s) | median (s) | residual | reached tol |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for row in report["solvers"]:
        reached = "yes" if row["reached_tol"] else "no"
        lines.append(f"| {row['problem']} | {row['library']} | {row['solver']} | {row['f_evals']} | "
                     f"{row['time_s']:.3f} | {row['median_time_s']:.3f} | {row['max_residual']:.2e} | {reached} |")
    lines += [
        "",
        "## converge / TorchDEQ",
        "",
        "| problem | converge | TorchDEQ | evals ratio | time ratio | converge reached tol "
        "| TorchDEQ reached tol |",
        "| --- | --- | --- | ---: | ---: | :---: | :---: |",
    ]
    for row in report["ratios"]:
        ours_reached = "yes" if row["converge_reached_tol"] else "no"
        theirs_reached = "yes" if row["torchdeq_reached_tol"] else "no"
        lines.append(f"| {row['problem']} | {row['converge']} | {row['torchdeq']} | "
                     f"{fmt_ratio(row['evals_ratio'])} | {fmt_ratio(row['time_ratio'])} | {ours_reached} | "
                     f"{theirs_reached} |")
    if report["spread"]:
        seeds = sorted({row["seed"] for row in report["spread"]})
        lines += [
            "",
            f"## Spread over instances ({report['spread_problem']}, seeds {seeds[0]}-{seeds[-1]})",
            "",
            "Evaluations to tolerance per seed (`*`: tolerance not reached within the budget).",
            "",
            "| library | solver | " + " | ".join(f"seed {seed}" for seed in seeds) + " | median |",
            "| --- | --- | " + " | ".join("---:" for _ in seeds) + " | ---: |",
        ]
        for library, _, label, _ in SOLVER_RUNS:
            runs = [r for r in report["spread"] if r["library"] == library and r["solver"] == label]
            if not runs:
                continue
            cells = [f"{r['f_evals']}{'' if r['reached_tol'] else '*'}" for r in runs]
            median = statistics.median(r["f_evals"] for r in runs)
            lines.append(f"| {library} | {label} | " + " | ".join(cells) + f" | {median:g} |")
    if report["backward"]:
        lines += [
            "",
            f"## Backward modes ({report['backward_problem']}, Anderson forward)",
            "",
            "| mode | forward (s) | backward (s) | forward evals | adjoint iterations | saved for backward (MiB) "
            "| peak RSS increase (MiB) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in report["backward"]:
            adjoint = "-" if row["adjoint_iterations"] is None else str(row["adjoint_iterations"])
            lines.append(f"| {row['mode']} | {row['forward_s']:.3f} | {row['backward_s']:.3f} | "
                         f"{row['forward_f_evals']} | {adjoint} | {row['saved_mib']:.0f} | "
                         f"{row['peak_rss_increase_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per toy-problem row")
    parser.add_argument("--conv-repeats", type=int, default=2, help="timed runs per conv-problem row")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backward-worker", help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.backward_worker:
        print(json.dumps(backward_worker(args.backward_worker, args.channels, args.size, args.seed,
                                         args.conv_repeats)))
        return

    dims = [1_000, 30_000] if args.quick else [10_000, 100_000]
    channels, size = (16, 16) if args.quick else (128, 64)
    repeats = 1 if args.quick else args.repeats
    conv_repeats = 1 if args.quick else args.conv_repeats
    generator = torch.Generator().manual_seed(args.seed)
    problems = []
    for dim in dims:
        problems.append(easy_problem(dim, generator, repeats))
        problems.append(hard_problem(dim, generator, repeats))
    problems.append(conv_problem(channels, size, args.seed, conv_repeats))

    solvers = solver_rows(problems)
    report = {
        "command": " ".join(["python", "benchmarks/deq_solvers.py", *sys.argv[1:]]),
        "machine": machine(),
        "tol": TOL,
        "problems": {p.name: p.description for p in problems},
        "solvers": solvers,
        "ratios": ratio_rows(solvers),
        "backward_problem": problems[-1].name,
        "spread_problem": f"hard D={dims[0]:.0e}",
        "spread": spread_rows(dims[0], range(args.seed + 1, args.seed + 6)),
        "backward": backward_rows(channels, size, args.seed, conv_repeats),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "deq_solvers.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "deq_solvers.md").write_text(markdown(report))
    print(f"wrote {args.out_dir / 'deq_solvers.json'} and {args.out_dir / 'deq_solvers.md'}")


if __name__ == "__main__":
    main()
