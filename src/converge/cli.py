"""The ``converge`` command line: restore, degrade, eval, bench, train, zoo, demo.

Every user error (bad file, unknown option, missing data) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from converge.errors import ConfigError, ConvergeError

if TYPE_CHECKING:
    from torch import Tensor

    from converge.physics.tasks import Task

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Learned iterative image restoration: restore, degrade, evaluate and train.",
)
console = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from converge import __version__

        print(f"converge {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """The options of `converge` itself (each command has its own)."""

TaskOption = Annotated[str, typer.Option("--task", "-t", help="denoise, deblur, sr, inpaint, demosaic or deblock.")]
MODEL_HELP = (
    "A shipped model (dncnn-s25), a model family that picks weights by task and noise level (nerd), "
    "a baseline (bm3d), a plug-and-play algorithm (admm, hqs, forward_backward, red; see --prior), "
    "or a .safetensors file written by converge train."
)
PriorOption = Annotated[
    Optional[str],
    typer.Option(
        help="Denoiser a plug-and-play --model runs with: a shipped denoiser (dncnn-s25), a family, "
        "bm3d, nlm, tv, identity, or a .safetensors file from converge train. Default: bm3d."
    ),
]
SigmaOption = Annotated[
    Optional[float], typer.Option("--sigma", "-s", help="Gaussian noise level in 8-bit grey levels (25 = 25/255).")
]
FactorOption = Annotated[Optional[int], typer.Option("--factor", help="sr: downsampling factor.")]
DownsamplingOption = Annotated[
    Optional[str],
    typer.Option("--downsampling", help="sr: bicubic (default) or gaussian (width --blur-sigma, default 0.5)."),
]
QualityOption = Annotated[Optional[int], typer.Option("--quality", "-q", help="deblock: JPEG quality 1-100.")]
DropOption = Annotated[Optional[float], typer.Option("--drop", help="inpaint: fraction of pixels removed.")]
BlurOption = Annotated[Optional[float], typer.Option("--blur-sigma", help="deblur: Gaussian kernel width (pixels).")]
BlurSizeOption = Annotated[
    Optional[int], typer.Option("--blur-size", help="deblur: side of the Gaussian kernel (pixels; default 25).")
]
BoundaryOption = Annotated[
    Optional[str],
    typer.Option("--boundary", help="deblur: the blur's edges: circular (default), reflect, replicate or zeros."),
]
KernelOption = Annotated[
    Optional[Path],
    typer.Option("--kernel", help="deblur: your own blur kernel, a .npy array or a grey image (odd sides)."),
]
PatternOption = Annotated[Optional[str], typer.Option("--pattern", help="demosaic: Bayer pattern, e.g. RGGB.")]
LoopsOption = Annotated[
    Optional[int], typer.Option(help="Loops a model with a learned stopping policy (durr) runs instead.")
]
DeviceOption = Annotated[
    str, typer.Option(help="Where learned models run: cpu, cuda or cuda:N (classical baselines run on the CPU).")
]
StrideOption = Annotated[
    Optional[int], typer.Option(help="Block stride in pixels of a block-wise model (groupsc): larger is faster.")
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="How a learned model computes: fp32, bf16, or auto (bf16 for a shipped model measured to lose at "
        "most 0.02 dB under it, on a CPU with hardware bf16; else fp32)."
    ),
]
WindowOption = Annotated[
    Optional[int],
    typer.Option(help="Attention window side (odd, pixels) of a non-local model (nerd) instead of its trained one."),
]


def _say(text: str) -> None:
    """One plain line on stderr: no markup parsing (paths may hold brackets), no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _task_params(
    sigma: float | None,
    factor: int | None,
    quality: int | None,
    drop: float | None,
    blur_sigma: float | None,
    pattern: str | None,
    downsampling: str | None = None,
    blur_size: int | None = None,
    boundary: str | None = None,
) -> dict:
    """The task parameters the user gave, in the names :func:`converge.physics.tasks.make_task` takes."""
    given = {
        "sigma": sigma,
        "factor": factor,
        "quality": quality,
        "p": drop,
        "blur_sigma": blur_sigma,
        "size": blur_size,
        "boundary": boundary,
        "pattern": pattern,
        "kernel": downsampling,
    }
    return {key: value for key, value in given.items() if value is not None}


