"""How a GroupSC demosaicker's lead over Malvar-He-Cutler changes as colours get more saturated.

Two check sets, both from bsds-val32 (validation images, in no test table and not in cbsd400):

- ``pushed``: the first ``--images`` images, a 96x96 crop of each (rows 100-195, columns 150-245),
  with their saturation scaled about each pixel's grey level by ``k`` in 1, 2, 3, 5 (``grey + k (x -
  grey)``, clipped to [0, 1]);
- ``natural``: the ``--natural`` most saturated 96x96 crops as they are, one per image, each image's
  crop chosen on a 16-pixel grid by its mean distance from grey (the pixel's channel standard
  deviation), no colour changed.

Each crop is mosaicked (Bayer RGGB, no noise) and demosaicked by the model and by ``malvar``. Prints
and writes the PSNR difference per crop and its mean per row to ``--out``.

    python benchmarks/demosaic_saturation.py --images 6 --natural 8
    python benchmarks/demosaic_saturation.py --weights RUN/model.safetensors --out OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from converge.data.patches import saturated
from converge.data.registry import load_images
from converge.eval.metrics import psnr
from converge.physics.tasks import make_task
from converge.restorers import make_restorer
from converge.zoo import load_weights, weights_path

FACTORS = (1.0, 2.0, 3.0, 5.0)
CROP = 96
GRID = 16
OUT = Path(__file__).parent / "results" / "demosaic_saturation.json"


def colourfulness(image: Tensor) -> Tensor:
    """Mean over every ``CROP`` x ``CROP`` window (on a ``GRID`` grid) of ``(3, H, W)`` ``image``'s per-pixel
    channel standard deviation: ``(rows, columns)``."""
    spread = image.std(dim=0, unbiased=False)[None, None]
    return torch.nn.functional.avg_pool2d(spread, CROP, stride=GRID)[0, 0]


def most_saturated_crop(image: Tensor) -> tuple[Tensor, float]:
    """The ``(3, CROP, CROP)`` window of ``image`` farthest from grey on average, and that average."""
    scores = colourfulness(image)
    best = int(scores.argmax())
    row, column = divmod(best, scores.shape[1])
    top, left = row * GRID, column * GRID
    return image[:, top : top + CROP, left : left + CROP], float(scores.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--natural", type=int, default=8)
    parser.add_argument("--weights", default=None, help="a GroupSC demosaicker's .safetensors (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = make_task("demosaic")
    malvar = make_restorer("malvar", task)
    model = load_weights(args.weights or weights_path("groupsc-demosaic"))
    images = [(name, image[0]) for name, image in load_images("bsds-val32")]

    def lead(clean: Tensor) -> float:
        observed, operator = task.degrade(clean[None], torch.Generator().manual_seed(0))
        learned = psnr(model.restore(observed, operator)[0], clean[None])[0]
        return round(float(learned - psnr(malvar(observed, operator).image, clean[None])[0]), 3)

    rows = []
    pushed = [image[:, 100 : 100 + CROP, 150 : 150 + CROP] for _, image in images[: args.images]]
    for factor in FACTORS:
        leads = [lead(saturated(crop, factor)) for crop in pushed]
        rows.append({"set": "pushed", "factor": factor, "model_minus_malvar_db": leads,
                     "mean": round(sum(leads) / len(leads), 3)})
        print(rows[-1], flush=True)
    natural = sorted(((*most_saturated_crop(image), name) for name, image in images), key=lambda item: -item[1])
    chosen = natural[: args.natural]
    leads = [lead(crop) for crop, _, _ in chosen]
    rows.append({"set": "natural", "crops": [f"{name} ({score:.3f})" for _, score, name in chosen],
                 "model_minus_malvar_db": leads, "mean": round(sum(leads) / len(leads), 3)})
    print(rows[-1], flush=True)
    weights = "" if args.weights is None else f" --weights {args.weights}"
    out = "" if args.out == OUT else f" --out {args.out}"
    command = f"python benchmarks/demosaic_saturation.py --images {args.images} --natural {args.natural}{weights}{out}"
    payload = {"command": command, "weights": str(args.weights or "groupsc-demosaic (shipped)"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
