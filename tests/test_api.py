"""The short API: converge.load / converge.restore, and the checks on what they are given."""

from __future__ import annotations

import pytest
import torch

import converge
from converge.api import checked_images
from converge.errors import ConfigError


def noisy_gray(shape: tuple[int, ...] = (1, 1, 40, 40), sigma: float = 25.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    clean = torch.linspace(0.2, 0.8, shape[-1]).expand(shape)
    return clean + sigma / 255 * torch.randn(shape, generator=generator)


def test_load_a_family_blind_and_restore_a_batch() -> None:
    model = converge.load("durr")
    assert model.blind and model.task.name == "denoise"
    y = noisy_gray((2, 1, 40, 40))
    result = model(y)
    assert result.image.shape == y.shape and len(result.details) == 2
    assert result.model == "durr-denoise-blind" and all(detail.iterations >= 1 for detail in result.details)
    clean = torch.linspace(0.2, 0.8, 40)
    assert float((result.image - clean).square().mean()) < 0.5 * float((y - clean).square().mean())


def test_an_image_comes_back_in_its_own_layout() -> None:
    y = noisy_gray()
    told = converge.load("dncnn-s25", sigma=25)
    assert not told.blind
    assert told(y[0]).image.shape == (1, 40, 40) and told(y[0, 0]).image.shape == (40, 40)
    assert torch.equal(told(y[0, 0]).image, told(y).image[0, 0])


def test_restore_uses_the_model_the_choice_picks() -> None:
    from converge.choice import choose_model

    result = converge.restore(noisy_gray(), sigma=25)
    assert result.model.startswith(choose_model("denoise", 1, 25.0).name)
    upsampled = converge.restore(noisy_gray(), task="sr", factor=2)
    assert upsampled.model == choose_model("sr", 1, None).name and upsampled.image.shape[-1] == 80
    with pytest.raises(ConfigError, match="inpainting needs its mask"):
        converge.restore(noisy_gray(), task="inpaint")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.full((1, 1, 8, 8), 128, dtype=torch.uint8), "dtype torch.uint8: divide 8-bit levels by 255"),
        (torch.full((1, 1, 8, 8), 128.0), r"spans \[128, 128\], not \[0, 1\]"),
        (torch.full((1, 1, 8, 8), float("nan")), "NaN or infinite"),
        (torch.rand(1, 4, 8, 8), "1 \\(grey\\) or 3 \\(RGB\\) channels"),
        (torch.rand(2, 1, 1, 8, 8), "shape \\(2, 1, 1, 8, 8\\)"),
        ([[0.5]], "expected a torch tensor image, got list"),
    ],
)
def test_bad_images_are_refused_with_a_reason(image, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        checked_images(image)


def test_noise_may_overshoot_the_unit_range() -> None:
    y = noisy_gray(sigma=75)
    assert float(y.min()) < 0 and torch.equal(checked_images(y), y)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        converge.load("nope")
    with pytest.raises(AttributeError):
        converge.nothing
