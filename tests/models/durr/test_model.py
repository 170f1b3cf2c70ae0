
import pytest
import torch

from converge.errors import ConfigError
from converge.models import build_model, model_name, model_params
from converge.models.durr import (
    CONTINUE,
    DEBLOCK_LOOP_SCHEDULE,
    DENOISE_LOOP_SCHEDULE,
    DURR,
    STOP,
    POLICY_TILE,
    JPEG_BLOCK,
    DURRConfig,
    PolicyUnit,
    RestorationUnit,
    block_grid_statistics,
)
from converge.physics.base import Identity

PAPER_UNIT_PARAMETERS = 1.8e5
PAPER_POLICY_PARAMETERS = 1.0e5



def small(**overrides) -> DURR:
    torch.manual_seed(0)
    options = {"features": 4, "bottom_convs": 1, "policy_features": 4, "policy_hidden": 6, "max_loops": 5}
    return DURR(DURRConfig(**{**options, **overrides})).eval()


def force_policy(model: DURR, action: int) -> DURR:
    """Make the policy's Q-values constant, preferring ``action``."""
    with torch.no_grad():
        model.policy.head.weight.zero_()
        model.policy.head.bias.zero_()
        model.policy.head.bias[action] = 1.0
    return model


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(("channels", "height", "width"), [(1, 16, 16), (3, 17, 11), (1, 1, 1)])
def test_restoration_unit_keeps_the_image_shape(channels: int, height: int, width: int) -> None:
    unit = RestorationUnit(channels, features=4, bottom_convs=2)
    assert unit(torch.rand(2, channels, height, width)).shape == (2, channels, height, width)


def test_policy_gives_two_q_values_and_carries_its_hidden_state() -> None:
    torch.manual_seed(0)
    policy = PolicyUnit(1, features=4, hidden=6)
    x = torch.rand(3, 1, 15, 12)
    q, (h, c) = policy(x)
    assert q.shape == (3, 2) and h.shape == c.shape == (3, 6)
    assert policy.features(x).shape == (3, 1, 8)
    q_again, _ = policy(x, (h, c))
    assert not torch.allclose(q, q_again)


def test_q_sequence_is_the_policy_stepped_from_its_zero_state() -> None:
    torch.manual_seed(0)
    policy = PolicyUnit(1, features=4, hidden=6)
    estimates = [torch.rand(3, 1, 10, 10) for _ in range(4)]
    features = torch.stack([policy.features(x)[:, 0] for x in estimates], dim=1)
    hidden, stepped = None, []
    for x in estimates:
        q, hidden = policy(x, hidden)
        stepped.append(q)
    assert torch.allclose(policy.q_sequence(features), torch.stack(stepped, dim=1), atol=1e-6)


def test_calibrated_features_are_standardised_and_dead_channels_stay_finite() -> None:
    torch.manual_seed(0)
    policy = PolicyUnit(1, features=4, hidden=6)
    images = torch.rand(32, 1, 12, 12) * torch.linspace(0.1, 1.0, 32).view(-1, 1, 1, 1)
    raw = policy.pooled(images)
    assert raw.shape == (32, 1, 8) and torch.equal(policy.features(images), raw)
    raw[..., 0] = 0.25
    policy.calibrate(raw)
    standardised = (raw[:, 0] - policy.feature_mean) / policy.feature_std
    assert torch.allclose(standardised[:, 1:].mean(dim=0), torch.zeros(7), atol=1e-5)
    assert torch.allclose(standardised[:, 1:].std(dim=0, unbiased=False), torch.ones(7), atol=1e-4)
    assert torch.equal(standardised[:, 0], torch.zeros(32))
    assert torch.allclose(policy.features(images)[:, 0, 1:], standardised[:, 1:], atol=1e-5)


