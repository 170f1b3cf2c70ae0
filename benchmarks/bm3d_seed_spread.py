"""How much does the noise realisation move BM3D's mean PSNR on BSD68 at sigma 25?

Denoises every BSD68 image under two further noise seeds (not the evaluation seeds) and prints the
mean PSNR of each, to compare with the spread between our BM3D figure and the papers'.

    python benchmarks/bm3d_seed_spread.py
"""

from __future__ import annotations

import json

import torch

from converge.baselines import get_baseline
from converge.data.registry import load_images
from converge.eval.metrics import psnr

SIGMA = 25 / 255
SEEDS = (1, 2)


def main() -> None:
    torch.set_num_threads(1)
    bm3d = get_baseline("bm3d")
    scores: dict[int, list[float]] = {seed: [] for seed in SEEDS}
    for index, (name, clean) in enumerate(load_images("bsd68")):
        for seed in SEEDS:
            generator = torch.Generator().manual_seed(1000 * seed + index)
            noisy = clean + SIGMA * torch.randn(clean.shape, generator=generator)
            scores[seed].append(float(psnr(bm3d(noisy, sigma=SIGMA), clean)[0]))
    print(json.dumps({f"seed {seed}": sum(values) / len(values) for seed, values in scores.items()}))


if __name__ == "__main__":
    main()