def _user_kernel(
    path: Path | None, blur_sigma: float | None, blur_size: int | None = None
) -> tuple[Tensor, str] | None:
    """The checked kernel of ``--kernel`` and its file name (a normalised one is reported), or ``None``."""
    from converge.physics.kernel_file import read_kernel

    if path is None:
        return None
    if blur_sigma is not None or blur_size is not None:
        raise ConfigError("--kernel and --blur-sigma / --blur-size both set the blur: give one")
    kernel, note = read_kernel(path)
    if note is not None:
        _say(f"note: {note}")
    return kernel, path.name


def _make_task(name: str, params: dict, user_kernel: tuple[Tensor, str] | None) -> Task:
    """:func:`~converge.physics.tasks.make_task`, deblurring with the user's kernel when one was given."""
    from converge.physics.tasks import make_task, with_kernel

    chosen = make_task(name, **params)
    return chosen if user_kernel is None else with_kernel(chosen, *user_kernel)


@contextmanager
def _standard_streams(source: Path, target: Path):
    """``(source, target)``, with ``-`` for either standing for the image bytes of standard input or
    the PNG bytes for standard output, passed through files in a temporary folder; the output goes to
    standard output only once the restore has succeeded."""
    import tempfile

    if str(source) != "-" and str(target) != "-":
        yield source, target
        return
    with tempfile.TemporaryDirectory(prefix="converge-") as folder:
        scratch = Path(folder)
        if str(source) == "-":
            source = scratch / "stdin"
            source.write_bytes(sys.stdin.buffer.read())
        to_stdout = str(target) == "-"
        if to_stdout:
            target = scratch / "stdout.png"
        yield source, target
        if to_stdout:
            sys.stdout.buffer.write(target.read_bytes())
            sys.stdout.buffer.flush()