def test_an_image_is_read_as_independent_tiles_of_the_training_patch_size() -> None:
    torch.manual_seed(0)
    policy = PolicyUnit(1, features=4, hidden=6)
    policy.calibrate(torch.rand(10, 8))
    image = torch.rand(2, 1, 2 * POLICY_TILE + 7, 3 * POLICY_TILE)
    tiles = [image[..., row : row + POLICY_TILE, column : column + POLICY_TILE]
             for row in (0, POLICY_TILE) for column in (0, POLICY_TILE, 2 * POLICY_TILE)]
    features = policy.features(image)
    assert features.shape == (2, 6, 8)
    for index, tile in enumerate(tiles):
        assert torch.allclose(features[:, index], policy.features(tile)[:, 0], atol=1e-5)
    q, hidden = policy(image)
    q_again, _ = policy(image, hidden)
    per_tile = [policy(tile) for tile in tiles]
    assert torch.allclose(q, torch.stack([tile_q for tile_q, _ in per_tile]).mean(dim=0), atol=1e-5)
    tile_q_again = [policy(tile, tile_hidden)[0] for tile, (_, tile_hidden) in zip(tiles, per_tile, strict=True)]
    assert torch.allclose(q_again, torch.stack(tile_q_again).mean(dim=0), atol=1e-5)


def test_weights_saved_without_feature_statistics_load_with_the_identity() -> None:
    calibrated = small()
    calibrated.policy.calibrate(torch.rand(10, 8))
    stage_one = {name: value for name, value in calibrated.state_dict().items() if "feature_" not in name}
    model = small()
    model.policy.calibrate(torch.rand(10, 8))
    model.load_state_dict(stage_one, strict=True)
    assert torch.equal(model.policy.feature_mean, torch.zeros(8))
    assert torch.equal(model.policy.feature_std, torch.ones(8))
    model.load_state_dict(calibrated.state_dict(), strict=True)
    assert torch.equal(model.policy.feature_std, calibrated.policy.feature_std)


def blocky(offset: int = 0) -> torch.Tensor:
    """A 40x40 tile of random 8x8 constant blocks, the grid shifted by ``offset`` pixels."""
    torch.manual_seed(0)
    blocks = torch.rand(1, 1, 7, 7).repeat_interleave(JPEG_BLOCK, dim=2).repeat_interleave(JPEG_BLOCK, dim=3)
    return blocks[..., offset : offset + 40, offset : offset + 40]


def test_block_grid_statistics_see_the_grid_wherever_it_lies() -> None:
    torch.manual_seed(1)
    statistics = block_grid_statistics(torch.cat([blocky(), blocky(3), torch.rand(1, 1, 40, 40)]))
    assert statistics.shape == (3, 4)
    blockiness = statistics[:, [0, 2]]
    # On a grid every jump falls on one phase of eight: max / mean is close to 8.
    assert torch.all(blockiness[:2] > torch.log(torch.tensor(6.0)))
    assert torch.allclose(blockiness[0], blockiness[1], atol=0.2)
    assert torch.all(blockiness[2] < 0.2)
    pairs = (torch.rand(1, 1, 40, 40).diff(dim=-1).abs().mean() + 1e-4).log()
    assert statistics[2, 1] == pytest.approx(float(pairs), abs=0.1)


@pytest.mark.parametrize(("height", "width"), [(40, 40), (5, 3), (1, 1)])
def test_block_grid_statistics_are_finite_on_flat_and_tiny_tiles(height: int, width: int) -> None:
    statistics = block_grid_statistics(torch.full((2, 3, height, width), 0.5))
    assert statistics.shape == (2, 4) and torch.isfinite(statistics).all()
    assert torch.equal(statistics[:, [0, 2]], torch.zeros(2, 2))


def test_a_policy_with_block_statistics_reads_four_more_numbers_per_tile() -> None:
    model = small(policy_block_statistics=True)
    tile = blocky()
    pooled = model.policy.pooled(tile)
    assert pooled.shape == (1, 1, 2 * 4 + 4) and model.policy.lstm.input_size == 12
    assert torch.equal(pooled[0, :, -4:], block_grid_statistics(tile))
    assert torch.equal(pooled[..., :8], small().policy.pooled(tile))
    _, info = model.restore(torch.rand(1, 1, 50, 90))
    assert 1 <= info.iterations[0] <= 5


def test_default_parameter_counts_are_close_to_the_paper() -> None:
    model = DURR()
    assert abs(count(model.unit) - PAPER_UNIT_PARAMETERS) <= 0.25 * PAPER_UNIT_PARAMETERS
    assert abs(count(model.policy) - PAPER_POLICY_PARAMETERS) <= 0.25 * PAPER_POLICY_PARAMETERS


def test_untrained_policy_stops_within_the_cap_for_every_sample() -> None:
    model = small(max_loops=4)
    x, info = model.restore(torch.rand(5, 1, 12, 12))
    assert x.shape == (5, 1, 12, 12) and 0.0 <= x.min() and x.max() <= 1.0
    assert len(info.iterations) == 5
    assert all(1 <= n <= 4 for n in info.iterations)
    assert info.extra["policy"] == "learned"


