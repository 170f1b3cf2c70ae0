"""Progress reports: what the loops report to an observer, and that nothing is reported without one."""

import torch

from converge.deq.solvers import get_solver
from converge.optim import admm, dpir_schedule
from converge.optim.priors import IdentityDenoiser
from converge.physics import Identity
from converge.progress import Step, observe, report


def test_an_algorithm_reports_each_iteration_with_its_image():
    steps: list[Step] = []
    y = torch.rand(1, 1, 8, 8)
    sigmas, rhos = dpir_schedule(5, 0.01)
    with observe(steps.append):
        z, _ = admm(y, Identity(), IdentityDenoiser(), schedule=sigmas, rho=rhos)
    assert [(step.kind, step.done, step.total) for step in steps] == [("iteration", k, 5) for k in range(1, 6)]
    assert torch.equal(steps[-1].image, z)


def test_a_deq_solver_reports_iterations_up_to_its_cap():
    steps: list[Step] = []
    with observe(steps.append):
        get_solver("fixed_point")(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), max_iter=30, tol=1e-4)
    assert steps and all(step.kind == "iteration" and step.total == 30 for step in steps)
    assert [step.done for step in steps] == list(range(1, len(steps) + 1)) and len(steps) < 30


def test_observers_nest_and_an_unobserved_report_does_nothing():
    outer: list[Step] = []
    inner: list[Step] = []
    report("tile", 1, 2)
    with observe(outer.append):
        with observe(inner.append):
            report("tile", 1, 2)
        report("tile", 2, 2)
    assert [step.done for step in inner] == [1] and [step.done for step in outer] == [2]


def test_a_tiled_restoration_reports_its_tiles():
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer

    task = make_task("denoise", sigma=25)
    steps: list[Step] = []
    noisy = torch.rand(1, 1, 48, 48)
    with observe(steps.append):
        make_restorer("dncnn-s25", task, tile=16)(noisy, task.operator)
    tiles = [step for step in steps if step.kind == "tile"]
    assert len(tiles) > 1 and [step.done for step in tiles] == list(range(1, len(tiles) + 1))
    assert {step.total for step in tiles} == {len(tiles)}
