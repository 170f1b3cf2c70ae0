"""How the shipped demosaicker's lead over Malvar-He-Cutler changes as colours get more saturated.

The first ``--images`` bsds-val32 images (validation, in no test table), a 96x96 crop of each (rows
100-195, columns 150-245), with their saturation scaled about the pixel's grey level by each factor
``k`` (``grey + k (x - grey)``, clipped to [0, 1]); each is mosaicked (Bayer RGGB, no noise) and
demosaicked by ``groupsc-demosaic`` and by ``malvar``. Prints and writes the PSNR difference per image
and its mean per ``k`` to ``benchmarks/results/demosaic_saturation.json``.

    python benchmarks/demosaic_saturation.py --images 6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from converge.data.patches import saturated
from converge.data.registry import load_images
from converge.eval.metrics import psnr
from converge.physics.tasks import make_task
from converge.restorers import make_restorer

FACTORS = (1.0, 2.0, 3.0)
OUT = Path(__file__).parent / "results" / "demosaic_saturation.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = make_task("demosaic")
    malvar, groupsc = make_restorer("malvar", task), make_restorer("groupsc-demosaic", task)
    crops = [(name, image[..., 100:196, 150:246]) for name, image in list(load_images("bsds-val32"))[: args.images]]
    rows = []
    for factor in FACTORS:
        leads = []
        for name, crop in crops:
            clean = saturated(crop, factor)
            observed, operator = task.degrade(clean, torch.Generator().manual_seed(0))
            learned = psnr(groupsc(observed, operator).image, clean)[0]
            lead = float(learned - psnr(malvar(observed, operator).image, clean)[0])
            leads.append(round(lead, 3))
        rows.append({"factor": factor, "groupsc_minus_malvar_db": leads, "mean": round(sum(leads) / len(leads), 3)})
        print(rows[-1], flush=True)
    payload = {"command": f"python benchmarks/demosaic_saturation.py --images {args.images}", "rows": rows}
    OUT.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
