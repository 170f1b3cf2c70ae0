"""Fuzzing the boundaries, shared by ``tests/test_fuzz.py`` (a bounded run in CI) and
``benchmarks/fuzz.py`` (a larger run whose counts go into ``docs/reliability.md``).

The one rule checked: every input ends either in a right-looking result or in a refusal by the
project's own error (:class:`~converge.errors.ConvergeError`; one ``error:`` line and exit code 2 on the
command line, nothing written). Anything else (another exception, a traceback, an exit code other than
0 or 2, a half-written or invalid output) is a violation.

- :func:`read_trial`: a valid small image file (PNG grey, colour, 16-bit, JPEG, TIFF, WebP), mutated
  (bytes flipped, words overwritten, truncated, bytes inserted), read by :func:`converge.imageio.read_image`.
- :func:`cli_trial`: ``converge restore``, ``degrade`` or ``eval`` with option values drawn from a pool
  of edge values (negative, zero, huge, NaN, text) on a small image, run in this process.
"""

from __future__ import annotations

import io
import random
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("png-grey", "png-colour", "png-16bit", "jpeg", "tiff", "webp")
EDGE_VALUES = ("-1", "0", "1", "3", "2.5", "1e9", "-1e9", "nan", "inf", "abc", "", "100000", "0.999", "-0")
# Restorers fast on small images (a plug-and-play algorithm with the TV prior: BM3D would take minutes).
FAST_MODELS = (("input",), ("bicubic",), ("wiener",), ("tv",), ("malvar",), ("dncnn-s25",), ("admm", "--prior", "tv"))
TASKS = ("denoise", "deblur", "sr", "inpaint", "demosaic", "deblock", "nope")


@dataclass
class Outcome:
    """What one trial did: ``result`` (a right-looking output), ``refused`` (one clean error) or
    ``violation`` (anything else, with ``detail`` saying what), and how long it took."""

    kind: str
    detail: str = ""
    seconds: float = 0.0
    trial: str = ""


def small_images(folder: Path, rng: random.Random) -> tuple[Path, ...]:
    """A small grey and a small colour PNG in ``folder``, the inputs of :func:`cli_trial`."""
    paths = (folder / "small-grey.png", folder / "small-colour.png")
    for path, kind in zip(paths, ("png-grey", "png-colour")):
        path.write_bytes(seed_image(kind, rng))
    return paths


