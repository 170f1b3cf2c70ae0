"""The README's table of shipped models, from the weights manifests (so it cannot drift from them).

One row per zoo entry, grouped by task: the name ``--model`` takes, channels, the level it was
trained for, its measured score (set, setting, PSNR, from the manifest, which names the
``converge eval`` command and report that measured it), its fp32 one-thread seconds per megapixel
(``benchmarks/inference_speed.py``, ``docs/inference-speed.md``) and the page that documents the model.
``--write`` replaces the block between ``<!-- models -->`` and ``<!-- /models -->`` in README.md;
``tests/test_zoo.py`` checks that the block is what this prints.

    python benchmarks/readme_models.py --write
"""

from __future__ import annotations

import argparse
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- models -->", "<!-- /models -->"
PAGES = {
    "dncnn": "src/converge/weights/README.md",
    "durr": "docs/models/durr.md",
    "nerd": "docs/models/nerd.md",
    "groupsc": "docs/models/groupsc.md",
    "unet": "docs/models/mtdeq.md",
    "mtdeq": "docs/models/mtdeq.md",
    "degrad": "docs/models/degrad.md",
}
TASK_ORDER = ("denoise", "deblock", "demosaic", "deblur", "sr", "inpaint")


def table() -> str:
    """The Markdown table, one row per shipped model."""
    from converge import zoo

    lines = [
        "| task | `--model` | channels | trained for | measured (PSNR) | s/MP, 1 thread | page |",
        "|---|---|---:|---|---|---:|---|",
    ]
    # A prior that restores through a plug-and-play algorithm (MTDEQ) comes last: it has no one task.
    entries = sorted(zoo.ZOO.values(), key=lambda entry: (TASK_ORDER.index(entry.task or "inpaint"), entry.name))
    for entry in entries:
        level = entry.level()
        task = entry.task or "deblur, sr, inpaint"
        if entry.task == "deblock":
            trained = f"quality {level:g}" if level is not None else "any quality, not told it"
        elif entry.task == "denoise":
            low_high = entry.trained_range
            trained = f"sigma {level:g}" if level is not None else (
                f"sigma {low_high[0]:g} to {low_high[1]:g}" if low_high else "any sigma"
            )
        elif entry.task == "deblur":
            blur = zoo.manifest(entry.name)["task_params"]
            trained = f"{blur['size']}x{blur['size']} Gaussian blur of std {blur['blur_sigma']:g}"
        elif entry.algorithm is not None:
            trained = f"SR, blur and missing pixels at once; the prior of `{entry.algorithm}`"
        else:
            trained = "-"
        score = "-" if entry.score is None else entry.score.summary()
        page = PAGES.get(entry.model, "src/converge/weights/README.md")
        channels = "grey" if entry.channels == 1 else "colour"
        speed = "-" if entry.seconds_per_megapixel is None else f"{entry.seconds_per_megapixel:.3g}"
        link = f"[{Path(page).name}]({page})"
        lines.append(f"| {task} | `{entry.name}` | {channels} | {trained} | {score} | {speed} | {link} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    text = table()
    if args.write:
        readme = README.read_text()
        start, end = readme.index(START) + len(START), readme.index(END)
        README.write_text(readme[:start] + "\n" + text + readme[end:])
    print(text, end="")


if __name__ == "__main__":
    main()
