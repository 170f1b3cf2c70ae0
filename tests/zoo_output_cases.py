"""The fixed restorations of every shipped model that ``test_zoo_outputs.py`` holds the outputs of."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FIXTURE = Path(__file__).parent / "fixtures" / "zoo_outputs.safetensors"
CROP = 48


@dataclass(frozen=True)
class Case:
    """One zoo entry restoring one degraded crop: its task and options, and whether it is told the level."""

    name: str
    task: str
    params: dict[str, Any]
    channels: int
    blind: bool


def zoo_output_cases() -> list[Case]:
    """One case per shipped zoo entry, at the entry's own level (blind entries at a level in their range)."""
    from converge import zoo

    cases = []
    for entry in zoo.list_models():
        task, params = zoo.trained_degradation(entry.name, blind_sigma=15.0)
        cases.append(Case(entry.name, task, params, entry.channels, blind=entry.level() is None))
    return cases


def case_input(case: Case) -> tuple[Tensor, Any]:
    """The seeded degraded ``(1, C, 48, 48)`` crop of the (grey) example image, and its operator; a
    colour case stacks three crops of it as its red, green and blue."""
    from converge.imageio import read_image
    from converge.physics.tasks import make_task

    with resources.as_file(resources.files("converge") / "examples" / "parrots.png") as path:
        clean = read_image(path)
    corners = ((40, 60), (100, 30), (150, 140))[: case.channels]
    clean = torch.cat([clean[..., top : top + CROP, left : left + CROP] for top, left in corners], dim=1)
    task = make_task(case.task, **case.params)
    return task.degrade(clean, torch.Generator().manual_seed(2026))


def restore_case(case: Case) -> tuple[Tensor, Tensor]:
    """``(observed, restored)`` of ``case`` through the public restorer table."""
    from converge.physics.tasks import make_task
    from converge.restorers import make_restorer

    torch.manual_seed(0)
    observed, operator = case_input(case)
    restorer = make_restorer(case.name, make_task(case.task, **case.params), blind=case.blind)
    return observed, restorer(observed, operator).image
