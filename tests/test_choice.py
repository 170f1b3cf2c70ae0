"""The automatic choice of a model: the best validation score at the nearest level, within a speed."""

from dataclasses import replace

import pytest

from converge import choice, zoo
from converge.choice import choose_model
from converge.errors import ConfigError
from converge.zoo import Validation


def _scored(name: str, task: str, channels: int, scores: dict, speed: float | None = None) -> zoo.ZooEntry:
    """A zoo entry with validation ``scores`` (level -> PSNR) and ``speed`` seconds per megapixel."""
    records = tuple(
        Validation(task, channels, level, psnr, 8, "converge eval ...", "r.json") for level, psnr in scores.items()
    )
    base = zoo.ZooEntry(name, "dncnn", "x.yaml", "x.safetensors", task, None, "test entry", channels=channels)
    return replace(base, validation=records, seconds_per_megapixel=speed)


@pytest.fixture
def scored_zoo(monkeypatch):
    entries = [
        _scored("fast-grey", "denoise", 1, {15: 31.0, 25: 28.5, 50: 25.0}, speed=1.0),
        _scored("slow-grey", "denoise", 1, {15: 31.3, 25: 28.9, 50: 25.6}, speed=100.0),
        _scored("mid-grey", "denoise", 1, {15: 31.2, 25: 28.7, 50: 24.0}, speed=20.0),
        _scored("colour", "denoise", 3, {25: 30.5}),
        _scored("deblocker", "deblock", 1, {10: 29.0, 40: 33.0}, speed=2.0),
    ]
    monkeypatch.setattr(zoo, "ZOO", {entry.name: entry for entry in entries})


def test_the_best_score_within_the_speed_of_the_preference_wins(scored_zoo):
    assert choose_model("denoise", 1, 25.0, "best").name == "slow-grey"
    assert choose_model("denoise", 1, 25.0, "balanced").name == "mid-grey"
    assert choose_model("denoise", 1, 25.0, "fast").name == "fast-grey"
    made = choose_model("denoise", 1, 25.0, "balanced")
    assert "28.70 dB on 8 validation images" in made.reason and "against fast-grey's 28.50" in made.reason


def test_with_nothing_fast_enough_the_fastest_is_taken_and_the_reason_says_so(scored_zoo, monkeypatch):
    slow = _scored("slow-demosaicker", "demosaic", 3, {None: 40.0}, speed=300.0)
    monkeypatch.setitem(zoo.ZOO, slow.name, slow)
    made = choose_model("demosaic", 3, None, "balanced")
    assert made.name == "slow-demosaicker"
    assert "the fastest scored model (none is within balanced's 40 s per megapixel)" in made.reason


def test_the_nearest_measured_level_decides(scored_zoo):
    assert choose_model("denoise", 1, 45.0, "balanced").name == "fast-grey"  # at 50: 25.0 against 24.0
    assert choose_model("denoise", 1, 18.0, "balanced").name == "mid-grey"  # at 15
    assert "quality 40" in choose_model("deblock", 1, 35, "fast").reason


def test_colour_takes_colour_scores_then_grey_ones_and_unmeasured_speed_is_said(scored_zoo):
    made = choose_model("denoise", 3, 50.0, "fast")
    assert made.name == "colour" and "speed not measured" in made.reason
    assert choose_model("deblock", 3, 10, "best").name == "deblocker"


def test_a_task_without_scores_takes_its_fallback_and_a_bad_preference_is_refused(scored_zoo):
    for task, fallback in choice.FALLBACK.items():
        if task not in ("denoise", "deblock"):
            made = choose_model(task, 3, None)
            assert made.name == fallback and "no shipped model has validation scores" in made.reason
    with pytest.raises(ConfigError, match="--prefer must be one of"):
        choose_model("denoise", 1, 25.0, "slow")


def test_the_choice_agrees_with_the_shipped_manifests_scores():
    scored = [(entry, record) for entry in zoo.ZOO.values() for record in entry.validation]
    if not scored:
        pytest.skip("no shipped model has validation scores yet (benchmarks/validation_scores.py)")
    for _, record in scored:
        setting = (record.task, record.channels, record.level)
        made = choose_model(record.task, record.channels, record.level, "best")
        rivals = [other.psnr for _, other in scored if (other.task, other.channels, other.level) == setting]
        picked = next(own for own in zoo.ZOO[made.name].validation if (own.task, own.channels, own.level) == setting)
        assert picked.psnr == max(rivals)
