import pytest
import torch

from converge.errors import ConfigError
from converge.models.dictionary import lasso_codes, lasso_objective, learn_dictionary, sample_patches


def piecewise_constant_images(count: int, size: int = 32, channels: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Images made of overlapping flat rectangles: their patches are sparse in edge-like atoms."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        image = torch.rand(channels, 1, 1, generator=generator).expand(channels, size, size).clone()
        for _ in range(8):
            top, left = torch.randint(size - 4, (2,), generator=generator).tolist()
            height, width = torch.randint(4, size, (2,), generator=generator).tolist()
            image[:, top : top + height, left : left + width] = torch.rand(channels, 1, 1, generator=generator)
        images.append(image[None])
    return images


def test_sample_patches_are_centred_flattened_and_seeded() -> None:
    images = piecewise_constant_images(3, channels=3)
    patches = sample_patches(images, 5, 300, torch.Generator().manual_seed(1))
    assert patches.shape == (300, 3 * 25)
    assert torch.allclose(patches.mean(dim=1), torch.zeros(300), atol=1e-6)
    again = sample_patches(images, 5, 300, torch.Generator().manual_seed(1))
    assert torch.equal(patches, again)
    assert not torch.equal(patches, sample_patches(images, 5, 300, torch.Generator().manual_seed(2)))


def test_sample_patches_takes_real_windows_of_the_images() -> None:
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    patches = sample_patches([image], 3, 50, torch.Generator().manual_seed(0))
    # Every window of this ramp, centred, is the same offset pattern.
    window = image[0, 0, :3, :3].flatten()
    assert torch.allclose(patches, (window - window.mean()).expand(50, 9))


def test_sample_patches_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="smaller than"):
        sample_patches([torch.rand(1, 1, 4, 4)], 5, 10, torch.Generator())
    with pytest.raises(ConfigError, match="channel"):
        sample_patches([torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8)], 3, 10, torch.Generator())


def test_lasso_codes_satisfy_the_optimality_conditions() -> None:
    generator = torch.Generator().manual_seed(0)
    dictionary = torch.randn(12, 20, generator=generator)
    dictionary = dictionary / dictionary.norm(dim=0)
    patches = torch.randn(30, 12, generator=generator)
    lam = 0.3
    codes = lasso_codes(patches, dictionary, lam, iterations=3000)
    correlation = (patches - codes @ dictionary.T) @ dictionary
    assert bool((correlation.abs() <= lam + 1e-3).all())
    support = codes != 0
    assert bool(support.any())
    assert torch.allclose(correlation[support], lam * torch.sign(codes[support]), atol=1e-3)


def test_learned_dictionary_codes_held_out_patches_better_than_a_random_one() -> None:
    images = piecewise_constant_images(6)
    train = sample_patches(images[:4], 5, 4000, torch.Generator().manual_seed(0))
    held_out = sample_patches(images[4:], 5, 1000, torch.Generator().manual_seed(1))
    lam = 0.05
    learned = learn_dictionary(train, 32, torch.Generator().manual_seed(2), lam=lam, epochs=3)
    assert learned.shape == (25, 32)
    assert torch.allclose(learned.norm(dim=0), torch.ones(32), atol=1e-5)
    random = torch.randn(25, 32, generator=torch.Generator().manual_seed(3))
    random = random / random.norm(dim=0)

    def objective(dictionary: torch.Tensor) -> float:
        codes = lasso_codes(held_out, dictionary, lam, iterations=200)
        return float(lasso_objective(held_out, dictionary, codes, lam).mean())

    assert objective(learned) < 0.5 * objective(random)


def test_learn_dictionary_is_seeded_and_survives_constant_patches() -> None:
    patches = sample_patches(piecewise_constant_images(2), 3, 500, torch.Generator().manual_seed(0))
    first = learn_dictionary(patches, 8, torch.Generator().manual_seed(1), epochs=1)
    assert torch.equal(first, learn_dictionary(patches, 8, torch.Generator().manual_seed(1), epochs=1))
    blank = torch.zeros(100, 9)
    flat_dictionary = learn_dictionary(blank, 4, torch.Generator().manual_seed(0), epochs=1)
    assert torch.isfinite(flat_dictionary).all()
    assert torch.allclose(flat_dictionary.norm(dim=0), torch.ones(4), atol=1e-5)
    with pytest.raises(ConfigError, match="as many patches as atoms"):
        learn_dictionary(torch.randn(3, 9), 4, torch.Generator())
