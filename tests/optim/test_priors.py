"""Denoiser adapters and make_denoiser: the protocol, gradients on demand, names, and a real denoising gain."""

import pytest
import torch
from torch import nn

from converge import zoo
from converge.errors import ConfigError, WeightsError
from converge.eval.metrics import psnr
from converge.models import build_model
from converge.optim import BaselineDenoiser, Denoiser, IdentityDenoiser, ModelDenoiser, make_denoiser


class ScaleBySigma(nn.Module):
    """A toy restorer whose output depends on sigma, to see what the adapter passes on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))

    def forward(self, y, physics=None, sigma=None):
        return self.weight * y * sigma


def noisy_pair(sigma: float = 25 / 255):
    """A smooth 32x32 gray image with a bright square, and a seeded noisy copy."""
    rows = torch.linspace(0.2, 0.8, 32)
    clean = (rows[:, None] + rows[None, :]) / 2
    clean[8:24, 8:24] = 0.9
    clean = clean[None, None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
    return clean, clean + sigma * noise


def test_every_adapter_is_a_denoiser():
    for denoiser in (IdentityDenoiser(), ModelDenoiser(ScaleBySigma()), BaselineDenoiser("tv")):
        assert isinstance(denoiser, Denoiser)
    assert not isinstance(ScaleBySigma(), Denoiser)


def test_model_denoiser_passes_sigma_and_builds_no_graph_unless_asked():
    x = torch.rand(2, 1, 4, 4)
    sigma = torch.tensor([0.1, 0.5]).reshape(2, 1, 1, 1)
    model = ScaleBySigma()
    out = ModelDenoiser(model).denoise(x, sigma)
    assert torch.allclose(out, 2 * x * sigma) and not out.requires_grad
    out = ModelDenoiser(model, differentiable=True).denoise(x, sigma)
    out.sum().backward()
    assert torch.allclose(model.weight.grad, (x * sigma).sum())


def test_identity_denoiser_returns_its_input():
    x = torch.rand(1, 3, 5, 5)
    assert torch.equal(IdentityDenoiser().denoise(x, 0.2), x)


def test_baseline_denoiser_accepts_a_callable_but_no_loose_options():
    calls = []

    def halve(y, sigma=None):
        calls.append(sigma)
        return y / 2

    x = torch.ones(1, 1, 2, 2)
    assert torch.equal(BaselineDenoiser(halve).denoise(x, 0.3), x / 2) and calls == [0.3]
    with pytest.raises(ConfigError, match="by name"):
        BaselineDenoiser(halve, profile="np")
    with pytest.raises(ConfigError, match="Unknown baseline"):
        BaselineDenoiser("nope")


def test_make_denoiser_resolves_baselines_and_identity_without_loading_models(monkeypatch):
    monkeypatch.setattr(zoo, "load_model", lambda *args, **kwargs: pytest.fail("no model should load"))
    bm3d = make_denoiser("bm3d")
    assert isinstance(bm3d, BaselineDenoiser) and bm3d.name == "bm3d"
    assert isinstance(make_denoiser("identity"), IdentityDenoiser)


@pytest.mark.parametrize("name", ["nope", "bicubic", "groupsc-demosaic"])
def test_make_denoiser_refuses_what_does_not_denoise_and_lists_valid_names(name):
    with pytest.raises(ConfigError, match="choose one of") as raised:
        make_denoiser(name)
    assert "dncnn-s25" in str(raised.value) and "bm3d" in str(raised.value) and "nerd" in str(raised.value)


def test_make_denoiser_picks_a_family_member_by_noise_level(monkeypatch):
    loaded = []
    monkeypatch.setattr(zoo, "load_model", lambda name, device="cpu": loaded.append(name) or nn.Identity())
    assert isinstance(make_denoiser("nerd", sigma=17 / 255), ModelDenoiser)
    assert loaded == ["nerd-s15"]
    with pytest.raises(ConfigError, match="sigma"):
        make_denoiser("nerd")
    with pytest.raises(ConfigError, match="scale"):
        make_denoiser("nerd", sigma=25.0)


def test_zoo_dncnn_denoises():
    clean, noisy = noisy_pair()
    denoiser = make_denoiser("dncnn-s25")
    assert isinstance(denoiser, ModelDenoiser)
    restored = denoiser.denoise(noisy, 25 / 255)
    assert restored.shape == noisy.shape
    assert float(psnr(restored.clamp(0, 1), clean)) > float(psnr(noisy, clean)) + 3.0


def test_tv_baseline_denoises():
    clean, noisy = noisy_pair()
    restored = make_denoiser("tv").denoise(noisy, 25 / 255)
    assert float(psnr(restored, clean)) > float(psnr(noisy, clean)) + 3.0


def test_make_denoiser_loads_a_trained_weights_file(tmp_path):
    params = {"channels": 1, "widths": [2, 2, 2, 2], "blocks": 1}
    model = build_model("unet", params)
    weights = zoo.save_weights(model, {"task": "denoise"}, tmp_path / "prior.safetensors")
    denoiser = make_denoiser(str(weights))
    assert isinstance(denoiser, ModelDenoiser)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(denoiser.denoise(x, 0.1), model.eval()(x, sigma=0.1))
    with pytest.raises(WeightsError, match="missing"):
        make_denoiser(str(tmp_path / "other.safetensors"))


def test_a_weights_file_of_mtdeq_gives_its_prior_as_the_denoiser(tmp_path):
    from converge.models.mtdeq import MTDEQ

    model = build_model("mtdeq", dict(MTDEQ.example_params, channels=1))
    weights = zoo.save_weights(model, {"task": "deblur"}, tmp_path / "mtdeq.safetensors")
    denoiser = make_denoiser(str(weights))
    assert type(denoiser.model).__name__ == "UNetDenoiser"
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(denoiser.denoise(x, 0.1), model.prior.eval()(x, sigma=0.1))


def test_a_shipped_model_holding_a_prior_gives_it(monkeypatch):
    from dataclasses import replace

    from converge.models.mtdeq import MTDEQ

    model = build_model("mtdeq", dict(MTDEQ.example_params, channels=1))
    entry = replace(zoo.ZOO["dncnn-s25"], name="mtdeq-test", model="mtdeq", task="deblur")
    monkeypatch.setattr(zoo, "ZOO", {**zoo.ZOO, "mtdeq-test": entry})
    monkeypatch.setattr(zoo, "load_model", lambda name, device="cpu": model)
    assert make_denoiser("mtdeq-test").model is model.prior