def seed_image(kind: str, rng: random.Random) -> bytes:
    """A small valid image file of format ``kind`` (one of :data:`FORMATS`) with random content."""
    height, width = rng.randint(8, 40), rng.randint(8, 40)
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    stream = io.BytesIO()
    if kind == "png-grey":
        Image.fromarray(pixels[..., 0]).save(stream, format="PNG")
    elif kind == "png-colour":
        Image.fromarray(pixels).save(stream, format="PNG")
    elif kind == "png-16bit":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(stream, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(pixels).save(stream, format="JPEG", quality=rng.randint(5, 95))
    elif kind == "tiff":
        Image.fromarray(pixels).save(stream, format="TIFF")
    else:
        Image.fromarray(pixels).save(stream, format="WEBP")
    return stream.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` changed by one to three random edits: flipped bits, a 4-byte word overwritten with a
    random or extreme value (which hits width and height fields), a truncation or inserted bytes."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        edit = rng.choice(("flip", "word", "truncate", "insert"))
        position = rng.randrange(len(buffer)) if buffer else 0
        if edit == "flip" and buffer:
            buffer[position] ^= 1 << rng.randrange(8)
        elif edit == "word" and len(buffer) > 4:
            word = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 100000, rng.randrange(2**32)))
            buffer[position : position + 4] = word.to_bytes(4, "big")
        elif edit == "truncate":
            del buffer[position:]
        else:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(buffer)


def read_trial(folder: Path, rng: random.Random) -> Outcome:
    """Write one mutated image to ``folder`` and read it back with :func:`~converge.imageio.read_image`."""
    import torch

    from converge.errors import ConvergeError
    from converge.imageio import read_image

    kind = rng.choice(FORMATS)
    path = folder / f"fuzz.{'jpg' if kind == 'jpeg' else kind.split('-')[0]}"
    path.write_bytes(mutate(seed_image(kind, rng), rng))
    start = time.perf_counter()
    try:
        image = read_image(path)
    except ConvergeError:
        return Outcome("refused", seconds=time.perf_counter() - start, trial=kind)
    except Exception as error:  # noqa: BLE001 - any other exception is what the fuzzing looks for
        return Outcome("violation", f"{kind}: {type(error).__name__}: {error}", time.perf_counter() - start, kind)
    seconds = time.perf_counter() - start
    well_formed = (
        image.ndim == 4
        and image.shape[0] == 1
        and image.shape[1] in (1, 3)
        and image.dtype == torch.float32
        and bool(torch.isfinite(image).all())
        and float(image.min()) >= 0.0
        and float(image.max()) <= 1.0
    )
    if not well_formed:
        return Outcome("violation", f"{kind}: read as {tuple(image.shape)} {image.dtype}", seconds, kind)
    return Outcome("result", seconds=seconds, trial=kind)


def cli_arguments(folder: Path, source: Path, rng: random.Random) -> tuple[list[str], Path]:
    """A random ``restore``, ``degrade`` or ``eval`` command line on ``source``, and its output path."""
    output = folder / f"out-{rng.randrange(10**9)}.png"

    def value() -> str:
        return rng.choice(EDGE_VALUES)

    command = rng.choice(("restore", "degrade", "eval"))
    task = rng.choice(TASKS)
    if command == "eval":
        arguments = ["eval", "--model", *rng.choice(FAST_MODELS), "--bench", rng.choice(("set12", "set5", "nope"))]
        arguments += ["--limit", rng.choice(("1", "1", value())), "--out", str(folder / "reports")]
    else:
        arguments = [command, str(source), str(output)]
        if command == "restore" and rng.random() < 0.8:  # else the model is chosen
            arguments += ["--model", *rng.choice(FAST_MODELS)]
    arguments += ["--task", task]
    options = ("--sigma", "--factor", "--quality", "--blur-sigma", "--blur-size", "--boundary", "--pattern", "--crop",
               "--tile", "--loops", "--drop", "--prefer")
    blur = {"--blur-sigma", "--blur-size", "--boundary"}
    allowed = {
        "restore": {"--sigma", "--factor", "--quality", "--pattern", "--tile", "--loops", "--prefer"} | blur,
        "degrade": {"--sigma", "--factor", "--quality", "--pattern", "--drop"} | blur,
        "eval": {"--sigma", "--factor", "--quality", "--pattern", "--crop", "--tile", "--drop"} | blur,
    }[command]
    for option in rng.sample(options, rng.randint(0, 3)):
        if option in allowed or rng.random() < 0.1:
            arguments += [option, value()]
    return arguments, output


def cli_trial(folder: Path, sources: tuple[Path, ...], rng: random.Random) -> Outcome:
    """Run one random command line (see :func:`cli_arguments`) on one of ``sources`` through
    ``converge.cli.main`` in this process and judge it by the rule of the module docstring."""
    from converge import cli

    arguments, output = cli_arguments(folder, rng.choice(sources), rng)
    shown = " ".join(arguments[:1] + [word for word in arguments[1:] if not word.startswith(str(folder))])
    errors, printed = io.StringIO(), io.StringIO()
    saved_argv, saved_file = sys.argv, cli.console.file
    sys.argv = ["converge", *arguments]
    cli.console.file = errors
    start = time.perf_counter()
    code: object = 0
    try:
        with redirect_stderr(errors), redirect_stdout(printed):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001 - any other exception is what the fuzzing looks for
        return Outcome("violation", f"{shown}: {type(error).__name__}: {error}", time.perf_counter() - start, shown)
    finally:
        sys.argv, cli.console.file = saved_argv, saved_file
    seconds = time.perf_counter() - start
    outcome = _judged(arguments, output, code, errors.getvalue(), shown)
    outcome.seconds, outcome.trial = seconds, shown
    return outcome


def _judged(arguments: list[str], output: Path, code: object, text: str, shown: str) -> Outcome:
    """The outcome of a command line that ended with exit ``code`` and printed ``text`` on stderr."""
    if "Traceback" in text:
        return Outcome("violation", f"{shown}: a traceback")
    if code in (0, None):
        if arguments[0] != "eval" and not _valid_image(output):
            return Outcome("violation", f"{shown}: exit 0 without a readable output")
        return Outcome("result")
    if code != 2:
        return Outcome("violation", f"{shown}: exit code {code}: {text.strip()[-200:]}")
    if output.exists():
        return Outcome("violation", f"{shown}: refused but wrote {output.name}")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    usage = any("Usage:" in line for line in lines)
    if not usage and (len(lines) != 1 or not lines[0].startswith("error: ")):
        return Outcome("violation", f"{shown}: refused with {len(lines)} lines: {text.strip()[:200]}")
    return Outcome("refused")


def _valid_image(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, ValueError):
        return False
