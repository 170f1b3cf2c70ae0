"""Comparison panels: layout, the crop window, the captions' scores, size checks and atomic PNG writing."""

import pytest
import torch
from PIL import Image

from converge import panel
from converge.errors import ConfigError
from converge.eval.metrics import psnr
from converge.panel import compare_panel, write_panel


def _textured(height: int = 64, width: int = 80) -> torch.Tensor:
    """A flat grey image with a noisy square at rows 40-56, columns 8-24: the only detail in it."""
    image = torch.full((1, 3, height, width), 0.5)
    image[..., 40:56, 8:24] = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return image


def test_the_crop_window_is_where_the_detail_is():
    top, left = panel._detail_window(_textured(), 16)
    assert abs(top - 40) <= 1 and abs(left - 8) <= 1


def test_a_panel_has_one_column_per_image_and_a_crop_row():
    clean = _textured()
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    two = compare_panel(noisy, clean)
    three = compare_panel(noisy, clean, clean)
    scale = min(2.0, panel.COLUMN_WIDTH / 80)
    view = round(80 * scale)
    assert two.size == (2 * (view + panel.MARGIN) + panel.MARGIN, panel.CAPTION_HEIGHT + round(64 * scale) + view
                        + 3 * panel.MARGIN)
    assert three.size[0] == 3 * (view + panel.MARGIN) + panel.MARGIN and three.size[1] == two.size[1]
    assert two.mode == "RGB"


def test_captions_score_against_the_reference_where_sizes_match():
    clean = _textured()
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    caption = panel._scores(noisy, clean, "input")
    assert caption.startswith("PSNR ") and f"{float(psnr(noisy, clean)[0]):.2f} dB" in caption
    assert panel._scores(clean[..., ::2, ::2], clean, "input") == "40x32, not scored"
    assert panel._scores(noisy, None, "input") == ""


def test_a_small_input_is_shown_at_the_output_size_and_grey_meets_colour():
    clean = _textured()
    small = clean[..., ::2, ::2]
    image = compare_panel(small, clean, clean.mean(dim=1, keepdim=True), "bicubic")
    assert image.size[0] > 0
    enlarged = panel._enlarged(small, 64, 80)
    assert enlarged.shape == clean.shape and torch.equal(enlarged[..., ::2, ::2], small)


def test_a_reference_of_another_size_is_refused():
    clean = _textured()
    with pytest.raises(ConfigError, match="reference is 40x32"):
        compare_panel(clean, clean, clean[..., ::2, ::2])


def test_write_panel_writes_a_png_atomically_and_refuses_other_names(tmp_path):
    image = compare_panel(_textured(), _textured())
    path = write_panel(tmp_path / "panel.png", image)
    assert Image.open(path).size == image.size
    assert sorted(item.name for item in tmp_path.iterdir()) == ["panel.png"]
    with pytest.raises(ConfigError, match="PNG"):
        write_panel(tmp_path / "panel.jpg", image)