def _bars(enabled: bool = True) -> Progress:
    """Rich progress bars on stderr (description, bar, done of total, time left), gone when finished."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not enabled)


@contextmanager
def _progress(description: str, total: int | None, enabled: bool = True):
    """A rich progress bar on stderr; ``advance(total=None)`` moves it by one (and may set the total)."""
    with _bars(enabled) as progress:
        task_id = progress.add_task(description, total=total)

        def advance(total: int | None = None) -> None:
            progress.update(task_id, advance=1, **({} if total is None else {"total": total}))

        yield advance


@contextmanager
def _steps_shown(enabled: bool):
    """While restoring one image: a bar per kind of step its restorer reports (iterations, tiles)."""
    if not enabled:
        yield
        return
    from converge.progress import Step, observe

    with _bars() as bars:
        shown: dict[str, object] = {}

        def show(step: Step) -> None:
            if step.kind not in shown:
                shown[step.kind] = bars.add_task(f"{step.kind}s", total=step.total)
            bars.update(shown[step.kind], completed=step.done, total=step.total)

        with observe(show):
            yield


def _collect_inputs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """Pairs (input image, output PNG): one file, or every image of a folder into an output folder."""
    from converge.errors import ImageReadError
    from converge.imageio import is_image_file

    if source.is_dir():
        inputs = sorted(path for path in source.iterdir() if is_image_file(path))
        if not inputs:
            raise ImageReadError(f"{source}: the folder holds no image (.png, .jpg, .tif, .bmp)")
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{target}: the input is a folder, so the output must be a folder too")
        target.mkdir(parents=True, exist_ok=True)
        return [(path, target / f"{path.stem}.png") for path in inputs]
    if target.is_dir():
        return [(source, target / f"{source.stem}.png")]
    return [(source, target)]


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="Degraded image, or a folder of them; - reads standard input.")],
    target: Annotated[
        Path, typer.Argument(help="Output PNG, or a folder when SOURCE is a folder; - writes standard output.")
    ],
    task: TaskOption = "denoise",
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help=MODEL_HELP + " Default: chosen for the task, channels and noise level by validation scores.",
        ),
    ] = None,
    sigma: SigmaOption = None,
    factor: FactorOption = None,
    downsampling: DownsamplingOption = None,
    quality: QualityOption = None,
    blur_sigma: BlurOption = None,
    blur_size: BlurSizeOption = None,
    boundary: BoundaryOption = None,
    kernel: KernelOption = None,
    pattern: PatternOption = None,
    mask: Annotated[Optional[Path], typer.Option(help="inpaint: mask PNG, white = kept pixel.")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Restore in overlapping tiles of this size.")] = None,
    max_memory: Annotated[
        Optional[float],
        typer.Option(help="Memory budget in GiB (default 4): a shipped model restores a larger image in tiles."),
    ] = None,
    loops: LoopsOption = None,
    stride: StrideOption = None,
    window: WindowOption = None,
    prior: PriorOption = None,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = "auto",
    bits: Annotated[
        Optional[int], typer.Option(help="Output PNG bit depth, 8 or 16 (default: the input's; 16 for grey only).")
    ] = None,
    compare: Annotated[
        Optional[Path],
        typer.Option(help="Also write a PNG panel: input | output (| reference), a zoomed crop, PSNR/SSIM."),
    ] = None,
    reference: Annotated[
        Optional[Path], typer.Option(help="Clean image for --compare: its column and the captions' scores.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="No progress bars (they show on a terminal only).")
    ] = False,
    prefer: Annotated[
        str,
        typer.Option(help="Without --model: fast, balanced (a 512x512 image near 10 s) or best (any speed)."),
    ] = "balanced",
) -> None:
    """Restore an image (or every image in a folder) with a shipped model, a classical baseline or a
    plug-and-play algorithm (--model admm --prior bm3d).

    For denoising without --sigma, the noise level is estimated from each image (once) to choose the
    weights of a model family or the level a baseline or blind GroupSC works at, and reported.

    For deblocking without --quality, the quality of a JPEG input is read from its quantisation table
    (another format is restored as quality 10). A grey model restores a colour JPEG on its luma.
    Demosaicking takes the three-channel mosaic that `converge degrade` writes or a one-channel raw
    Bayer image.

    Inpainting needs the mask that `converge degrade --task inpaint` wrote beside its output.

    Under `torchrun --nproc-per-node N -m converge restore ...` the N processes share a folder's images.
    """
    from converge.distributed import workers
    from converge.imageio import jpeg_quality, read_alpha, read_image, stored_bits, stored_channels, write_image
    from converge.physics.base import Operator
    from converge.physics.mask import PixelMask
    from converge.physics.noise import estimate_noise_sigma
    from converge.choice import PREFERENCES, choose_model
    from converge.devices import resolve_device
    from converge.restorers import PRECISIONS, RestoreFunction, make_restorer
    from converge.zoo import ZOO

    if prefer not in PREFERENCES:
        raise ConfigError(f"--prefer must be one of {', '.join(PREFERENCES)}, got '{prefer}'")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    resolve_device(device)
    if prior is not None and model is None:
        raise ConfigError("--prior goes with a plug-and-play --model: admm, hqs, forward_backward or red")
    model_options = (("--loops", loops), ("--stride", stride), ("--window", window))
    named = [option for option, value in model_options if value is not None]
    if named and model is None:
        raise ConfigError(f"{named[0]} sets an option of a named model: give --model too")
    if reference is not None and compare is None:
        raise ConfigError("--reference goes with --compare PANEL.png, the panel it is shown in")
    if compare is not None and (str(source) == "-" or source.is_dir()):
        raise ConfigError("--compare makes the panel of one image file: give one, not a folder or -")
    if compare is not None and compare.suffix.lower() != ".png":
        raise ConfigError(f"a comparison panel is written as PNG: name it .png, not {compare.name}")
    clean = None if reference is None else read_image(reference)
    if max_memory is not None and not 0 < max_memory < float("inf"):
        raise ConfigError(f"--max-memory must be a positive number of GiB, got {max_memory}")
    params = _task_params(sigma, factor, quality, None, blur_sigma, pattern, downsampling, blur_size, boundary)
    if (task == "inpaint") != (mask is not None):
        raise ConfigError("--mask is required for --task inpaint and taken by no other task")
    blind = task == "denoise" and sigma is None
    known_mask = None if mask is None else PixelMask(read_image(mask)[:, :1] > 0.5)
    user_kernel = _user_kernel(kernel, blur_sigma, blur_size)

    @cache
    def restorer_for(model_name: str, file_quality: int | None) -> tuple[RestoreFunction, Operator]:
        """The restorer and forward operator for the given task, at a JPEG file's own quality if given."""
        chosen = _make_task(task, params if file_quality is None else {**params, "quality": file_quality}, user_kernel)
        made = make_restorer(
            model_name,
            chosen,
            tile=tile,
            blind=blind,
            loops=loops,
            stride=stride,
            window=window,
            device=device,
            prior=prior,
            max_memory=None if max_memory is None else max_memory * 2**30,
            precision=precision,
        )
        return made, known_mask or chosen.operator

    if model is not None:
        restorer_for(model, None)
    chosen_before: set[str] = set()
    given_task = _make_task(task, params, user_kernel)  # checks the task's options before any image
    upscale = given_task.params["factor"] if task == "sr" else 1
    read_quality = task == "deblock" and quality is None
    place = workers()

    def restore_one(in_path: Path, out_path: Path) -> None:
        """Restore one file and report it in one line."""
        observed = read_image(in_path)
        if known_mask is not None and known_mask.mask.shape[-2:] != observed.shape[-2:]:
            mask_size = "x".join(map(str, known_mask.mask.shape[-2:][::-1]))
            image_size = "x".join(map(str, observed.shape[-2:][::-1]))
            raise ConfigError(f"{in_path}: the mask {mask} is {mask_size} but the image is {image_size}")
        shown_reference = None if clean is None else _reference_for(clean, observed, upscale, reference, in_path)
        file_quality = jpeg_quality(in_path) if read_quality else None
        # Estimated here only to choose a model; a named one is asked for its own estimate first.
        estimated = 255.0 * float(estimate_noise_sigma(observed)[0]) if blind and model is None else None
        model_name = model
        if model_name is None:
            quality_given = file_quality or given_task.params.get("quality")
            wanted = sigma if sigma is not None else estimated if blind else quality_given
            channels = 3 if task == "demosaic" else observed.shape[1]
            choice = choose_model(task, channels, wanted, prefer)
            model_name = choice.name
            if choice.reason not in chosen_before:
                chosen_before.add(choice.reason)
                _say(f"chose {choice.reason} (--model to name one, --prefer fast|balanced|best)")
        restorer, operator = restorer_for(model_name, file_quality)
        with _steps_shown(console.is_terminal and not quiet and not source.is_dir()):
            result = restorer(observed, operator)
        level, note = sigma, ""
        if file_quality is not None:
            note = f" (JPEG quality {file_quality}, read from the file)"
        if blind:
            level = result.noise_level if result.noise_level is not None else estimated
            if level is None:
                level = 255.0 * float(estimate_noise_sigma(observed)[0])
            note = f" (estimated noise level {level:.1f})"
        # A colour file of grey content was restored as grey: written back as the file stored it.
        channels = stored_channels(in_path) if result.image.shape[1] == 1 else result.image.shape[1]
        depth = bits if bits is not None else stored_bits(in_path) if channels == 1 else 8
        alpha = read_alpha(in_path)
        if alpha is not None and alpha.shape != tuple(result.image.shape[-2:]):
            _say(f"note: {in_path}'s transparency is left out: the output is another size")
            alpha = None
        if alpha is not None and depth != 8:
            raise ConfigError(f"{in_path} has transparency, which is written in 8 bits only: drop --bits {depth}")
        write_image(out_path, result.image.expand(-1, channels, -1, -1), bits=depth, alpha=alpha)
        grey_model = result.model in ZOO and ZOO[result.model].channels == 1
        if task == "deblock" and observed.shape[1] == 3 and grey_model and result.model not in chosen_before:
            chosen_before.add(result.model)
            _say(f"note: {result.model} is a grey model: it restored the colour JPEG plane by plane in YCbCr, "
                 "its luma (Y) and its chroma (Cb, Cr)")
        counted = "" if result.iterations is None else f", iterations {round(result.iterations, 2):g}"
        if result.tiles is not None:
            counted += f", {result.tiles} tiles to stay in the memory budget"
        counted += ", bf16" if result.precision == "bf16" else ""
        _say(f"{in_path} -> {out_path} [{result.model}{counted}, {result.seconds:.2f} s]{note}")
        if compare is not None:
            from converge.panel import compare_panel, write_panel

            write_panel(compare, compare_panel(observed, result.image, shown_reference, result.model))
            _say(f"comparison panel: {compare}")
        trained_sigma = ZOO[result.model].sigma if result.model in ZOO else None
        if task == "denoise" and trained_sigma is not None and abs(level - trained_sigma) > 5:
            _say(
                f"warning: {result.model} was trained for noise level {trained_sigma:g}, "
                f"not {level:.3g}: expect a weaker result"
            )

    failures: list[str] = []
    with _standard_streams(source, target) as (source, target):
        pairs = place.share(_collect_inputs(source, target))
        with _progress("restoring", len(pairs), enabled=len(pairs) > 1 and place.is_main and not quiet) as advance:
            for in_path, out_path in pairs:
                if not source.is_dir():
                    restore_one(in_path, out_path)
                else:
                    # A bad file of a folder is reported, and the others are still restored.
                    try:
                        restore_one(in_path, out_path)
                    except ConvergeError as error:
                        failures.append(in_path.name)
                        _say(f"error: {error}")
                advance()
    if failures:
        raise ConfigError(f"{len(failures)} of {len(pairs)} images could not be restored: {', '.join(failures)}")


