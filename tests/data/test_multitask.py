"""MTDEQ's multi-task degradation: what it draws, what it records, and that each operator made its y."""

from __future__ import annotations

import pytest
import torch

from converge.data.multitask import MultiTaskDegradation
from converge.data.patches import PatchDataset, collate_patches
from converge.errors import ConfigError
from converge.physics import Downsample, GaussianBlur, Identity, PixelMask
from converge.train.config import MultiTaskSection

SECTION = MultiTaskSection()


def paper_degradation() -> MultiTaskDegradation:
    return MultiTaskDegradation(
        sr_factors=SECTION.sr_factors,
        blur_sigmas=SECTION.blur_sigmas,
        drop_probabilities=SECTION.drop_probabilities,
        noise_sigmas=SECTION.noise_sigmas,
        blur_size=SECTION.blur_size,
    )


def problem_of(operator: object) -> tuple[str, float]:
    if isinstance(operator, Identity):
        return ("sr", 1)
    if isinstance(operator, Downsample):
        return ("sr", operator.factor)
    if isinstance(operator, GaussianBlur):
        assert tuple(operator.kernel.shape) == (25, 25) and operator.boundary == "circular"
        return ("deblur", operator.sigma)
    assert isinstance(operator, PixelMask)
    return ("inpaint", None)


def test_draws_cover_the_configured_problems_and_noise_levels() -> None:
    degrade = paper_degradation()
    assert degrade.problems == [("sr", f) for f in (1, 2, 3, 4)] + [("deblur", s) for s in SECTION.blur_sigmas] + [
        ("inpaint", p) for p in SECTION.drop_probabilities
    ]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 48, 48, generator=generator)
    drawn, levels, kept = set(), set(), []
    for _ in range(1500):
        y, operator, level = degrade(x, generator)
        drawn.add(problem_of(operator))
        levels.add(level)
        if isinstance(operator, PixelMask):
            kept.append(float(operator.mask.mean()))
    expected = {("sr", f) for f in (1, 2, 3, 4)} | {("deblur", s) for s in SECTION.blur_sigmas} | {("inpaint", None)}
    assert drawn == expected
    assert levels == set(SECTION.noise_sigmas)
    # Completion drew every drop rate: kept fractions cluster near each 1 - p.
    for p in SECTION.drop_probabilities:
        assert any(abs(fraction - (1 - p)) < 0.06 for fraction in kept), p


@pytest.mark.parametrize("seed", range(6))
def test_every_measurement_is_its_operator_on_x_plus_noise_of_the_recorded_level(seed: int) -> None:
    degrade = MultiTaskDegradation(
        sr_factors=(1, 2, 3), blur_sigmas=(0.8, 2.4), drop_probabilities=(0.5,), noise_sigmas=(0.0, 12.75, 40.0)
    )
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 96, 96, generator=generator)
    for _ in range(20):
        y, operator, level = degrade(x, generator)
        noise = y - operator(x)
        if level == 0:
            assert torch.equal(noise, torch.zeros_like(noise))
        else:
            assert float(noise.std()) == pytest.approx(level / 255, rel=0.12)
            assert abs(float(noise.mean())) < 0.2 * level / 255


def test_patches_record_the_noise_level_and_carry_grid_measurements_of_their_own_operator() -> None:
    degrade = MultiTaskDegradation(sr_factors=(2, 4), blur_sigmas=(1.6,), drop_probabilities=(0.8,),
                                   noise_sigmas=(0.0, 25.5))
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(index)) for index in range(2)]
    dataset = PatchDataset(images, patch_size=32, patches_per_image=10, degrade=degrade, per_crop=5)
    y, x, batch, level = collate_patches([dataset[index] for index in range(len(dataset))])
    assert set(level.tolist()) <= {0.0, 25.5}
    for index, operator in enumerate(batch.operators):
        clean = operator.to_grid(operator(x[index : index + 1]))
        sampled = operator.to_grid(torch.ones_like(operator(x[index : index + 1]))).bool()
        residual = (y[index : index + 1] - clean)[sampled]
        if level[index] == 0:
            assert torch.allclose(residual, torch.zeros_like(residual), atol=1e-6)
        else:
            assert float(residual.std()) == pytest.approx(25.5 / 255, rel=0.25)
        # Off the sampled pixels of a downsampled patch the grid holds zeros.
        assert torch.equal(y[index][~sampled[0]], torch.zeros_like(y[index][~sampled[0]]))


def test_a_degradation_needs_a_problem_and_noise_levels() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        MultiTaskDegradation(sr_factors=(), blur_sigmas=(), drop_probabilities=(), noise_sigmas=(0.0,))
    with pytest.raises(ConfigError, match="non-negative"):
        MultiTaskDegradation(sr_factors=(2,), blur_sigmas=(), drop_probabilities=(), noise_sigmas=())
