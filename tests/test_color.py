import numpy as np
import pytest
import torch
from PIL import Image

from converge.color import rgb_to_ycbcr, ycbcr_to_rgb


def test_ycbcr_round_trip_is_exact_to_rounding() -> None:
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ycbcr = rgb_to_ycbcr(rgb)
    assert torch.allclose(ycbcr_to_rgb(ycbcr), rgb, atol=1e-12)
    assert float(ycbcr.min()) >= 0 and float(ycbcr.max()) <= 1


def test_ycbcr_is_what_jpeg_stores_as_pillow_converts_it() -> None:
    pixels = (np.random.default_rng(1).random((12, 9, 3)) * 255).astype(np.uint8)
    pillow = np.asarray(Image.fromarray(pixels).convert("YCbCr"), dtype=np.float64)
    ours = rgb_to_ycbcr(torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255)[0].permute(1, 2, 0) * 255
    # Pillow rounds to integers: within one level.
    assert np.abs(ours.numpy() - pillow).max() <= 1.0


def test_grey_pixels_have_neutral_chroma_and_their_own_luma() -> None:
    grey = torch.linspace(0, 1, 6, dtype=torch.float64).reshape(1, 1, 2, 3).expand(1, 3, 2, 3)
    ycbcr = rgb_to_ycbcr(grey)
    assert torch.allclose(ycbcr[:, 0], grey[:, 0]) and torch.allclose(ycbcr[:, 1:], torch.full_like(ycbcr[:, 1:], 0.5))


@pytest.mark.parametrize("convert", [rgb_to_ycbcr, ycbcr_to_rgb])
def test_conversions_need_three_channels(convert) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        convert(torch.zeros(1, 1, 4, 4))
