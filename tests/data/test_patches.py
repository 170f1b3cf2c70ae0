"""Random-crop patch datasets: shapes, reproducibility, dihedral augmentation and degradation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from converge.data.patches import PatchDataset, collate_patches, dihedral
from converge.data.registry import data_root
from converge.errors import ConfigError, DataError
from converge.physics import Downsample, Identity, OperatorBatch

IDENTITY = Identity()


def _images(count: int = 3, channels: int = 1, size: tuple[int, int] = (40, 48)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(channels, *size, generator=generator) for _ in range(count)]


def _add_noise(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Identity, float]:
    assert x.ndim == 4 and x.shape[0] == 1
    return x + 0.1 * torch.randn(x.shape, generator=generator), IDENTITY, float("nan")


def _all_items(dataset: PatchDataset) -> list[tuple[torch.Tensor, torch.Tensor, object, torch.Tensor]]:
    return [dataset[index] for index in range(len(dataset))]


def test_items_are_patch_pairs_of_the_requested_size() -> None:
    dataset = PatchDataset(_images(channels=3), patch_size=16, patches_per_image=5)
    assert len(dataset) == 15
    y, x, operator, level = dataset[7]
    assert y.shape == x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(operator, Identity)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    assert level.dtype == torch.float32 and level.shape == () and torch.isnan(level)


def test_each_patch_is_a_crop_of_its_own_image() -> None:
    images = _images()
    dataset = PatchDataset(images, patch_size=8, patches_per_image=4, augment=False)
    for index, (_, x, _, _) in enumerate(_all_items(dataset)):
        windows = images[index // 4].unfold(1, 8, 1).unfold(2, 8, 1)
        assert (windows == x[:, None, None]).flatten(3).all(-1).any()


def test_items_depend_only_on_seed_epoch_and_index() -> None:
    first = PatchDataset(_images(), 16, 4, degrade=_add_noise, seed=3)
    second = PatchDataset(_images(), 16, 4, degrade=_add_noise, seed=3)
    forward = _all_items(first)
    backward = [second[index] for index in reversed(range(len(second)))][::-1]
    for (y1, x1, _, _), (y2, x2, _, _) in zip(forward, backward):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_seed = PatchDataset(_images(), 16, 4, degrade=_add_noise, seed=4)
    assert not torch.equal(other_seed[0][1], forward[0][1])


def test_set_epoch_draws_new_patches_and_going_back_repeats_them() -> None:
    dataset = PatchDataset(_images(), 16, 4)
    epoch0 = torch.stack([x for _, x, _, _ in _all_items(dataset)])
    dataset.set_epoch(1)
    epoch1 = torch.stack([x for _, x, _, _ in _all_items(dataset)])
    assert not torch.equal(epoch0, epoch1)
    dataset.set_epoch(0)
    assert torch.equal(epoch0, torch.stack([x for _, x, _, _ in _all_items(dataset)]))
    with pytest.raises(ConfigError, match="epoch"):
        dataset.set_epoch(-1)


def test_augmentation_visits_all_eight_symmetries() -> None:
    # With a patch as large as the image the crop is fixed, so only the augmentation varies.
    image = torch.arange(36, dtype=torch.float32).reshape(1, 6, 6) / 35
    candidates = [dihedral(image, k) for k in range(8)]
    seen = set()
    for _, x, _, _ in _all_items(PatchDataset([image], 6, 200)):
        matches = [k for k, candidate in enumerate(candidates) if torch.equal(x, candidate)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))
    unaugmented = _all_items(PatchDataset([image], 6, 10, augment=False))
    assert all(torch.equal(x, image) for _, x, _, _ in unaugmented)


def test_dihedral_transforms_are_distinct_and_invertible() -> None:
    image = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(1))
    transformed = [dihedral(image, k) for k in range(8)]
    assert torch.equal(transformed[0], image)
    assert len({tuple(t.flatten().tolist()) for t in transformed}) == 8
    inverse = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}
    for k, t in enumerate(transformed):
        assert torch.equal(dihedral(t, inverse[k]), image)
    with pytest.raises(ValueError, match="0..7"):
        dihedral(image, 8)


def test_degrade_is_applied_with_the_item_generator() -> None:
    dataset = PatchDataset(_images(), 16, 3, degrade=_add_noise)
    y, x, _, _ = dataset[4]
    residual = y - x
    assert 0.05 < residual.std() < 0.15
    assert torch.equal(dataset[4][0], y)
    assert not torch.equal(dataset[5][0] - dataset[5][1], residual)


def test_a_measurement_of_another_size_is_placed_on_the_patch_grid() -> None:
    operator = Downsample(2)

    def downsample(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Downsample, float]:
        return operator(x), operator, float("nan")

    y, x, returned, _ = PatchDataset(_images(), 16, 2, degrade=downsample)[0]
    assert y.shape == x.shape == (1, 16, 16) and returned is operator
    assert torch.equal(operator.from_grid(y[None]), operator(x[None]))
    assert torch.equal(operator.to_grid(operator.from_grid(y[None])), y[None])

    def shrink(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Identity, float]:
        return torch.nn.functional.avg_pool2d(x, 2), IDENTITY, 1.0

    with pytest.raises(ConfigError, match="does not fill"):
        PatchDataset(_images(), 16, 2, degrade=shrink)[0]


def test_degrade_may_report_the_level_it_drew() -> None:
    def random_noise(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Identity, float]:
        level = float(torch.randint(10, 60, (), generator=generator))
        return x + level / 255 * torch.randn(x.shape, generator=generator), IDENTITY, level

    dataset = PatchDataset(_images(), 16, 4, degrade=random_noise)
    items = _all_items(dataset)
    levels = [float(level) for _, _, _, level in items]
    assert len(set(levels)) > 1 and all(10 <= level < 60 for level in levels)
    for y, x, _, level in items:
        assert 0.5 * level / 255 < float((y - x).std()) < 1.5 * level / 255
    assert float(dataset[2][3]) == levels[2]
    _, _, _, level_batch = next(iter(DataLoader(dataset, batch_size=5, shuffle=False, collate_fn=collate_patches)))
    assert level_batch.dtype == torch.float32 and level_batch.tolist() == levels[:5]
    assert torch.isnan(PatchDataset(_images(), 16, 2, degrade=_add_noise)[0][3])
    with pytest.raises(ConfigError, match="level as a number"):
        PatchDataset(_images(), 16, 2, degrade=lambda x, generator: (x, IDENTITY, "high"))[0]


def test_items_of_one_group_share_their_crop_and_differ_in_their_degradation() -> None:
    dataset = PatchDataset(_images(2), 16, 10, degrade=_add_noise, per_crop=5)
    items = _all_items(dataset)
    for group in range(4):
        first = items[5 * group][1]
        for y, x, _, _ in items[5 * group + 1 : 5 * group + 5]:
            assert torch.equal(x, first) and not torch.equal(y, items[5 * group][0])
    assert not any(torch.equal(items[5 * group][1], items[5 * (group + 1)][1]) for group in range(3))
    # A group's crop comes from its own image: groups never straddle two.
    images = _images(2)
    for index, (_, x, _, _) in enumerate(items):
        assert any(
            torch.equal(dihedral(x, t), images[index // 10][:, top : top + 16, left : left + 16])
            for t in range(8) for top in range(25) for left in range(33)
        ), index
    # The first item of each group is not the item a dataset without groups draws at that index.
    assert not torch.equal(items[5][1], PatchDataset(_images(2), 16, 10, degrade=_add_noise)[5][1])
    with pytest.raises(ConfigError, match="per_crop must be a positive integer dividing patches_per_image 10"):
        PatchDataset(_images(2), 16, 10, per_crop=3)


def test_clean_images_are_float_batches_in_the_unit_range() -> None:
    uint8 = torch.randint(0, 256, (1, 20, 24), dtype=torch.uint8)
    images = PatchDataset([uint8, torch.rand(1, 20, 24)], 16, 2).clean_images()
    assert [tuple(image.shape) for image in images] == [(1, 1, 20, 24)] * 2
    assert images[0].dtype == torch.float32 and torch.equal(images[0][0] * 255, uint8.float())


def test_degrade_with_a_wrong_output_is_reported() -> None:
    dataset = PatchDataset(_images(), 16, 2, degrade=lambda x, generator: (x[0], IDENTITY, 1.0))
    with pytest.raises(ConfigError, match=r"\(1, C, H, W\)"):
        dataset[0]
    with pytest.raises(ConfigError, match=r"\(y, operator, level\)"):
        PatchDataset(_images(), 16, 2, degrade=lambda x, generator: x)[0]
    with pytest.raises(ConfigError, match="the operator it applied"):
        PatchDataset(_images(), 16, 2, degrade=lambda x, generator: (x, "blur", 1.0))[0]


def test_data_loader_batches_pairs_with_their_operators() -> None:
    dataset = PatchDataset(_images(channels=3), 16, 4, degrade=_add_noise)
    batches = list(DataLoader(dataset, batch_size=5, shuffle=False, num_workers=0, collate_fn=collate_patches))
    assert [tuple(y.shape) for y, _, _, _ in batches] == [(5, 3, 16, 16), (5, 3, 16, 16), (2, 3, 16, 16)]
    assert torch.equal(batches[0][1][1], dataset[1][1])
    operators = batches[0][2]
    assert isinstance(operators, OperatorBatch) and len(operators) == 5 and len(operators.distinct) == 1


def test_colour_images_can_be_used_as_grayscale() -> None:
    colour = [torch.round(image * 255) / 255 for image in _images(channels=3)]
    dataset = PatchDataset(colour, 16, 2, channels=1, augment=False)
    _, x, _, _ = dataset[0]
    assert x.shape == (1, 16, 16)
    assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-3)
    uint8 = [torch.round(image * 255).to(torch.uint8) for image in colour]
    assert torch.allclose(PatchDataset(uint8, 16, 2, channels=1, augment=False)[0][1], x, atol=1e-6)
    with pytest.raises(ConfigError, match="cannot convert 1-channel"):
        PatchDataset(_images(channels=1), 16, 2, channels=3)


def test_invalid_inputs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="image 1 is 12x48, smaller than patch_size 16"):
        PatchDataset([torch.rand(1, 40, 48), torch.rand(1, 12, 48)], 16, 2)
    with pytest.raises(ConfigError, match="different channel counts"):
        PatchDataset([torch.rand(1, 40, 48), torch.rand(3, 40, 48)], 16, 2)
    with pytest.raises(ConfigError, match="at least one image"):
        PatchDataset([], 16, 2)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchDataset(_images(), 0, 2)
    with pytest.raises(ConfigError, match="patches_per_image"):
        PatchDataset(_images(), 16, 0)
    with pytest.raises(ConfigError, match="channels"):
        PatchDataset(_images(), 16, 2, channels=2)
    with pytest.raises(ConfigError, match="degrade must be a callable"):
        PatchDataset(_images(), 16, 2, degrade="noise")
    with pytest.raises(ConfigError, match="not a tensor"):
        PatchDataset([[0.0]], 16, 2)
    with pytest.raises(ConfigError, match="dtype"):
        PatchDataset([torch.ones(1, 40, 40, dtype=torch.int32)], 16, 2)
    with pytest.raises(IndexError):
        PatchDataset(_images(), 16, 2)[6]


def test_patches_from_a_real_set_name(image_reader: None) -> None:
    try:
        root = data_root()
    except DataError:
        pytest.skip("shared benchmark data not available")
    if not (Path(root) / "Set12").is_dir():
        pytest.skip("Set12 not available")
    dataset = PatchDataset("set12", patch_size=40, patches_per_image=2, degrade=_add_noise)
    assert len(dataset) == 24
    assert all(image.dtype == torch.uint8 for image in dataset.images)
    y, x, _, _ = dataset[23]
    assert x.shape == y.shape == (1, 40, 40)
    assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-4) and 0 <= x.min() and x.max() <= 1


def test_saturation_pushes_each_colour_crop_from_grey_by_a_drawn_factor() -> None:
    images = [torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(index)) * 0.2 + 0.4 for index in range(2)]
    plain = PatchDataset(images, patch_size=16, patches_per_image=4, seed=3)
    boosted = PatchDataset(images, patch_size=16, patches_per_image=4, seed=3, saturation=(2.0, 3.0))
    for index in range(len(plain)):
        x, y = plain[index][1], boosted[index][1]
        spread, boosted_spread = x - x.mean(dim=0), y - y.mean(dim=0)
        factor = float((boosted_spread * spread).sum() / (spread * spread).sum())
        assert 2.0 <= factor <= 3.0 and torch.allclose(boosted_spread, factor * spread, atol=1e-5)
        assert torch.allclose(y.mean(dim=0), x.mean(dim=0), atol=1e-5)
    assert torch.equal(boosted[1][1], boosted[1][1])
    with pytest.raises(ConfigError, match="colour images"):
        PatchDataset(_images(channels=1), patch_size=16, patches_per_image=4, saturation=(1.0, 2.0))


def test_a_saturation_share_pushes_about_that_fraction_of_the_crops() -> None:
    images = [torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(index)) * 0.2 + 0.4 for index in range(2)]
    half = PatchDataset(images, patch_size=8, patches_per_image=200, seed=3, saturation=(3.0, 3.0), saturation_share=0.5)
    plain = PatchDataset(images, patch_size=8, patches_per_image=200, seed=3)
    kept = [torch.equal(half[index][1], plain[index][1]) for index in range(len(half))]
    assert 0.4 < sum(kept) / len(kept) < 0.6
    with pytest.raises(ConfigError, match="saturation_share"):
        PatchDataset(images, patch_size=8, patches_per_image=4, saturation=(1.0, 2.0), saturation_share=0.0)