def _reference_for(clean: Tensor, observed: Tensor, upscale: int, path: Path | None, source: Path) -> Tensor:
    """The clean image ``path`` held, checked against the size the restoration of ``observed`` will have
    (``upscale`` times it); a super-resolution reference larger by less than the factor is cropped from
    the top left, as the evaluation crops it."""
    expected = tuple(upscale * side for side in observed.shape[-2:])
    if all(0 <= have - want < upscale for have, want in zip(clean.shape[-2:], expected)):
        return clean[..., : expected[0], : expected[1]]
    raise ConfigError(
        f"the reference {path} is {clean.shape[-1]}x{clean.shape[-2]} but the output will be "
        f"{expected[1]}x{expected[0]}: give the clean image of {source}"
    )


@app.command()
def degrade(
    source: Annotated[Path, typer.Argument(help="Clean image, or a folder of them.")],
    target: Annotated[Path, typer.Argument(help="Output PNG, or a folder when SOURCE is a folder.")],
    task: TaskOption = "denoise",
    sigma: SigmaOption = None,
    factor: FactorOption = None,
    downsampling: DownsamplingOption = None,
    quality: QualityOption = None,
    drop: DropOption = None,
    blur_sigma: BlurOption = None,
    blur_size: BlurSizeOption = None,
    boundary: BoundaryOption = None,
    kernel: KernelOption = None,
    pattern: PatternOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise and random masks.")] = 0,
) -> None:
    """Make a degraded test input from a clean image, reproducibly (--seed).

    Inpainting also writes the mask it drew as OUTPUT.mask.png (white = kept pixel).
    """
    import torch

    from converge.imageio import read_image, write_image
    from converge.physics.mask import PixelMask

    params = _task_params(sigma, factor, quality, drop, blur_sigma, pattern, downsampling, blur_size, boundary)
    chosen = _make_task(task, params, _user_kernel(kernel, blur_sigma, blur_size))
    pairs = _collect_inputs(source, target)
    with _progress("degrading", len(pairs), enabled=len(pairs) > 1) as advance:
        for index, (in_path, out_path) in enumerate(pairs):
            generator = torch.Generator().manual_seed(seed + index)
            observed, operator = chosen.degrade(read_image(in_path), generator)
            write_image(out_path, observed)
            if isinstance(operator, PixelMask):
                mask = operator.mask.expand(1, 1, *observed.shape[-2:]).float()
                write_image(out_path.with_suffix(".mask.png"), mask)
            _say(f"{in_path} -> {out_path} [{chosen.tag}, seed {seed + index}]")
            advance()


