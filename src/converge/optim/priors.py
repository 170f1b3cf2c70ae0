"""Image priors an iterative algorithm calls through a denoiser (plug-and-play).

A :class:`Denoiser` maps a noisy image ``x`` ``(B, C, H, W)`` (values near [0, 1]) and a Gaussian noise
level ``sigma`` (on the same [0, 1] scale: ``25 / 255``; a float or a ``(B,)`` tensor) to an image of the
same shape. Adapters wrap the trained models of :mod:`converge.zoo` and the classical denoisers of
:mod:`converge.baselines`; :func:`make_denoiser` builds one from a name. The zoo and the baselines are
imported inside the functions that need them, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from converge.errors import ConfigError

Sigma = float | Tensor

DENOISING_BASELINES = ("bm3d", "nlm", "tv")
"""The entries of :data:`converge.baselines.BASELINES` that denoise (the others upsample or demosaick)."""


@runtime_checkable
class Denoiser(Protocol):
    """Anything with ``denoise(x, sigma) -> x_hat``, ``(B, C, H, W)`` both ways."""

    def denoise(self, x: Tensor, sigma: Sigma) -> Tensor:
        """Remove Gaussian noise of standard deviation ``sigma`` (float or ``(B,)``, [0, 1] scale) from ``x``."""
        ...


class ModelDenoiser:
    """A trained restorer ``model(x, sigma=sigma)`` used as a denoiser.

    The model runs under ``torch.no_grad`` unless ``differentiable=True`` (to train through the
    algorithm). A model trained for one noise level still receives ``sigma`` and may ignore it. The
    model's mode (train or eval) is left as it is, and its output is not clamped.

    >>> ModelDenoiser(nn.Identity()).model
    Identity()
    """

    def __init__(self, model: nn.Module, *, differentiable: bool = False) -> None:
        self.model = model
        self.differentiable = differentiable

    def denoise(self, x: Tensor, sigma: Sigma) -> Tensor:
        context = contextlib.nullcontext() if self.differentiable else torch.no_grad()
        with context:
            return self.model(x, sigma=sigma)


class BaselineDenoiser:
    """A classical denoiser: ``converge.baselines.get_baseline(name, **options)`` or any callable
    ``baseline(x, sigma=sigma)``. Not differentiable; the baselines clamp to [0, 1].

    >>> BaselineDenoiser("tv").name
    'tv'
    """

    def __init__(self, baseline: str | Callable[..., Tensor], **options: object) -> None:
        if isinstance(baseline, str):
            from converge.baselines import get_baseline

            self.name = baseline
            self.baseline = get_baseline(baseline, **options)
        elif options:
            raise ConfigError(f"Options {sorted(options)} apply only to a baseline given by name; bind them yourself.")
        else:
            self.name = getattr(baseline, "__name__", type(baseline).__name__)
            self.baseline = baseline

    def denoise(self, x: Tensor, sigma: Sigma) -> Tensor:
        return self.baseline(x, sigma=sigma)


class IdentityDenoiser:
    """``D(x, sigma) = x``: the flat prior, under which plug-and-play reduces to the data term alone.

    >>> IdentityDenoiser().denoise(torch.ones(1, 1, 2, 2), 0.1).sum().item()
    4.0
    """

    def denoise(self, x: Tensor, sigma: Sigma) -> Tensor:
        return x


def make_denoiser(
    name: str, *, sigma: float | None = None, channels: int = 1, device: str | torch.device = "cpu"
) -> Denoiser:
    """The denoiser called ``name``: a zoo denoising model (``dncnn-s25``), a model family (``nerd``: the
    zoo's denoiser for ``channels``-channel images trained nearest to ``sigma``, on the [0, 1] scale), a
    classical baseline (``bm3d``, ``nlm``, ``tv``), ``identity``, or a ``.safetensors`` file written by
    ``converge train`` (with its ``.yaml`` beside it). A shipped model or weights file that holds a
    learned prior (MTDEQ: ``Restorer.plug_and_play_prior``) gives that prior. Models load on ``device``.

    Unknown names raise :class:`ConfigError` listing the valid ones.

    >>> type(make_denoiser("identity")).__name__
    'IdentityDenoiser'
    """
    from converge import zoo

    if name == "identity":
        return IdentityDenoiser()
    if name in DENOISING_BASELINES:
        return BaselineDenoiser(name)
    if name.endswith(".safetensors"):
        return ModelDenoiser(_prior_of(zoo.load_weights(name, device=device)))
    holding = {entry.name for entry in zoo.ZOO.values() if entry.model_class.plug_and_play_prior is not None}
    if name in holding:
        return ModelDenoiser(_prior_of(zoo.load_model(name, device=device)))
    entries = {entry.name for entry in zoo.ZOO.values() if entry.task == "denoise"} | holding
    families = {entry.model for entry in zoo.ZOO.values() if entry.task == "denoise"}
    if name in families and name not in zoo.ZOO:
        name = _family_member(name, sigma, channels)
    elif name not in entries:
        valid = sorted(entries | families) + sorted(DENOISING_BASELINES) + ["identity"]
        raise ConfigError(
            f"Unknown denoiser {name!r}; choose one of {', '.join(valid)}, or a .safetensors file from converge train."
        )
    return ModelDenoiser(zoo.load_model(name, device=device))


def _prior_of(model: nn.Module) -> nn.Module:
    """The denoiser a loaded model gives a plug-and-play algorithm: its ``plug_and_play_prior``
    submodule, or the model itself."""
    inner = type(model).plug_and_play_prior
    return model if inner is None else getattr(model, inner)


def _family_member(family: str, sigma: float | None, channels: int) -> str:
    """The zoo denoiser of ``family`` for ``channels`` channels nearest to ``sigma`` ([0, 1] scale)."""
    from converge import zoo

    if sigma is not None and not 0.0 < sigma <= 1.0:
        raise ConfigError(f"sigma is on the [0, 1] image scale (25/255 for noise level 25), got {sigma}.")
    if sigma is None and zoo.needs_level(family, "denoise", channels):
        raise ConfigError(f"Model family {family!r} has one denoiser per noise level; pass sigma=... ([0, 1] scale).")
    level = None if sigma is None else sigma * 255.0
    return zoo.resolve_entry(family, "denoise", sigma=level, channels=channels).name
