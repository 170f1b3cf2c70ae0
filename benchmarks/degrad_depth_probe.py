"""How fast DE-GRAD's ``S_theta`` learns at each depth: a residual denoising probe.

``S_theta`` (``converge.models.degrad.Regulariser``: bias-free 3x3 convolutions, BatchNorm + ReLU in the
middle, every convolution spectrally normalised unless ``--plain``) is trained alone to predict the
noise of noisy crops, ``S(x + n) ~ n``, the map DE-Prox's proximal step ``v - S(v)`` needs and the kind
of output (near 0, high-frequency) DE-GRAD's regulariser gradient has. Crops: 8 random 64x64 colour
crops a step from the first ``--images`` cbsd400 images, Gaussian noise of ``--sigma`` grey levels,
Adam at ``--lr``, one torch thread, seed 0. Reported per depth: the training loss (mean over the last
50 steps) as a fraction of the noise variance (1.0: ``S`` has learnt nothing, it outputs about 0).

Writes ``benchmarks/results/degrad_depth_probe.{json,md}``.

    python benchmarks/degrad_depth_probe.py [--depths 5 9 17] [--steps 300] [--plain]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from converge.data.registry import load_images
from converge.models.degrad import Regulariser

OUT = Path(__file__).resolve().parent / "results"
CROP, BATCH, TAIL = 64, 8, 50


def crops(images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """A batch of random ``CROP``-pixel crops ``(BATCH, 3, CROP, CROP)``."""
    batch = []
    for _ in range(BATCH):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(image.shape[-2] - CROP + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[-1] - CROP + 1, (1,), generator=generator))
        batch.append(image[0, :, top : top + CROP, left : left + CROP])
    return torch.stack(batch)


def probe(depth: int, normalised: bool, steps: int, sigma: float, lr: float, images: list[torch.Tensor]) -> dict:
    """Train one ``S_theta`` for ``steps`` steps; its loss curve relative to the noise variance."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    network = Regulariser(3, 32, depth, normalised)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    variance = (sigma / 255) ** 2
    losses = []
    for _ in range(steps):
        clean = crops(images, generator)
        noise = sigma / 255 * torch.randn(clean.shape, generator=generator)
        loss = ((network(clean + noise) - noise) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item() / variance)
    return {"depth": depth, "spectral_norm": normalised, "relative_loss": sum(losses[-TAIL:]) / TAIL,
            "curve": losses[::25]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 9, 17])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--plain", action="store_true", help="also each depth without spectral normalisation")
    args = parser.parse_args()
    if args.steps <= TAIL or min(args.depths) < 2:
        parser.error(f"--steps must exceed {TAIL} and every depth be at least 2")
    torch.set_num_threads(1)
    images = [image for _, image in itertools.islice(load_images("cbsd400"), args.images)]
    rows = []
    for depth in args.depths:
        for normalised in (True, False) if args.plain else (True,):
            rows.append(probe(depth, normalised, args.steps, args.sigma, args.lr, images))
            print(f"depth {depth}, spectral norm {normalised}: {rows[-1]['relative_loss']:.3f}", flush=True)
    command = "python benchmarks/degrad_depth_probe.py " + " ".join(
        [f"--depths {' '.join(map(str, args.depths))}", f"--steps {args.steps}", f"--sigma {args.sigma:g}",
         f"--lr {args.lr:g}", f"--images {args.images}"] + (["--plain"] if args.plain else []))
    result = {"command": command, "steps": args.steps, "sigma": args.sigma, "lr": args.lr, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "degrad_depth_probe.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# How fast S_theta learns at each depth (residual denoising probe)", "", f"`{command}`", "",
             f"Training loss over the last {TAIL} of {args.steps} steps / noise variance (1.0: nothing learnt).",
             "", "| depth | spectral norm | relative loss |", "|---:|---|---:|"]
    lines += [f"| {row['depth']} | {'yes' if row['spectral_norm'] else 'no'} | {row['relative_loss']:.3f} |"
              for row in rows]
    (OUT / "degrad_depth_probe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