@app.command(name="eval")
def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)],
    bench: Annotated[str, typer.Option("--bench", "-b", help="Benchmark set, e.g. set12, bsd68, urban100.")],
    task: TaskOption = "denoise",
    sigma: SigmaOption = None,
    factor: FactorOption = None,
    downsampling: DownsamplingOption = None,
    quality: QualityOption = None,
    drop: DropOption = None,
    blur_sigma: BlurOption = None,
    blur_size: BlurSizeOption = None,
    boundary: BoundaryOption = None,
    pattern: PatternOption = None,
    color: Annotated[
        str,
        typer.Option(help="native; y: the BT.601 luma of colour sets (studio range); gray: their MATLAB rgb2gray."),
    ] = "native",
    y_channel: Annotated[bool, typer.Option("--y-channel", help="Score PSNR/SSIM on the Y channel.")] = False,
    crop: Annotated[int, typer.Option(help="Border pixels left out of the scores.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
    tile: Annotated[Optional[int], typer.Option(help="Restore in overlapping tiles of this size.")] = None,
    blind: Annotated[
        bool,
        typer.Option("--blind", help="Do not tell the restorer the noise level: models and baselines estimate it."),
    ] = False,
    loops: LoopsOption = None,
    stride: StrideOption = None,
    window: WindowOption = None,
    prior: PriorOption = None,
    device: DeviceOption = "cpu",
    precision: PrecisionOption = "fp32",
    out: Annotated[Path, typer.Option(help="Folder for the Markdown and JSON reports.")] = Path("results"),
    report_folder: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            help="Also write a static HTML report here: index.html (rows that sort, pictures, convergence).",
        ),
    ] = None,
) -> None:
    """Score a restorer on a benchmark set: per-image and mean PSNR/SSIM, as Markdown and JSON."""
    from rich.table import Table

    from converge.eval.report import REPORTED
    from converge.eval.runner import COLOR_MODES
    from converge.eval.runner import evaluate as run_benchmark
    from converge.eval.runner import restored_channels
    from converge.physics.tasks import make_task
    from converge.restorers import Restoration, make_restorer, weights_digest

    if color not in COLOR_MODES:
        raise ConfigError(f"--color must be one of {', '.join(COLOR_MODES)}, got '{color}'")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of images, got {limit}")
    if crop < 0:
        raise ConfigError(f"--crop must be a non-negative number of pixels, got {crop}")
    if report_folder is not None and report_folder.exists() and not report_folder.is_dir():
        raise ConfigError(f"--report names a folder for the HTML report, and {report_folder} is a file")
    given = _task_params(sigma, factor, quality, drop, blur_sigma, pattern, downsampling, blur_size, boundary)
    chosen = make_task(task, **given)
    if blind and chosen.noise is None:
        raise ConfigError(f"--blind needs a noisy task, and {chosen.tag} adds no noise: give --sigma or drop --blind")
    restorer = make_restorer(
        model,
        chosen,
        tile=tile,
        blind=blind,
        loops=loops,
        stride=stride,
        window=window,
        device=device,
        prior=prior,
        precision=precision,
    )
    label = Path(model).stem if model.endswith(".safetensors") else model
    command = "converge " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    suffix = ("-blind" if blind else "") + ("" if loops is None else f"-loops{loops}")
    suffix += "" if stride is None else f"-stride{stride}"
    suffix += "" if window is None else f"-window{window}"
    suffix += "" if prior is None else f"-prior{Path(prior).stem if prior.endswith('.safetensors') else prior}"
    suffix += "" if precision == "fp32" else f"-{precision}"
    suffix += "" if color == "native" else f"-{color}"  # the luma of a colour set is another report
    # A report of some images is named for them, so it never replaces the report of the whole set.
    suffix += "" if limit is None else f"-first{limit}"
    stem = f"{label}-{bench}-{chosen.tag}{suffix}"
    partial = out / f"{stem}.json.partial"
    finished: list[str] = []
    pictures: dict[str, str] = {}
    traces: dict[str, dict[str, Sequence[float]]] = {}

    def picture(name: str, observed: Tensor, restoration: Restoration, clean: Tensor, psnrs: list[float]) -> None:
        """The comparison panel of one image, into the HTML report's folder, and its convergence."""
        from converge.panel import compare_panel, write_panel

        relative = f"images/{Path(name).stem}.png"
        write_panel(report_folder / relative, compare_panel(observed, restoration.image, clean, label))
        pictures[name] = relative
        traces[name] = {"residual": restoration.residuals or (), "psnr": psnrs}

    with _progress(f"{label} on {bench}", None) as advance:

        def image_done(name: str, total: int, resumed: bool) -> None:
            finished.append(name)
            advance(total)
            if not console.is_terminal or resumed:
                kept = f", kept from the interrupted run in {partial}" if resumed else ""
                _say(f"{label} on {bench}: {len(finished)}/{total} images ({name}{kept})")

        report = run_benchmark(
            restorer,
            label,
            bench,
            chosen,
            color=color,
            y_channel=y_channel,
            crop_border=crop,
            limit=limit,
            on_image=image_done,
            on_restored=None if report_folder is None else picture,
            command=command,
            weights_sha256=weights_digest(
                model, chosen.name, restored_channels(bench, color), sigma, quality, blind=blind, prior=prior
            ),
            checkpoint=partial,
        )
    markdown, payload = report.write(out, stem)
    partial.unlink(missing_ok=True)
    summary = report.summary()
    table = Table(title=f"{label} on {bench}, {chosen.tag}")
    shown = [key for key in REPORTED if key in summary]
    for column in ("images", "input PSNR", "PSNR", "SSIM", "s/image", *(REPORTED[key] for key in shown)):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary["images"]),
        f"{summary['input_psnr']:.2f}",
        f"{summary['psnr']:.2f}",
        f"{summary['ssim']:.4f}",
        f"{summary['seconds']:.2f}",
        *(f"{summary[key]:.3g}" for key in shown),
    )
    Console().print(table)
    _say(f"reports: {markdown} and {payload}")
    if report_folder is not None:
        from converge.eval.html_report import write_html_report

        _say(f"HTML report: {write_html_report(report_folder, report, pictures, traces)}")


