import pytest
import torch

from converge.errors import ConfigError
from converge.models import RestoreInfo, build_model, model_name, model_params
from converge.models.backbones import DnCNN, DnCNNConfig


def small(**overrides) -> DnCNN:
    torch.manual_seed(0)
    return DnCNN(DnCNNConfig(**{"depth": 5, "features": 8, **overrides})).eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape(channels: int) -> None:
    model = small(channels=channels)
    y = torch.rand(2, channels, 19, 23)
    assert model(y).shape == y.shape


def test_residual_learning_subtracts_the_predicted_noise() -> None:
    model = small()
    y = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(y), y - model.body(y))
        assert torch.allclose(small(residual=False)(y), small(residual=False).body(y))


def test_gray_model_denoises_each_colour_channel_on_its_own() -> None:
    model = small()
    rgb = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        per_channel = torch.cat([model(rgb[:, c : c + 1]) for c in range(3)], dim=1)
        assert torch.allclose(model(rgb), per_channel, atol=1e-6)


def test_colour_model_rejects_gray_input() -> None:
    with pytest.raises(ConfigError, match="3-channel"):
        small(channels=3)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("depth", [2, 4, 7])
def test_receptive_radius_is_the_depth_and_exact(depth: int) -> None:
    model = small(depth=depth, batchnorm=False)
    assert model.receptive_radius == depth
    size, centre = 41, 20
    y = torch.rand(1, 1, size, size, requires_grad=True)
    model(y)[0, 0, centre, centre].backward()
    rows, cols = torch.nonzero(y.grad[0, 0], as_tuple=True)
    radius = max((rows - centre).abs().max(), (cols - centre).abs().max())
    assert int(radius) == depth


def test_batchnorm_switch_changes_the_layers() -> None:
    with_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in small().modules())
    without_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in small(batchnorm=False).modules())
    assert (with_bn, without_bn) == (3, 0)


def test_restore_is_clamped_gradient_free_and_reports_one_iteration() -> None:
    model = small()
    y = torch.rand(1, 1, 12, 12, requires_grad=True) * 3 - 1
    x, info = model.restore(y)
    assert isinstance(info, RestoreInfo) and info.iterations == 1 and info.seconds >= 0
    assert not x.requires_grad
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("bad", [{"channels": 2}, {"depth": 1}, {"features": 0}])
def test_invalid_configs_raise(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DnCNNConfig(**bad)


def test_registry_builds_and_names_dncnn() -> None:
    model = build_model("dncnn", {"depth": 3, "features": 4})
    assert model_name(model) == "dncnn"
    assert model_params(model)["depth"] == 3
    with pytest.raises(ConfigError, match="featurs"):
        build_model("dncnn", {"featurs": 4})
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("dnncn")
