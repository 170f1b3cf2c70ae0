"""Every shipped model restores what it restored when ``tests/fixtures/zoo_outputs.safetensors`` was
recorded (``benchmarks/record_zoo_outputs.py``): refactors must leave the outputs unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from zoo_output_cases import FIXTURE, restore_case, zoo_output_cases

CASES = zoo_output_cases()


def test_the_fixture_holds_every_zoo_entry() -> None:
    assert sorted(load_file(str(FIXTURE))) == sorted(case.name for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_restored_output_matches_the_recorded_one(case) -> None:
    expected = load_file(str(FIXTURE))[case.name]
    _, restored = restore_case(case)
    # Bit-identical on the machine that recorded them; other CPUs may round differently in the last bits.
    torch.testing.assert_close(restored, expected, atol=1e-5, rtol=0)