def test_policy_that_always_continues_runs_to_the_cap() -> None:
    model = force_policy(small(max_loops=4), CONTINUE)
    y = torch.rand(2, 1, 10, 10)
    x, info = model.restore(y)
    assert info.iterations == [4, 4]
    assert torch.allclose(x, model.restore(y, loops=4)[0])


@pytest.mark.parametrize("min_loops", [0, 1, 3])
def test_policy_that_always_stops_runs_the_minimum(min_loops: int) -> None:
    model = force_policy(small(min_loops=min_loops), STOP)
    y = torch.rand(2, 1, 10, 10)
    x, info = model.restore(y)
    assert info.iterations == [min_loops, min_loops]
    assert torch.allclose(x, model.restore(y, loops=min_loops)[0])


def test_stopped_samples_are_frozen_while_others_continue(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small(max_loops=5)
    stop_at = torch.tensor([1, 3, 2])
    calls = []

    def scheduled_policy(x: torch.Tensor, hidden):
        # Sample i asks to stop only at its stop_at[i]-th estimate: a stopped sample must stay stopped.
        wants_stop = (len(calls) == stop_at).float()
        calls.append(len(calls))
        return torch.stack([wants_stop, torch.zeros(3)], dim=1), hidden

    monkeypatch.setattr(model.policy, "forward", scheduled_policy)
    y = torch.rand(3, 1, 8, 8)
    x, info = model.restore(y)
    assert info.iterations == [1, 3, 2]
    assert torch.allclose(x, model.restore(y, loops=[1, 3, 2])[0], atol=1e-6)


def test_loops_override_equals_manual_unit_steps() -> None:
    model = force_policy(small(max_loops=2), STOP)
    y = torch.rand(2, 1, 9, 13)
    with torch.no_grad():
        manual = y
        for _ in range(6):
            manual = manual + model.config.dt * model.unit(manual)
    x, info = model.restore(y, loops=6)
    assert info.iterations == [6, 6] and info.extra["policy"] == "fixed"
    assert torch.allclose(x, manual.clamp(0, 1), atol=1e-6)
    assert torch.allclose(model(y, loops=6), manual, atol=1e-6)


def test_per_sample_loops_run_each_sample_its_own_count() -> None:
    model = small()
    y = torch.rand(3, 1, 8, 8)
    x = model(y, loops=[0, 2, 1])
    with torch.no_grad():
        assert torch.allclose(x[0], y[0])
        assert torch.allclose(x[1:2], model.unit_step(model.unit_step(y[1:2])), atol=1e-6)
        assert torch.allclose(x[2:3], model.unit_step(y[2:3]), atol=1e-6)


def test_forward_with_loops_is_differentiable() -> None:
    model = small().train()
    model(torch.rand(2, 1, 8, 8), loops=2).square().mean().backward()
    assert model.unit.output.weight.grad is not None and model.unit.output.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("loops", [-1, [1, 2, 3], 2.5, 21, [0, 100000]])
def test_bad_loops_raise(loops) -> None:
    with pytest.raises(ConfigError):
        small().restore(torch.rand(2, 1, 8, 8), loops=loops)


def test_forced_loops_are_bounded_by_four_times_the_trained_maximum() -> None:
    model = small()
    assert model.checked_inference_options({"loops": 20}) == {"loops": 20}
    with pytest.raises(ConfigError, match="over 20, 4 times the 5 loops"):
        model.checked_inference_options({"loops": 21})


@pytest.mark.parametrize(
    "options", [{"channels": 2}, {"dt": 0.0}, {"max_loops": 0}, {"min_loops": 6, "max_loops": 5}, {"features": 0}]
)
def test_bad_config_raises(options: dict) -> None:
    with pytest.raises(ConfigError):
        DURRConfig(**options)


def test_channel_mismatch_raises() -> None:
    with pytest.raises(ConfigError, match="expects 3-channel images"):
        small(channels=3).restore(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("loops", [None, [2, 3]])
def test_a_gray_model_restores_each_colour_channel_as_a_gray_image(loops) -> None:
    model = small()
    colour = torch.rand(2, 3, 9, 7)
    x, info = model.restore(colour, loops=loops)
    alone, alone_info = model.restore(colour.reshape(6, 1, 9, 7), loops=None if loops is None else [2, 2, 2, 3, 3, 3])
    assert x.shape == colour.shape
    assert torch.allclose(x, alone.reshape(colour.shape), atol=1e-6)
    assert info.iterations == alone_info.iterations and len(info.iterations) == 6


def test_registered_in_the_model_table() -> None:
    model = build_model("durr", {"features": 4, "policy_features": 4, "policy_hidden": 4})
    assert isinstance(model, DURR) and model_name(model) == "durr"
    assert model_params(model)["features"] == 4


def paper_denoiser(**overrides) -> DURR:
    return small(loop_schedule=[list(pair) for pair in DENOISE_LOOP_SCHEDULE], **overrides)


@pytest.mark.parametrize(
    ("schedule", "levels", "expected"),
    [
        # Between pairs: linear interpolation rounded half up (7.5 -> 8, 10.5 -> 11); outside: the end pair.
        (DENOISE_LOOP_SCHEDULE, [10, 25, 30, 35, 40, 44, 50, 55, 75], [4, 4, 5, 6, 8, 9, 11, 12, 12]),
        (DEBLOCK_LOOP_SCHEDULE, [5, 20, 21, 23, 25, 30, 40], [6, 6, 6, 5, 5, 4, 4]),
        (((40.0, 8),), [5, 40, 75, float("nan")], [8, 8, 8, 8]),
    ],
)
def test_scheduled_loops_interpolate_between_the_pairs(schedule, levels, expected) -> None:
    model = small(loop_schedule=schedule)
    loops = model.scheduled_loops(torch.tensor(levels, dtype=torch.float32))
    assert loops.dtype == torch.long and loops.tolist() == expected


def test_paper_schedules_are_the_papers_pairs() -> None:
    assert DENOISE_LOOP_SCHEDULE == ((25, 4), (35, 6), (45, 9), (55, 12))
    assert DEBLOCK_LOOP_SCHEDULE == ((20, 6), (30, 4))


def test_training_forward_takes_exactly_the_scheduled_loops_per_sample() -> None:
    model = paper_denoiser().train()
    level = torch.tensor([25.0, 55.0, 40.0, 30.0])
    expected = [4, 12, 8, 5]
    samples_seen = []
    model.unit.register_forward_hook(lambda module, inputs, output: samples_seen.append(inputs[0].shape[0]))
    y = torch.rand(4, 1, 8, 8)
    x = model.training_forward(y, Identity(), level)
    assert sum(samples_seen) == sum(expected) and len(samples_seen) == max(expected)
    with torch.no_grad():
        for index, loops in enumerate(expected):
            manual = y[index : index + 1]
            for _ in range(loops):
                manual = model.unit_step(manual)
            assert torch.allclose(x[index : index + 1], manual, atol=1e-6)
    x.square().mean().backward()
    assert model.unit.output.weight.grad.abs().sum() > 0
    untouched = {name.split(".")[0] for name, parameter in model.named_parameters() if parameter.grad is None}
    assert untouched == {"policy"} and model.training_skips_parameters


def test_training_forward_needs_a_schedule_and_levels() -> None:
    with pytest.raises(ConfigError, match="loop_schedule"):
        small().training_forward(torch.rand(2, 1, 8, 8), Identity(), torch.tensor([25.0, 30.0]))
    with pytest.raises(ConfigError, match="NaN"):
        paper_denoiser().training_forward(torch.rand(2, 1, 8, 8), Identity(), torch.tensor([25.0, float("nan")]))


@pytest.mark.parametrize(
    "schedule",
    [[[25, 4], [25, 6]], [[35, 4], [25, 6]], [[25, 0]], [[25, 2.5]], [[25, True]], [[25]], [25, 4], "25:4", [["a", 4]]],
)
def test_bad_loop_schedules_raise(schedule) -> None:
    with pytest.raises(ConfigError, match="loop_schedule"):
        DURRConfig(loop_schedule=schedule)


def test_yaml_schedules_become_tuples_and_round_trip_through_the_table() -> None:
    model = build_model("durr", {"features": 4, "loop_schedule": [[20, 6], [30, 4]]})
    assert model.config.loop_schedule == DEBLOCK_LOOP_SCHEDULE
    rebuilt = build_model("durr", model_params(model))
    assert rebuilt.config == model.config
