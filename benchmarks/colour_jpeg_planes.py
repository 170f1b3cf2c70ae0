"""What a grey JPEG deblocker gains on colour JPEGs by restoring the chroma too.

Each colour image (cropped to even sides) is compressed by Pillow at each ``--qualities`` value with
4:2:0 chroma (``converge.physics.jpeg.JPEGCompression``), converted to full-range YCbCr
(``converge.color.rgb_to_ycbcr``), and each of its three planes is restored by the grey ``--model``, as
``converge restore`` does for a colour JPEG. RGB PSNR (no border crop) of: the JPEG itself, the restored
luma with the chroma kept as decoded, and all three planes restored. One torch thread.

Writes ``benchmarks/results/colour_jpeg_planes_<bench>.{json,md}``.

    python benchmarks/colour_jpeg_planes.py --bench bsds-val32 --images 8 [--model durr-deblock-blind]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

import converge
from converge.color import rgb_to_ycbcr, ycbcr_to_rgb
from converge.data.registry import load_images
from converge.eval.metrics import psnr
from converge.physics.jpeg import JPEGCompression

OUT = Path(__file__).resolve().parent / "results"
ROWS = (("jpeg", "the JPEG"), ("luma", "luma restored, chroma as decoded"), ("planes", "all three planes restored"))


def measure(model: str, bench: str, images: int, quality: int) -> list[dict]:
    """Per image: RGB PSNR of the JPEG, of luma-only and of all-planes restoration at ``quality``."""
    restorer = converge.load(model, "deblock", quality=quality)
    rows = []
    for name, image in itertools.islice(load_images(bench, channels=3), images):
        clean = image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2]
        jpeg = JPEGCompression(quality)(clean)
        ycbcr = rgb_to_ycbcr(jpeg)
        planes = [restorer(ycbcr[:, plane : plane + 1]).image for plane in range(3)]
        luma = ycbcr_to_rgb(torch.cat([planes[0], ycbcr[:, 1:]], dim=1)).clamp(0, 1)
        restored = ycbcr_to_rgb(torch.cat(planes, dim=1)).clamp(0, 1)
        scores = {key: float(psnr(result, clean)) for (key, _), result in zip(ROWS, (jpeg, luma, restored))}
        rows.append({"image": name, **scores})
        print(f"q{quality} {name}: " + ", ".join(f"{key} {value:.2f}" for key, value in scores.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="durr-deblock-blind")
    parser.add_argument("--bench", default="bsds-val32")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--qualities", type=int, nargs="+", default=[10, 20, 30, 40])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {quality: measure(args.model, args.bench, args.images, quality) for quality in args.qualities}
    means = {quality: {key: sum(row[key] for row in rows) / len(rows) for key, _ in ROWS}
             for quality, rows in results.items()}
    command = (f"python benchmarks/colour_jpeg_planes.py --model {args.model} --bench {args.bench} "
               f"--images {args.images} --qualities {' '.join(map(str, args.qualities))}")
    record = {"command": command, "model": args.model, "bench": args.bench, "means": means, "images": results}
    OUT.mkdir(exist_ok=True)
    stem = OUT / f"colour_jpeg_planes_{args.bench}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    images = len(next(iter(results.values())))
    lines = [f"RGB PSNR (dB) of colour JPEGs restored by `{args.model}`, {args.bench}, {images} images: `{command}`",
             "", "| | " + " | ".join(f"q{quality}" for quality in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(f"{means[quality][key]:.3f}" for quality in results) + " |"
              for key, label in ROWS]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
