import re
from pathlib import Path

import pytest

from converge.errors import ConfigError
from converge.train.config import config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def minimal(**top) -> dict:
    return {"steps": 10, "model": {"name": "dncnn"}, "data": {"train_set": "train400"}, **top}


@pytest.mark.parametrize("name", ["dncnn-denoise-compact.yaml", "dncnn-denoise-paper.yaml"])
def test_shipped_configs_load_and_round_trip(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.model.name == "dncnn" and config.data.task_params == {"sigma": 25}
    assert config_from_dict(config_to_dict(config)) == config


def test_paper_config_is_dncnn_s() -> None:
    config = load_config(CONFIGS / "dncnn-denoise-paper.yaml")
    params = config.model.params
    assert (params["depth"], params["features"], config.data.patch_size, config.data.batch_size) == (17, 64, 40, 128)
    assert (config.optim.name, config.optim.lr, config.schedule.name, config.epochs) == ("adam", 1e-3, "step", 50)


def test_defaults_and_yaml_number_strings() -> None:
    config = config_from_dict(minimal(optim={"lr": "1e-4", "betas": [0.8, 0.99]}))
    assert config.optim.lr == 1e-4 and config.optim.betas == (0.8, 0.99)
    assert config.eval is None and config.loss == "mse" and config.schedule.name == "cosine"


@pytest.mark.parametrize(
    ("raw", "key", "where"),
    [
        (minimal(stpes=3), "stpes", "config"),
        (minimal(data={"train_set": "train400", "patchsize": 40}), "patchsize", "config.data"),
        (minimal(optim={"learning_rate": 1e-3}), "learning_rate", "config.optim"),
        (minimal(schedule={"kind": "cosine"}), "kind", "config.schedule"),
        (minimal(eval={"bench": "bsd68", "every_steps": 5}), "every_steps", "config.eval"),
        (minimal(model={"name": "dncnn", "depth": 5}), "depth", "config.model"),
    ],
)
def test_unknown_keys_name_the_key_and_the_valid_ones(raw: dict, key: str, where: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown key '{key}' in {where}: valid keys are ") as error:
        config_from_dict(raw)
    assert "," in str(error.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"steps": 10, "data": {"train_set": "train400"}},
        minimal(epochs=3),
        {"model": {"name": "dncnn"}, "data": {"train_set": "train400"}},
        minimal(loss="huber"),
        minimal(optim={"name": "sgd"}),
        minimal(optim={"lr": "fast"}),
        minimal(schedule={"name": "poly"}),
        minimal(steps=0),
        minimal(steps=2.5),
        minimal(data={"train_set": "train400", "channels": 2}),
        minimal(data={"train_set": "train400", "sigma_range": [50, 10]}),
        minimal(data={"train_set": "train400", "sigma_range": [0, 50], "task_params": {"sigma": 25}}),
        minimal(data={"train_set": "train400", "augment": "yes"}),
        minimal(data={"train_set": "train400", "sigma_range": [0, 50], "sigma_sampling": "log_uniform"}),
        minimal(data={"train_set": "train400", "sigma_range": [10, 50], "sigma_sampling": "gaussian"}),
        minimal(data={"train_set": "train400", "task_params": {"sigma": 25}, "sigma_sampling": "log_uniform"}),
        minimal(export="best"),
        minimal(optim={"betas": [0.9]}),
        [1, 2],
    ],
)
def test_invalid_values_raise_config_error(raw: object) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(raw)


