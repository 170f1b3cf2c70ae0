"""Comparison panels: input | output | reference side by side, a zoomed crop of each below, captions.

:func:`compare_panel` lays the images out as an 8-bit RGB Pillow image; :func:`write_panel` writes it
atomically as PNG. Images are ``(1, C, H, W)`` tensors in [0, 1], grey or colour; an input of another
size (super-resolution) is shown enlarged to the output's size, pixel for pixel. With a reference of
the output's size, each caption gives PSNR and SSIM against it (the input's too when it has that size).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from converge.atomic import write_atomic
from converge.errors import ConfigError

COLUMN_WIDTH = 360
"""Pixels: each column's full view is scaled to this width (never enlarged past 2x)."""
CAPTION_HEIGHT = 40
MARGIN = 8
CROP_COLOUR = (255, 64, 64)


def compare_panel(
    observed: Tensor,
    restored: Tensor,
    reference: Tensor | None = None,
    restored_label: str = "output",
) -> Image.Image:
    """The panel of ``observed`` (the input), ``restored`` and, when given, ``reference``.

    Row one shows each image whole with the crop window outlined; row two the window enlarged. The
    window is the square (a quarter of the shorter side, 16 to 128 pixels) where the reference (else
    the output) has the most gradient energy. ``restored_label`` names the output's column. A grey
    image beside a colour one is scored as three equal channels.
    """
    height, width = restored.shape[-2:]
    if reference is not None and tuple(reference.shape[-2:]) != (height, width):
        raise ConfigError(
            f"the reference is {_size(reference)} but the output is {_size(restored)}: give the clean image"
        )
    if reference is not None and reference.shape[1] != restored.shape[1]:
        channels = max(reference.shape[1], restored.shape[1])
        reference, restored = reference.expand(-1, channels, -1, -1), restored.expand(-1, channels, -1, -1)
        observed = observed.expand(-1, channels, -1, -1) if observed.shape[1] == 1 else observed
    columns = [("input", _enlarged(observed, height, width), observed), (restored_label, restored, restored)]
    if reference is not None:
        columns.append(("reference", reference, reference))
    side = max(16, min(128, min(height, width) // 4))
    top, left = _detail_window(reference if reference is not None else restored, side)
    scale = min(2.0, COLUMN_WIDTH / width)
    view_width, view_height = max(1, round(width * scale)), max(1, round(height * scale))
    crop_side = view_width
    font = ImageFont.load_default(size=14)
    canvas = Image.new(
        "RGB",
        (len(columns) * (view_width + MARGIN) + MARGIN, CAPTION_HEIGHT + view_height + crop_side + 3 * MARGIN),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    for index, (label, shown, scored) in enumerate(columns):
        x = MARGIN + index * (view_width + MARGIN)
        draw.text((x, 4), label, fill="black", font=font)
        draw.text((x, 4 + CAPTION_HEIGHT // 2), _scores(scored, reference, label), fill="black", font=font)
        full = _to_pil(shown).resize((view_width, view_height), Image.Resampling.LANCZOS)
        canvas.paste(full, (x, CAPTION_HEIGHT))
        corner = (x + left * scale, CAPTION_HEIGHT + top * scale)
        draw.rectangle([*corner, corner[0] + side * scale, corner[1] + side * scale], outline=CROP_COLOUR, width=2)
        window = shown[..., top : top + side, left : left + side]
        crop = _to_pil(window).resize((crop_side, crop_side), Image.Resampling.NEAREST)
        canvas.paste(crop, (x, CAPTION_HEIGHT + view_height + MARGIN))
    return canvas


def write_panel(path: str | Path, panel: Image.Image) -> Path:
    """Write ``panel`` to ``path`` as PNG, atomically (a temporary file renamed into place), making its
    folder when missing."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"a comparison panel is written as PNG: name it .png, not {path.name}")
    buffer = io.BytesIO()
    panel.save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda stream: stream.write(buffer.getvalue()))


def _scores(image: Tensor, reference: Tensor | None, label: str) -> str:
    """The caption's second line: PSNR / SSIM against the reference, where they can be measured."""
    from converge.eval.metrics import psnr, ssim

    if label == "reference":
        return "clean image"
    if reference is None:
        return ""
    if image.shape != reference.shape:
        return f"{_size(image)}, not scored"
    return f"PSNR {float(psnr(image, reference)[0]):.2f} dB, SSIM {float(ssim(image, reference)[0]):.4f}"


def _enlarged(image: Tensor, height: int, width: int) -> Tensor:
    """``image`` shown at ``height`` x ``width``: repeated pixels for an integer factor, else nearest."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="nearest")


def _detail_window(image: Tensor, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side`` x ``side`` window of ``image`` with the most gradient energy."""
    grey = image.mean(dim=1, keepdim=True)
    energy = grey.diff(dim=-1)[..., :-1, :] ** 2 + grey.diff(dim=-2)[..., :, :-1] ** 2
    if min(energy.shape[-2:]) < side:
        return 0, 0
    totals = F.avg_pool2d(energy, side, stride=1)
    row, column = divmod(int(totals.flatten().argmax()), totals.shape[-1])
    return row, column


def _to_pil(image: Tensor) -> Image.Image:
    """An RGB Pillow image of a ``(1, C, H, W)`` tensor in [0, 1] (grey repeated over RGB)."""
    pixels = image[0].detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
    rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels[:3]
    return Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0)), "RGB")


def _size(image: Tensor) -> str:
    return f"{image.shape[-1]}x{image.shape[-2]}"
