"""Record what every shipped model restores from a fixed input, so a refactor can prove it changed nothing.

Writes ``tests/fixtures/zoo_outputs.safetensors``: for each zoo entry, the restored output of one 48x48
crop of the shipped example image, degraded with the entry's task at a fixed seed (``zoo_output_cases``
in ``tests/``). ``tests/test_zoo_outputs.py`` restores the same inputs again and compares.
Run it only when a model's output is meant to change (new weights), and say so in the commit::

    .venv/bin/python benchmarks/record_zoo_outputs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from zoo_output_cases import FIXTURE, restore_case, zoo_output_cases  # noqa: E402


def main() -> None:
    tensors = {}
    for case in zoo_output_cases():
        _, restored = restore_case(case)
        tensors[case.name] = restored.contiguous()
        print(f"{case.name}: {tuple(restored.shape)}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(FIXTURE))
    FIXTURE.chmod(0o644)
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