@app.command()
def bench(
    table: Annotated[
        Optional[str],
        typer.Argument(help="A paper's table shipped with converge (durr-table2, ...) or a YAML table spec."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the table (NAME.md, NAME.json) and its cells' reports.")] = Path(
        "results"
    ),
    reuse: Annotated[
        Optional[Path], typer.Option(help="Reports found under this folder are reused (default: --out).")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Cells measured at once (one torch thread each when more than one).")] = 1,
    no_run: Annotated[bool, typer.Option("--no-run", help="Lay out the table from existing reports only.")] = False,
    device: DeviceOption = "cpu",
    every: Annotated[bool, typer.Option("--all", help="Every shipped table, then one page of them all.")] = False,
    results: Annotated[
        Path, typer.Option(help="With --all: the page of every table, with the commit and the machine.")
    ] = Path("docs/results.md"),
) -> None:
    """Measure a paper's results table here, one `converge eval` per cell, beside the paper's numbers.

    Without TABLE, lists the shipped tables. A report under --reuse with the same eval options and the
    same weights is read instead of rerun (wherever it ran: --device is not an option that changes a
    score); a cell that fails (weights not shipped yet) is noted. With --all, every shipped table in
    turn (an interrupted run goes on from the reports and partial evaluations it left), then --results.
    """
    from rich.table import Table

    from converge.devices import resolve_device
    from converge.eval import table as tables

    if every and table is not None:
        raise ConfigError("give a TABLE or --all, not both")
    if table is None and not every:
        listing = Table(title="paper tables (converge bench NAME)")
        listing.add_column("name")
        listing.add_column("title")
        for name, title in tables.shipped_tables().items():
            listing.add_row(name, title)
        Console().print(listing)
        return
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    resolve_device(device)
    command = "converge " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    names = list(tables.shipped_tables()) if every else [table]
    written: list[Path] = []
    for index, chosen in enumerate(names, start=1):
        name, spec = tables.load_spec(chosen)
        if every:
            _say(f"table {index}/{len(names)}: {name}")
        scores, errors = tables.measure(
            spec, _eval_options, reuse or out, out / "tables" / name, jobs=jobs, run=not no_run, say=_say,
            device=device,
        )
        markdown, payload = tables.write_table(name, spec, scores, errors, out, command)
        written.append(markdown)
        _say(f"{len(scores)} cells measured, {len(errors)} not; table: {markdown} and {payload}")
    if every:
        _say(f"every table: {tables.write_results_page(results, written, command)}")


def _eval_options(arguments: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The options `converge eval` parses from ``arguments`` that decide its scores: defaults filled
    in, where it writes (--out, --report) and runs (--device) left out."""
    import typer.main

    command = typer.main.get_command(app).commands["eval"]
    context = command.make_context("eval", list(arguments), resilient_parsing=True)
    unscored = ("out", "device", "report_folder")
    kept = ((name, str(value)) for name, value in context.params.items() if name not in unscored)
    return tuple(sorted(kept))


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A YAML experiment config, e.g. configs/dncnn-denoise-compact.yaml.")],
    run_dir: Annotated[Path, typer.Option(help="Folder for checkpoints, log and exported weights.")],
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --run-dir.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
    overrides: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a config entry, e.g. --set data.task_params.sigma=15 (repeatable)."),
    ] = None,
    until: Annotated[
        Optional[int], typer.Option(help="Stop after this step and export the weights (train in segments).")
    ] = None,
    time_limit: Annotated[
        Optional[float], typer.Option(help="Minutes of wall time after which the run stops and exports.")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to train: cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Train a model from a config; resumable from its run folder (resume with the same --set options),
    also after stopping it early with --until or --time-limit. Under `torchrun --nproc-per-node N -m
    converge train ...` N processes share every batch (DistributedDataParallel)."""
    from converge.distributed import workers
    from converge.train.trainer import train as run_training

    exported = run_training(
        config, run_dir, resume=resume, threads=threads, overrides=overrides or (), until=until,
        time_limit=time_limit, device=device,
    )
    if workers().is_main:
        _say(f"trained weights: {exported}")


@app.command()
def zoo(
    name: Annotated[Optional[str], typer.Argument(help="A shipped model or family: print its card.")] = None,
) -> None:
    """List the shipped models (task, channels, size, seconds per megapixel on one thread here, training,
    measured score) and the baselines, by the names --model takes; with NAME, print that model's card."""
    from rich.table import Table

    from converge import zoo as shipped
    from converge.restorers import restorer_names

    if name is not None:
        if name not in shipped.zoo_names():
            raise ConfigError(f"{name!r} is no shipped model or family: `converge zoo` lists them")
        print(shipped.card(name), end="")
        return
    models = Table(title="shipped models (converge zoo NAME prints a card)")
    columns = ("name", "task", "level", "channels", "parameters", "MB", "s/MP", "trained steps", "measured")
    for column in columns:
        models.add_column(column, justify="left" if column in ("name", "task", "measured") else "right")
    for entry in shipped.list_models():
        spec = shipped.manifest(entry.name)
        level = "-" if entry.task not in ("denoise", "deblock") else "blind" if entry.level() is None else (
            f"{'q' if entry.task == 'deblock' else 'sigma '}{entry.level():g}"
        )
        models.add_row(
            entry.name + (" (default)" if entry.name == shipped.DEFAULT_MODEL else ""),
            entry.task or f"any linear, as {entry.algorithm}'s prior",
            level,
            str(entry.channels),
            f"{shipped.parameter_count(entry.name):,}",
            f"{shipped.weights_path(entry.name).stat().st_size / 1e6:.2f}",
            "-" if entry.seconds_per_megapixel is None else f"{entry.seconds_per_megapixel:.1f}",
            f"{spec.get('trained_steps', '-'):,}",
            "-" if entry.score is None else entry.score.summary(),
        )
    others = Table(title="families, baselines and plug-and-play algorithms")
    others.add_column("name")
    others.add_column("description")
    for other, description in restorer_names().items():
        if other not in shipped.ZOO:
            others.add_row(other, description)
    screen = Console()
    # Piped or captured output has no width to fit: give the tables room instead of truncating names.
    screen = screen if screen.is_terminal else Console(width=220)
    screen.print(models)
    screen.print(others)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the noisy and restored images.")] = Path("out/demo"),
) -> None:
    """Denoise the shipped example image with the default model and report the PSNR gain."""
    from importlib.resources import as_file, files

    import torch

    from converge.eval.metrics import psnr
    from converge.imageio import read_image, write_image
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer
    from converge.zoo import DEFAULT_MODEL, ZOO

    sigma = ZOO[DEFAULT_MODEL].sigma
    chosen = make_task("denoise", sigma=sigma)
    with as_file(files("converge") / "examples" / "parrots.png") as example:
        clean = read_image(example)
    noisy, operator = chosen.degrade(clean, torch.Generator().manual_seed(0))
    result = make_restorer(DEFAULT_MODEL, chosen)(noisy, operator)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "parrots-noisy.png", noisy)
    write_image(out / "parrots-restored.png", result.image)
    noisy_db = float(psnr(noisy, clean)[0])
    restored_db = float(psnr(result.image, clean)[0])
    print(f"model {DEFAULT_MODEL}: example image with Gaussian noise sigma {sigma:g} (seed 0)")
    print(f"noisy    {out / 'parrots-noisy.png'}  PSNR {noisy_db:.2f} dB")
    print(f"restored {out / 'parrots-restored.png'}  PSNR {restored_db:.2f} dB  ({result.seconds:.2f} s)")


def main() -> None:
    """Console entry point: run the app and turn user errors into one line and exit code 2."""
    try:
        app()
    except ConvergeError as error:
        _say(f"error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
