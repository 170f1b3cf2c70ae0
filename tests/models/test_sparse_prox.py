import math

import numpy as np
import pytest
import torch

from converge.errors import ConfigError
from converge.models.sparse_prox import (
    centralised_codes,
    csr_prox,
    group_prox,
    patch_similarity,
    soft_threshold,
)


def argmin_convex_1d(objective, shape: tuple[int, ...], bound: float = 10.0, steps: int = 120) -> np.ndarray:
    """Elementwise minimiser of a convex scalar function by golden-section search on [-bound, bound]."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = np.full(shape, -bound), np.full(shape, bound)
    for _ in range(steps):
        left = high - ratio * (high - low)
        right = low + ratio * (high - low)
        go_left = objective(left) < objective(right)
        high = np.where(go_left, right, high)
        low = np.where(go_left, low, left)
    return 0.5 * (low + high)


def random_similarity(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    similarity = torch.rand(batch, n, n, generator=generator, dtype=torch.float64)
    return 0.5 * (similarity + similarity.transpose(-1, -2))


@pytest.mark.parametrize("per_entry", [False, True])
def test_soft_threshold_is_the_argmin_of_its_definition(per_entry: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    alpha = 3.0 * torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    shape = alpha.shape if per_entry else (4,)
    lam = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0
    a, t = alpha.numpy(), np.broadcast_to(lam.numpy(), alpha.shape)
    expected = argmin_convex_1d(lambda u: 0.5 * (u - a) ** 2 + t * np.abs(u), a.shape)
    assert np.abs(soft_threshold(alpha, lam).numpy() - expected).max() < 1e-4
    assert (soft_threshold(alpha, lam) == 0).any(), "the test must exercise the dead zone"


def test_centralised_codes_are_row_weighted_averages() -> None:
    generator = torch.Generator().manual_seed(1)
    codes = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    similarity = random_similarity(2, 4, generator)
    beta = centralised_codes(codes, similarity)
    for b in range(2):
        for i in range(4):
            weights = similarity[b, i]
            assert torch.allclose(beta[b, i], (weights[:, None] * codes[b]).sum(0) / weights.sum())


def csr_argmin(z: np.ndarray, lam: np.ndarray, lam_centre: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return argmin_convex_1d(
        lambda u: 0.5 * (u - z) ** 2 + lam * np.abs(u) + lam_centre * np.abs(u - beta), z.shape
    )


def test_csr_prox_is_the_argmin_of_its_definition_on_random_codes() -> None:
    generator = torch.Generator().manual_seed(2)
    alpha = 2.0 * torch.randn(2, 6, 8, generator=generator, dtype=torch.float64)
    centre_codes = torch.randn(2, 6, 8, generator=generator, dtype=torch.float64)
    centre_codes[..., 0] = 0.0  # beta = 0 on atom 0: the merged-l1 case
    similarity = random_similarity(2, 6, generator)
    lam = 0.1 + torch.rand(8, generator=generator, dtype=torch.float64)
    lam_centre = 0.1 + torch.rand(2, 6, 8, generator=generator, dtype=torch.float64)
    weights = similarity.numpy()
    beta = np.einsum("bij,bjk->bik", weights, centre_codes.numpy()) / weights.sum(-1, keepdims=True)
    expected = csr_argmin(
        alpha.numpy(), np.broadcast_to(lam.numpy(), alpha.shape), lam_centre.numpy(), beta
    )
    result = csr_prox(alpha, lam, similarity, lam_centre, centre_codes=centre_codes)
    assert np.abs(result.numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("beta", [0.7, -0.7, 0.0])
@pytest.mark.parametrize("gamma", [0.4, 2.5])
def test_csr_prox_matches_the_argmin_across_every_region(beta: float, gamma: float) -> None:
    """A dense sweep of inputs crosses all five pieces of the case analysis (paper Fig. 4)."""
    lam = 0.3
    z = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64).reshape(1, 601, 1)
    centre_codes = torch.full_like(z, beta)
    identity = torch.eye(601, dtype=torch.float64).unsqueeze(0)
    result = csr_prox(z, lam, identity, lam * gamma, centre_codes=centre_codes).numpy()
    expected = csr_argmin(
        z.numpy(), np.full(z.shape, lam), np.full(z.shape, lam * gamma), np.full(z.shape, beta)
    )
    assert np.abs(result - expected).max() < 1e-4
    if beta != 0.0:
        assert np.isclose(result, beta).any() and np.isclose(result, 0.0).any()


def test_csr_prox_without_centre_term_is_soft_thresholding() -> None:
    generator = torch.Generator().manual_seed(3)
    alpha = torch.randn(2, 5, 4, generator=generator)
    similarity = random_similarity(2, 5, generator).float()
    lam = torch.rand(4, generator=generator)
    assert torch.allclose(csr_prox(alpha, lam, similarity, 0.0), soft_threshold(alpha, lam))


def test_csr_prox_centres_on_its_own_input_by_default() -> None:
    generator = torch.Generator().manual_seed(4)
    alpha = torch.randn(1, 5, 3, generator=generator)
    similarity = random_similarity(1, 5, generator).float()
    assert torch.equal(csr_prox(alpha, 0.2, similarity, 0.3), csr_prox(alpha, 0.2, similarity, 0.3, alpha))


def test_group_prox_with_identity_similarity_is_soft_thresholding() -> None:
    generator = torch.Generator().manual_seed(5)
    alpha = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    lam = 0.5 * torch.rand(5, generator=generator, dtype=torch.float64)
    identity = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    result = group_prox(alpha, lam, identity)
    assert torch.allclose(result, soft_threshold(alpha, lam), atol=1e-9)
    assert (result == 0).any() and (result != 0).any()


def test_group_prox_with_all_ones_similarity_is_the_group_lasso_prox() -> None:
    """With S = 1, every patch shares one factor: the prox of lam * sqrt(N) * ||alpha_{:,k}||_2 per atom."""
    from scipy.optimize import minimize

    n = 5
    generator = torch.Generator().manual_seed(6)
    alpha = torch.randn(1, n, 4, generator=generator, dtype=torch.float64)
    norms = alpha[0].norm(dim=0)
    # Atoms 0, 1 keep their group, atoms 2, 3 are killed by it: both regimes of the prox.
    lam = torch.stack([0.3 * norms[0], 0.6 * norms[1], 1.2 * norms[2], 3.0 * norms[3]]) / n**0.5
    result = group_prox(alpha, lam, torch.ones(1, n, n, dtype=torch.float64))[0]
    for atom in range(4):
        a, weight = alpha[0, :, atom].numpy(), lam[atom].item() * n**0.5
        u = result[:, atom].numpy()

        def objective(v: np.ndarray) -> float:
            return 0.5 * np.sum((v - a) ** 2) + weight * np.linalg.norm(v)

        if atom < 2:
            numeric = minimize(objective, a, method="BFGS", options={"gtol": 1e-10}).x
            assert np.abs(u - numeric).max() < 1e-4
            assert np.allclose(u - a + weight * u / np.linalg.norm(u), 0.0, atol=1e-9)
        else:
            assert np.all(u == 0.0) and np.linalg.norm(a) <= weight
            probes = np.random.default_rng(atom).normal(scale=0.1, size=(200, n))
            assert all(objective(u) <= objective(probe) for probe in probes)


def test_group_prox_weighs_each_patch_by_its_own_row() -> None:
    """Row i of S (patch i's neighbours) sets patch i's factor; checked on a non-symmetric S."""
    generator = torch.Generator().manual_seed(10)
    alpha = torch.randn(1, 4, 3, generator=generator, dtype=torch.float64)
    similarity = torch.rand(1, 4, 4, generator=generator, dtype=torch.float64)
    lam = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    result = group_prox(alpha, lam, similarity)
    for i in range(4):
        for k in range(3):
            row = similarity[0, i]
            shrink = 1 - lam[k] * row.sum().sqrt() / (row * alpha[0, :, k] ** 2).sum().sqrt()
            assert torch.isclose(result[0, i, k], shrink.clamp_min(0) * alpha[0, i, k])


def test_group_prox_zero_group_stays_zero_with_finite_gradient() -> None:
    alpha = torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True)
    result = group_prox(alpha, 0.1, torch.ones(1, 3, 3, dtype=torch.float64))
    result.sum().backward()
    assert torch.equal(result.detach(), torch.zeros_like(result))
    assert torch.isfinite(alpha.grad).all()


def test_proxes_pass_gradcheck() -> None:
    generator = torch.Generator().manual_seed(7)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    alpha, centre_codes = leaf(2, 4, 3), leaf(2, 4, 3)
    similarity = random_similarity(2, 4, generator).requires_grad_()
    lam = (0.1 + 0.3 * torch.rand(3, generator=generator, dtype=torch.float64)).requires_grad_()
    lam_centre = (0.1 + 0.3 * torch.rand(3, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(soft_threshold, (alpha, lam))
    assert torch.autograd.gradcheck(csr_prox, (alpha, lam, similarity, lam_centre, centre_codes))
    assert torch.autograd.gradcheck(group_prox, (alpha, lam, similarity))
    patches, scale = leaf(2, 4, 6), leaf(6)
    assert torch.autograd.gradcheck(patch_similarity, (patches, scale))


def test_patch_similarity_matches_its_definition() -> None:
    generator = torch.Generator().manual_seed(8)
    patches = torch.rand(2, 7, 9, generator=generator, dtype=torch.float64)
    scale = torch.rand(9, generator=generator, dtype=torch.float64) + 0.5
    mask = torch.rand(7, 7, generator=generator) > 0.4
    mask = (mask | mask.T) | torch.eye(7, dtype=torch.bool)
    difference = scale * (patches.unsqueeze(2) - patches.unsqueeze(1))
    expected = torch.exp(-difference.square().sum(-1))
    similarity = patch_similarity(patches, scale)
    masked = patch_similarity(patches, scale, window_mask=mask)
    assert torch.allclose(similarity, expected)
    assert torch.equal(similarity, similarity.transpose(-1, -2))
    assert torch.equal(torch.diagonal(similarity, dim1=-2, dim2=-1), torch.ones(2, 7, dtype=torch.float64))
    assert torch.all(masked[:, ~mask] == 0) and torch.equal(masked[:, mask], similarity[:, mask])
    assert torch.all((similarity > 0) & (similarity <= 1))


def test_float32_similarity_is_exactly_symmetric_with_unit_diagonal() -> None:
    patches = torch.rand(1, 50, 81, generator=torch.Generator().manual_seed(9))
    similarity = patch_similarity(patches, torch.ones(81))
    assert torch.equal(similarity, similarity.transpose(-1, -2))
    assert torch.all(torch.diagonal(similarity, dim1=-2, dim2=-1) == 1.0)


def test_bad_shapes_raise_config_errors() -> None:
    alpha, patches = torch.zeros(1, 4, 3), torch.zeros(1, 4, 6)
    with pytest.raises(ConfigError, match="similarity"):
        group_prox(alpha, 0.1, torch.ones(1, 5, 5))
    with pytest.raises(ConfigError, match="centre_codes"):
        csr_prox(alpha, 0.1, torch.ones(1, 4, 4), 0.1, centre_codes=torch.zeros(1, 4, 2))
    with pytest.raises(ConfigError, match="scale"):
        patch_similarity(patches, torch.ones(5))
    with pytest.raises(ConfigError, match="window_mask"):
        patch_similarity(patches, torch.ones(6), window_mask=torch.ones(4, 4))


def test_windowed_similarity_has_the_same_values_and_gradients_with_and_without_autograd() -> None:
    generator = torch.Generator().manual_seed(10)
    patches = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64).requires_grad_()
    scale = (0.5 + torch.rand(6, generator=generator, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(5, 5, generator=generator) > 0.5
    mask = mask | mask.T | torch.eye(5, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda p, s: patch_similarity(p, s, mask), (patches, scale))
    with_autograd = patch_similarity(patches, scale, mask)
    with torch.no_grad():
        in_place = patch_similarity(patches, scale, mask)
        assert torch.equal(in_place, with_autograd.detach())
        assert torch.equal(in_place, patch_similarity(patches, scale) * mask)


def test_far_patches_get_a_capped_similarity_that_rounding_cannot_see() -> None:
    # Squared distances are capped at 80: exp(-80) = 1.8e-35, far below float32 resolution next to S_ii = 1.
    patches = torch.tensor([[[0.0] * 4, [10.0] * 4]])
    similarity = patch_similarity(patches, torch.ones(4))
    assert similarity[0, 0, 1] == pytest.approx(math.exp(-80.0), rel=1e-5)
    assert float(similarity[0, 0, 1]) + 1.0 == 1.0
