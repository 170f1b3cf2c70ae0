import pytest
import torch

from converge.physics.base import Identity, LinearOperator, conjugate_gradient


class _Dense(LinearOperator):
    """A small dense matrix acting on (B, n) vectors: a reference operator for the base-class machinery."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix


def _random_matrix(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_conjugate_gradient_solves_each_sample():
    generator = torch.Generator().manual_seed(0)
    factor = _random_matrix(12, 12)
    spd = factor @ factor.T + 0.5 * torch.eye(12, dtype=torch.float64)
    rhs = torch.randn(3, 12, generator=generator, dtype=torch.float64)
    rhs[1] = 0.0  # an already-solved sample must stay put
    solution = conjugate_gradient(lambda v: v @ spd, rhs, tol=1e-12, max_iter=100)
    assert torch.allclose(solution, torch.linalg.solve(spd, rhs.T).T, atol=1e-9)
    assert float(solution[1].abs().max()) == 0.0


def test_conjugate_gradient_stops_at_max_iter():
    spd = torch.diag(torch.arange(1, 51, dtype=torch.float64))
    rhs = torch.ones(1, 50, dtype=torch.float64)
    few = conjugate_gradient(lambda v: v @ spd, rhs, tol=1e-14, max_iter=2)
    assert float((few @ spd - rhs).norm()) > 1e-3


def test_fallback_prox_solves_the_normal_equations():
    operator = _Dense(_random_matrix(5, 8))
    generator = torch.Generator().manual_seed(1)
    z, y = torch.randn(2, 8, generator=generator, dtype=torch.float64), torch.randn(2, 5, generator=generator, dtype=torch.float64)
    rho = torch.tensor([0.3, 2.0], dtype=torch.float64)
    solution = operator.prox_data(z, y, rho)
    for b in range(2):
        system = operator.matrix.T @ operator.matrix + rho[b] * torch.eye(8, dtype=torch.float64)
        expected = torch.linalg.solve(system, operator.matrix.T @ y[b] + rho[b] * z[b])
        assert torch.allclose(solution[b], expected, atol=1e-5)


def test_operator_norm_matches_the_largest_singular_value():
    operator = _Dense(_random_matrix(6, 9, seed=3))
    x0 = torch.ones(1, 9, dtype=torch.float64)
    expected = float(torch.linalg.matrix_norm(operator.matrix, ord=2))
    assert float(operator.operator_norm(x0, max_iter=2000, tol=1e-13)) == pytest.approx(expected, rel=1e-6)


def test_identity():
    x = torch.rand(2, 1, 3, 3)
    identity = Identity()
    assert torch.equal(identity(x), x) and torch.equal(identity.adjoint(x), x)
    assert torch.allclose(identity.prox_data(torch.zeros_like(x), x, 1.0), x / 2)
    assert float(identity.operator_norm(x)) == pytest.approx(1.0)