def test_load_config_reports_missing_files_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (minimal(data={"train_set": "train400", "task": "deblock", "quality_range": [30, 20]}), "quality_range"),
        (minimal(data={"train_set": "train400", "task": "deblock", "quality_range": [0, 20]}), "quality_range"),
        (minimal(data={"train_set": "train400", "task": "deblock", "quality_range": [20.5, 30]}), "integer"),
        (minimal(data={"train_set": "train400", "quality_range": [20, 30]}), "task 'deblock'"),
        (minimal(data={"train_set": "train400", "task": "deblock", "quality_range": [20, 30],
                       "task_params": {"quality": 10}}), "fixed task_params.quality"),
        (minimal(schedule={"name": "cosine", "every": 5}), "schedule.every"),
        (minimal(schedule={"name": "step", "every": 5, "milestones": [3]}), "schedule.every"),
        (minimal(schedule={"name": "step", "every": 0}), "schedule.every"),
        (minimal(eval={"bench": "bsd68", "mode": "peak"}), "eval.mode"),
        (minimal(trainer="reinforce"), "trainer"),
        (minimal(trainer="dqn"), "dqn section"),
        (minimal(dqn={}), "dqn section"),
        (minimal(trainer="dqn", dqn={}, loss="l1"), "loss does not apply"),
        (minimal(trainer="dqn", dqn={"gamma": 1.5}), "dqn.gamma"),
        (minimal(trainer="dqn", dqn={"epsilon_end": -0.1}), "dqn.epsilon_end"),
        (minimal(trainer="dqn", dqn={"replay_capacity": 0}), "dqn.replay_capacity"),
        (minimal(trainer="dqn", dqn={"lam": 0}), "dqn.lam"),
        (minimal(trainer="dqn", dqn={"reward": "ssim"}), "dqn.reward"),
        (minimal(trainer="dqn", dqn={"capacity": 10}), "unknown key 'capacity' in config.dqn"),
        (minimal(optim={"name": "rmsprop", "betas": [0.5, 0.9]}), "betas"),
        (minimal(optim={"eps": 0}), "optim.eps"),
        (minimal(backtrack={"factor": 2}), "missing required key"),
        (minimal(backtrack={"every": 0}), "backtrack.every"),
        (minimal(backtrack={"every": 5, "factor": 0.9}), "backtrack.factor"),
        (minimal(backtrack={"every": 5, "lr_factor": 1.5}), "backtrack.lr_factor"),
        (minimal(backtrack={"every": 5, "patience": 2}), "unknown key 'patience' in config.backtrack"),
        (minimal(trainer="dqn", dqn={}, backtrack={"every": 5}), "backtrack applies"),
    ],
)
def test_new_options_are_checked(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_new_options_default_to_the_previous_behaviour() -> None:
    config = config_from_dict(minimal())
    assert config.init_weights is None and config.trainer == "supervised" and config.dqn is None
    assert config.data.quality_range is None and config.schedule.every is None
    assert config.optim.eps == 1e-8 and config.backtrack is None
    tuned = config_from_dict(minimal(optim={"eps": "1e-3"}, backtrack={"every": 50}))
    assert tuned.optim.eps == 1e-3 and (tuned.backtrack.every, tuned.backtrack.factor, tuned.backtrack.lr_factor) == (
        50, 1.05, 0.8)
    assert config_from_dict(config_to_dict(tuned)) == tuned
    dqn = config_from_dict(minimal(trainer="dqn", dqn={"gamma": 0}, optim={"name": "rmsprop", "lr": 1e-4}))
    assert dqn.dqn.gamma == 0.0 and dqn.optim.name == "rmsprop"
    assert config_from_dict(config_to_dict(dqn)) == dqn


def multitask(patch_size: int = 48, batch_size: int = 10, patches_per_image: int = 20, **section) -> dict:
    return minimal(data={"train_set": "cbsd400", "patch_size": patch_size, "batch_size": batch_size,
                         "patches_per_image": patches_per_image, "multitask": section})


def test_the_multitask_section_defaults_to_the_papers_sets() -> None:
    data = config_from_dict(multitask()).data
    section = data.multitask
    assert section.sr_factors == (1, 2, 3, 4) and section.blur_sigmas == (0.4, 0.8, 1.2, 1.6, 2.0, 2.4)
    assert section.drop_probabilities == (0.2, 0.4, 0.5, 0.6, 0.8, 0.9) and section.blur_size == 25
    assert section.noise_sigmas == pytest.approx([0.005 * s * 255 for s in range(50)]) and section.per_crop == 5
    single = config_from_dict(multitask(sr_factors=[2], blur_sigmas=[], drop_probabilities=[], noise_sigmas=[2.55],
                                        per_crop=1))
    assert single.data.multitask.sr_factors == (2,) and single.data.multitask.blur_sigmas == ()
    assert config_from_dict(config_to_dict(single)) == single


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (multitask(patch_size=50), "patch_size 50 is not a multiple of the super-resolution factor.s. 3, 4 .*"
                                   "multiple of 12"),
        (multitask(batch_size=8), "batch_size 8 is not a multiple of data.multitask.per_crop 5"),
        (multitask(patches_per_image=12), "patches_per_image 12 is not a multiple"),
        (multitask(sr_factors=[], blur_sigmas=[], drop_probabilities=[]), "at least one degradation"),
        (multitask(sr_factors=[0, 2]), "sr_factors must be positive"),
        (multitask(sr_factors=[2, 2]), "lists a value twice"),
        (multitask(sr_factors=[1.5]), "integer"),
        (multitask(blur_sigmas=[0.0]), "blur_sigmas must be positive"),
        (multitask(blur_size=0), "blur_size"),
        (multitask(drop_probabilities=[1.0]), r"drop_probabilities must lie in \[0, 1\)"),
        (multitask(noise_sigmas=[]), "noise_sigmas must list"),
        (multitask(noise_sigmas=[-1]), "noise_sigmas must list"),
        (multitask(per_crop=0), "per_crop must be a positive"),
        (multitask(factors=[2]), "unknown key 'factors' in config.data.multitask"),
        (minimal(data={"train_set": "cbsd400", "patch_size": 48, "batch_size": 10, "patches_per_image": 20,
                       "task": "deblur", "multitask": {}}), "replaces task"),
        (minimal(data={"train_set": "cbsd400", "patch_size": 48, "batch_size": 10, "patches_per_image": 20,
                       "sigma_range": [0, 50], "multitask": {}}), "replaces task"),
    ],
)
def test_multitask_sections_are_checked(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_mtdeq_configs_are_the_papers_and_their_compact_and_single_task_forms() -> None:
    paper = load_config(CONFIGS / "mtdeq-multitask-paper.yaml")
    assert paper.model.params["widths"] == [64, 128, 256, 512] and paper.model.params["blocks"] == 4
    assert (paper.data.patch_size, paper.data.batch_size // paper.data.multitask.per_crop) == (132, 16)
    assert (paper.optim.name, paper.optim.lr, paper.schedule.name, paper.schedule.gamma, paper.epochs) == (
        "adam", 1e-5, "step", 0.25, 250)
    assert paper.init_weights.endswith("unet-color-paper/model.safetensors")
    compact = load_config(CONFIGS / "mtdeq-multitask-compact.yaml")
    assert compact.model.params["widths"] == [32, 64, 128, 256] and compact.data.batch_size == 10
    assert compact.init_weights.endswith("src/converge/weights/unet-rgb.safetensors")
    comp = load_config(CONFIGS / "mtdeq-st-comp-compact.yaml").data.multitask
    assert (comp.sr_factors, comp.blur_sigmas, comp.drop_probabilities, comp.noise_sigmas) == ((), (), (0.9,), (0.0,))
    sr = load_config(CONFIGS / "mtdeq-st-sr-compact.yaml").data.multitask
    assert (sr.sr_factors, sr.blur_sigmas, sr.drop_probabilities, sr.noise_sigmas) == ((2,), (), (), (2.55,))
    assert comp.per_crop == sr.per_crop == 1


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    config = load_config(path)
    assert config_from_dict(config_to_dict(config)) == config


def test_overrides_set_nested_entries_parsed_as_yaml(tmp_path: Path) -> None:
    path = CONFIGS / "nerd-denoise-compact.yaml"
    config = load_config(path, ["data.task_params.sigma=15", "eval.task_params={sigma: 15}", "optim.lr=3e-4",
                                "init_weights=weights/start.safetensors"])
    assert config.data.task_params == {"sigma": 15}
    assert config.eval.task_params == {"sigma": 15}
    assert config.optim.lr == 3e-4
    assert Path(config.init_weights) == (Path.cwd() / "weights/start.safetensors").resolve()
    assert load_config(path).data.task_params == {"sigma": 25}


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.sigma", "section.key=value"), ("=3", "section.key=value"), ("data..x=1", "section.key=value"),
     ("optim.lr=[1", "not valid YAML"), ("data.nope=1", "nope")],
)
def test_bad_overrides_raise_config_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CONFIGS / "nerd-denoise-compact.yaml", [override])



def test_saturation_range_needs_colour_crops_and_an_ordered_range() -> None:
    colour = {"train_set": "cbsd400", "channels": 3, "saturation_range": [1.0, 3.0]}
    config = config_from_dict(minimal(data=colour))
    assert config.data.saturation_range == (1.0, 3.0) and config_from_dict(config_to_dict(config)) == config
    for data in ({**colour, "channels": 1}, {**colour, "saturation_range": [2.0, 1.0]}):
        with pytest.raises(ConfigError, match="saturation_range"):
            config_from_dict(minimal(data=data))
    assert config_from_dict(minimal(data={**colour, "saturation_share": 0.5})).data.saturation_share == 0.5
    for data in ({**colour, "saturation_share": 1.5}, {"train_set": "cbsd400", "channels": 3, "saturation_share": 0.5}):
        with pytest.raises(ConfigError, match="saturation_share"):
            config_from_dict(minimal(data=data))
