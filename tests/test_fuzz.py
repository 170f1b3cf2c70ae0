"""A bounded fuzz run in CI: mutated image files and random command lines never break the one rule
(a result or one clean refusal; see ``tests/fuzz_cases.py``). ``benchmarks/fuzz.py`` runs more."""

from __future__ import annotations

import random
import time

from fuzz_cases import cli_trial, read_trial, small_images

READ_SECONDS = 15.0
CLI_SECONDS = 30.0


def run_for(seconds: float, trial, *arguments) -> tuple[dict[str, int], list[str]]:
    counts = {"result": 0, "refused": 0, "violation": 0}
    violations = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        outcome = trial(*arguments)
        counts[outcome.kind] += 1
        if outcome.kind == "violation":
            violations.append(outcome.detail)
    return counts, violations


def test_mutated_image_files_are_read_right_or_refused(tmp_path):
    counts, violations = run_for(READ_SECONDS, read_trial, tmp_path, random.Random(0))
    assert not violations, violations[:5]
    assert counts["result"] > 20 and counts["refused"] > 20, counts


def test_random_command_lines_restore_or_refuse_in_one_line(tmp_path):
    sources = small_images(tmp_path, random.Random(1))
    counts, violations = run_for(CLI_SECONDS, cli_trial, tmp_path, sources, random.Random(0))
    assert not violations, violations[:5]
    assert counts["result"] > 5 and counts["refused"] > 20, counts
